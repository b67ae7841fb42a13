"""npoptim: torch.optim for NumPy.

Every optimizer, scheduler and utility of torch.optim 2.13, with the same names, arguments,
defaults, state and state_dict format, over NumPy arrays that carry a ``.grad`` buffer.
"""

from . import functional, lr_scheduler, swa_utils
from ._kernels import compile_kernels, get_num_threads, set_num_threads
from .adadelta import Adadelta
from .adafactor import Adafactor
from .adagrad import Adagrad
from .adam import Adam
from .adamax import Adamax
from .adamw import AdamW
from .ademamix import AdEMAMix
from .asgd import ASGD
from .clip_grad import (
    clip_grad_norm_,
    clip_grad_value_,
    clip_grads_with_norm_,
    get_total_norm,
    parameters_to_vector,
    vector_to_parameters,
)
from .lamb import LAMB
from .lars import LARS
from .lbfgs import LBFGS
from .lion import Lion
from .lookahead import Lookahead
from .muon import Muon
from .nadam import NAdam
from .optimizer import (
    Optimizer,
    RemovableHandle,
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
    required,
)
from .parameter import Parameter, SparseGrad
from .prodigy import Prodigy
from .radam import RAdam
from .rmsprop import RMSprop
from .rprop import Rprop
from .schedulefree import AdamWScheduleFree
from .serialization import CheckpointError, load, save
from .sgd import SGD
from .sgd_schedulefree import SGDScheduleFree
from .soap import SOAP
from .sparse_adam import SparseAdam

__version__ = "0.1.0"

__all__ = [
    "ASGD",
    "LAMB",
    "LARS",
    "LBFGS",
    "SGD",
    "SOAP",
    "AdEMAMix",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "AdamWScheduleFree",
    "Adamax",
    "CheckpointError",
    "Lion",
    "Lookahead",
    "Muon",
    "NAdam",
    "Optimizer",
    "Parameter",
    "Prodigy",
    "RAdam",
    "RMSprop",
    "RemovableHandle",
    "Rprop",
    "SGDScheduleFree",
    "SparseAdam",
    "SparseGrad",
    "clip_grad_norm_",
    "clip_grad_value_",
    "clip_grads_with_norm_",
    "compile_kernels",
    "functional",
    "get_num_threads",
    "get_total_norm",
    "load",
    "lr_scheduler",
    "parameters_to_vector",
    "register_optimizer_step_post_hook",
    "register_optimizer_step_pre_hook",
    "required",
    "save",
    "set_num_threads",
    "swa_utils",
    "vector_to_parameters",
]
