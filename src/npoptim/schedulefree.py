r"""Schedule-Free AdamW: no learning-rate schedule, an averaged evaluation point (beyond
torch.optim); and what every Schedule-Free optimizer shares (:class:`ScheduleFree`: the
train/eval switch, the warm-up and the averaging weights)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._docs import _foreach_doc, _fused_doc, _maximize_doc, _params_doc
from ._kernels import elementwise
from ._kernels.element import helper
from ._kernels.loop import Array, average_of_squares, gradient, temporaries
from ._kernels.registry import Algorithm
from ._math import lerp_
from ._validation import (
    LIKE_PARAM,
    StateKey,
    TypeCheck,
    check_betas,
    check_nonnegative,
    flag,
    pair,
    real,
)
from .optimizer import (
    Optimizer,
    ParamsT,
    _dense_params_and_grads,
)
from .parameter import Parameter

__all__ = ["AdamWScheduleFree", "ScheduleFree", "adamw_schedulefree"]

_NOT_TRAINING = (
    "Optimizer was not in train mode when step is called. Please insert .train() and .eval() "
    "calls on the optimizer. See documentation for details."
)


@helper
def lerp_to_z(y: Any, z: Any, scalar: Any, flag: Any) -> Any:
    """:func:`npoptim._math.lerp_` of one element, ``y + c (z - y)`` with ``c`` =
    ``scalar.ckp1``, in torch's lerp's second form when ``flag.lerp_from_end`` (see
    :func:`averaging_numbers`)."""
    if flag.lerp_from_end:
        return z - (z - y) * scalar.one_minus_ckp1
    return y + (z - y) * scalar.ckp1


def averaging_numbers(ckp1: float) -> tuple[dict[str, float], dict[str, bool]]:
    """The scalars and flags :func:`lerp_to_z` reads, for the averaging weight ``ckp1``."""
    return {"ckp1": ckp1, "one_minus_ckp1": 1 - ckp1}, {"lerp_from_end": ckp1 >= 0.5}


def averaging_defaults(warmup_steps: int, r: float, weight_lr_power: float) -> dict[str, Any]:
    """The group keys of the warm-up and the averaging, in the oracle's order, at their start
    (``k`` steps taken, evaluation mode, no weight yet)."""
    return {
        "r": r,
        "k": 0,
        "warmup_steps": warmup_steps,
        "train_mode": False,
        "weight_sum": 0.0,
        "lr_max": -1.0,
        "scheduled_lr": 0.0,
        "weight_lr_power": weight_lr_power,
    }


class ScheduleFree(Optimizer):
    r"""The bookkeeping every Schedule-Free optimizer shares (not an optimizer itself).

    The parameters hold :math:`y = (1 - \beta) z + \beta x` in train mode and :math:`x` in
    evaluation mode (:meth:`train`, :meth:`eval`; :math:`\beta` is :meth:`_interpolation`).
    Each step warms the learning rate up, :math:`\gamma_t = \gamma \min(1, t /
    \text{warmup\_steps})`, and weighs the new iterate in the average by
    :math:`c_{t+1} = w_t / \sum_{i \le t} w_i`, :math:`w_t = t^r (\max_{i \le t}
    \gamma_i)^p`; the group keys ``k``, ``train_mode``, ``weight_sum``, ``lr_max`` and
    ``scheduled_lr`` carry this between steps and through a state_dict. A subclass gives
    :meth:`_interpolation`, its extra state (:meth:`_new_state`) and its update
    (:meth:`_update`).
    """

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        **Optimizer._hyperparameters,
        "lr": real,
        "r": real,
        "k": real,
        "warmup_steps": real,
        "train_mode": flag,
        "weight_sum": real,
        "lr_max": real,
        "scheduled_lr": real,
        "weight_lr_power": real,
        "weight_decay": real,
    }
    _group_flags: ClassVar[dict[str, Any]] = {"foreach": None, "maximize": False, "fused": None}

    @staticmethod
    def _interpolation(group: dict[str, Any]) -> float:
        r""":math:`\beta` of :math:`y = (1 - \beta) z + \beta x`."""
        raise NotImplementedError

    @staticmethod
    def _new_state(state: dict[str, Any]) -> None:
        """Add the arrays of a parameter's first step beside ``z`` (nothing by default)."""

    def _update(
        self,
        group: dict[str, Any],
        params: list[Parameter],
        grads: list[Array],
        states: list[dict[str, Any]],
        lr: float,
        ckp1: float,
    ) -> None:
        r"""Run the kernel: the step :math:`t` = ``group["k"] + 1`` with the scheduled
        :math:`\gamma_t` (``lr``) and the averaging weight :math:`c_{t+1}` (``ckp1``)."""
        raise NotImplementedError

    def _switch(self, train: bool) -> None:
        for group in self.param_groups:
            if group["train_mode"] == train:
                continue
            beta = self._interpolation(group)
            # y = (1 - β) z + β x and back: a lerp toward z either way
            weight = 1 - beta if train else 1 - 1 / beta
            for p in group["params"]:
                z = self.state.get(p, {}).get("z")  # (a parameter yet to step has no z)
                if z is not None:
                    lerp_(p.view(np.ndarray), z, weight)
            group["train_mode"] = train

    def train(self) -> None:
        """Set the parameters to the training point :math:`y` (before steps)."""
        self._switch(True)

    def eval(self) -> None:
        """Set the parameters to the evaluation point :math:`x` (to evaluate or save)."""
        self._switch(False)

    def _step_group(self, group: dict[str, Any]) -> None:
        if not self.param_groups[0]["train_mode"]:
            raise RuntimeError(_NOT_TRAINING)
        params, grads = _dense_params_and_grads(group, type(self).__name__)
        k, warmup_steps = group["k"], group["warmup_steps"]
        lr = group["lr"] * ((k + 1) / warmup_steps if k < warmup_steps else 1.0)
        group["scheduled_lr"] = lr
        lr_max = group["lr_max"] = max(lr, group["lr_max"])
        weight = ((k + 1) ** group["r"]) * (lr_max ** group["weight_lr_power"])
        weight_sum = group["weight_sum"] = group["weight_sum"] + weight
        ckp1 = weight / weight_sum if weight_sum != 0 else 0.0
        states = [self.state[p] for p in params]
        for p, state in zip(params, states, strict=True):
            if "z" not in state:
                state["z"] = np.array(p, copy=True, order="K")
                self._new_state(state)
        self._update(group, params, grads, states, lr, ckp1)
        group["k"] = k + 1


class AdamWScheduleFree(ScheduleFree):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
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
            "betas": betas,
            "eps": eps,
            **averaging_defaults(warmup_steps, r, weight_lr_power),
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
            "fused": fused,
        }
        super().__init__(params, defaults)

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        **ScheduleFree._hyperparameters,
        "betas": pair(),
        "eps": real,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {"z": LIKE_PARAM, "exp_avg_sq": LIKE_PARAM}

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        check_nonnegative(lr=settings["lr"])
        check_betas(settings["betas"])
        check_nonnegative(
            eps=settings["eps"],
            weight_decay=settings["weight_decay"],
            warmup_steps=settings["warmup_steps"],
        )

    @staticmethod
    def _interpolation(group: dict[str, Any]) -> float:
        return float(group["betas"][0])

    @staticmethod
    def _new_state(state: dict[str, Any]) -> None:
        state["exp_avg_sq"] = np.zeros_like(state["z"])

    def _update(
        self,
        group: dict[str, Any],
        params: list[Parameter],
        grads: list[Array],
        states: list[dict[str, Any]],
        lr: float,
        ckp1: float,
    ) -> None:
        beta1, beta2 = group["betas"]
        adamw_schedulefree(
            params,
            grads,
            [s["z"] for s in states],
            [s["exp_avg_sq"] for s in states],
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            ckp1=ckp1,
            bias_correction2=1 - beta2 ** (group["k"] + 1),
            maximize=group["maximize"],
            foreach=group["foreach"],
            fused=group["fused"],
        )


AdamWScheduleFree.__doc__ = rf"""Implements Schedule-Free AdamW, beyond torch.optim.

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \gamma \text{{ (lr)}}, \: \beta_1, \beta_2 \text{{ (betas)}},
                \: \lambda \text{{ (weight decay)}}, \: \epsilon, \: r, \: p \text{{
                (weight\_lr\_power)}}, \: \text{{warmup\_steps}} \\
            &\textbf{{initialize}}: z_1 = x_1 = y_1 = \theta_0, \: v_0 \leftarrow 0 \\
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_t \leftarrow \nabla f(y_t), \:
                v_t \leftarrow \beta_2 v_{{t-1}} + (1 - \beta_2) g_t^2 \\
            &\quad \gamma_t \leftarrow \gamma \min(1, t / \text{{warmup\_steps}}), \:
                w_t \leftarrow t^r (\max_{{i \le t}} \gamma_i)^p, \:
                c_{{t+1}} \leftarrow w_t / \textstyle\sum_{{i \le t}} w_i \\
            &\quad \hat{{g}}_t \leftarrow g_t / \big(\sqrt{{v_t / (1 - \beta_2^t)}} + \epsilon\big)
                + \lambda y_t \\
            &\quad z_{{t+1}} \leftarrow z_t - \gamma_t \hat{{g}}_t, \:
                x_{{t+1}} \leftarrow (1 - c_{{t+1}}) x_t + c_{{t+1}} z_{{t+1}} \\
            &\quad y_{{t+1}} \leftarrow (1 - \beta_1) z_{{t+1}} + \beta_1 x_{{t+1}} \\
            &\textbf{{return}} \: x_t \text{{ (evaluation)}}, \: y_t \text{{ (training)}}
       \end{{aligned}}

    From Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less Scheduled"
    (NeurIPS 2024, https://arxiv.org/abs/2405.15682). The parameters hold :math:`y` in
    training and :math:`x` in evaluation: call :meth:`train` before training steps and
    :meth:`eval` before evaluating or saving the model, as with the authors' ``schedulefree``
    (1.4), the oracle npoptim is tested against and whose arguments, defaults, group keys
    (``k``, ``train_mode``, ``weight_sum``, ``lr_max``, ``scheduled_lr``) and state (``z``,
    ``exp_avg_sq``) npoptim keeps, so that the mode and the averaging survive a state_dict.
    As the oracle, :math:`y` is updated in place,
    :math:`y_{{t+1}} = y_t + c_{{t+1}}(z_t - y_t) + \gamma_t(\beta_1(1 - c_{{t+1}}) - 1)
    \hat{{g}}_t`, and the optimizer starts in evaluation mode (``step`` before ``train()`` is
    refused with the oracle's message). npoptim never writes to a ``.grad`` (the oracle
    divides it in place) and adds ``maximize`` (keyword only; the oracle has none).

    Args:
        {_params_doc}
        lr (float, optional): learning rate :math:`\gamma` (default: 0.0025)
        betas (Tuple[float, float], optional): :math:`\beta_1`, the interpolation between the
            average and the iterate, and :math:`\beta_2` (default: (0.9, 0.999))
        eps (float, optional): term added to the denominator (default: 1e-8)
        weight_decay (float, optional): weight decay :math:`\lambda`, at :math:`y`
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
        >>> from npoptim import Parameter, AdamWScheduleFree
        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> opt = AdamWScheduleFree([w], lr=0.1)
        >>> opt.train()
        >>> w.grad = 2 * w.view(np.ndarray)
        >>> opt.step()  # z = θ - 0.1 sign(g) (Adam's first step), x = z, y = z
        >>> opt.eval()
        >>> np.round(w, 6)
        array([ 0.9, -1.9])
    """


def adamw_schedulefree(
    params: list[Parameter],
    grads: list[Array],
    zs: list[Array],
    exp_avg_sqs: list[Array],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    ckp1: float,
    bias_correction2: float,
    maximize: bool = False,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Functional Schedule-Free AdamW: updates ``params`` (the :math:`y` iterates), ``zs``
    and ``exp_avg_sqs`` in place. ``lr`` is the scheduled (warmed-up) :math:`\\gamma_t`,
    ``ckp1`` the averaging weight :math:`c_{t+1}`, ``bias_correction2`` :math:`1 - \\beta_2^t`.
    See :class:`AdamWScheduleFree` for the math; ``foreach`` and ``fused`` pick the
    implementation, all bit-identical to the for-loop (see :mod:`npoptim._kernels`)."""
    elementwise(
        ALGORITHM,
        [params, grads, zs, exp_avg_sqs],
        {},
        foreach=foreach, fused=fused, lr=lr, beta2=beta2, eps=eps, weight_decay=weight_decay,
        ckp1=ckp1, y_step=lr * (beta1 * (1 - ckp1) - 1), bias_correction2=bias_correction2,
        maximize=maximize,
    )  # fmt: skip


def _adamw_schedulefree_piece(
    y: Array,
    g: Array,
    z: Array,
    v: Array,
    *,
    lr: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    ckp1: float,
    y_step: float,
    bias_correction2: float,
    maximize: bool,
) -> None:
    """One Schedule-Free AdamW update of a piece of :math:`y`, :math:`z` and :math:`v`."""
    g_t, g_hat, tmp = temporaries(y, 3)
    g = gradient(y, g, g_t, tmp, maximize=maximize, weight_decay=0.0)  # -g to maximize
    average_of_squares(v, g, beta2, tmp)  # v_t = β2 v_{t-1} + (1 - β2) g_t²
    np.divide(v, bias_correction2, out=tmp)
    np.sqrt(tmp, out=tmp)
    tmp += eps
    np.divide(g, tmp, out=g_hat)  # g_t / (√v̂_t + ε)
    if weight_decay != 0:
        np.multiply(y, weight_decay, out=tmp)
        g_hat += tmp  # + λ y_t
    lerp_(y, z, ckp1, tmp)  # y ← y + c (z - y)
    np.multiply(g_hat, y_step, out=tmp)
    y += tmp  # y_{t+1} = y + γ_t(β1(1 - c) - 1) ĝ_t
    g_hat *= lr
    z -= g_hat  # z_{t+1} = z_t - γ_t ĝ_t


def _adamw_schedulefree_element(y: Any, g: Any, z: Any, v: Any, scalar: Any, flag: Any) -> Any:
    """:func:`_adamw_schedulefree_piece` for one element (compiled by the fused path)."""
    if flag.maximize:
        g = -g
    v = v * scalar.beta2 + (g * g) * scalar.one_minus_beta2
    g_hat = g / (np.sqrt(v / scalar.bias_correction2) + scalar.eps)
    if flag.decay:
        g_hat = g_hat + y * scalar.weight_decay
    y = lerp_to_z(y, z, scalar, flag)  # y ← y + c (z - y)
    return y + g_hat * scalar.y_step, z - g_hat * scalar.lr, v


ALGORITHM = Algorithm(
    name="adamw_schedulefree",
    roles=("param", "grad", "z", "exp_avg_sq"),
    piece=_adamw_schedulefree_piece,
    element=_adamw_schedulefree_element,
    scalars=lambda shared, per_param: {
        "lr": shared["lr"], "beta2": shared["beta2"], "one_minus_beta2": 1 - shared["beta2"],
        "eps": shared["eps"], "weight_decay": shared["weight_decay"], "y_step": shared["y_step"],
        "bias_correction2": shared["bias_correction2"], **averaging_numbers(shared["ckp1"])[0],
    },
    flags=lambda shared, present: {
        "decay": shared["weight_decay"] != 0, "maximize": shared["maximize"],
        **averaging_numbers(shared["ckp1"])[1],
    },
)  # fmt: skip
