r"""RMSprop, with the centered variant, momentum, weight decay and maximize."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._docs import _differentiable_doc, _foreach_doc, _fused_doc, _maximize_doc, _params_doc
from ._kernels import elementwise
from ._kernels.element import decay_flags
from ._kernels.element import gradient as gradient_of
from ._kernels.loop import Array, average_of_squares, gradient, temporaries
from ._kernels.registry import Algorithm
from ._validation import (
    LIKE_PARAM,
    STEP,
    StateKey,
    TypeCheck,
    check_nonnegative,
    flag,
    real,
    when,
)
from .optimizer import Optimizer, ParamsT, _zeros_like
from .parameter import Parameter

__all__ = ["RMSprop", "rmsprop"]


class RMSprop(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "capturable": capturable,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
        }
        if fused is not None:  # torch's class has no fused: its key only when used
            defaults["fused"] = fused
        super().__init__(params, defaults)

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        **Optimizer._hyperparameters,
        "lr": real,
        "alpha": real,
        "eps": real,
        "weight_decay": real,
        "momentum": real,
        "centered": flag,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": STEP,
        "square_avg": LIKE_PARAM,
        "momentum_buffer": StateKey(required=lambda group, p: group["momentum"] > 0),
        "grad_avg": StateKey(required=when("centered")),
    }

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        check_nonnegative(
            lr=settings["lr"],
            eps=settings["eps"],
            momentum=settings["momentum"],
            weight_decay=settings["weight_decay"],
            alpha=settings["alpha"],
        )

    _group_flags: ClassVar[dict[str, Any]] = {
        "momentum": 0,
        "centered": False,
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "capturable": False,
    }

    @staticmethod
    def _new_state(group: dict[str, Any], p: Parameter, state: dict[str, Any]) -> None:
        state["square_avg"] = _zeros_like(p)
        if group["momentum"] > 0:
            state["momentum_buffer"] = _zeros_like(p)
        if group["centered"]:
            state["grad_avg"] = _zeros_like(p)

    def _step_group(self, group: dict[str, Any]) -> None:
        params, grads, states = self._init_group(group, self._new_state, "RMSprop")
        rmsprop(
            params,
            grads,
            [s["square_avg"] for s in states],
            [s["grad_avg"] for s in states] if group["centered"] else [],
            [s["momentum_buffer"] for s in states] if group["momentum"] > 0 else [],
            [s["step"] for s in states],
            lr=group["lr"],
            alpha=group["alpha"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            centered=group["centered"],
            maximize=group["maximize"],
            foreach=group["foreach"],
            fused=group.get("fused"),
        )


RMSprop.__doc__ = rf"""Implements the RMSprop algorithm.

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \alpha \text{{ (alpha)}}, \: \gamma \text{{ (lr)}},
                \: \theta_0 \text{{ (params)}}, \: f(\theta) \text{{ (objective)}},
                \: \lambda \text{{ (weight decay)}}, \: \mu \text{{ (momentum)}},
                \: \textit{{centered}}, \: \epsilon \text{{ (eps)}}, \: \textit{{maximize}} \\
            &\textbf{{initialize}}: v_0 \leftarrow 0 \text{{ (square average)}},
                \: b_0 \leftarrow 0 \text{{ (buffer)}}, \: g^{{ave}}_0 \leftarrow 0 \\
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_t \leftarrow \nabla_{{\theta}} f_t (\theta_{{t-1}})
                \quad (-\nabla_{{\theta}} f_t (\theta_{{t-1}}) \text{{ if maximize}}) \\
            &\quad \textbf{{if}} \: \lambda \neq 0: \:
                g_t \leftarrow g_t + \lambda \theta_{{t-1}} \\
            &\quad v_t \leftarrow \alpha v_{{t-1}} + (1 - \alpha) g_t^2 \\
            &\quad \tilde{{v}}_t \leftarrow v_t \\
            &\quad \textbf{{if}} \: \textit{{centered}}: \:
                g^{{ave}}_t \leftarrow \alpha g^{{ave}}_{{t-1}} + (1 - \alpha) g_t, \:
                \tilde{{v}}_t \leftarrow \tilde{{v}}_t - \big(g^{{ave}}_t\big)^2 \\
            &\quad \textbf{{if}} \: \mu > 0: \:
                b_t \leftarrow \mu b_{{t-1}} + g_t / \big(\sqrt{{\tilde{{v}}_t}} + \epsilon\big),
                \: \theta_t \leftarrow \theta_{{t-1}} - \gamma b_t \\
            &\quad \textbf{{else}}: \: \theta_t \leftarrow \theta_{{t-1}}
                - \gamma g_t / \big(\sqrt{{\tilde{{v}}_t}} + \epsilon\big) \\
            &\textbf{{return}} \: \theta_t
       \end{{aligned}}

    From Hinton's lecture notes "Neural Networks for Machine Learning", lecture 6e
    (https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf); the centered
    variant from Graves, "Generating Sequences With Recurrent Neural Networks" (2013,
    https://arxiv.org/abs/1308.0850). As in torch, ``eps`` is added after the square root
    (TensorFlow adds it inside), and complex parameters are updated as pairs of reals.

    Args:
        {_params_doc}
        lr (float, optional): learning rate (default: 1e-2)
        alpha (float, optional): smoothing constant (default: 0.99)
        eps (float, optional): term added to the denominator to improve numerical stability
            (default: 1e-8)
        weight_decay (float, optional): weight decay (L2 penalty) (default: 0)
        momentum (float, optional): momentum factor (default: 0)
        centered (bool, optional): if ``True``, compute the centered RMSprop: the gradient is
            normalized by an estimate of its variance (default: False)
        capturable (bool, optional): accepted for compatibility; has no effect (default: False)
        {_foreach_doc}
        {_fused_doc}
        {_maximize_doc}
        {_differentiable_doc}

    State (``optimizer.state[p]``): ``step`` (a float), ``square_avg`` (:math:`v_t`), with
    momentum ``momentum_buffer`` (:math:`b_t`) and, when centered, ``grad_avg``
    (:math:`g^{{ave}}_t`).

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, RMSprop
        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> opt = RMSprop([w], lr=0.01, alpha=0.75, eps=0.0)
        >>> w.grad = 2 * w.view(np.ndarray)
        >>> opt.step()
        >>> w
        Parameter([ 0.98, -1.98])
    """


def rmsprop(
    params: list[Parameter],
    grads: list[Array],
    square_avgs: list[Array],
    grad_avgs: list[Array],
    momentum_buffer_list: list[Array],
    state_steps: list[float],
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Functional RMSprop: updates ``params`` and their state arrays in place.

    ``grad_avgs`` is used only when ``centered``, ``momentum_buffer_list`` only when
    ``momentum > 0`` (pass empty lists otherwise). ``state_steps`` is accepted for torch's
    signature; RMSprop does not depend on the step number. See :class:`RMSprop` for the math.
    ``foreach`` and ``fused`` pick the implementation; with neither, the compiled kernels run
    where numba is installed and the multi-tensor path elsewhere, all bit-identical to the
    for-loop (see :mod:`npoptim._kernels`).
    """
    elementwise(
        ALGORITHM,
        [
            params, grads, square_avgs, grad_avgs if centered else None,
            momentum_buffer_list if momentum > 0 else None,
        ],
        {},
        foreach=foreach, fused=fused, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
        momentum=momentum, maximize=maximize,
    )  # fmt: skip


def _rmsprop_piece(
    p: Array,
    g: Array,
    v: Array,
    g_ave: Array | None,
    b: Array | None,
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    maximize: bool,
) -> None:
    """One RMSprop update of a piece of a parameter, its square average ``v``, gradient
    average ``g_ave`` (centered) and momentum buffer ``b``."""
    g_t, tmp = temporaries(p, 2)
    g = gradient(p, g, g_t, tmp, maximize=maximize, weight_decay=weight_decay)
    average_of_squares(v, g, alpha, tmp)  # v_t = α v_{t-1} + (1 - α) g_t²
    if g_ave is not None:
        np.subtract(g, g_ave, out=tmp)
        tmp *= 1 - alpha
        g_ave += tmp  # g^ave_t = α g^ave_{t-1} + (1 - α) g_t
        np.multiply(g_ave, g_ave, out=tmp)
        np.subtract(v, tmp, out=tmp)  # ṽ_t = v_t - (g^ave_t)²
        np.sqrt(tmp, out=tmp)
    else:
        np.sqrt(v, out=tmp)
    tmp += eps
    np.divide(g, tmp, out=tmp)  # g_t / (sqrt(ṽ_t) + ε)
    if b is not None:
        b *= momentum
        b += tmp  # b_t = μ b_{t-1} + g_t / (sqrt(ṽ_t) + ε)
        np.multiply(b, lr, out=tmp)
    else:
        tmp *= lr
    p -= tmp  # θ_t = θ_{t-1} - γ (b_t or g_t / (sqrt(ṽ_t) + ε))


def _rmsprop_element(p: Any, g: Any, v: Any, g_ave: Any, b: Any, scalar: Any, flag: Any) -> Any:
    """:func:`_rmsprop_piece` for one element (compiled by the fused path)."""
    g = gradient_of(p, g, scalar, flag)
    v = v * scalar.alpha + (g * g) * scalar.one_minus_alpha  # v_t = α v_{t-1} + (1 - α) g_t²
    if flag.centered:
        # g^ave_t = α g^ave_{t-1} + (1 - α) g_t
        g_ave = g_ave + (g - g_ave) * scalar.one_minus_alpha
        avg = np.sqrt(v - g_ave * g_ave) + scalar.eps  # sqrt(v_t - (g^ave_t)²) + ε
    else:
        avg = np.sqrt(v) + scalar.eps
    if flag.momentum:
        b = b * scalar.momentum + g / avg  # b_t = μ b_{t-1} + g_t / (sqrt(ṽ_t) + ε)
        return p - b * scalar.lr, v, g_ave, b
    return p - (g / avg) * scalar.lr, v, g_ave, b


ALGORITHM = Algorithm(
    name="rmsprop",
    roles=("param", "grad", "square_avg", "grad_avg", "momentum_buffer"),
    optional=("grad_avg", "momentum_buffer"),
    piece=_rmsprop_piece,
    element=_rmsprop_element,
    scalars=lambda shared, per_param: {
        "lr": shared["lr"], "alpha": shared["alpha"], "one_minus_alpha": 1 - shared["alpha"],
        "eps": shared["eps"], "weight_decay": shared["weight_decay"],
        "momentum": shared["momentum"],
    },
    flags=lambda shared, present: {
        **decay_flags(shared), "centered": present["grad_avg"],
        "momentum": present["momentum_buffer"],
    },
)  # fmt: skip
