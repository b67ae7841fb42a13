"""Schedule-Free AdamW (Defazio et al., 2024, "The Road Less Scheduled"), Algorithm 1 of
the paper, in its x/z/y form.

The iterate z takes AdamW steps; x is a weighted average of the z's; the gradient is taken at
y, an interpolation of the two:

    y_t     = (1 - β1) z_t + β1 x_t                  (the parameters the model sees)
    v_t     = β2 v_{t-1} + (1 - β2) g_t²,  g_t = ∇f(y_t)
    γ_t     = lr · min(1, t / warmup_steps)
    z_{t+1} = z_t - γ_t (g_t / (√(v_t / (1 - β2^t)) + ε) + λ y_t)
    c_{t+1} = w_t / Σ_{i≤t} w_i,   w_t = t^r · (max_{i≤t} γ_i)^weight_lr_power
    x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}

Returns y_{t+1}, the point the next gradient is taken at (what the optimizer's parameters
hold in train mode); ``state["x"]`` is the evaluation point.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NAME = "AdamWScheduleFree"


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    lr: float = 0.0025,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
) -> np.ndarray:
    beta1, beta2 = betas
    if t == 1:  # x_1 = z_1 = y_1
        state.update(x=p.copy(), z=p.copy(), v=np.zeros_like(p), weight_sum=0.0, lr_max=0.0)
    y = p
    gamma = lr * min(1.0, t / warmup_steps) if warmup_steps > 0 else lr
    state["v"] = beta2 * state["v"] + (1 - beta2) * g**2
    v_hat = state["v"] / (1 - beta2**t)
    state["z"] = state["z"] - gamma * (g / (np.sqrt(v_hat) + eps) + weight_decay * y)
    state["lr_max"] = max(state["lr_max"], gamma)
    weight = t**r * state["lr_max"] ** weight_lr_power
    state["weight_sum"] += weight
    c = weight / state["weight_sum"]
    state["x"] = (1 - c) * state["x"] + c * state["z"]
    return (1 - beta1) * state["z"] + beta1 * state["x"]
