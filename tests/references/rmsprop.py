"""RMSprop (Hinton, lecture 6e; centered variant from Graves, 2013), from torch's documented
pseudo-code."""

from typing import Any

import numpy as np

NAME = "RMSprop"


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    lr: float = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    maximize: bool = False,
) -> np.ndarray:
    if maximize:
        g = -g
    if weight_decay != 0:
        g = g + weight_decay * p
    v = alpha * state.get("v", 0.0) + (1 - alpha) * g * g  # running mean of g²
    state["v"] = v
    v_tilde = v
    if centered:
        g_ave = alpha * state.get("g_ave", 0.0) + (1 - alpha) * g  # running mean of g
        state["g_ave"] = g_ave
        v_tilde = v - g_ave * g_ave  # variance estimate
    step = g / (np.sqrt(v_tilde) + eps)
    if momentum > 0:
        b = momentum * state.get("b", 0.0) + step
        state["b"] = b
        return p - lr * b
    return p - lr * step
