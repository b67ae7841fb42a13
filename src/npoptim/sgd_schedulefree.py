r"""Schedule-Free SGD: no learning-rate schedule, an averaged evaluation point (beyond
torch.optim)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._docs import _foreach_doc, _fused_doc, _maximize_doc, _params_doc
from ._kernels import elementwise
from ._kernels.element import decay_flags, gradient
from ._kernels.loop import Array, temporaries
from ._kernels.loop import gradient as piece_gradient
from ._kernels.registry import Algorithm
from ._math import lerp_
from ._validation import LIKE_PARAM, StateKey, TypeCheck, check_nonnegative, real
from .optimizer import (
    ParamsT,
)
from .parameter import Parameter
from .schedulefree import ScheduleFree, averaging_defaults, averaging_numbers, lerp_to_z

__all__ = ["SGDScheduleFree", "sgd_schedulefree"]


class SGDScheduleFree(ScheduleFree):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            **averaging_defaults(warmup_steps, r, weight_lr_power),
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
            "fused": fused,
        }
        super().__init__(params, defaults)

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        **ScheduleFree._hyperparameters,
        "momentum": real,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {"z": LIKE_PARAM}

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        check_nonnegative(lr=settings["lr"], weight_decay=settings["weight_decay"])
        momentum = settings["momentum"]
        if not 0 < momentum < 1:  # eval() divides by it; at 1, y would never leave x
            raise ValueError(f"Momentum must be between 0 and 1 exclusive: {momentum}")
        check_nonnegative(warmup_steps=settings["warmup_steps"])

    @staticmethod
    def _interpolation(group: dict[str, Any]) -> float:
        return float(group["momentum"])

    def _update(
        self,
        group: dict[str, Any],
        params: list[Parameter],
        grads: list[Array],
        states: list[dict[str, Any]],
        lr: float,
        ckp1: float,
    ) -> None:
        sgd_schedulefree(
            params,
            grads,
            [s["z"] for s in states],
            lr=lr,
            momentum=group["momentum"],
            weight_decay=group["weight_decay"],
            ckp1=ckp1,
            maximize=group["maximize"],
            foreach=group["foreach"],
            fused=group["fused"],
        )


SGDScheduleFree.__doc__ = rf"""Implements Schedule-Free SGD, beyond torch.optim.

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \gamma \text{{ (lr)}}, \: \beta \text{{ (momentum)}},
                \: \lambda \text{{ (weight decay)}}, \: r, \: p \text{{
                (weight\_lr\_power)}}, \: \text{{warmup\_steps}} \\
            &\textbf{{initialize}}: z_1 = x_1 = y_1 = \theta_0 \\
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_t \leftarrow \nabla f(y_t) + \lambda y_t \\
            &\quad \gamma_t \leftarrow \gamma \min(1, t / \text{{warmup\_steps}}), \:
                w_t \leftarrow t^r (\max_{{i \le t}} \gamma_i)^p, \:
                c_{{t+1}} \leftarrow w_t / \textstyle\sum_{{i \le t}} w_i \\
            &\quad z_{{t+1}} \leftarrow z_t - \gamma_t g_t, \:
                x_{{t+1}} \leftarrow (1 - c_{{t+1}}) x_t + c_{{t+1}} z_{{t+1}} \\
            &\quad y_{{t+1}} \leftarrow (1 - \beta) z_{{t+1}} + \beta x_{{t+1}} \\
            &\textbf{{return}} \: x_t \text{{ (evaluation)}}, \: y_t \text{{ (training)}}
       \end{{aligned}}

    From Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less Scheduled"
    (NeurIPS 2024, https://arxiv.org/abs/2405.15682), Algorithm 1 with plain SGD steps on
    :math:`z`. The parameters hold :math:`y` in training and :math:`x` in evaluation: call
    :meth:`train` before training steps and :meth:`eval` before evaluating or saving the
    model, as with the authors' ``schedulefree`` (1.4), the oracle npoptim is tested against
    and whose arguments, defaults, group keys (``k``, ``train_mode``, ``weight_sum``,
    ``lr_max``, ``scheduled_lr``) and state (``z``) npoptim keeps, so that the mode and the
    averaging survive a state_dict. As the oracle, :math:`y` is updated in place,
    :math:`y_{{t+1}} = y_t + c_{{t+1}}(z_t - y_t) + \gamma_t(\beta(1 - c_{{t+1}}) - 1) g_t`,
    and the optimizer starts in evaluation mode (``step`` before ``train()`` is refused with
    the oracle's message). npoptim never writes to a ``.grad`` (the oracle adds the weight
    decay to it in place) and adds ``maximize`` (keyword only; the oracle has none).

    Args:
        {_params_doc}
        lr (float, optional): learning rate :math:`\gamma` (default: 1.0)
        momentum (float, optional): :math:`\beta`, the interpolation between the average and
            the iterate, in (0, 1) (default: 0.9)
        weight_decay (float, optional): weight decay :math:`\lambda` (L2, at :math:`y`)
            (default: 0)
        warmup_steps (int, optional): steps of linear learning-rate warm-up (default: 0)
        r (float, optional): the power :math:`r` of :math:`t` in the averaging weights
            (default: 0.0)
        weight_lr_power (float, optional): the power :math:`p` of the largest learning rate
            so far in the averaging weights (default: 2.0)
        {_foreach_doc}
        {_maximize_doc}
        {_fused_doc}

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, SGDScheduleFree
        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> opt = SGDScheduleFree([w], lr=0.1)
        >>> opt.train()
        >>> w.grad = 2 * w.view(np.ndarray)
        >>> opt.step()  # z = x = θ - 0.1 g (c = 1 at the first step), y = z
        >>> opt.eval()
        >>> np.round(w, 6)
        array([ 0.8, -1.6])
    """


def sgd_schedulefree(
    params: list[Parameter],
    grads: list[Array],
    zs: list[Array],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    ckp1: float,
    maximize: bool = False,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Functional Schedule-Free SGD: updates ``params`` (the :math:`y` iterates) and ``zs``
    in place. ``lr`` is the scheduled (warmed-up) :math:`\\gamma_t`, ``ckp1`` the averaging
    weight :math:`c_{t+1}`. See :class:`SGDScheduleFree` for the math; ``foreach`` and
    ``fused`` pick the implementation, all bit-identical to the for-loop (see
    :mod:`npoptim._kernels`)."""
    elementwise(
        ALGORITHM,
        [params, grads, zs],
        {},
        foreach=foreach, fused=fused, lr=lr, weight_decay=weight_decay, ckp1=ckp1,
        y_step=lr * (momentum * (1 - ckp1) - 1), maximize=maximize,
    )  # fmt: skip


def _sgd_schedulefree_piece(
    y: Array,
    g: Array,
    z: Array,
    *,
    lr: float,
    weight_decay: float,
    ckp1: float,
    y_step: float,
    maximize: bool,
) -> None:
    """One Schedule-Free SGD update of a piece of :math:`y` and :math:`z`."""
    g_t, tmp = temporaries(y, 2)
    g = piece_gradient(y, g, g_t, tmp, maximize=maximize, weight_decay=weight_decay)  # + λ y_t
    lerp_(y, z, ckp1, tmp)  # y ← y + c (z - y)
    np.multiply(g, y_step, out=tmp)
    y += tmp  # y_{t+1} = y + γ_t(β(1 - c) - 1) g_t
    np.multiply(g, lr, out=tmp)
    z -= tmp  # z_{t+1} = z_t - γ_t g_t


def _sgd_schedulefree_element(y: Any, g: Any, z: Any, scalar: Any, flag: Any) -> Any:
    """:func:`_sgd_schedulefree_piece` for one element (compiled by the fused path)."""
    g = gradient(y, g, scalar, flag)  # -g to maximize, + λ y_t
    y = lerp_to_z(y, z, scalar, flag)  # y ← y + c (z - y)
    return y + g * scalar.y_step, z - g * scalar.lr


ALGORITHM = Algorithm(
    name="sgd_schedulefree",
    roles=("param", "grad", "z"),
    piece=_sgd_schedulefree_piece,
    element=_sgd_schedulefree_element,
    scalars=lambda shared, per_param: {
        "lr": shared["lr"], "weight_decay": shared["weight_decay"], "y_step": shared["y_step"],
        **averaging_numbers(shared["ckp1"])[0],
    },
    flags=lambda shared, present: {**decay_flags(shared), **averaging_numbers(shared["ckp1"])[1]},
)  # fmt: skip
