"""Rprop (Riedmiller & Braun, 1993) from torch's documented pseudo-code."""

from typing import Any

import numpy as np

NAME = "Rprop"


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    lr: float = 1e-2,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50),
    maximize: bool = False,
) -> np.ndarray:
    eta_minus, eta_plus = etas
    step_min, step_max = step_sizes
    if maximize:
        g = -g
    g_prev = state.get("g_prev", np.zeros_like(p))
    eta = state.get("eta", np.full_like(p, lr))  # per-element step size, starts at lr
    same_sign = g_prev * g > 0
    sign_flip = g_prev * g < 0
    eta = np.where(same_sign, np.minimum(eta * eta_plus, step_max), eta)
    eta = np.where(sign_flip, np.maximum(eta * eta_minus, step_min), eta)
    g = np.where(sign_flip, 0.0, g)  # after a sign change, skip this element's step
    state["g_prev"], state["eta"] = g, eta
    return p - eta * np.sign(g)
