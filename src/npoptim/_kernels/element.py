r"""The prologues shared by the element updates, in plain Python that numba compiles.

An algorithm's element update (see :class:`npoptim._kernels.registry.Algorithm`) works on one
element at a time: numbers in, numbers out. The steps most algorithms begin with are written
here once, in the same IEEE operations and order as their NumPy counterparts in
:mod:`npoptim._kernels.loop` (:func:`~npoptim._kernels.loop.gradient`,
:func:`~npoptim._kernels.loop.moments`), so that the compiled path rounds exactly as the NumPy
paths do. Every function here is marked :func:`helper`: when :mod:`npoptim._kernels.compiled`
compiles an element update, it compiles the helpers the update calls along with it. Nothing
here imports numba, so the element updates stay ordinary Python (and can be called as such).

``scalar`` and ``flag`` are the element update's named tuples (see the registry): the helpers
read the fields named in their docstrings, which the algorithm's ``scalars`` and ``flags``
functions provide (:func:`decay_scalars`, :func:`moment_scalars`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = [
    "HELPERS",
    "decay_flags",
    "decay_scalars",
    "decayed",
    "gradient",
    "helper",
    "maximum",
    "moment_scalars",
    "moments",
]

_F = TypeVar("_F", bound=Callable[..., Any])

#: The functions element updates may call; compiled with them.
HELPERS: set[Callable[..., Any]] = set()


def helper(f: _F) -> _F:
    """Mark ``f`` as callable from element updates (compiled along with them)."""
    HELPERS.add(f)
    return f


def decay_scalars(shared: Mapping[str, Any]) -> dict[str, float]:
    """The scalars :func:`gradient` and :func:`decayed` read: ``weight_decay`` (λ) and
    ``decay_factor`` (1 - γλ, decoupled decay)."""
    decay_factor = 1 - shared.get("lr", 0.0) * shared["weight_decay"]
    return {"weight_decay": shared["weight_decay"], "decay_factor": decay_factor}


def moment_scalars(shared: Mapping[str, Any]) -> dict[str, float]:
    """The scalars :func:`moments` reads: ``one_minus_beta1``, ``beta2``, ``one_minus_beta2``."""
    beta1, beta2 = shared["beta1"], shared["beta2"]
    return {"one_minus_beta1": 1 - beta1, "beta2": beta2, "one_minus_beta2": 1 - beta2}


@helper
def maximum(a: Any, b: Any) -> Any:
    """``np.maximum`` of two numbers: NaN if either is NaN."""
    if a != a or a >= b:
        return a
    return b


@helper
def gradient(p: Any, g: Any, scalar: Any, flag: Any) -> Any:
    r""":math:`g_t`: the gradient, negated when ``flag.maximize``, plus L2 weight decay
    :math:`\lambda \theta_{t-1}` (``scalar.weight_decay``) when ``flag.decay``."""
    if flag.maximize:
        g = -g
    if flag.decay:
        g = g + p * scalar.weight_decay
    return g


@helper
def decayed(p: Any, g: Any, scalar: Any, flag: Any) -> Any:
    r"""``(θ, g_t)`` after weight decay, L2 as :func:`gradient` or, when
    ``flag.decoupled_weight_decay``, decoupled: :math:`\theta \leftarrow \theta (1 - \gamma
    \lambda)` (``scalar.decay_factor``) and :math:`g_t` the (negated to maximize) gradient."""
    if flag.decoupled_weight_decay:
        g = -g if flag.maximize else g
        return (p * scalar.decay_factor if flag.decay else p), g
    return p, gradient(p, g, scalar, flag)


@helper
def moments(g: Any, m: Any, v: Any, scalar: Any) -> Any:
    r"""Adam's moments ``(m_t, v_t)``: :math:`m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t`
    (computed as :math:`m_{t-1} + (1 - \beta_1)(g_t - m_{t-1})`, torch's lerp) and
    :math:`v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2`."""
    m = m + (g - m) * scalar.one_minus_beta1
    v = v * scalar.beta2 + (g * g) * scalar.one_minus_beta2
    return m, v


def decay_flags(shared: Mapping[str, Any]) -> dict[str, bool]:
    """The flags :func:`gradient` and :func:`decayed` read: ``maximize`` and ``decay``
    (a nonzero weight decay)."""
    return {"maximize": shared["maximize"], "decay": shared["weight_decay"] != 0}
