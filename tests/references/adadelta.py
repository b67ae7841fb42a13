"""Adadelta (Zeiler, 2012) with torch's learning-rate scale, from torch's documented
pseudo-code."""

from typing import Any

import numpy as np

NAME = "Adadelta"


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    lr: float = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> np.ndarray:
    if maximize:
        g = -g
    if weight_decay != 0:
        g = g + weight_decay * p
    v = rho * state.get("v", 0.0) + (1 - rho) * g * g  # E[g²]_t
    u = state.get("u", 0.0)  # E[Δx²]_{t-1}
    delta = np.sqrt(u + eps) / np.sqrt(v + eps) * g  # RMS[Δx]_{t-1} / RMS[g]_t · g_t
    state["v"] = v
    state["u"] = rho * u + (1 - rho) * delta * delta
    return p - lr * delta
