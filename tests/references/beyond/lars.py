"""LARS (You, Gitman and Ginsburg, 2017, "Large Batch Training of Convolutional Networks"),
Algorithm 1 of the paper, with pytorch_optimizer's options.

SGD with momentum whose step is scaled per parameter tensor ("layer") by a local learning
rate, the trust ratio:

    λ = η ‖w‖ / (‖∇L(w)‖ + β ‖w‖)              (η: trust coefficient, β: weight decay)
    v_t = m v_{t-1} + γ λ (∇L(w) + β w)          (γ: global learning rate, m: momentum)
    w_t = w_{t-1} - v_t

applied to every parameter. Options with pytorch_optimizer's names and defaults:
``momentum`` (m), ``dampening`` (the gradient's term of v_t times 1 - dampening),
``nesterov`` (the step is the gradient's term plus m v_t), ``maximize`` (ascend).

How pytorch_optimizer's ``LARS`` departs from the paper is named by two arguments that the
paper fixes: ``lr_in_momentum`` (paper: True, γ inside v_t as above; the oracle: False,
v_t = m v_{t-1} + λ(∇L + βw) and w_t = w_{t-1} - γ v_t, the same trajectory while γ is
constant) and ``only_matrices`` (paper: False; the oracle: True, parameters of fewer than 2
axes take a plain SGD step, λ = 1 and no weight decay). Where the paper's λ is undefined
(‖w‖ = 0 or a zero denominator) both take λ = 1. ``ORACLE_VARIANT`` sets them as the oracle
has them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NAME = "LARS"

#: pytorch_optimizer 4.1.0's departures from the paper (see the module docstring).
ORACLE_VARIANT: dict[str, Any] = {"lr_in_momentum": False, "only_matrices": True}


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    dampening: float = 0.0,
    trust_coefficient: float = 1e-3,
    nesterov: bool = False,
    maximize: bool = False,
    lr_in_momentum: bool = True,
    only_matrices: bool = False,
) -> np.ndarray:
    if maximize:
        g = -g
    layerwise = p.ndim >= 2 or not only_matrices
    if layerwise:
        w_norm, g_norm = float(np.linalg.norm(p)), float(np.linalg.norm(g))
        denominator = g_norm + weight_decay * w_norm
        local_lr = (
            trust_coefficient * w_norm / denominator if w_norm > 0 and denominator > 0 else 1.0
        )
        g = local_lr * (g + weight_decay * p)
    if lr_in_momentum:
        g = lr * g  # γ λ (∇L + βw): the paper's v_t holds the step itself
    if momentum > 0:
        v = momentum * state.get("v", 0.0) + (1 - dampening) * g
        state["v"] = v
        g = g + momentum * v if nesterov else v
    return p - g if lr_in_momentum else p - lr * g
