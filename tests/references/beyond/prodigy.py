"""Prodigy (Mishchenko & Defazio, 2023, "Prodigy: An Expeditiously Adaptive Parameter-Free
Learner", arXiv:2306.06101), Algorithm 3 of the paper (the Adam version), with prodigyopt's
options.

Adam whose step size d_k γ is estimated from the gradients seen so far. With x_k all the
parameters (the sums run over every entry of every parameter):

    m_{k+1} = β1 m_k + (1 - β1) d_k g_k,       v_{k+1} = β2 v_k + (1 - β2) d_k² g_k²
    r_{k+1} = β3 r_k + (1 - β3) γ_k d_k² ⟨g_k, x_0 - x_k⟩
    s_{k+1} = β3 s_k + (1 - β3) γ_k d_k² g_k
    d̂_{k+1} = r_{k+1} / ‖s_{k+1}‖₁,           d_{k+1} = max(d_k, d̂_{k+1})
    x_{k+1} = x_k - γ_k d_k m_{k+1} / (√v_{k+1} + d_k ε)

with β3 = √β2 by default. Options with prodigyopt's names and defaults: ``weight_decay``
(decoupled, x ← x (1 - λ γ d_k), before the step; with ``decouple=False`` the L2 term λ x_k is
added to g_k instead), ``d_coef`` (a factor on d̂), ``growth_rate`` (d_{k+1} at most
growth_rate · d_k), ``use_bias_correction`` (γ_k times √(1 - β2^{k+1}) / (1 - β1^{k+1})),
``safeguard_warmup`` (s's increment without γ_k), ``slice_p`` (both sums over every
slice_p-th entry of each flattened parameter), ``betas[0] = 0`` (m_{k+1} = d_k g_k, and the
step then uses d_{k+1} g_k: the oracle's form), ``maximize``.

How prodigyopt departs from the paper is named by two arguments (``ORACLE_VARIANT`` sets
them as the oracle has them): ``eps_scale`` (the paper adds d_k ε to √v_{k+1}, the oracle
d_{k+1} ε) and ``free_first_growth`` (the oracle lets d leave d_0 for d̂ in one step, whatever
``growth_rate``; the bound applies from then on). The oracle also weighs the increments of
r and s by γ_k d_k² / d_0 instead of (1 - β3) γ_k d_k²: a constant factor that cancels in
d̂, so it is not an option here (the trajectories agree to rounding).

A parameter without a grad at a step is left out of that step's sums and update.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

NAME = "Prodigy"

#: prodigyopt 1.1.2's departure from the paper (see the module docstring).
ORACLE_VARIANT: dict[str, Any] = {"eps_scale": "next", "free_first_growth": True}


def reference(
    params: list[np.ndarray],
    grads: list[np.ndarray | None],
    state: dict[str, Any],
    lr: float = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    beta3: float | None = None,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decouple: bool = True,
    use_bias_correction: bool = False,
    safeguard_warmup: bool = False,
    d0: float = 1e-6,
    d_coef: float = 1.0,
    growth_rate: float = math.inf,
    slice_p: int = 1,
    maximize: bool = False,
    eps_scale: str = "current",
    free_first_growth: bool = False,
) -> list[np.ndarray]:
    """One step over all the parameters (float64); returns the new parameters. ``state``
    holds the estimate and each parameter's moments between calls."""
    beta1, beta2 = betas
    b3 = math.sqrt(beta2) if beta3 is None else beta3
    k = state.setdefault("k", 0)
    d = state.setdefault("d", d0)
    if "x0" not in state:
        state["x0"] = [p.reshape(-1)[::slice_p].copy() for p in params]
        state["m"] = [np.zeros_like(p) for p in params]
        state["v"] = [np.zeros_like(p) for p in params]
        state["s"] = [np.zeros(p.reshape(-1)[::slice_p].shape) for p in params]
        state["r"] = 0.0
    gamma = lr
    if use_bias_correction:
        gamma *= math.sqrt(1 - beta2 ** (k + 1)) / (1 - beta1 ** (k + 1))
    weight = (1 - b3) * gamma * d * d  # the paper's weight of this step in r and s
    s_weight = (1 - b3) * d * d if safeguard_warmup else weight
    r = b3 * state["r"]
    ghat: list[np.ndarray | None] = []
    for j, (p, g) in enumerate(zip(params, grads, strict=True)):
        if g is None:
            ghat.append(None)
            continue
        g = -g if maximize else g
        if weight_decay and not decouple:
            g = g + weight_decay * p
        ghat.append(g)
        gs = g.reshape(-1)[::slice_p]
        r += weight * float(np.dot(gs, state["x0"][j] - p.reshape(-1)[::slice_p]))
        state["m"][j] = beta1 * state["m"][j] + (1 - beta1) * d * g
        state["v"][j] = beta2 * state["v"][j] + (1 - beta2) * d * d * g * g
        state["s"][j] = b3 * state["s"][j] + s_weight * gs
    denominator = sum(
        float(np.abs(s).sum()) for s, g in zip(state["s"], ghat, strict=True) if g is not None
    )
    if denominator == 0:
        return params
    state["r"] = r
    d_hat = d_coef * r / denominator
    # d moves toward the largest estimate so far (the paper's max(d_k, d̂) when unbounded)
    state["d_max"] = max(state.get("d_max", d0), d_hat)
    bound = math.inf if (free_first_growth and d == d0) else growth_rate * d
    d_next = min(state["d_max"], bound)
    out = []
    scale = {"current": d, "next": d_next}[eps_scale]
    for j, (p, g) in enumerate(zip(params, ghat, strict=True)):
        if g is None:
            out.append(p)
            continue
        if weight_decay and decouple:
            p = p * (1 - weight_decay * gamma * d)
        m = state["m"][j] if beta1 > 0 else d_next * g
        out.append(p - gamma * d * m / (np.sqrt(state["v"][j]) + scale * eps))
    state["k"], state["d"] = k + 1, d_next
    return out
