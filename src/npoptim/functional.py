"""The functional kernels of every algorithm, like ``torch.optim._functional``.

Each kernel takes lists of arrays (parameters, gradients, state) and keyword-only
hyperparameters, and updates the arrays in place.
"""

from .adadelta import adadelta
from .adafactor import adafactor
from .adagrad import adagrad
from .adam import adam
from .adamax import adamax
from .adamw import adamw
from .ademamix import ademamix
from .asgd import asgd
from .lamb import lamb
from .lars import lars
from .lion import lion
from .lookahead import lookahead
from .muon import muon
from .nadam import nadam
from .prodigy import prodigy
from .radam import radam
from .rmsprop import rmsprop
from .rprop import rprop
from .schedulefree import adamw_schedulefree
from .sgd import sgd
from .sgd_schedulefree import sgd_schedulefree
from .soap import soap
from .sparse_adam import sparse_adam

__all__ = [
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "adamw_schedulefree",
    "ademamix",
    "asgd",
    "lamb",
    "lars",
    "lion",
    "lookahead",
    "muon",
    "nadam",
    "prodigy",
    "radam",
    "rmsprop",
    "rprop",
    "sgd",
    "sgd_schedulefree",
    "soap",
    "sparse_adam",
]
