"""The functional kernels of every algorithm, like ``torch.optim._functional``.

Each kernel takes lists of arrays (parameters, gradients, state) and keyword-only
hyperparameters, and updates the arrays in place.
"""

from .adam import adam
from .adamw import adamw
from .sgd import sgd

__all__ = ["adam", "adamw", "sgd"]
