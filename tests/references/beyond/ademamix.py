"""AdEMAMix (Pagliardini et al., 2024, "The AdEMAMix Optimizer: Better, Faster, Older"),
Algorithm 1 of the paper, with pytorch_optimizer's weight decay options.

Adam's fast momentum mixed with a slow one (β3 close to 1), weighted by α:

    m1_t = β1 m1_{t-1} + (1 - β1) g_t,    m2_t = β3_t m2_{t-1} + (1 - β3_t) g_t
    ν_t  = β2 ν_{t-1} + (1 - β2) g_t²
    θ_t  = θ_{t-1} - η ((m1_t / (1 - β1^t) + α_t m2_t) / (√(ν_t / (1 - β2^t)) + ε) + λ θ_{t-1})

with the warm-up schedulers of the paper's section 3 when ``t_alpha_beta3`` (T) is given:
α_t = min(t α / T, α) and β3_t = min(exp(ln β1 ln β3 / ((1 - t/T) ln β3 + (t/T) ln β1)), β3).

The paper decays the weights decoupled (the λθ term above, ``weight_decouple=True`` here);
pytorch_optimizer's default is ``weight_decouple=False``: λθ added to the gradient (L2).
``fixed_decay`` decays by λ instead of ηλ.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

NAME = "AdEMAMix"


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    lr: float = 1e-3,
    betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
    weight_decay: float = 0.0,
    weight_decouple: bool = False,
    fixed_decay: bool = False,
    alpha: float = 5.0,
    t_alpha_beta3: float | None = None,
    eps: float = 1e-8,
    maximize: bool = False,
) -> np.ndarray:
    beta1, beta2, beta3 = betas
    if maximize:
        g = -g
    if t_alpha_beta3 is None:
        alpha_t, beta3_t = alpha, beta3
    else:
        alpha_t = min(t * alpha / t_alpha_beta3, alpha)
        f = t / t_alpha_beta3
        log1, log3 = math.log(beta1), math.log(beta3)
        beta3_t = min(math.exp(log1 * log3 / ((1 - f) * log3 + f * log1)), beta3)
    decay = 0.0
    if weight_decouple:
        decay = weight_decay * (1.0 if fixed_decay else lr)  # the paper's ηλθ
    else:
        g = g + weight_decay * p  # L2
    m1 = beta1 * state.get("m1", 0.0) + (1 - beta1) * g  # fast momentum
    m2 = beta3_t * state.get("m2", 0.0) + (1 - beta3_t) * g  # slow momentum
    nu = beta2 * state.get("nu", 0.0) + (1 - beta2) * g**2
    state["m1"], state["m2"], state["nu"] = m1, m2, nu
    m1_hat, nu_hat = m1 / (1 - beta1**t), nu / (1 - beta2**t)
    return p - lr * (m1_hat + alpha_t * m2) / (np.sqrt(nu_hat) + eps) - decay * p
