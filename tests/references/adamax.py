"""Adamax (Kingma & Ba, 2015, section 7.1) with torch's eps, from torch's documented
pseudo-code."""

from typing import Any

import numpy as np

NAME = "Adamax"


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> np.ndarray:
    beta1, beta2 = betas
    if maximize:
        g = -g
    if weight_decay != 0:
        g = g + weight_decay * p
    m = beta1 * state.get("m", 0.0) + (1 - beta1) * g  # first moment
    u = np.maximum(beta2 * state.get("u", 0.0), np.abs(g) + eps)  # infinity norm
    state["m"], state["u"] = m, u
    return p - lr * m / ((1 - beta1**t) * u)
