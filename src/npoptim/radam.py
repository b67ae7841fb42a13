r"""RAdam: Adam with a rectified adaptive learning rate, with L2 or decoupled weight decay."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ._docs import _differentiable_doc, _foreach_doc, _fused_doc, _maximize_doc, _params_doc
from ._kernels import elementwise
from ._kernels.element import decay_flags, decay_scalars, decayed, moment_scalars
from ._kernels.element import moments as moments_of
from ._kernels.loop import Array, gradient, moments, temporaries
from ._kernels.registry import Algorithm, Scalars
from ._validation import (
    LIKE_PARAM,
    STEP,
    StateKey,
    TypeCheck,
    check_adam_ranges,
    flag,
    pair,
    real,
)
from .optimizer import Optimizer, ParamsT, _zeros_like
from .parameter import Parameter

__all__ = ["RAdam", "radam"]


class RAdam(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "decoupled_weight_decay": decoupled_weight_decay,
            "differentiable": differentiable,
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
        "decoupled_weight_decay": flag,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": STEP,
        "exp_avg": LIKE_PARAM,
        "exp_avg_sq": LIKE_PARAM,
    }

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        check_adam_ranges(settings)

    _group_flags: ClassVar[dict[str, Any]] = {
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "decoupled_weight_decay": False,
        "capturable": False,
    }

    @staticmethod
    def _new_state(group: dict[str, Any], p: Parameter, state: dict[str, Any]) -> None:
        state["exp_avg"] = _zeros_like(p)
        state["exp_avg_sq"] = _zeros_like(p)

    def _step_group(self, group: dict[str, Any]) -> None:
        params, grads, states = self._init_group(group, self._new_state, "RAdam")
        beta1, beta2 = group["betas"]
        radam(
            params,
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["step"] for s in states],
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            foreach=group["foreach"],
            fused=group.get("fused"),
        )


RAdam.__doc__ = rf"""Implements the RAdam algorithm.

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \gamma \text{{ (lr)}}, \: \beta_1, \beta_2 \text{{ (betas)}},
                \: \theta_0 \text{{ (params)}}, \: f(\theta) \text{{ (objective)}},
                \: \lambda \text{{ (weight decay)}}, \: \epsilon \text{{ (eps)}},
                \: \textit{{decoupled}}, \: \textit{{maximize}} \\
            &\textbf{{initialize}}: m_0 \leftarrow 0, \: v_0 \leftarrow 0,
                \: \rho_{{\infty}} \leftarrow 2/(1-\beta_2) - 1 \\
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_t \leftarrow \nabla_{{\theta}} f_t (\theta_{{t-1}})
                \quad (-\nabla_{{\theta}} f_t (\theta_{{t-1}}) \text{{ if maximize}}) \\
            &\quad \textbf{{if}} \: \lambda \neq 0: \\
            &\qquad \textbf{{if decoupled}}: \: \theta_{{t-1}} \leftarrow
                \theta_{{t-1}} - \gamma \lambda \theta_{{t-1}} \\
            &\qquad \textbf{{else}}: \: g_t \leftarrow g_t + \lambda \theta_{{t-1}} \\
            &\quad m_t \leftarrow \beta_1 m_{{t-1}} + (1 - \beta_1) g_t \\
            &\quad v_t \leftarrow \beta_2 v_{{t-1}} + (1 - \beta_2) g_t^2 \\
            &\quad \widehat{{m_t}} \leftarrow m_t / (1 - \beta_1^t) \\
            &\quad \rho_t \leftarrow \rho_{{\infty}} - 2 t \beta_2^t / (1 - \beta_2^t) \\
            &\quad \textbf{{if}} \: \rho_t > 5: \\
            &\qquad l_t \leftarrow \sqrt{{1 - \beta_2^t}} / \big(\sqrt{{v_t}} + \epsilon\big) \\
            &\qquad r_t \leftarrow \sqrt{{\frac{{(\rho_t - 4)(\rho_t - 2)\rho_{{\infty}}}}
                {{(\rho_{{\infty}} - 4)(\rho_{{\infty}} - 2)\rho_t}}}} \\
            &\qquad \theta_t \leftarrow \theta_{{t-1}} - \gamma \widehat{{m_t}} r_t l_t \\
            &\quad \textbf{{else}}: \:
                \theta_t \leftarrow \theta_{{t-1}} - \gamma \widehat{{m_t}} \\
            &\textbf{{return}} \: \theta_t
       \end{{aligned}}

    From Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond" (ICLR 2020,
    https://arxiv.org/abs/1908.03265). While :math:`\rho_t \le 5` the variance of the adaptive
    rate is intractable and the step is plain momentum SGD. With ``decoupled_weight_decay`` the
    decay is AdamW's (Loshchilov & Hutter, 2019), as in the authors' implementation.

    Args:
        {_params_doc}
        lr (float, optional): learning rate (default: 1e-3)
        betas (Tuple[float, float], optional): coefficients used for computing running
            averages of gradient and its square (default: (0.9, 0.999))
        eps (float, optional): term added to the denominator to improve numerical stability
            (default: 1e-8)
        weight_decay (float, optional): weight decay (L2 penalty) (default: 0)
        decoupled_weight_decay (bool, optional): whether to decouple the weight decay as in
            AdamW to obtain RAdamW. If True, the algorithm does not accumulate weight decay
            in the momentum nor variance. (default: False)
        {_foreach_doc}
        {_fused_doc}
        {_maximize_doc}
        capturable (bool, optional): accepted for compatibility; has no effect (default: False)
        {_differentiable_doc}

    State (``optimizer.state[p]``): ``step`` (a float), ``exp_avg`` (:math:`m_t`) and
    ``exp_avg_sq`` (:math:`v_t`).

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, RAdam
        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> opt = RAdam([w], lr=0.1)
        >>> w.grad = 2 * w.view(np.ndarray)
        >>> opt.step()
        >>> w
        Parameter([ 0.8, -1.6])
    """


def radam(
    params: list[Parameter],
    grads: list[Array],
    exp_avgs: list[Array],
    exp_avg_sqs: list[Array],
    state_steps: list[float],
    *,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    eps: float,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Functional RAdam: updates ``params`` and the moment arrays in place.

    ``state_steps[i]`` is the step number :math:`t` of this update for ``params[i]``. See
    :class:`RAdam` for the math.
    ``foreach`` and ``fused`` pick the implementation; with neither, the compiled kernels run
    where numba is installed and the multi-tensor path elsewhere, all bit-identical to the
    for-loop (see :mod:`npoptim._kernels`).
    """
    rho_inf = 2 / (1 - beta2) - 1  # the longest approximated simple moving average
    steps: dict[str, list[Any]] = {"sgd_step": [], "adaptive": []}
    for t in state_steps:
        bias_correction1 = 1 - beta1**t
        bias_correction2 = 1 - beta2**t
        rho_t = rho_inf - 2 * t * (beta2**t) / bias_correction2
        if rho_t > 5.0:
            rect = (
                (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            ) ** 0.5
            adaptive: tuple[float, float] | None = (
                lr * rect * bias_correction2**0.5 / bias_correction1,
                eps,
            )
        else:
            adaptive = None
        steps["sgd_step"].append(lr / bias_correction1)
        steps["adaptive"].append(adaptive)
    elementwise(
        ALGORITHM, [params, grads, exp_avgs, exp_avg_sqs], steps,
        foreach=foreach, fused=fused, beta1=beta1, beta2=beta2, lr=lr,
        weight_decay=weight_decay, maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay,
    )  # fmt: skip


def _radam_piece(
    p: Array,
    g: Array,
    m: Array,
    v: Array,
    *,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    maximize: bool,
    decoupled_weight_decay: bool,
    sgd_step: float,
    adaptive: tuple[float, float] | None,
) -> None:
    """One RAdam update of a piece of a parameter and its moments. ``adaptive`` is
    ``(γ r_t sqrt(1 - β2^t) / (1 - β1^t), ε)`` when the rectified step applies, else None."""
    g_t, tmp = temporaries(p, 2)
    g = gradient(
        p, g, g_t, tmp, maximize=maximize, weight_decay=weight_decay,
        decoupled_lr=lr if decoupled_weight_decay else None,
    )  # fmt: skip
    moments(g, m, v, beta1, beta2, tmp)  # m_t and v_t
    if adaptive is None:
        np.multiply(m, sgd_step, out=tmp)
        p -= tmp  # θ_t = θ_{t-1} - γ m̂_t
        return
    step_size, eps = adaptive
    np.sqrt(v, out=tmp)
    tmp += eps
    np.divide(m, tmp, out=tmp)
    tmp *= step_size
    p -= tmp  # θ_t = θ_{t-1} - γ m̂_t r_t l_t


def _radam_element(p: Any, g: Any, m: Any, v: Any, scalar: Any, flag: Any) -> Any:
    """:func:`_radam_piece` for one element (compiled by the fused path)."""
    p, g = decayed(p, g, scalar, flag)
    m, v = moments_of(g, m, v, scalar)  # m_t and v_t
    if scalar.rectified:  # θ_t = θ_{t-1} - γ m̂_t r_t l_t
        return p - (m / (np.sqrt(v) + scalar.eps)) * scalar.step_size, m, v
    return p - m * scalar.sgd_step, m, v  # θ_t = θ_{t-1} - γ m̂_t


def _radam_scalars(shared: Mapping[str, Any], per_param: Mapping[str, Sequence[Any]]) -> Scalars:
    adaptive = per_param["adaptive"]  # (γ r_t sqrt(1 - β2^t) / (1 - β1^t), ε) or None
    return {
        **decay_scalars(shared), **moment_scalars(shared), "sgd_step": per_param["sgd_step"],
        "rectified": [a is not None for a in adaptive],
        "step_size": [0.0 if a is None else a[0] for a in adaptive],
        "eps": [0.0 if a is None else a[1] for a in adaptive],
    }  # fmt: skip


ALGORITHM = Algorithm(
    name="radam",
    roles=("param", "grad", "exp_avg", "exp_avg_sq"),
    piece=_radam_piece,
    element=_radam_element,
    scalars=_radam_scalars,
    flags=lambda shared, present: {
        **decay_flags(shared), "decoupled_weight_decay": shared["decoupled_weight_decay"],
    },
)  # fmt: skip
