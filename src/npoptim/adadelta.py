r"""Adadelta, with weight decay and maximize."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._docs import _differentiable_doc, _foreach_doc, _fused_doc, _maximize_doc, _params_doc
from ._kernels import elementwise
from ._kernels.element import decay_flags
from ._kernels.element import gradient as gradient_of
from ._kernels.loop import Array, average_of_squares, gradient, temporaries
from ._kernels.registry import Algorithm
from ._validation import LIKE_PARAM, STEP, StateKey, TypeCheck, check_nonnegative, real
from .optimizer import Optimizer, ParamsT, _zeros_like
from .parameter import Parameter

__all__ = ["Adadelta", "adadelta"]


class Adadelta(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "rho": rho,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "capturable": capturable,
            "foreach": foreach,
            "differentiable": differentiable,
        }
        if fused is not None:  # torch's class has no fused: its key only when used
            defaults["fused"] = fused
        super().__init__(params, defaults)

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        **Optimizer._hyperparameters,
        "lr": real,
        "rho": real,
        "eps": real,
        "weight_decay": real,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": STEP,
        "square_avg": LIKE_PARAM,
        "acc_delta": LIKE_PARAM,
    }

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        check_nonnegative(lr=settings["lr"])
        rho = settings["rho"]
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        check_nonnegative(eps=settings["eps"], weight_decay=settings["weight_decay"])

    _group_flags: ClassVar[dict[str, Any]] = {
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "capturable": False,
    }

    @staticmethod
    def _new_state(group: dict[str, Any], p: Parameter, state: dict[str, Any]) -> None:
        state["square_avg"] = _zeros_like(p)
        state["acc_delta"] = _zeros_like(p)

    def _step_group(self, group: dict[str, Any]) -> None:
        params, grads, states = self._init_group(group, self._new_state, "Adadelta")
        adadelta(
            params,
            grads,
            [s["square_avg"] for s in states],
            [s["acc_delta"] for s in states],
            [s["step"] for s in states],
            lr=group["lr"],
            rho=group["rho"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
            foreach=group["foreach"],
            fused=group.get("fused"),
        )


Adadelta.__doc__ = rf"""Implements the Adadelta algorithm.

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \gamma \text{{ (lr)}}, \: \theta_0 \text{{ (params)}},
                \: f(\theta) \text{{ (objective)}}, \: \rho \text{{ (decay)}},
                \: \lambda \text{{ (weight decay)}}, \: \epsilon \text{{ (eps)}},
                \: \textit{{maximize}} \\
            &\textbf{{initialize}}: v_0 \leftarrow 0 \text{{ (square avg)}},
                \: u_0 \leftarrow 0 \text{{ (accumulated updates)}} \\
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_t \leftarrow \nabla_{{\theta}} f_t (\theta_{{t-1}})
                \quad (-\nabla_{{\theta}} f_t (\theta_{{t-1}}) \text{{ if maximize}}) \\
            &\quad \textbf{{if}} \: \lambda \neq 0: \:
                g_t \leftarrow g_t + \lambda \theta_{{t-1}} \\
            &\quad v_t \leftarrow \rho v_{{t-1}} + (1 - \rho) g_t^2 \\
            &\quad \Delta x_t \leftarrow \frac{{\sqrt{{u_{{t-1}} + \epsilon}}}}
                {{\sqrt{{v_t + \epsilon}}}} g_t \\
            &\quad u_t \leftarrow \rho u_{{t-1}} + (1 - \rho) \Delta x_t^2 \\
            &\quad \theta_t \leftarrow \theta_{{t-1}} - \gamma \Delta x_t \\
            &\textbf{{return}} \: \theta_t
       \end{{aligned}}

    From Zeiler, "ADADELTA: An Adaptive Learning Rate Method" (2012,
    https://arxiv.org/abs/1212.5701). The paper has no learning rate; ``lr`` scales the
    update :math:`\Delta x_t` (1.0 gives the paper's method). Complex parameters are updated
    as pairs of reals.

    Args:
        {_params_doc}
        lr (float, optional): coefficient that scales delta before it is applied to the
            parameters (default: 1.0)
        rho (float, optional): coefficient used for computing a running average of squared
            gradients (default: 0.9). A higher value of ``rho`` gives a slower average, which
            can help against oscillations.
        eps (float, optional): term added to the denominator to improve numerical stability
            (default: 1e-6)
        weight_decay (float, optional): weight decay (L2 penalty) (default: 0)
        {_foreach_doc}
        {_fused_doc}
        capturable (bool, optional): accepted for compatibility; has no effect (default: False)
        {_maximize_doc}
        {_differentiable_doc}

    State (``optimizer.state[p]``): ``step`` (a float), ``square_avg`` (:math:`v_t`) and
    ``acc_delta`` (:math:`u_t`).

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, Adadelta
        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> opt = Adadelta([w], lr=0.5, rho=0.0, eps=1.0)
        >>> w.grad = np.array([0.75, 0.0])
        >>> opt.step()
        >>> w
        Parameter([ 0.7, -2. ])
    """


def adadelta(
    params: list[Parameter],
    grads: list[Array],
    square_avgs: list[Array],
    acc_deltas: list[Array],
    state_steps: list[float],
    *,
    lr: float,
    rho: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Functional Adadelta: updates ``params`` and their state arrays in place.

    ``state_steps`` is accepted for torch's signature; Adadelta does not depend on the step
    number. See :class:`Adadelta` for the math.
    ``foreach`` and ``fused`` pick the implementation; with neither, the compiled kernels run
    where numba is installed and the multi-tensor path elsewhere, all bit-identical to the
    for-loop (see :mod:`npoptim._kernels`).
    """
    elementwise(
        ALGORITHM, [params, grads, square_avgs, acc_deltas], {},
        foreach=foreach, fused=fused, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
        maximize=maximize,
    )  # fmt: skip


def _adadelta_piece(
    p: Array,
    g: Array,
    v: Array,
    u: Array,
    *,
    lr: float,
    rho: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """One Adadelta update of a piece of a parameter, its square average ``v`` and its
    accumulated squared updates ``u``."""
    g_t, tmp, delta = temporaries(p, 3)
    g = gradient(p, g, g_t, tmp, maximize=maximize, weight_decay=weight_decay)
    average_of_squares(v, g, rho, tmp)  # v_t = ρ v_{t-1} + (1 - ρ) g_t²
    np.add(v, eps, out=tmp)
    np.sqrt(tmp, out=tmp)  # sqrt(v_t + ε)
    np.add(u, eps, out=delta)
    np.sqrt(delta, out=delta)  # sqrt(u_{t-1} + ε)
    delta /= tmp
    delta *= g  # Δx_t
    u *= rho
    np.multiply(delta, delta, out=tmp)
    tmp *= 1 - rho
    u += tmp  # u_t = ρ u_{t-1} + (1 - ρ) Δx_t²
    delta *= lr
    p -= delta  # θ_t = θ_{t-1} - γ Δx_t


def _adadelta_element(p: Any, g: Any, v: Any, u: Any, scalar: Any, flag: Any) -> Any:
    """:func:`_adadelta_piece` for one element (compiled by the fused path)."""
    g = gradient_of(p, g, scalar, flag)
    v = v * scalar.rho + (g * g) * scalar.one_minus_rho  # v_t = ρ v_{t-1} + (1 - ρ) g_t²
    # Δx_t = sqrt(u_{t-1} + ε) / sqrt(v_t + ε) g_t
    delta = np.sqrt(u + scalar.eps) / np.sqrt(v + scalar.eps) * g
    u = u * scalar.rho + (delta * delta) * scalar.one_minus_rho  # u_t = ρ u_{t-1} + (1 - ρ) Δx_t²
    return p - delta * scalar.lr, v, u  # θ_t = θ_{t-1} - γ Δx_t


ALGORITHM = Algorithm(
    name="adadelta",
    roles=("param", "grad", "square_avg", "acc_delta"),
    piece=_adadelta_piece,
    element=_adadelta_element,
    scalars=lambda shared, per_param: {
        "lr": shared["lr"], "rho": shared["rho"], "one_minus_rho": 1 - shared["rho"],
        "eps": shared["eps"], "weight_decay": shared["weight_decay"],
    },
    flags=lambda shared, present: decay_flags(shared),
)  # fmt: skip
