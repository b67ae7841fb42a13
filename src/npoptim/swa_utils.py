r"""Parameter averaging (SWA, EMA) and the SWA learning-rate schedule.

The NumPy analog of ``torch.optim.swa_utils``: :class:`AveragedParameters` keeps running
averages of a list of parameters (torch's ``AveragedModel`` over ``model.parameters()``, with
``use_buffers=False`` and no module to wrap), the four factories of averaging functions, and
:class:`SWALR`, which anneals the learning rate to a constant for the averaging phase.

Example:
    >>> swa = AveragedParameters(params)
    >>> sched = CosineAnnealingLR(opt, T_max=300)
    >>> swa_sched = SWALR(opt, swa_lr=0.05)
    >>> for epoch in range(300):
    ...     train_epoch(...)                  # computes grads, calls opt.step()
    ...     if epoch > 160:
    ...         swa.update_parameters(params)
    ...         swa_sched.step()
    ...     else:
    ...         sched.step()
    >>> averaged = swa.parameters()          # evaluate the model with these
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ._math import lerp_
from ._validation import wrapper_hint
from ._views import readonly
from .lr_scheduler import LRScheduler, _format_param, _warn_unless_in_step
from .optimizer import Optimizer
from .parameter import Parameter

__all__ = [
    "SWALR",
    "AveragedParameters",
    "get_ema_avg_fn",
    "get_ema_multi_avg_fn",
    "get_swa_avg_fn",
    "get_swa_multi_avg_fn",
]

Array = np.ndarray[Any, Any]
AvgFn = Callable[[Array, Array, int], npt.ArrayLike]
MultiAvgFn = Callable[[Sequence[Array], Sequence[Array], int], None]


# --------------------------------------------------------------------------- kernels
def _swa_update_(averaged: Array, current: Array, num_averaged: int) -> None:
    r"""The running mean in place: :math:`\bar w \leftarrow \bar w + (w - \bar w)/(n + 1)`."""
    diff = np.subtract(current, averaged)
    diff /= num_averaged + 1
    averaged += diff


def _check_decay(decay: float) -> None:
    if decay < 0.0 or decay > 1.0:
        raise ValueError(
            f"Invalid decay value {decay} provided. Please provide a value in [0,1] range."
        )


def get_ema_multi_avg_fn(decay: float = 0.999) -> MultiAvgFn:
    r"""An in-place exponential moving average over lists of arrays.

    .. math::
        W^{\text{EMA}}_0 = W_0, \qquad
        W^{\text{EMA}}_{t+1} = \text{decay}\, W^{\text{EMA}}_t + (1 - \text{decay})\, W_{t+1}

    Args:
        decay (float): the decay rate, in ``[0, 1]``. Default: 0.999.

    Returns:
        ``fn(averaged_list, current_list, num_averaged)``, updating ``averaged_list`` in
        place (a linear interpolation towards the current values by ``1 - decay``).
    """
    _check_decay(decay)

    def ema_update(
        ema_param_list: Sequence[Array], current_param_list: Sequence[Array], _: int
    ) -> None:
        for ema, current in zip(ema_param_list, current_param_list, strict=True):
            lerp_(ema, current, 1 - decay)

    return ema_update


def get_swa_multi_avg_fn() -> MultiAvgFn:
    r"""An in-place equal-weight (SWA) running mean over lists of arrays.

    .. math::
        W^{\text{SWA}}_{n+1} = W^{\text{SWA}}_n + \frac{W - W^{\text{SWA}}_n}{n + 1}

    computed as a linear interpolation with weight :math:`1/(n+1)`.

    Returns:
        ``fn(averaged_list, current_list, num_averaged)``, updating ``averaged_list`` in place.
    """

    def swa_update(
        averaged_param_list: Sequence[Array],
        current_param_list: Sequence[Array],
        num_averaged: int,
    ) -> None:
        weight = 1 / (num_averaged + 1)
        for averaged, current in zip(averaged_param_list, current_param_list, strict=True):
            lerp_(averaged, current, weight)

    return swa_update


def get_ema_avg_fn(decay: float = 0.999) -> AvgFn:
    r"""An exponential moving average of one array (see :func:`get_ema_multi_avg_fn`).

    Args:
        decay (float): the decay rate, in ``[0, 1]``. Default: 0.999.

    Returns:
        ``fn(ema_param, current_param, num_averaged)`` returning
        ``decay * ema_param + (1 - decay) * current_param``.
    """
    _check_decay(decay)

    def ema_update(ema_param: Array, current_param: Array, num_averaged: int) -> Array:
        return decay * ema_param + (1 - decay) * current_param

    return ema_update


def get_swa_avg_fn() -> AvgFn:
    r"""The equal-weight (SWA) running mean of one array.

    Returns:
        ``fn(averaged_param, current_param, num_averaged)`` returning
        ``averaged + (current - averaged) / (num_averaged + 1)``.
    """

    def swa_update(averaged_param: Array, current_param: Array, num_averaged: int) -> Array:
        out = np.array(averaged_param, copy=True, subok=False)
        _swa_update_(out, current_param, num_averaged)
        return out

    return swa_update


# ------------------------------------------------------------------ averaged parameters
class AveragedParameters:
    r"""Running averages of a list of parameters, for Stochastic Weight Averaging (SWA) and
    exponential moving averages (EMA): torch's ``AveragedModel`` for a list of arrays.

    The constructor copies the parameters. Each :meth:`update_parameters` folds in their
    current values: the first call copies them, later calls apply the averaging function with
    :attr:`n_averaged`, the number of updates so far. By default that is the equal-weight
    running mean (SWA)

    .. math::
        \bar W_{n+1} = \bar W_n + \frac{W - \bar W_n}{n + 1};

    pass ``multi_avg_fn=get_ema_multi_avg_fn(0.999)`` for an EMA.

    Args:
        params (iterable of arrays): the parameters to average (Parameters or any arrays of
            a floating or complex dtype); their copies keep each one's shape and dtype.
        avg_fn (function, optional): ``avg_fn(averaged, current, num_averaged)`` returning
            the new average of one parameter. Default: None.
        multi_avg_fn (function, optional): ``multi_avg_fn(averaged_list, current_list,
            num_averaged)`` updating the averages of all parameters in place. Give at most
            one of ``avg_fn`` and ``multi_avg_fn``; with neither, the SWA mean is used.
            Default: None.

    Attributes:
        n_averaged (int): the number of :meth:`update_parameters` calls so far.

    Example:
        >>> ema = AveragedParameters(params, multi_avg_fn=get_ema_multi_avg_fn(0.9))
        >>> for step in range(1000):
        ...     train_step(...)
        ...     ema.update_parameters(params)

    References: Izmailov et al., `Averaging Weights Leads to Wider Optima and Better
    Generalization <https://arxiv.org/abs/1803.05407>`_ (UAI 2018); Polyak averaging.
    """

    def __init__(
        self,
        params: Iterable[npt.ArrayLike],
        avg_fn: AvgFn | None = None,
        multi_avg_fn: MultiAvgFn | None = None,
    ) -> None:
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")
        self._averaged = [Parameter(np.array(p, copy=True, subok=False)) for p in params]
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        self.n_averaged = 0

    def parameters(self) -> list[Parameter]:
        """The averaged parameters (live: they change with every update)."""
        return list(self._averaged)

    def __len__(self) -> int:
        return len(self._averaged)

    def __iter__(self) -> Iterator[Parameter]:
        return iter(self._averaged)

    def __repr__(self) -> str:
        shapes = ", ".join(str(p.shape) for p in self._averaged)
        return f"AveragedParameters([{shapes}], n_averaged={self.n_averaged})"

    def _check_current(self, params: Iterable[npt.ArrayLike]) -> list[Array]:
        current = [np.asarray(p).view(np.ndarray) for p in params]
        if len(current) != len(self._averaged):
            raise ValueError(f"expected {len(self._averaged)} parameters, got {len(current)}")
        for i, (avg, cur) in enumerate(zip(self._averaged, current, strict=True)):
            if avg.shape != cur.shape:
                raise ValueError(
                    f"parameter {i} has shape {cur.shape}, but its average has shape {avg.shape}"
                )
        return current

    def update_parameters(self, params: Iterable[npt.ArrayLike]) -> None:
        """Fold the current values of ``params`` (same order, count and shapes as at
        construction) into the averages and increment :attr:`n_averaged`."""
        current = self._check_current(params)
        averaged = [p.view(np.ndarray) for p in self._averaged]
        if self.n_averaged == 0:
            for avg, cur in zip(averaged, current, strict=True):
                np.copyto(avg, cur, casting="same_kind")
        elif self.avg_fn is not None:
            for avg, cur in zip(averaged, current, strict=True):
                np.copyto(avg, self.avg_fn(avg, cur, self.n_averaged), casting="same_kind")
        elif self.multi_avg_fn is not None:
            self.multi_avg_fn(averaged, current, self.n_averaged)
        else:
            for avg, cur in zip(averaged, current, strict=True):
                _swa_update_(avg, cur, self.n_averaged)
        self.n_averaged += 1

    def state_dict(self) -> dict[str, Any]:
        """``{"params": [the averages], "n_averaged": int}``, the averages as read-only views
        (no copy: they follow the averaging; ``copy.deepcopy`` for a snapshot); the averaging
        functions are not saved (as in torch)."""
        return {
            "params": [readonly(p) for p in self._averaged],
            "n_averaged": self.n_averaged,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`state_dict`; everything is checked before
        anything changes: the keys (a checkpoint wrapping the state is refused, naming the
        keys seen and expected), ``n_averaged``, and each average's count, shape and dtype
        (it must cast to the average's dtype)."""
        expected = ["n_averaged", "params"]
        if not isinstance(state_dict, Mapping) or any(k not in state_dict for k in expected):
            seen = sorted(map(str, state_dict)) if isinstance(state_dict, Mapping) else []
            raise ValueError(
                "AveragedParameters.load_state_dict expects a state_dict with the keys "
                f"{expected}, but got {type(state_dict).__name__} with the keys {seen}"
                f"{wrapper_hint(state_dict, expected)}"
            )
        n_averaged = state_dict["n_averaged"]
        if not isinstance(n_averaged, numbers.Integral) or n_averaged < 0:
            raise ValueError(f"n_averaged must be a non-negative integer, got {n_averaged!r}")
        values = self._check_current(state_dict["params"])
        for i, (avg, value) in enumerate(zip(self._averaged, values, strict=True)):
            if value.dtype.kind not in "biufc" or not np.can_cast(
                value.dtype, avg.dtype, casting="same_kind"
            ):
                raise TypeError(
                    f"parameter {i} has dtype {value.dtype}, which does not cast to its "
                    f"average's dtype {avg.dtype}"
                )
        for avg, value in zip(self._averaged, values, strict=True):
            np.copyto(avg, value, casting="same_kind")
        self.n_averaged = int(n_averaged)


# --------------------------------------------------------------------------------- SWALR
class SWALR(LRScheduler):
    r"""Anneal each group's learning rate to a fixed value for SWA.

    Over ``anneal_epochs`` steps the lr moves from its value when SWALR starts stepping to
    ``swa_lr``, then stays there. At step :math:`k` with
    :math:`t = \min(1, \max(0, k / \max(1, \text{anneal\_epochs})))`,

    .. math::
        \eta_k = \alpha(t)\, \eta_{\text{swa}} + (1 - \alpha(t))\, \eta_{\text{start}},
        \qquad \alpha(t) = \begin{cases} (1 - \cos \pi t)/2 & \text{cos} \\
                                         t & \text{linear} \end{cases}

    where :math:`\eta_{\text{start}}` is recovered each step from the current lr, so SWALR
    can take over from another scheduler.

    Args:
        optimizer (Optimizer): wrapped optimizer.
        swa_lr (float or list): the target lr, for all groups or one per group.
        anneal_epochs (int): the number of epochs in the annealing phase. Default: 10.
        anneal_strategy (str): ``"cos"`` or ``"linear"``. Default: ``"cos"``.
        last_epoch (int): the index of the last epoch. Default: -1.

    Example:
        >>> sched = MultiplicativeLR(opt, lr_lambda=lambda epoch: 0.9)
        >>> swa_sched = SWALR(opt, anneal_strategy="linear", anneal_epochs=20, swa_lr=0.05)
        >>> for epoch in range(300):
        ...     train_epoch(...)
        ...     swa_sched.step() if epoch > 160 else sched.step()
    """

    _not_in_state_dict = ("optimizer", "anneal_func")

    def __init__(
        self,
        optimizer: Optimizer,
        swa_lr: float | list[float],
        anneal_epochs: int = 10,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        last_epoch: int = -1,
    ) -> None:
        swa_lrs = _format_param("swa_lr", optimizer, swa_lr)
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError(
                f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}"
            )
        if not isinstance(anneal_epochs, numbers.Integral) or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        for group_swa_lr, group in zip(swa_lrs, optimizer.param_groups, strict=True):
            group["swa_lr"] = group_swa_lr
        self._set_anneal_func(anneal_strategy)
        self.anneal_epochs: int = anneal_epochs
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _linear_anneal(t: float) -> float:
        return t

    @staticmethod
    def _cosine_anneal(t: float) -> float:
        return (1 - math.cos(math.pi * t)) / 2

    @staticmethod
    def _get_initial_lr(lr: float, swa_lr: float, alpha: float) -> float:
        """The starting lr that the previous step's interpolation came from."""
        if alpha == 1:
            return swa_lr
        return (lr - alpha * swa_lr) / (1 - alpha)

    def _set_anneal_func(self, anneal_strategy: Literal["cos", "linear"]) -> None:
        self._anneal_strategy = anneal_strategy
        self.anneal_func = self._cosine_anneal if anneal_strategy == "cos" else self._linear_anneal

    def get_lr(self) -> list[float]:
        """The lrs one annealing step further towards each group's ``swa_lr``."""
        _warn_unless_in_step(self)
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        span = max(1, self.anneal_epochs)
        prev_alpha = self.anneal_func(max(0, min(1, (step - 1) / span)))
        alpha = self.anneal_func(max(0, min(1, step / span)))
        return [
            group["swa_lr"] * alpha
            + self._get_initial_lr(group["lr"], group["swa_lr"], prev_alpha) * (1 - alpha)
            for group in self.optimizer.param_groups
        ]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`state_dict`.

        Args:
            state_dict (dict): scheduler state, as returned by :meth:`state_dict`.
        """
        super().load_state_dict(state_dict)
        self._set_anneal_func(self._anneal_strategy)
