"""Muon (Jordan et al., 2024) from torch's documented pseudo-code and Keller Jordan's post.

Kept out of ``tests/references`` for now: the shared problem of ``tests/harness.py`` has a
vector and a scalar parameter, which Muon refuses, so Muon runs on its own 2-D problem
(``SHAPES``) in ``tests/test_muon.py``.

The momentum buffer is the exponential average of Keller Jordan's code,
:math:`B_t = \\mu B_{t-1} + (1-\\mu) g_t`, and the Nesterov update
:math:`(1-\\mu) g_t + \\mu B_t`; both are :math:`(1-\\mu)` times the plain sums of torch's
pseudo-code, and Newton–Schulz normalises its input, so the two forms give the same update.
"""

from typing import Any

import numpy as np

NAME = "Muon"

#: Muon takes matrices only: a wide, a tall (iterated transposed) and a square one.
SHAPES: list[tuple[int, ...]] = [(3, 4), (6, 2), (4, 4)]

#: Allowed relative deviation from torch. torch rounds the Newton–Schulz iterate to
#: bfloat16 (8 significant bits, unit roundoff 2**-8 = 3.9e-3) whatever the parameter's
#: dtype, while npoptim and this reference iterate in the parameter's dtype. The update
#: :math:`O_t` then differs by a few parts in a thousand, and the parameters move by
#: lr * |O_t| a step: over 21 steps at lr = 0.01 the trajectories part by ~1e-3 of |θ|
#: (measured: 8.5e-4; with torch's bfloat16 cast removed they agree to 2e-16 in float64).
#: Against this float64 reference npoptim keeps the default tolerances (1e-10, 1e-4).
TOLERANCE = {"float64": 2e-3, "float32": 2e-3}

#: Options that torch's CPU test configurations (``tests/configs.py``) leave out.
EXTRA_CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("no nesterov", {"nesterov": False}),
    ("adjust_lr_fn original", {"adjust_lr_fn": "original", "lr": 0.01}),
    ("adjust_lr_fn match_rms_adamw", {"adjust_lr_fn": "match_rms_adamw", "lr": 0.01}),
    ("momentum 0.3, no weight decay", {"momentum": 0.3, "weight_decay": 0.0}),
]


def newton_schulz(
    G: np.ndarray, coefficients: tuple[float, float, float], steps: int, eps: float
) -> np.ndarray:
    """Approximate orthogonalization U V^T of G = U S V^T by a quintic Newton–Schulz
    iteration X <- a X + b (X X^T) X + c (X X^T)^2 X, started from G / ||G||_F."""
    a, b, c = coefficients
    tall = G.shape[0] > G.shape[1]
    X = G.T if tall else G  # iterate on the wide orientation: X X^T is the smaller Gram
    X = X / max(np.linalg.norm(X), eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    momentum: float = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
    eps: float = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
) -> np.ndarray:
    B = momentum * state.get("B", 0.0) + (1 - momentum) * g  # momentum buffer
    state["B"] = B
    update = (1 - momentum) * g + momentum * B if nesterov else B
    O = newton_schulz(update, ns_coefficients, ns_steps, eps)
    rows, cols = p.shape
    if adjust_lr_fn == "match_rms_adamw":  # Moonshot: match AdamW's update RMS
        scale = 0.2 * np.sqrt(max(rows, cols))
    else:  # Keller Jordan's original scaling
        scale = np.sqrt(max(1.0, rows / cols))
    p = p - lr * weight_decay * p  # decoupled weight decay with the unscaled lr
    return p - lr * scale * O
