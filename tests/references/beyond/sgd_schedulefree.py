"""Schedule-Free SGD (Defazio et al., 2024, "The Road Less Scheduled"), Algorithm 1 of the
paper with SGD steps on z, in its x/z/y form.

The iterate z takes SGD steps; x is a weighted average of the z's; the gradient is taken at
y, an interpolation of the two:

    y_t     = (1 - β) z_t + β x_t                    (the parameters the model sees)
    g_t     = ∇f(y_t) + λ y_t                        (weight decay: L2, at y)
    γ_t     = lr · min(1, t / warmup_steps)
    z_{t+1} = z_t - γ_t g_t
    c_{t+1} = w_t / Σ_{i≤t} w_i,   w_t = t^r · (max_{i≤t} γ_i)^weight_lr_power
    x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}

Returns y_{t+1}, the point the next gradient is taken at (what the optimizer's parameters
hold in train mode); ``state["x"]`` is the evaluation point.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NAME = "SGDScheduleFree"


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    lr: float = 1.0,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
    foreach: bool | None = None,  # the oracle's implementation choice: no effect on the math
) -> np.ndarray:
    if t == 1:  # x_1 = z_1 = y_1
        state.update(x=p.copy(), z=p.copy(), weight_sum=0.0, lr_max=0.0)
    y = p
    gamma = lr * min(1.0, t / warmup_steps) if warmup_steps > 0 else lr
    state["z"] = state["z"] - gamma * (g + weight_decay * y)
    state["lr_max"] = max(state["lr_max"], gamma)
    weight = t**r * state["lr_max"] ** weight_lr_power
    state["weight_sum"] += weight
    c = weight / state["weight_sum"]
    state["x"] = (1 - c) * state["x"] + c * state["z"]
    return (1 - momentum) * state["z"] + momentum * state["x"]
