"""npoptim: torch.optim for NumPy.

Every optimizer, scheduler and utility of torch.optim 2.13, with the same names, arguments,
defaults, state and state_dict format, over NumPy arrays that carry a ``.grad`` buffer.
"""

from . import functional
from .adam import Adam
from .adamw import AdamW
from .optimizer import (
    Optimizer,
    RemovableHandle,
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
    required,
)
from .parameter import Parameter, SparseGrad
from .sgd import SGD

__version__ = "0.1.0"

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "Optimizer",
    "Parameter",
    "RemovableHandle",
    "SparseGrad",
    "functional",
    "register_optimizer_step_post_hook",
    "register_optimizer_step_pre_hook",
    "required",
]
