"""Adam (Kingma & Ba, 2015) with AMSGrad (Reddi et al., 2018), from torch's pseudo-code."""

from typing import Any

import numpy as np

NAME = "Adam"


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
) -> np.ndarray:
    beta1, beta2 = betas
    if maximize:
        g = -g
    if weight_decay != 0:
        if decoupled_weight_decay:
            p = p - lr * weight_decay * p
        else:
            g = g + weight_decay * p
    m = beta1 * state.get("m", 0.0) + (1 - beta1) * g  # first moment
    v = beta2 * state.get("v", 0.0) + (1 - beta2) * g * g  # second moment
    state["m"], state["v"] = m, v
    m_hat = m / (1 - beta1**t)
    if amsgrad:
        state["v_max"] = np.maximum(state.get("v_max", 0.0), v)
        v_hat = state["v_max"] / (1 - beta2**t)
    else:
        v_hat = v / (1 - beta2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)
