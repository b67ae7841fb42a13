r"""Adamax: Adam with the infinity norm, with weight decay and maximize."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._docs import _differentiable_doc, _foreach_doc, _fused_doc, _maximize_doc, _params_doc
from ._kernels import elementwise
from ._kernels.element import decay_flags, maximum
from ._kernels.element import gradient as gradient_of
from ._kernels.loop import Array, gradient, temporaries
from ._kernels.registry import Algorithm
from ._validation import (
    LIKE_PARAM,
    STEP,
    StateKey,
    TypeCheck,
    check_adam_ranges,
    pair,
    real,
)
from .optimizer import Optimizer, ParamsT, _zeros_like
from .parameter import Parameter

__all__ = ["Adamax", "adamax"]


class Adamax(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
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
        "betas": pair(),
        "eps": real,
        "weight_decay": real,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": STEP,
        "exp_avg": LIKE_PARAM,
        "exp_inf": LIKE_PARAM,
    }

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        check_adam_ranges(settings)

    _group_flags: ClassVar[dict[str, Any]] = {
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "capturable": False,
    }

    @staticmethod
    def _new_state(group: dict[str, Any], p: Parameter, state: dict[str, Any]) -> None:
        state["exp_avg"] = _zeros_like(p)
        state["exp_inf"] = _zeros_like(p)

    def _step_group(self, group: dict[str, Any]) -> None:
        params, grads, states = self._init_group(group, self._new_state, "Adamax")
        beta1, beta2 = group["betas"]
        adamax(
            params,
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_inf"] for s in states],
            [s["step"] for s in states],
            eps=group["eps"],
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            maximize=group["maximize"],
            foreach=group["foreach"],
            fused=group.get("fused"),
        )


Adamax.__doc__ = rf"""Implements the Adamax algorithm (Adam based on the infinity norm).

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \gamma \text{{ (lr)}}, \: \beta_1, \beta_2 \text{{ (betas)}},
                \: \theta_0 \text{{ (params)}}, \: f(\theta) \text{{ (objective)}},
                \: \lambda \text{{ (weight decay)}}, \: \epsilon \text{{ (eps)}},
                \: \textit{{maximize}} \\
            &\textbf{{initialize}}: m_0 \leftarrow 0 \text{{ (first moment)}},
                \: u_0 \leftarrow 0 \text{{ (infinity norm)}} \\
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_t \leftarrow \nabla_{{\theta}} f_t (\theta_{{t-1}})
                \quad (-\nabla_{{\theta}} f_t (\theta_{{t-1}}) \text{{ if maximize}}) \\
            &\quad \textbf{{if}} \: \lambda \neq 0: \:
                g_t \leftarrow g_t + \lambda \theta_{{t-1}} \\
            &\quad m_t \leftarrow \beta_1 m_{{t-1}} + (1 - \beta_1) g_t \\
            &\quad u_t \leftarrow \max(\beta_2 u_{{t-1}}, |g_t| + \epsilon) \\
            &\quad \theta_t \leftarrow \theta_{{t-1}}
                - \frac{{\gamma m_t}}{{(1 - \beta_1^t) u_t}} \\
            &\textbf{{return}} \: \theta_t
       \end{{aligned}}

    From Kingma & Ba, "Adam: A Method for Stochastic Optimization" (ICLR 2015,
    https://arxiv.org/abs/1412.6980), section 7.1. As in torch, ``eps`` is added to
    :math:`|g_t|` inside the maximum (the paper has none), and complex parameters are updated
    as pairs of reals (the infinity norm is taken per real and imaginary part).

    Args:
        {_params_doc}
        lr (float, optional): learning rate (default: 2e-3)
        betas (Tuple[float, float], optional): coefficients used for computing running
            averages of gradient and its infinity norm (default: (0.9, 0.999))
        eps (float, optional): term added to the denominator to improve numerical stability
            (default: 1e-8)
        weight_decay (float, optional): weight decay (L2 penalty) (default: 0)
        {_foreach_doc}
        {_fused_doc}
        {_maximize_doc}
        {_differentiable_doc}
        capturable (bool, optional): accepted for compatibility; has no effect (default: False)

    State (``optimizer.state[p]``): ``step`` (a float), ``exp_avg`` (:math:`m_t`) and
    ``exp_inf`` (:math:`u_t`).

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, Adamax
        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> opt = Adamax([w], lr=0.1, eps=0.0)
        >>> w.grad = 2 * w.view(np.ndarray)
        >>> opt.step()
        >>> w
        Parameter([ 0.9, -1.9])
    """


def adamax(
    params: list[Parameter],
    grads: list[Array],
    exp_avgs: list[Array],
    exp_infs: list[Array],
    state_steps: list[float],
    *,
    eps: float,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    maximize: bool,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Functional Adamax: updates ``params`` and their moments in place.

    ``state_steps[i]`` is the step number :math:`t` of this update for ``params[i]``. See
    :class:`Adamax` for the math.
    ``foreach`` and ``fused`` pick the implementation; with neither, the compiled kernels run
    where numba is installed and the multi-tensor path elsewhere, all bit-identical to the
    for-loop (see :mod:`npoptim._kernels`).
    """
    elementwise(
        ALGORITHM, [params, grads, exp_avgs, exp_infs],
        {"clr": [lr / (1 - beta1**t) for t in state_steps]},  # γ / (1 - β1^t)
        foreach=foreach, fused=fused, eps=eps, beta1=beta1, beta2=beta2,
        weight_decay=weight_decay, maximize=maximize,
    )  # fmt: skip


def _adamax_piece(
    p: Array,
    g: Array,
    m: Array,
    u: Array,
    *,
    eps: float,
    beta1: float,
    beta2: float,
    clr: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """One Adamax update of a piece of a parameter, its first moment ``m`` and infinity
    norm ``u``."""
    g_t, tmp = temporaries(p, 2)
    g = gradient(p, g, g_t, tmp, maximize=maximize, weight_decay=weight_decay)
    np.subtract(g, m, out=tmp)
    tmp *= 1 - beta1
    m += tmp  # m_t = m_{t-1} + (1 - β1)(g_t - m_{t-1}) = β1 m_{t-1} + (1 - β1) g_t
    u *= beta2
    np.abs(g, out=tmp)
    tmp += eps
    np.maximum(u, tmp, out=u)  # u_t = max(β2 u_{t-1}, |g_t| + ε)
    np.divide(m, u, out=tmp)
    tmp *= clr
    p -= tmp  # θ_t = θ_{t-1} - γ m_t / ((1 - β1^t) u_t)


def _adamax_element(p: Any, g: Any, m: Any, u: Any, scalar: Any, flag: Any) -> Any:
    """:func:`_adamax_piece` for one element (compiled by the fused path)."""
    g = gradient_of(p, g, scalar, flag)
    m = m + (g - m) * scalar.one_minus_beta1  # m_t = β1 m_{t-1} + (1 - β1) g_t
    u = maximum(u * scalar.beta2, abs(g) + scalar.eps)  # u_t = max(β2 u_{t-1}, |g_t| + ε)
    return p - (m / u) * scalar.clr, m, u  # θ_t = θ_{t-1} - γ m_t / ((1 - β1^t) u_t)


ALGORITHM = Algorithm(
    name="adamax",
    roles=("param", "grad", "exp_avg", "exp_inf"),
    piece=_adamax_piece,
    element=_adamax_element,
    scalars=lambda shared, per_param: {
        "eps": shared["eps"], "one_minus_beta1": 1 - shared["beta1"], "beta2": shared["beta2"],
        "weight_decay": shared["weight_decay"], "clr": per_param["clr"],
    },
    flags=lambda shared, present: decay_flags(shared),
)  # fmt: skip
