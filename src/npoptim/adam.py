r"""Adam, with AMSGrad, L2 or decoupled weight decay, and maximize."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._docs import _differentiable_doc, _foreach_doc, _fused_doc, _maximize_doc, _params_doc
from ._kernels import elementwise
from ._kernels.element import decay_flags, decay_scalars, decayed, maximum, moment_scalars
from ._kernels.element import moments as moments_of
from ._kernels.loop import Array, gradient, moments, temporaries
from ._kernels.registry import Algorithm
from ._validation import (
    LIKE_PARAM,
    STEP,
    StateKey,
    TypeCheck,
    check_adam_ranges,
    flag,
    pair,
    real,
    when,
)
from .optimizer import Optimizer, ParamsT, _zeros_like
from .parameter import Parameter

__all__ = ["Adam", "adam"]


class Adam(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas) if isinstance(betas, list) else betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        **Optimizer._hyperparameters,
        "lr": real,
        "betas": pair(),
        "eps": real,
        "weight_decay": real,
        "amsgrad": flag,
        "decoupled_weight_decay": flag,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": STEP,
        "exp_avg": LIKE_PARAM,
        "exp_avg_sq": LIKE_PARAM,
        # needed with amsgrad; kept (unused) without, like torch's state after the flag is
        # turned off
        "max_exp_avg_sq": StateKey(required=when("amsgrad")),
    }

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        check_adam_ranges(settings)
        betas = settings["betas"]
        if not (isinstance(betas[0], float) and isinstance(betas[1], float)):
            raise ValueError("betas must be either both floats or both Tensors")

    _group_flags: ClassVar[dict[str, Any]] = {
        "amsgrad": False,
        "maximize": False,
        "foreach": None,
        "capturable": False,
        "differentiable": False,
        "decoupled_weight_decay": False,
        "fused": None,
    }

    @staticmethod
    def _new_state(group: dict[str, Any], p: Parameter, state: dict[str, Any]) -> None:
        state["exp_avg"] = _zeros_like(p)
        state["exp_avg_sq"] = _zeros_like(p)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = _zeros_like(p)

    def _step_group(self, group: dict[str, Any]) -> None:
        # torch names Adam in this message for AdamW too.
        params, grads, states = self._init_group(
            group, self._new_state, "Adam", sparse_hint=", please consider SparseAdam instead"
        )
        beta1, beta2 = group["betas"]
        adam(
            params,
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else [],
            [s["step"] for s in states],
            amsgrad=group["amsgrad"],
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            foreach=group["foreach"],
            fused=group["fused"],
        )


Adam.__doc__ = rf"""Implements the Adam algorithm.

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \gamma \text{{ (lr)}}, \: \beta_1, \beta_2 \text{{ (betas)}},
                \: \theta_0 \text{{ (params)}}, \: f(\theta) \text{{ (objective)}},
                \: \lambda \text{{ (weight decay)}}, \: \epsilon \text{{ (eps)}},
                \: \textit{{amsgrad}}, \: \textit{{maximize}}, \: \textit{{decoupled}} \\
            &\textbf{{initialize}}: m_0 \leftarrow 0, \: v_0 \leftarrow 0,
                \: v_0^{{max}} \leftarrow 0 \\
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
            &\quad \textbf{{if}} \: amsgrad: \: v_t^{{max}} \leftarrow \max(v_{{t-1}}^{{max}}, v_t),
                \: \widehat{{v_t}} \leftarrow v_t^{{max}} / (1 - \beta_2^t) \\
            &\quad \textbf{{else}}: \: \widehat{{v_t}} \leftarrow v_t / (1 - \beta_2^t) \\
            &\quad \theta_t \leftarrow \theta_{{t-1}} - \gamma \widehat{{m_t}} /
                \big(\sqrt{{\widehat{{v_t}}}} + \epsilon \big) \\
            &\textbf{{return}} \: \theta_t
       \end{{aligned}}

    From Kingma & Ba, "Adam: A Method for Stochastic Optimization" (ICLR 2015,
    https://arxiv.org/abs/1412.6980); AMSGrad from Reddi et al., "On the Convergence of Adam
    and Beyond" (ICLR 2018). As in torch, ``eps`` is added to :math:`\sqrt{{\widehat{{v_t}}}}`
    (after bias correction), and complex parameters are updated as pairs of reals.

    Args:
        {_params_doc}
        lr (float, optional): learning rate (default: 1e-3)
        betas (Tuple[float, float], optional): coefficients used for computing running
            averages of gradient and its square (default: (0.9, 0.999))
        eps (float, optional): term added to the denominator to improve numerical stability
            (default: 1e-8)
        weight_decay (float, optional): weight decay coefficient (default: 0)
        amsgrad (bool, optional): whether to use the AMSGrad variant (default: False)
        {_foreach_doc}
        {_maximize_doc}
        capturable (bool, optional): accepted for compatibility; has no effect (default: False)
        {_differentiable_doc}
        {_fused_doc}
        decoupled_weight_decay (bool, optional): if True, this optimizer is equivalent to
            AdamW and the algorithm will not accumulate weight decay in the momentum nor
            variance (default: False)

    State (``optimizer.state[p]``): ``step`` (a float), ``exp_avg`` (:math:`m_t`),
    ``exp_avg_sq`` (:math:`v_t`) and, with amsgrad, ``max_exp_avg_sq`` (:math:`v^{{max}}_t`).

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, Adam
        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> opt = Adam([w], lr=0.1)
        >>> w.grad = 2 * w.view(np.ndarray)
        >>> opt.step()
        >>> w
        Parameter([ 0.9, -1.9])
    """


def adam(
    params: list[Parameter],
    grads: list[Array],
    exp_avgs: list[Array],
    exp_avg_sqs: list[Array],
    max_exp_avg_sqs: list[Array],
    state_steps: list[float],
    *,
    amsgrad: bool,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
    decoupled_weight_decay: bool = False,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Functional Adam: updates ``params`` and the moment arrays in place.

    ``state_steps[i]`` is the step number :math:`t` of this update for ``params[i]`` (the
    optimizer counts steps; the kernel does not change them). See :class:`Adam` for the math.
    ``foreach`` and ``fused`` pick the implementation; with neither, the compiled kernels run
    where numba is installed and the multi-tensor path elsewhere, all bit-identical to the
    for-loop (see :mod:`npoptim._kernels`).
    """
    elementwise(
        ALGORITHM,
        [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else None],
        {
            "step_size": [lr / (1 - beta1**t) for t in state_steps],  # γ / (1 - β1^t)
            "bias_correction2_sqrt": [(1 - beta2**t) ** 0.5 for t in state_steps],
        },
        foreach=foreach, fused=fused, beta1=beta1, beta2=beta2, lr=lr,
        weight_decay=weight_decay, eps=eps, maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay,
    )  # fmt: skip


def _adam_piece(
    p: Array,
    g: Array,
    m: Array,
    v: Array,
    v_max: Array | None = None,
    *,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
    decoupled_weight_decay: bool,
    step_size: float,
    bias_correction2_sqrt: float,
) -> None:
    """One Adam update of a piece of a parameter and its moments."""
    g_t, tmp = temporaries(p, 2)
    g = gradient(
        p, g, g_t, tmp, maximize=maximize, weight_decay=weight_decay,
        decoupled_lr=lr if decoupled_weight_decay else None,
    )  # fmt: skip
    moments(g, m, v, beta1, beta2, tmp)  # m_t and v_t
    if v_max is not None:
        np.maximum(v_max, v, out=v_max)  # v_t^max = max(v_{t-1}^max, v_t)
        v = v_max
    np.sqrt(v, out=tmp)
    tmp /= bias_correction2_sqrt
    tmp += eps  # sqrt(v̂_t) + ε
    np.divide(m, tmp, out=tmp)
    tmp *= step_size
    p -= tmp  # θ_t = θ_{t-1} - γ m̂_t / (sqrt(v̂_t) + ε)


def _adam_element(p: Any, g: Any, m: Any, v: Any, v_max: Any, scalar: Any, flag: Any) -> Any:
    """:func:`_adam_piece` for one element (compiled by the fused path)."""
    p, g = decayed(p, g, scalar, flag)
    m, v = moments_of(g, m, v, scalar)  # m_t and v_t
    if flag.amsgrad:
        v_max = maximum(v_max, v)  # v_t^max = max(v_{t-1}^max, v_t)
    denom = np.sqrt(v_max if flag.amsgrad else v) / scalar.bias_correction2_sqrt + scalar.eps
    # θ_t = θ_{t-1} - γ m̂_t / (sqrt(v̂_t) + ε)
    return p - (m / denom) * scalar.step_size, m, v, v_max


ALGORITHM = Algorithm(
    name="adam",
    roles=("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    optional=("max_exp_avg_sq",),
    piece=_adam_piece,
    element=_adam_element,
    scalars=lambda shared, per_param: {
        **decay_scalars(shared), **moment_scalars(shared), "eps": shared["eps"], **per_param,
    },
    flags=lambda shared, present: {
        **decay_flags(shared), "decoupled_weight_decay": shared["decoupled_weight_decay"],
        "amsgrad": present["max_exp_avg_sq"],
    },
)  # fmt: skip
