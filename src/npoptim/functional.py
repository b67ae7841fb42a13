"""The functional kernels of every algorithm, like ``torch.optim._functional``.

Each kernel takes lists of arrays (parameters, gradients, state) and keyword-only
hyperparameters, and updates the arrays in place.
"""

from .adadelta import adadelta
from .adagrad import adagrad
from .adam import adam
from .adamax import adamax
from .adamw import adamw
from .asgd import asgd
from .rmsprop import rmsprop
from .sgd import sgd

__all__ = [
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "asgd",
    "rmsprop",
    "sgd",
]
