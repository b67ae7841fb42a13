r"""NAdam: Adam with Nesterov momentum, with L2 or decoupled weight decay."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._docs import _differentiable_doc, _foreach_doc, _fused_doc, _maximize_doc, _params_doc
from ._kernels import elementwise
from ._kernels.element import decay_flags, decay_scalars, decayed, moment_scalars
from ._kernels.element import moments as moments_of
from ._kernels.loop import Array, gradient, moments, temporaries
from ._kernels.registry import Algorithm
from ._validation import (
    LIKE_PARAM,
    STEP,
    StateKey,
    TypeCheck,
    check_adam_ranges,
    check_nonnegative,
    flag,
    pair,
    real,
)
from .optimizer import Optimizer, ParamsT, _zeros_like
from .parameter import Parameter

__all__ = ["NAdam", "nadam"]


class NAdam(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
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
            "momentum_decay": momentum_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
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
        "momentum_decay": real,
        "decoupled_weight_decay": flag,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": STEP,
        "mu_product": StateKey("scalar"),
        "exp_avg": LIKE_PARAM,
        "exp_avg_sq": LIKE_PARAM,
    }

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        check_adam_ranges(settings)
        check_nonnegative(momentum_decay=settings["momentum_decay"])

    _group_flags: ClassVar[dict[str, Any]] = {
        "maximize": False,
        "foreach": None,
        "capturable": False,
        "differentiable": False,
        "decoupled_weight_decay": False,
    }

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for p in group["params"]:
                p_state = self.state.get(p, {})
                if "mu_product" in p_state:  # held at float32 precision, as torch does
                    p_state["mu_product"] = float(np.float32(p_state["mu_product"]))

    @staticmethod
    def _new_state(group: dict[str, Any], p: Parameter, state: dict[str, Any]) -> None:
        state["mu_product"] = 1.0
        state["exp_avg"] = _zeros_like(p)
        state["exp_avg_sq"] = _zeros_like(p)

    def _step_group(self, group: dict[str, Any]) -> None:
        params, grads, states = self._init_group(group, self._new_state, "NAdam")
        mu_products = [s["mu_product"] for s in states]
        beta1, beta2 = group["betas"]
        nadam(
            params,
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            mu_products,
            [s["step"] for s in states],
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            momentum_decay=group["momentum_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            foreach=group["foreach"],
            fused=group.get("fused"),
        )
        for state, mu_product in zip(states, mu_products, strict=True):
            state["mu_product"] = mu_product


NAdam.__doc__ = rf"""Implements the NAdam algorithm.

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \gamma \text{{ (lr)}}, \: \beta_1, \beta_2 \text{{ (betas)}},
                \: \theta_0 \text{{ (params)}}, \: f(\theta) \text{{ (objective)}},
                \: \lambda \text{{ (weight decay)}}, \: \psi \text{{ (momentum decay)}},
                \: \epsilon \text{{ (eps)}}, \: \textit{{decoupled}}, \: \textit{{maximize}} \\
            &\textbf{{initialize}}: m_0 \leftarrow 0, \: v_0 \leftarrow 0,
                \: \Pi_0 \leftarrow 1 \\
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_t \leftarrow \nabla_{{\theta}} f_t (\theta_{{t-1}})
                \quad (-\nabla_{{\theta}} f_t (\theta_{{t-1}}) \text{{ if maximize}}) \\
            &\quad \textbf{{if}} \: \lambda \neq 0: \\
            &\qquad \textbf{{if decoupled}}: \: \theta_{{t-1}} \leftarrow
                \theta_{{t-1}} - \gamma \lambda \theta_{{t-1}} \\
            &\qquad \textbf{{else}}: \: g_t \leftarrow g_t + \lambda \theta_{{t-1}} \\
            &\quad \mu_t \leftarrow \beta_1 \big(1 - \tfrac{{1}}{{2}} 0.96^{{t \psi}}\big), \:
                \mu_{{t+1}} \leftarrow \beta_1 \big(1 - \tfrac{{1}}{{2}} 0.96^{{(t+1) \psi}}\big) \\
            &\quad \Pi_t \leftarrow \Pi_{{t-1}} \mu_t \quad (= \textstyle\prod_{{i=1}}^t \mu_i) \\
            &\quad m_t \leftarrow \beta_1 m_{{t-1}} + (1 - \beta_1) g_t \\
            &\quad v_t \leftarrow \beta_2 v_{{t-1}} + (1 - \beta_2) g_t^2 \\
            &\quad \widehat{{m_t}} \leftarrow \mu_{{t+1}} m_t / (1 - \Pi_t \mu_{{t+1}})
                + (1 - \mu_t) g_t / (1 - \Pi_t) \\
            &\quad \widehat{{v_t}} \leftarrow v_t / (1 - \beta_2^t) \\
            &\quad \theta_t \leftarrow \theta_{{t-1}} - \gamma \widehat{{m_t}} /
                \big(\sqrt{{\widehat{{v_t}}}} + \epsilon \big) \\
            &\textbf{{return}} \: \theta_t
       \end{{aligned}}

    From Dozat, "Incorporating Nesterov Momentum into Adam" (ICLR 2016 workshop,
    https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ); the decoupled variant (NAdamW)
    follows Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (ICLR 2019).

    .. warning::
        As torch does, the product :math:`\Pi_t` (state ``mu_product``) is kept at float32
        precision: each step multiplies the float32 value by :math:`\mu_t` rounded to float32
        and rounds the product to float32. Computing it in float64 instead would move float64
        trajectories by about 1e-10 relative within 20 steps; keeping torch's rounding makes
        them agree with torch to the last bits.

    Args:
        {_params_doc}
        lr (float, optional): learning rate (default: 2e-3)
        betas (Tuple[float, float], optional): coefficients used for computing running
            averages of gradient and its square (default: (0.9, 0.999))
        eps (float, optional): term added to the denominator to improve numerical stability
            (default: 1e-8)
        weight_decay (float, optional): weight decay (L2 penalty) (default: 0)
        momentum_decay (float, optional): momentum decay :math:`\psi` (default: 4e-3)
        decoupled_weight_decay (bool, optional): whether to decouple the weight decay as in
            AdamW to obtain NAdamW. If True, the algorithm does not accumulate weight decay
            in the momentum nor variance. (default: False)
        {_foreach_doc}
        {_fused_doc}
        {_maximize_doc}
        capturable (bool, optional): accepted for compatibility; has no effect (default: False)
        {_differentiable_doc}

    State (``optimizer.state[p]``): ``step`` (a float), ``mu_product`` (:math:`\Pi_t`, a float
    holding a float32 value), ``exp_avg`` (:math:`m_t`) and ``exp_avg_sq`` (:math:`v_t`).

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, NAdam
        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> opt = NAdam([w], lr=0.1)
        >>> w.grad = 2 * w.view(np.ndarray)
        >>> opt.step()
        >>> w.round(4)
        array([ 0.8944, -1.8944])
    """


def nadam(
    params: list[Parameter],
    grads: list[Array],
    exp_avgs: list[Array],
    exp_avg_sqs: list[Array],
    mu_products: list[float],
    state_steps: list[float],
    *,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    momentum_decay: float,
    eps: float,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    r"""Functional NAdam: updates ``params`` and the moment arrays in place.

    ``state_steps[i]`` is the step number :math:`t` of this update for ``params[i]``;
    ``mu_products[i]`` is :math:`\Pi_{t-1}` on entry and is replaced by :math:`\Pi_t`
    (rounded to float32, as torch stores it). See :class:`NAdam` for the math.
    ``foreach`` and ``fused`` pick the implementation; with neither, the compiled kernels run
    where numba is installed and the multi-tensor path elsewhere, all bit-identical to the
    for-loop (see :mod:`npoptim._kernels`).
    """
    steps: dict[str, list[float]] = {"bias_correction2": [], "grad_step": [], "momentum_step": []}
    for i, t in enumerate(state_steps):
        mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        mu_product = float(np.float32(mu_products[i]) * np.float32(mu))  # torch's float32 Π_t
        mu_products[i] = mu_product
        steps["bias_correction2"].append(1 - beta2**t)
        steps["grad_step"].append(lr * (1.0 - mu) / (1.0 - mu_product))
        steps["momentum_step"].append(lr * mu_next / (1.0 - mu_product * mu_next))
    elementwise(
        ALGORITHM, [params, grads, exp_avgs, exp_avg_sqs], steps,
        foreach=foreach, fused=fused, beta1=beta1, beta2=beta2, lr=lr,
        weight_decay=weight_decay, eps=eps, maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay,
    )  # fmt: skip


def _nadam_piece(
    p: Array,
    g: Array,
    m: Array,
    v: Array,
    *,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
    decoupled_weight_decay: bool,
    bias_correction2: float,
    grad_step: float,
    momentum_step: float,
) -> None:
    """One NAdam update of a piece of a parameter and its moments."""
    g_t, denom, tmp = temporaries(p, 3)
    g = gradient(
        p, g, g_t, tmp, maximize=maximize, weight_decay=weight_decay,
        decoupled_lr=lr if decoupled_weight_decay else None,
    )  # fmt: skip
    moments(g, m, v, beta1, beta2, tmp)  # m_t and v_t
    np.divide(v, bias_correction2, out=denom)
    np.sqrt(denom, out=denom)
    denom += eps  # sqrt(v̂_t) + ε
    np.divide(g, denom, out=tmp)
    tmp *= grad_step
    p -= tmp  # the gradient's share: γ(1 - μ_t) g_t / (1 - Π_t)
    np.divide(m, denom, out=tmp)
    tmp *= momentum_step
    p -= tmp  # the momentum's share: γ μ_{t+1} m_t / (1 - Π_t μ_{t+1})


def _nadam_element(p: Any, g: Any, m: Any, v: Any, scalar: Any, flag: Any) -> Any:
    """:func:`_nadam_piece` for one element (compiled by the fused path)."""
    p, g = decayed(p, g, scalar, flag)
    m, v = moments_of(g, m, v, scalar)  # m_t and v_t
    denom = np.sqrt(v / scalar.bias_correction2) + scalar.eps  # sqrt(v̂_t) + ε
    p = p - (g / denom) * scalar.grad_step  # the gradient's share: γ(1 - μ_t) g_t / (1 - Π_t)
    # the momentum's share: γ μ_{t+1} m_t / (1 - Π_{t+1})
    return p - (m / denom) * scalar.momentum_step, m, v


ALGORITHM = Algorithm(
    name="nadam",
    roles=("param", "grad", "exp_avg", "exp_avg_sq"),
    piece=_nadam_piece,
    element=_nadam_element,
    scalars=lambda shared, per_param: {
        **decay_scalars(shared), **moment_scalars(shared), "eps": shared["eps"], **per_param,
    },
    flags=lambda shared, present: {
        **decay_flags(shared), "decoupled_weight_decay": shared["decoupled_weight_decay"],
    },
)  # fmt: skip
