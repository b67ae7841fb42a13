"""NAdam (Dozat, 2016) from torch's documented pseudo-code.

One deviation from exact arithmetic, on purpose: torch keeps the running product of the
momentum coefficients, :math:`\\prod_i \\mu_i`, in a float32 scalar, multiplying it by
:math:`\\mu_t` rounded to float32 at every step. The rounding moves float64 trajectories by
~1e-10 relative over 21 steps, so the reference models that storage.
"""

from typing import Any

import numpy as np

NAME = "NAdam"


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    lr: float = 2e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
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
    mu_t = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))  # momentum schedule
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    prod_t = float(np.float32(state.get("prod", 1.0)) * np.float32(mu_t))  # prod_{i<=t} mu_i
    state["prod"] = prod_t
    prod_next = prod_t * mu_next  # prod_{i<=t+1} mu_i
    m = beta1 * state.get("m", 0.0) + (1 - beta1) * g  # first moment
    v = beta2 * state.get("v", 0.0) + (1 - beta2) * g * g  # second moment
    state["m"], state["v"] = m, v
    m_hat = mu_next * m / (1 - prod_next) + (1 - mu_t) * g / (1 - prod_t)
    v_hat = v / (1 - beta2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)
