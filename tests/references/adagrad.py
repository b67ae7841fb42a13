"""Adagrad (Duchi, Hazan & Singer, 2011), from torch's documented pseudo-code."""

from typing import Any

import numpy as np

NAME = "Adagrad"


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    lr: float = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    initial_accumulator_value: float = 0.0,
    eps: float = 1e-10,
    maximize: bool = False,
) -> np.ndarray:
    if maximize:
        g = -g
    lr_t = lr / (1 + (t - 1) * lr_decay)  # decayed learning rate
    if weight_decay != 0:
        g = g + weight_decay * p
    # Sum of squared gradients; τ in every real component (τ + iτ for a complex parameter).
    s = state.get("sum", initial_accumulator_value) + g * g
    state["sum"] = s
    return p - lr_t * g / (np.sqrt(s) + eps)
