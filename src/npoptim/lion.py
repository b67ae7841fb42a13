r"""Lion: the sign of an interpolated momentum (beyond torch.optim)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._docs import _foreach_doc, _fused_doc, _maximize_doc, _params_doc
from ._kernels import elementwise
from ._kernels.element import helper
from ._kernels.loop import Array, temporaries
from ._kernels.registry import Algorithm
from ._validation import (
    LIKE_PARAM,
    STEP,
    StateKey,
    TypeCheck,
    check_betas,
    check_nonnegative,
    flag,
    pair,
    real,
)
from .optimizer import Optimizer, ParamsT, _zeros_like
from .parameter import Parameter

__all__ = ["Lion", "lion"]


class Lion(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        use_triton: bool = False,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        # lion-pytorch divides a decoupled weight decay by the learning rate given here,
        # whatever a group's own lr or a scheduler makes of it later
        self._init_lr = lr
        defaults = {
            "lr": lr,
            "betas": betas,
            "weight_decay": weight_decay,
            "use_triton": use_triton,
            "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "fused": fused,
        }
        super().__init__(params, defaults)

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        **Optimizer._hyperparameters,
        "lr": real,
        "betas": pair(),
        "weight_decay": real,
        "use_triton": flag,
        "decoupled_weight_decay": flag,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {"step": STEP, "exp_avg": LIKE_PARAM}

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        if not settings["lr"] > 0.0:  # lion-pytorch asserts lr > 0 (decoupled decay divides by it)
            raise ValueError(f"Invalid learning rate: {settings['lr']}")
        check_betas(settings["betas"])
        check_nonnegative(weight_decay=settings["weight_decay"])

    _group_flags: ClassVar[dict[str, Any]] = {
        "use_triton": False,
        "decoupled_weight_decay": False,
        "maximize": False,
        "foreach": None,
        "fused": None,
    }

    @staticmethod
    def _new_state(group: dict[str, Any], p: Parameter, state: dict[str, Any]) -> None:
        state["exp_avg"] = _zeros_like(p)

    def _step_group(self, group: dict[str, Any]) -> None:
        params, grads, states = self._init_group(group, self._new_state, "Lion")
        weight_decay = group["weight_decay"]
        if group["decoupled_weight_decay"]:
            weight_decay = weight_decay / self._init_lr
        beta1, beta2 = group["betas"]
        lion(
            params,
            grads,
            [s["exp_avg"] for s in states],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=weight_decay,
            maximize=group["maximize"],
            foreach=group["foreach"],
            fused=group["fused"],
        )


Lion.__doc__ = rf"""Implements Lion (EvoLved Sign Momentum), beyond torch.optim.

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \eta \text{{ (lr)}}, \: \beta_1, \beta_2 \text{{ (betas)}},
                \: \theta_0 \text{{ (params)}}, \: f(\theta) \text{{ (objective)}},
                \: \lambda \text{{ (weight decay)}}, \: \textit{{maximize}} \\
            &\textbf{{initialize}}: m_0 \leftarrow 0 \text{{ (exp\_avg)}} \\
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_t \leftarrow \nabla_{{\theta}} f_t (\theta_{{t-1}})
                \quad (-\nabla_{{\theta}} f_t (\theta_{{t-1}}) \text{{ if maximize}}) \\
            &\quad \theta_t \leftarrow \theta_{{t-1}} (1 - \eta \lambda) \\
            &\quad c_t \leftarrow \beta_1 m_{{t-1}} + (1 - \beta_1) g_t \\
            &\quad \theta_t \leftarrow \theta_t - \eta \, \mathrm{{sign}}(c_t) \\
            &\quad m_t \leftarrow \beta_2 m_{{t-1}} + (1 - \beta_2) g_t \\
            &\textbf{{return}} \: \theta_t
       \end{{aligned}}

    From Chen et al., "Symbolic Discovery of Optimization Algorithms" (NeurIPS 2023,
    https://arxiv.org/abs/2302.06675), Algorithm 2. Arguments, defaults and state follow the
    authors' ``lion-pytorch`` (0.2.5), the oracle npoptim is tested against; the paper's form
    :math:`\theta_t = \theta_{{t-1}} - \eta(\mathrm{{sign}}(c_t) + \lambda\theta_{{t-1}})` is
    the same update. Lion's ``lr`` is typically 3-10x smaller than AdamW's and its
    ``weight_decay`` 3-10x larger.

    .. warning::
        With ``decoupled_weight_decay=True`` the decay per step is
        :math:`\eta \lambda / \eta_0`, with :math:`\eta_0` the ``lr`` given to the constructor
        (as lion-pytorch does), so it does not shrink with a scheduled learning rate.
        :math:`\eta_0` is not part of the state_dict: an optimizer built with the same
        arguments resumes exactly. A complex parameter is updated as a pair of reals (the
        sign of each part), where lion-pytorch's ``sgn`` gives :math:`c / |c|`.

    Args:
        {_params_doc}
        lr (float, optional): learning rate (default: 1e-4)
        betas (Tuple[float, float], optional): :math:`\beta_1`, the interpolation whose sign
            is the update, and :math:`\beta_2`, the momentum's decay (default: (0.9, 0.99))
        weight_decay (float, optional): decoupled weight decay :math:`\lambda` (default: 0)
        use_triton (bool, optional): accepted for compatibility with lion-pytorch (a GPU
            kernel there); has no effect (default: False)
        decoupled_weight_decay (bool, optional): divide ``weight_decay`` by the constructor's
            ``lr`` (see the warning) (default: False)
        {_maximize_doc}
        {_foreach_doc}
        {_fused_doc}

    State (``optimizer.state[p]``): ``step`` (a float; lion-pytorch keeps none) and
    ``exp_avg`` (:math:`m_t`).

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, Lion
        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> opt = Lion([w], lr=0.1)
        >>> w.grad = 2 * w.view(np.ndarray)
        >>> opt.step()
        >>> w
        Parameter([ 0.9, -1.9])
    """


def lion(
    params: list[Parameter],
    grads: list[Array],
    exp_avgs: list[Array],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    maximize: bool,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Functional Lion: updates ``params`` and ``exp_avgs`` in place. ``weight_decay`` is
    the λ of the update (already divided by the initial lr for lion-pytorch's decoupled
    form). See :class:`Lion` for the math; ``foreach`` and ``fused`` pick the
    implementation, all bit-identical to the for-loop (see :mod:`npoptim._kernels`)."""
    elementwise(
        ALGORITHM,
        [params, grads, exp_avgs],
        {},
        foreach=foreach, fused=fused, lr=lr, beta1=beta1, beta2=beta2,
        weight_decay=weight_decay, maximize=maximize,
    )  # fmt: skip


def _lion_piece(
    p: Array,
    g: Array,
    m: Array,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """One Lion update of a piece of a parameter and its momentum ``m``."""
    c, tmp = temporaries(p, 2)
    if weight_decay != 0:
        p *= 1 - lr * weight_decay  # θ ← θ(1 - ηλ)
    sign_of_g = -1 if maximize else 1  # maximize: -g, folded into its coefficients
    np.multiply(g, sign_of_g * (1 - beta1), out=tmp)
    np.multiply(m, beta1, out=c)
    c += tmp  # c_t = β1 m_{t-1} + (1 - β1) g_t
    np.sign(c, out=c)
    c *= lr
    p -= c  # θ_t = θ_t - η sign(c_t)
    np.multiply(g, sign_of_g * (1 - beta2), out=tmp)
    m *= beta2
    m += tmp  # m_t = β2 m_{t-1} + (1 - β2) g_t


@helper
def sign(x: Any) -> Any:
    """``np.sign`` of a number (NaN for NaN), as the same type."""
    if x > 0:
        return x * 0 + 1
    if x < 0:
        return x * 0 - 1
    return x - x  # +0 for ±0, NaN for NaN


def _lion_element(p: Any, g: Any, m: Any, scalar: Any, flag: Any) -> Any:
    """:func:`_lion_piece` for one element (compiled by the fused path)."""
    if flag.decay:
        p = p * scalar.decay_factor  # θ ← θ(1 - ηλ)
    c = m * scalar.beta1 + g * scalar.one_minus_beta1  # c_t (the sign of g folded in)
    p = p - sign(c) * scalar.lr
    return p, m * scalar.beta2 + g * scalar.one_minus_beta2  # m_t


def _lion_scalars(shared: Any, per_param: Any) -> dict[str, float]:
    # maximize flips the gradient's sign: folded into its coefficients, as the piece does
    sign_of_g = -1 if shared["maximize"] else 1
    return {
        "lr": shared["lr"],
        "decay_factor": 1 - shared["lr"] * shared["weight_decay"],
        "beta1": shared["beta1"],
        "one_minus_beta1": sign_of_g * (1 - shared["beta1"]),
        "beta2": shared["beta2"],
        "one_minus_beta2": sign_of_g * (1 - shared["beta2"]),
    }


ALGORITHM = Algorithm(
    name="lion",
    roles=("param", "grad", "exp_avg"),
    piece=_lion_piece,
    element=_lion_element,
    scalars=_lion_scalars,
    flags=lambda shared, present: {"decay": shared["weight_decay"] != 0},
)
