"""Lookahead (Zhang et al., 2019, "Lookahead Optimizer: k steps forward, 1 step back"),
Algorithm 1 of the paper, around an inner optimizer given by its reference.

Slow weights :math:`\\phi` start at the initial parameters; after every ``k`` steps of the
inner optimizer, :math:`\\phi \\leftarrow \\phi + \\alpha (\\theta - \\phi)` and the fast
weights restart from :math:`\\phi`. The momentum options (pytorch_optimizer's, after the
authors' code) act on SGD's momentum buffer (``b`` in ``references/sgd.py``): ``"reset"``
zeroes it at a synchronization, ``"pullback"`` interpolates it toward a slow copy the same way
as the weights.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

NAME = "Lookahead"


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    optimizer: tuple[str, dict[str, Any]],
    k: int = 5,
    alpha: float = 0.5,
    pullback_momentum: str = "none",
) -> np.ndarray:
    name, inner_kwargs = optimizer
    inner = importlib.import_module(f"references.{name.lower()}")
    if t == 1:
        state.update(inner={}, slow=p.copy(), slow_b=np.zeros_like(p))
    p = inner.reference(p, g, state["inner"], t, **inner_kwargs)  # a fast step
    if t % k == 0:  # synchronize
        state["slow"] = state["slow"] + alpha * (p - state["slow"])
        p = state["slow"].copy()
        if name == "SGD" and "b" in state["inner"]:
            if pullback_momentum == "reset":
                state["inner"]["b"] = np.zeros_like(p)
            elif pullback_momentum == "pullback":
                b = state["inner"]["b"]
                state["slow_b"] = state["slow_b"] + alpha * (b - state["slow_b"])
                state["inner"]["b"] = state["slow_b"].copy()
    return p
