r"""AdEMAMix: Adam with a second, slow momentum mixed in (beyond torch.optim)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from ._docs import _foreach_doc, _fused_doc, _maximize_doc, _params_doc
from ._kernels import elementwise
from ._kernels.element import decayed, moment_scalars
from ._kernels.element import moments as moments_of
from ._kernels.loop import Array, gradient, moments, temporaries
from ._kernels.registry import Algorithm
from ._validation import (
    LIKE_PARAM,
    StateKey,
    TypeCheck,
    check_nonnegative,
    flag,
    optional,
    real,
    triple,
)
from .optimizer import Optimizer, ParamsT, _dense_params_and_grads, _zeros_like
from .parameter import Parameter

__all__ = ["AdEMAMix", "ademamix"]


class AdEMAMix(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
        weight_decay: float = 0.0,
        weight_decouple: bool = False,
        fixed_decay: bool = False,
        alpha: float = 5.0,
        t_alpha_beta3: float | None = None,
        eps: float = 1e-8,
        maximize: bool = False,
        foreach: bool | None = None,
        *,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "weight_decay": weight_decay,
            "weight_decouple": weight_decouple,
            "fixed_decay": fixed_decay,
            "alpha": alpha,
            "t_alpha_beta3": t_alpha_beta3,
            "eps": eps,
            "maximize": maximize,
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        **Optimizer._hyperparameters,
        "lr": real,
        "betas": triple(),
        "weight_decay": real,
        "weight_decouple": flag,
        "fixed_decay": flag,
        "alpha": real,
        "t_alpha_beta3": optional(real),
        "eps": real,
        "step": real,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "exp_avg": LIKE_PARAM,
        "exp_avg_sq": LIKE_PARAM,
        "exp_avg_slow": LIKE_PARAM,
    }

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        check_nonnegative(lr=settings["lr"])
        betas = settings["betas"]
        for index, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {index}: {beta}")
        check_nonnegative(
            alpha=settings["alpha"], weight_decay=settings["weight_decay"], eps=settings["eps"]
        )
        if settings["t_alpha_beta3"] is not None:
            check_nonnegative(t_alpha_beta3=settings["t_alpha_beta3"])

    _group_flags: ClassVar[dict[str, Any]] = {"maximize": False, "foreach": None, "fused": None}

    def _step_group(self, group: dict[str, Any]) -> None:
        params, grads = _dense_params_and_grads(group, "AdEMAMix")
        states = [self.state[p] for p in params]
        for p, state in zip(params, states, strict=True):
            if len(state) == 0:
                state["exp_avg"] = _zeros_like(p)
                state["exp_avg_sq"] = _zeros_like(p)
                state["exp_avg_slow"] = _zeros_like(p)
        # one step count per group, as pytorch_optimizer keeps it
        group["step"] = group.get("step", 0) + 1
        beta1, beta2, beta3 = group["betas"]
        ademamix(
            params,
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["exp_avg_slow"] for s in states],
            step=group["step"],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            beta3=beta3,
            alpha=group["alpha"],
            t_alpha_beta3=group["t_alpha_beta3"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            weight_decouple=group["weight_decouple"],
            fixed_decay=group["fixed_decay"],
            maximize=group["maximize"],
            foreach=group["foreach"],
            fused=group["fused"],
        )


AdEMAMix.__doc__ = rf"""Implements AdEMAMix, beyond torch.optim.

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \eta \text{{ (lr)}}, \: \beta_1, \beta_2, \beta_3 \text{{ (betas)}},
                \: \alpha, \: T \text{{ (t\_alpha\_beta3)}}, \: \theta_0 \text{{ (params)}},
                \: \lambda \text{{ (weight decay)}}, \: \epsilon, \: \textit{{maximize}} \\
            &\textbf{{initialize}}: m^{{(1)}}_0, m^{{(2)}}_0, \nu_0 \leftarrow 0 \\
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_t \leftarrow \nabla_{{\theta}} f_t (\theta_{{t-1}})
                \quad (-\nabla_{{\theta}} f_t \text{{ if maximize}}) \\
            &\quad \textbf{{if}} \: \textit{{weight\_decouple}}: \:
                \theta_{{t-1}} \leftarrow \theta_{{t-1}}(1 - \eta\lambda)
                \quad (1 - \lambda \text{{ if fixed\_decay}}) \\
            &\quad \textbf{{else}}: \: g_t \leftarrow g_t + \lambda \theta_{{t-1}} \\
            &\quad \alpha_t \leftarrow \min(t\alpha / T, \alpha), \:
                \beta_{{3,t}} \leftarrow \min\Big(\exp\frac{{\ln\beta_1 \ln\beta_3}}
                {{(1 - t/T)\ln\beta_3 + (t/T)\ln\beta_1}}, \beta_3\Big)
                \quad (\alpha, \beta_3 \text{{ without }} T) \\
            &\quad m^{{(1)}}_t \leftarrow \beta_1 m^{{(1)}}_{{t-1}} + (1 - \beta_1) g_t, \:
                m^{{(2)}}_t \leftarrow \beta_{{3,t}} m^{{(2)}}_{{t-1}} + (1 - \beta_{{3,t}}) g_t \\
            &\quad \nu_t \leftarrow \beta_2 \nu_{{t-1}} + (1 - \beta_2) g_t^2 \\
            &\quad \theta_t \leftarrow \theta_{{t-1}} - \eta
                \frac{{m^{{(1)}}_t / (1 - \beta_1^t) + \alpha_t m^{{(2)}}_t}}
                {{\sqrt{{\nu_t}} / \sqrt{{1 - \beta_2^t}} + \epsilon}} \\
            &\textbf{{return}} \: \theta_t
       \end{{aligned}}

    From Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older"
    (2024, https://arxiv.org/abs/2409.03152), Algorithm 1 with the warm-up schedulers of its
    section 3. Arguments, defaults, state keys and behaviour are pytorch_optimizer's
    ``AdEMAMix`` (4.1), the oracle npoptim is tested against.

    .. warning::
        As pytorch_optimizer, and unlike the paper: the default weight decay is L2
        (``weight_decouple=False``, :math:`\lambda\theta` added to the gradient; the paper's
        decoupled form is ``weight_decouple=True``), and :math:`t` is counted per parameter
        group (a parameter that misses a grad still sees the bias corrections and schedules
        advance). pytorch_optimizer refuses complex parameters; npoptim updates them as pairs
        of reals, and never writes to a ``.grad`` (the oracle negates it in place to
        maximize). The oracle's undocumented ``cautious`` and ``stable_adamw`` group options
        are not provided.

    Args:
        {_params_doc}
        lr (float, optional): learning rate (default: 1e-3)
        betas (Tuple[float, float, float], optional): the decays of the fast momentum, the
            second moment and the slow momentum (default: (0.9, 0.999, 0.9999))
        weight_decay (float, optional): weight decay :math:`\lambda` (default: 0)
        weight_decouple (bool, optional): decoupled (AdamW's) weight decay instead of L2
            (default: False)
        fixed_decay (bool, optional): decoupled decay by :math:`\lambda` without the learning
            rate (default: False)
        alpha (float, optional): the weight :math:`\alpha` of the slow momentum (default: 5.0)
        t_alpha_beta3 (float, optional): the steps :math:`T` over which :math:`\alpha` and
            :math:`\beta_3` warm up; None: no warm-up (default: None)
        eps (float, optional): term added to the denominator (default: 1e-8)
        {_maximize_doc}
        {_foreach_doc}
        {_fused_doc}

    State (``optimizer.state[p]``): ``exp_avg`` (:math:`m^{{(1)}}_t`), ``exp_avg_sq``
    (:math:`\nu_t`), ``exp_avg_slow`` (:math:`m^{{(2)}}_t`); the group holds ``step``.

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, AdEMAMix
        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> opt = AdEMAMix([w], lr=0.1, alpha=0.0)  # without the slow momentum: Adam
        >>> w.grad = 2 * w.view(np.ndarray)
        >>> opt.step()
        >>> w
        Parameter([ 0.9, -1.9])
    """


def schedules(
    step: int, alpha: float, beta1: float, beta3: float, t_alpha_beta3: float | None
) -> tuple[float, float]:
    r"""The warm-up schedulers :math:`(\alpha_t, \beta_{3,t})` of the paper's section 3."""
    if t_alpha_beta3 is None:
        return alpha, beta3
    fraction = step / t_alpha_beta3
    log_beta1, log_beta3 = math.log(beta1), math.log(beta3)
    beta3_t = math.exp(
        log_beta1 * log_beta3 / ((1.0 - fraction) * log_beta3 + fraction * log_beta1)
    )
    return min(step * alpha / t_alpha_beta3, alpha), min(beta3_t, beta3)


def ademamix(
    params: list[Parameter],
    grads: list[Array],
    exp_avgs: list[Array],
    exp_avg_sqs: list[Array],
    exp_avg_slows: list[Array],
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    beta3: float,
    alpha: float,
    t_alpha_beta3: float | None,
    eps: float,
    weight_decay: float,
    weight_decouple: bool,
    fixed_decay: bool,
    maximize: bool,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Functional AdEMAMix: updates ``params`` and the three moment arrays in place.

    ``step`` is the group's step count (1, 2, ...). See :class:`AdEMAMix` for the math;
    ``foreach`` and ``fused`` pick the implementation, all bit-identical to the for-loop (see
    :mod:`npoptim._kernels`).
    """
    alpha_t, beta3_t = schedules(step, alpha, beta1, beta3, t_alpha_beta3)
    elementwise(
        ALGORITHM,
        [params, grads, exp_avgs, exp_avg_sqs, exp_avg_slows],
        {},
        foreach=foreach, fused=fused, lr=lr, beta1=beta1, beta2=beta2,
        one_minus_beta3=1.0 - beta3_t, alpha=alpha_t, eps=eps, weight_decay=weight_decay,
        decay_lr=(1.0 if fixed_decay else lr) if weight_decouple else None, maximize=maximize,
        bias_correction1=1.0 - beta1**step,
        bias_correction2_sqrt=math.sqrt(1.0 - beta2**step),
    )  # fmt: skip


def _ademamix_piece(
    p: Array,
    g: Array,
    m: Array,
    v: Array,
    m_slow: Array,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    one_minus_beta3: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    decay_lr: float | None,
    maximize: bool,
    bias_correction1: float,
    bias_correction2_sqrt: float,
) -> None:
    """One AdEMAMix update of a piece of a parameter and its moments."""
    g_t, tmp, u, slow = temporaries(p, 4)
    g = gradient(
        p, g, g_t, tmp, maximize=maximize, weight_decay=weight_decay, decoupled_lr=decay_lr
    )
    np.subtract(g, m_slow, out=tmp)
    tmp *= one_minus_beta3
    m_slow += tmp  # m2_t = β3_t m2_{t-1} + (1 - β3_t) g_t (a lerp)
    moments(g, m, v, beta1, beta2, tmp)  # m1_t and ν_t
    np.sqrt(v, out=tmp)
    tmp /= bias_correction2_sqrt
    tmp += eps  # √ν̂_t + ε
    np.divide(m, bias_correction1, out=u)
    np.multiply(m_slow, alpha, out=slow)
    u += slow  # m̂1_t + α_t m2_t
    np.divide(u, tmp, out=u)
    u *= lr
    p -= u


def _ademamix_element(p: Any, g: Any, m: Any, v: Any, m_slow: Any, scalar: Any, flag: Any) -> Any:
    """:func:`_ademamix_piece` for one element (compiled by the fused path)."""
    p, g = decayed(p, g, scalar, flag)
    m_slow = m_slow + (g - m_slow) * scalar.one_minus_beta3  # m2_t
    m, v = moments_of(g, m, v, scalar)  # m1_t and ν_t
    denom = np.sqrt(v) / scalar.bias_correction2_sqrt + scalar.eps
    update = m / scalar.bias_correction1 + m_slow * scalar.alpha
    return p - (update / denom) * scalar.lr, m, v, m_slow


def _ademamix_scalars(shared: Any, per_param: Any) -> dict[str, float]:
    decay_lr = shared["decay_lr"]
    return {
        **moment_scalars(shared),
        "weight_decay": shared["weight_decay"],
        # as loop.gradient computes it
        "decay_factor": 1.0 if decay_lr is None else 1 - decay_lr * shared["weight_decay"],
        **{key: shared[key] for key in (
            "lr", "one_minus_beta3", "alpha", "eps", "bias_correction1", "bias_correction2_sqrt",
        )},
    }  # fmt: skip


ALGORITHM = Algorithm(
    name="ademamix",
    roles=("param", "grad", "exp_avg", "exp_avg_sq", "exp_avg_slow"),
    piece=_ademamix_piece,
    element=_ademamix_element,
    scalars=_ademamix_scalars,
    flags=lambda shared, present: {
        "maximize": shared["maximize"], "decay": shared["weight_decay"] != 0,
        "decoupled_weight_decay": shared["decay_lr"] is not None,
    },
)  # fmt: skip
