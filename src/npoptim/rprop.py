r"""Rprop: resilient backpropagation, a per-element step size driven by gradient signs."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._docs import _differentiable_doc, _foreach_doc, _fused_doc, _maximize_doc, _params_doc
from ._kernels import elementwise
from ._kernels.loop import Array, temporaries
from ._kernels.registry import Algorithm
from ._validation import LIKE_PARAM, STEP, StateKey, TypeCheck, check_nonnegative, pair, real
from .optimizer import Optimizer, ParamsT, _zeros_like
from .parameter import Parameter

__all__ = ["Rprop", "rprop"]


class Rprop(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        etas: tuple[float, float] = (0.5, 1.2),
        step_sizes: tuple[float, float] = (1e-6, 50),
        *,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "etas": etas,
            "step_sizes": step_sizes,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "capturable": capturable,
        }
        if fused is not None:  # torch's class has no fused: its key only when used
            defaults["fused"] = fused
        super().__init__(params, defaults)

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        **Optimizer._hyperparameters,
        "lr": real,
        "etas": pair(),
        "step_sizes": pair(),
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": STEP,
        "prev": LIKE_PARAM,
        "step_size": LIKE_PARAM,
    }

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        check_nonnegative(lr=settings["lr"])
        etas = settings["etas"]
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")

    _group_flags: ClassVar[dict[str, Any]] = {
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "capturable": False,
    }

    @staticmethod
    def _new_state(group: dict[str, Any], p: Parameter, state: dict[str, Any]) -> None:
        lr = group["lr"]
        state["prev"] = _zeros_like(p)
        # a complex element is two reals, each with its own step size
        first = complex(lr, lr) if np.iscomplexobj(p) else lr
        state["step_size"] = np.full_like(p.view(np.ndarray), first)

    def _step_group(self, group: dict[str, Any]) -> None:
        params, grads, states = self._init_group(group, self._new_state, "Rprop")
        step_size_min, step_size_max = group["step_sizes"]
        etaminus, etaplus = group["etas"]
        rprop(
            params,
            grads,
            [s["prev"] for s in states],
            [s["step_size"] for s in states],
            [s["step"] for s in states],
            step_size_min=step_size_min,
            step_size_max=step_size_max,
            etaminus=etaminus,
            etaplus=etaplus,
            maximize=group["maximize"],
            foreach=group["foreach"],
            fused=group.get("fused"),
        )


Rprop.__doc__ = rf"""Implements the resilient backpropagation algorithm.

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \theta_0 \text{{ (params)}}, \: f(\theta) \text{{ (objective)}},
                \: \eta_{{+}}, \eta_{{-}} \text{{ (etas)}},
                \: \Gamma_{{min}}, \Gamma_{{max}} \text{{ (step sizes)}}, \: \textit{{maximize}} \\
            &\textbf{{initialize}}: g_{{prev}} \leftarrow 0,
                \: \eta_0 \leftarrow \text{{lr}} \text{{ (for every element)}} \\
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_t \leftarrow \nabla_{{\theta}} f_t (\theta_{{t-1}})
                \quad (-\nabla_{{\theta}} f_t (\theta_{{t-1}}) \text{{ if maximize}}) \\
            &\quad \textbf{{for each element }} i: \\
            &\qquad \textbf{{if}} \: g^i_{{prev}} g^i_t > 0: \:
                \eta^i_t \leftarrow \eta^i_{{t-1}} \eta_{{+}} \\
            &\qquad \textbf{{else if}} \: g^i_{{prev}} g^i_t < 0: \:
                \eta^i_t \leftarrow \eta^i_{{t-1}} \eta_{{-}}, \: g^i_t \leftarrow 0 \\
            &\qquad \textbf{{else}}: \: \eta^i_t \leftarrow \eta^i_{{t-1}} \\
            &\qquad \eta^i_t \leftarrow \min(\max(\eta^i_t, \Gamma_{{min}}), \Gamma_{{max}}) \\
            &\quad \theta_t \leftarrow \theta_{{t-1}} - \eta_t \, \mathrm{{sign}}(g_t) \\
            &\quad g_{{prev}} \leftarrow g_t \\
            &\textbf{{return}} \: \theta_t
       \end{{aligned}}

    From Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation Learning:
    The RPROP Algorithm" (ICNN 1993). As in torch, the clamp to
    :math:`[\Gamma_{{min}}, \Gamma_{{max}}]` applies on every step, also where the sign product
    is zero (so a learning rate outside the range is clamped on the first step), and complex
    parameters are updated as pairs of reals, each with its own step size.

    Args:
        {_params_doc}
        lr (float, optional): learning rate, the initial step size of every element
            (default: 1e-2)
        etas (Tuple[float, float], optional): pair of (etaminus, etaplus), that are
            multiplicative decrease and increase factors (default: (0.5, 1.2))
        step_sizes (Tuple[float, float], optional): a pair of minimal and maximal allowed
            step sizes (default: (1e-6, 50))
        capturable (bool, optional): accepted for compatibility; has no effect (default: False)
        {_foreach_doc}
        {_fused_doc}
        {_maximize_doc}
        {_differentiable_doc}

    State (``optimizer.state[p]``): ``step`` (a float), ``prev`` (:math:`g_{{prev}}`) and
    ``step_size`` (:math:`\eta_t`, one per element).

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, Rprop
        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> opt = Rprop([w], lr=0.1)
        >>> w.grad = 2 * w.view(np.ndarray)
        >>> opt.step()
        >>> w
        Parameter([ 0.9, -1.9])
    """


def rprop(
    params: list[Parameter],
    grads: list[Array],
    prevs: list[Array],
    step_sizes: list[Array],
    state_steps: list[float],
    *,
    step_size_min: float,
    step_size_max: float,
    etaminus: float,
    etaplus: float,
    maximize: bool,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Functional Rprop: updates ``params``, ``prevs`` and ``step_sizes`` in place.

    ``state_steps`` holds each parameter's step count (kept for torch's signature; Rprop's
    update does not depend on it). See :class:`Rprop` for the math.
    ``foreach`` and ``fused`` pick the implementation; with neither, the compiled kernels run
    where numba is installed and the multi-tensor path elsewhere, all bit-identical to the
    for-loop (see :mod:`npoptim._kernels`).
    """
    elementwise(
        ALGORITHM, [params, grads, prevs, step_sizes], {},
        foreach=foreach, fused=fused, step_size_min=step_size_min, step_size_max=step_size_max,
        etaminus=etaminus, etaplus=etaplus, maximize=maximize,
    )  # fmt: skip


def _rprop_piece(
    p: Array,
    g: Array,
    prev: Array,
    eta: Array,
    *,
    step_size_min: float,
    step_size_max: float,
    etaminus: float,
    etaplus: float,
    maximize: bool,
) -> None:
    """One Rprop update of a piece of a parameter, its previous gradient and step sizes."""
    (factor,) = temporaries(p, 1)
    same, flip = temporaries(p, 2, np.bool_)
    np.multiply(g, prev, out=factor)
    if maximize:
        np.negative(factor, out=factor)  # g_prev g_t with g_t = -grad
    np.greater(factor, 0, out=same)
    np.less(factor, 0, out=flip)
    np.sign(factor, out=factor)  # keeps NaN, as torch does
    np.copyto(factor, etaplus, where=same)
    np.copyto(factor, etaminus, where=flip)
    np.equal(factor, 0, out=same)
    np.copyto(factor, 1.0, where=same)  # no sign information: keep the step size
    eta *= factor
    np.clip(eta, step_size_min, step_size_max, out=eta)  # η_t in [Γ_min, Γ_max]
    if maximize:
        np.negative(g, out=prev)
    else:
        np.copyto(prev, g)
    np.copyto(prev, 0.0, where=flip)  # after a sign change the element rests: g_t = 0
    np.sign(prev, out=factor)
    factor *= eta
    p -= factor  # θ_t = θ_{t-1} - η_t sign(g_t)


def _rprop_element(p: Any, g: Any, prev: Any, eta: Any, scalar: Any, flag: Any) -> Any:
    """:func:`_rprop_piece` for one element (compiled by the fused path)."""
    product = -(g * prev) if flag.maximize else g * prev  # g_{t-1} g_t, g_t = -grad to maximize
    if product > 0:
        factor = scalar.etaplus
    elif product < 0:
        factor = scalar.etaminus
    elif product == 0:
        factor = scalar.one  # no sign information: the step size stays
    else:
        factor = product  # NaN
    eta = eta * factor
    eta = scalar.step_size_min if eta < scalar.step_size_min else eta
    eta = scalar.step_size_max if eta > scalar.step_size_max else eta  # η_t in [Γ_min, Γ_max]
    g = -g if flag.maximize else g
    g = scalar.zero if product < 0 else g  # after a sign change the element rests: g_t = 0
    sign = scalar.one if g > 0 else (-scalar.one if g < 0 else g - g)  # np.sign: NaN stays
    return p - sign * eta, g, eta  # θ_t = θ_{t-1} - η_t sign(g_t)


ALGORITHM = Algorithm(
    name="rprop",
    roles=("param", "grad", "prev", "step_size"),
    piece=_rprop_piece,
    element=_rprop_element,
    scalars=lambda shared, per_param: {
        "step_size_min": shared["step_size_min"], "step_size_max": shared["step_size_max"],
        "etaminus": shared["etaminus"], "etaplus": shared["etaplus"], "one": 1.0, "zero": 0.0,
    },
    flags=lambda shared, present: {"maximize": shared["maximize"]},  # no weight decay
)  # fmt: skip
