"""LAMB (You et al., 2019, "Large Batch Optimization for Deep Learning: Training BERT in
76 minutes"), Algorithm 2 of the paper, with pytorch_optimizer's options.

Adam's direction, rescaled per parameter tensor by a trust ratio:

    m_t = β1 m_{t-1} + (1 - β1) g_t,     v_t = β2 v_{t-1} + (1 - β2) g_t²
    m̂_t = m_t / (1 - β1^t),              v̂_t = v_t / (1 - β2^t)
    r_t = m̂_t / (√v̂_t + ε) + λ θ_{t-1}
    θ_t = θ_{t-1} - η φ(‖θ_{t-1}‖) / ‖r_t‖ · r_t

with φ the identity and the trust ratio 1 where either norm is 0 (the paper's
``weight_decouple=False`` form; ``φ`` may clip, the paper suggests a bound). Options with
pytorch_optimizer's names and defaults: ``weight_decouple`` (default True) decays the
parameter first, θ ← (1 - ηλ) θ (by λ alone with ``fixed_decay``), and measures the trust
ratio on the decayed parameter with r_t without the λθ term; ``grad_averaging=False`` drops
the (1 - β1) factor of the first moment; ``adam=True`` fixes the trust ratio at 1; ``maximize`` ascends.

How pytorch_optimizer's ``Lamb`` departs from the paper is named by three arguments that
the paper fixes: ``bias_correction`` (paper: ``"moments"``, m̂ and v̂ as above; the oracle:
``"step_size"``, moments left uncorrected and the step size divided by 1 - β1^t, with t the
parameter group's step count), ``trust_clamp`` (the oracle bounds ‖θ‖ by 10) and
``trust_eps`` (the oracle adds ε to ‖r_t‖). ``ORACLE_VARIANT`` sets them as the oracle has
them.

Not covered: ``rectify`` (RAdam's rectification) and ``pre_norm`` with a nonzero
``max_grad_norm`` (a scaling by the global gradient norm over all parameters, which a
per-parameter reference cannot see; with ``max_grad_norm=0`` the oracle scales by 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

NAME = "LAMB"

#: pytorch_optimizer 4.1.0's departures from the paper (see the module docstring).
ORACLE_VARIANT: dict[str, Any] = {
    "bias_correction": "step_size",
    "trust_clamp": 10.0,
    "trust_eps": True,
}


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    weight_decouple: bool = True,
    fixed_decay: bool = False,
    grad_averaging: bool = True,
    adam: bool = False,
    eps: float = 1e-6,
    maximize: bool = False,
    pre_norm: bool = False,
    max_grad_norm: float = 1.0,
    bias_correction: str = "moments",
    trust_clamp: float | None = None,
    trust_eps: bool = False,
) -> np.ndarray:
    if pre_norm and max_grad_norm != 0.0:
        raise NotImplementedError("pre_norm needs the global gradient norm")
    beta1, beta2 = betas
    if maximize:
        g = -g
    m = beta1 * state.get("m", 0.0) + ((1 - beta1) if grad_averaging else 1.0) * g
    v = beta2 * state.get("v", 0.0) + (1 - beta2) * g**2
    state["m"], state["v"] = m, v
    step_size = lr
    if bias_correction == "moments":
        m, v = m / (1 - beta1**t), v / (1 - beta2**t)
    elif bias_correction == "step_size":
        step_size = lr / (1 - beta1**t)
    r = m / (np.sqrt(v) + eps)  # Adam's direction
    if weight_decouple:
        p = p * (1 - weight_decay * (1.0 if fixed_decay else lr))
    else:
        r = r + weight_decay * p
    weight_norm = float(np.linalg.norm(p))
    if trust_clamp is not None:
        weight_norm = min(weight_norm, trust_clamp)
    r_norm = float(np.linalg.norm(r))
    if adam or weight_norm == 0 or r_norm == 0:
        trust = 1.0
    else:
        trust = weight_norm / (r_norm + (eps if trust_eps else 0.0))
    return p - step_size * trust * r
