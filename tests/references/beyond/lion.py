"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"), Algorithm 2
of the paper.

The update is the sign of an interpolation between the momentum and the gradient; the
momentum is then updated with a second coefficient:

    c_t = β1 m_{t-1} + (1 - β1) g_t
    θ_t = θ_{t-1} - η (sign(c_t) + λ θ_{t-1})
    m_t = β2 m_{t-1} + (1 - β2) g_t

``decoupled_weight_decay`` (lion-pytorch's option) divides λ by the initial learning rate,
so the decay per step does not scale with η; the tests' learning rate is constant, so the
initial one is ``lr``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NAME = "Lion"


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    lr: float = 1e-4,
    betas: tuple[float, float] = (0.9, 0.99),
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
) -> np.ndarray:
    beta1, beta2 = betas
    decay = weight_decay / lr if decoupled_weight_decay else weight_decay
    m = state.get("m", np.zeros_like(p))
    c = beta1 * m + (1 - beta1) * g  # the interpolation whose sign is the update
    p = p - lr * (np.sign(c) + decay * p)
    state["m"] = beta2 * m + (1 - beta2) * g  # momentum, with its own coefficient
    return p
