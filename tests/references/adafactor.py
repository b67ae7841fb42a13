"""Adafactor (Shazeer & Stern, 2018) from torch's documented pseudo-code and notes.

As torch documents: ``lr`` caps the relative step size and scales the decoupled weight decay,
the row and column factors hold means (not sums) of squared gradients, and :math:`\\epsilon_1`
(machine epsilon of the dtype by default) guards the variance estimate and the update.
Parameters with two or more dimensions get factored second moments over their last two axes.
"""

from typing import Any

import numpy as np

NAME = "Adafactor"


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x * x)))


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    lr: float = 1e-2,
    beta2_decay: float = -0.8,
    eps: tuple[float | None, float] = (None, 1e-3),
    d: float = 1.0,
    weight_decay: float = 0.0,
    maximize: bool = False,
) -> np.ndarray:
    eps1, eps2 = eps
    if eps1 is None:
        eps1 = float(np.finfo(p.dtype).eps)
    if maximize:
        g = -g
    beta2_t = 1 - t**beta2_decay  # increasing decay of the second moment
    rho_t = min(lr, 1 / np.sqrt(t))  # relative step size
    alpha_t = max(eps2, _rms(p)) * rho_t  # absolute step size
    p = p - lr * weight_decay * p
    g2 = g * g
    if g.ndim > 1:
        R = beta2_t * state.get("R", 0.0) + (1 - beta2_t) * g2.mean(axis=-1, keepdims=True)
        C = beta2_t * state.get("C", 0.0) + (1 - beta2_t) * g2.mean(axis=-2, keepdims=True)
        state["R"], state["C"] = R, C
        V = R * C / np.maximum(R.mean(axis=-2, keepdims=True), eps1)
    else:
        V = beta2_t * state.get("V", 0.0) + (1 - beta2_t) * g2
        state["V"] = V
    U = g / np.maximum(np.sqrt(V), eps1)
    U_hat = U / max(1.0, _rms(U) / d)  # update clipping
    return p - alpha_t * U_hat
