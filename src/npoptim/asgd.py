r"""Averaged stochastic gradient descent, with weight decay and maximize."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._docs import _differentiable_doc, _foreach_doc, _fused_doc, _maximize_doc, _params_doc
from ._kernels import elementwise
from ._kernels.element import decay_flags
from ._kernels.element import gradient as gradient_of
from ._kernels.loop import Array, gradient, temporaries
from ._kernels.registry import Algorithm
from ._validation import LIKE_PARAM, STEP, StateKey, TypeCheck, check_nonnegative, real
from .optimizer import Optimizer, ParamsT, _zeros_like
from .parameter import Parameter

__all__ = ["ASGD", "asgd"]


def _float32(x: float) -> float:
    """``x`` rounded to the nearest float32, as torch stores ASGD's ``eta`` and ``mu``."""
    return float(np.float32(x))


class ASGD(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        lambd: float = 1e-4,
        alpha: float = 0.75,
        t0: float = 1e6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "lambd": lambd,
            "alpha": alpha,
            "t0": t0,
            "weight_decay": weight_decay,
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
        "lambd": real,
        "alpha": real,
        "t0": real,
        "weight_decay": real,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": STEP,
        "eta": StateKey("scalar"),
        "mu": StateKey("scalar"),
        "ax": LIKE_PARAM,
    }

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        check_nonnegative(lr=settings["lr"], weight_decay=settings["weight_decay"])

    _group_flags: ClassVar[dict[str, Any]] = {
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "capturable": False,
    }

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for p in group["params"]:
                p_state = self.state.get(p, {})
                for key in ("eta", "mu"):  # float32 values kept as Python floats
                    if key in p_state:
                        p_state[key] = float(p_state[key])

    @staticmethod
    def _new_state(group: dict[str, Any], p: Parameter, state: dict[str, Any]) -> None:
        state["eta"] = _float32(group["lr"])
        state["mu"] = 1.0
        state["ax"] = _zeros_like(p)

    def _step_group(self, group: dict[str, Any]) -> None:
        params, grads, states = self._init_group(group, self._new_state, "ASGD")
        etas = [s["eta"] for s in states]
        mus = [s["mu"] for s in states]
        asgd(
            params,
            grads,
            [s["ax"] for s in states],
            mus,
            etas,
            [s["step"] for s in states],
            lambd=group["lambd"],
            lr=group["lr"],
            t0=group["t0"],
            alpha=group["alpha"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
            foreach=group["foreach"],
            fused=group.get("fused"),
        )
        for state, eta, mu in zip(states, etas, mus, strict=True):
            state["eta"], state["mu"] = eta, mu


ASGD.__doc__ = rf"""Implements averaged stochastic gradient descent.

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \gamma \text{{ (lr)}}, \: \theta_0 \text{{ (params)}},
                \: f(\theta) \text{{ (objective)}}, \: \lambda \text{{ (lambd)}},
                \: \alpha \text{{ (alpha)}}, \: t_0 \text{{ (t0)}},
                \: \delta \text{{ (weight decay)}}, \: \textit{{maximize}} \\
            &\textbf{{initialize}}: \eta_0 \leftarrow \gamma, \: \mu_0 \leftarrow 1,
                \: \bar{{\theta}}_0 \leftarrow 0 \text{{ (ax)}} \\
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_t \leftarrow \nabla_{{\theta}} f_t (\theta_{{t-1}})
                \quad (-\nabla_{{\theta}} f_t (\theta_{{t-1}}) \text{{ if maximize}}) \\
            &\quad \textbf{{if}} \: \delta \neq 0: \: g_t \leftarrow g_t + \delta \theta_{{t-1}} \\
            &\quad \theta_t \leftarrow (1 - \lambda \eta_{{t-1}}) \theta_{{t-1}}
                - \eta_{{t-1}} g_t \\
            &\quad \textbf{{if}} \: \mu_{{t-1}} \neq 1: \: \bar{{\theta}}_t \leftarrow
                \bar{{\theta}}_{{t-1}} + \mu_{{t-1}} (\theta_t - \bar{{\theta}}_{{t-1}}) \\
            &\quad \textbf{{else}}: \: \bar{{\theta}}_t \leftarrow \theta_t \\
            &\quad \eta_t \leftarrow \gamma / (1 + \lambda \gamma t)^{{\alpha}} \\
            &\quad \mu_t \leftarrow 1 / \max(1, t - t_0) \\
            &\textbf{{return}} \: \theta_t, \: \bar{{\theta}}_t
       \end{{aligned}}

    From Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging" (SIAM J.
    Control Optim. 30(4), 1992); the step-size schedule is Bottou's ("Stochastic Gradient
    Descent Tricks", 2012). The parameters follow plain SGD with a decaying step
    :math:`\eta_t`; the average of the iterates since step :math:`t_0`,
    :math:`\bar{{\theta}}_t`, is kept in the state as ``ax`` and is what one evaluates.
    Complex parameters are updated as pairs of reals.

    .. warning::
        torch keeps :math:`\eta_t` and :math:`\mu_t` in float32 scalars whatever the
        parameter's dtype. npoptim rounds them to float32 the same way (they are Python floats
        holding float32 values), so that float64 results agree with torch to rounding; the
        float32 rounding of :math:`\eta` changes float64 trajectories by about 1e-8 relative
        otherwise.

    Args:
        {_params_doc}
        lr (float, optional): learning rate (default: 1e-2)
        lambd (float, optional): decay term (default: 1e-4)
        alpha (float, optional): power for the eta update (default: 0.75)
        t0 (float, optional): point at which to start averaging (default: 1e6)
        weight_decay (float, optional): weight decay (L2 penalty) (default: 0)
        {_foreach_doc}
        {_fused_doc}
        {_maximize_doc}
        {_differentiable_doc}
        capturable (bool, optional): accepted for compatibility; has no effect (default: False)

    State (``optimizer.state[p]``): ``step`` (a float), ``eta`` (:math:`\eta_t`, a float),
    ``mu`` (:math:`\mu_t`, a float) and ``ax`` (:math:`\bar{{\theta}}_t`).

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, ASGD
        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> opt = ASGD([w], lr=0.125, lambd=0.0)
        >>> w.grad = 2 * w.view(np.ndarray)
        >>> opt.step()
        >>> w
        Parameter([ 0.75, -1.5 ])
        >>> opt.state[w]["ax"]
        array([ 0.75, -1.5 ])
    """


def asgd(
    params: list[Parameter],
    grads: list[Array],
    axs: list[Array],
    mus: list[float],
    etas: list[float],
    state_steps: list[float],
    *,
    lambd: float,
    lr: float,
    t0: float,
    alpha: float,
    weight_decay: float,
    maximize: bool,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Functional ASGD: updates ``params`` and their averages ``axs`` in place.

    ``etas[i]`` and ``mus[i]`` are :math:`\\eta_{t-1}` and :math:`\\mu_{t-1}` of ``params[i]``
    and ``state_steps[i]`` is the step number :math:`t` of this update; the new
    :math:`\\eta_t` and :math:`\\mu_t` (rounded to float32, as torch stores them) are written
    back into ``etas`` and ``mus``. See :class:`ASGD` for the math.
    ``foreach`` and ``fused`` pick the implementation; with neither, the compiled kernels run
    where numba is installed and the multi-tensor path elsewhere, all bit-identical to the
    for-loop (see :mod:`npoptim._kernels`).
    """
    elementwise(
        ALGORITHM, [params, grads, axs], {"eta": etas, "mu": mus},
        foreach=foreach, fused=fused, lambd=lambd, weight_decay=weight_decay, maximize=maximize,
    )  # fmt: skip
    for i, t in enumerate(state_steps):
        etas[i] = _float32(lr / (1 + lambd * lr * t) ** alpha)  # η_t = γ / (1 + λγt)^α
        mus[i] = _float32(1 / max(1, t - t0))  # μ_t = 1 / max(1, t - t0)


def _asgd_piece(
    p: Array,
    g: Array,
    ax: Array,
    *,
    eta: float,
    mu: float,
    lambd: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """One ASGD update of a piece of a parameter and its average ``ax``."""
    g_t, tmp = temporaries(p, 2)
    g = gradient(p, g, g_t, tmp, maximize=maximize, weight_decay=weight_decay)
    p *= 1 - lambd * eta
    np.multiply(g, eta, out=tmp)
    p -= tmp  # θ_t = (1 - λη) θ_{t-1} - η g_t
    if mu != 1:
        np.subtract(p, ax, out=tmp)
        tmp *= mu
        ax += tmp  # θ̄_t = θ̄_{t-1} + μ (θ_t - θ̄_{t-1})
    else:
        np.copyto(ax, p)  # θ̄_t = θ_t


def _asgd_element(p: Any, g: Any, ax: Any, scalar: Any, flag: Any) -> Any:
    """:func:`_asgd_piece` for one element (compiled by the fused path)."""
    g = gradient_of(p, g, scalar, flag)
    p = p * scalar.shrink - g * scalar.eta  # θ_t = (1 - λη) θ_{t-1} - η g_t
    if scalar.averaging:
        return p, ax + (p - ax) * scalar.mu  # θ̄_t = θ̄_{t-1} + μ (θ_t - θ̄_{t-1})
    return p, p  # θ̄_t = θ_t


ALGORITHM = Algorithm(
    name="asgd",
    roles=("param", "grad", "ax"),
    piece=_asgd_piece,
    element=_asgd_element,
    scalars=lambda shared, per_param: {
        "weight_decay": shared["weight_decay"],
        "shrink": [1 - shared["lambd"] * eta for eta in per_param["eta"]],  # 1 - λη
        "eta": per_param["eta"],
        "mu": per_param["mu"],
        "averaging": [mu != 1 for mu in per_param["mu"]],
    },
    flags=lambda shared, present: decay_flags(shared),
)
