"""Averaged SGD (Polyak & Juditsky, 1992) with the step sizes of Bottou, "Stochastic Gradient
Descent Tricks" (2012), section 5.3, as torch.optim.ASGD runs it.

torch keeps the step size η and the averaging rate μ in float32 scalars whatever the dtype of
the parameters; that rounding moves float64 trajectories by ~1e-8 relative, so the reference
stores them in float32 too (the arithmetic stays float64).
"""

from typing import Any

import numpy as np

NAME = "ASGD"


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    lr: float = 1e-2,
    lambd: float = 1e-4,
    alpha: float = 0.75,
    t0: float = 1e6,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> np.ndarray:
    eta = float(state.get("eta", np.float32(lr)))  # η_{t-1}
    mu = float(state.get("mu", 1.0))  # μ_{t-1}
    if maximize:
        g = -g
    if weight_decay != 0:
        g = g + weight_decay * p
    p = p - eta * (g + lambd * p)  # SGD step on f + (λ/2)|θ|²
    ax = state.get("ax", np.zeros_like(p))
    state["ax"] = ax + mu * (p - ax)  # running average of the iterates since t0
    state["eta"] = np.float32(lr / (1 + lambd * lr * t) ** alpha)
    state["mu"] = np.float32(1 / max(1, t - t0))
    return p
