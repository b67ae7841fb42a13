"""RAdam (Liu et al., 2020) from torch's documented pseudo-code."""

from typing import Any

import numpy as np

NAME = "RAdam"


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
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
    rho_inf = 2 / (1 - beta2) - 1  # maximum length of the approximated SMA
    rho_t = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
    if rho_t > 5:  # the variance is tractable: rectified adaptive step
        l_t = np.sqrt(1 - beta2**t) / (np.sqrt(v) + eps)
        r_t = np.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        return p - lr * m_hat * r_t * l_t
    return p - lr * m_hat  # early steps: SGD with momentum
