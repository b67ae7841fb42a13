r"""Learning-rate schedulers: torch 2.13's ``torch.optim.lr_scheduler`` for npoptim optimizers.

A scheduler owns an optimizer and rewrites ``group["lr"]`` of each of its parameter groups
once per :meth:`~LRScheduler.step`. Call it after ``optimizer.step()``::

    opt = npoptim.SGD(params, lr=0.1, momentum=0.9)
    sched = npoptim.lr_scheduler.StepLR(opt, step_size=30, gamma=0.1)
    for epoch in range(100):
        train(...)            # computes grads, calls opt.step()
        sched.step()

Every scheduler keeps torch's arguments, defaults, validation, warnings, attribute names and
``state_dict`` layout (everything in ``__dict__`` except the optimizer; plain functions given
as ``lr_lambda`` or ``scale_fn`` are left out and callable objects are saved as their
``__dict__``). Learning rates are Python floats; torch's Tensor learning rates have no
NumPy counterpart.

Most schedulers are *chainable*: ``get_lr`` turns the current ``group["lr"]`` into the next
one, so several schedulers can act on one optimizer (:class:`ChainedScheduler`) or take turns
(:class:`SequentialLR`). Where torch has one, ``_get_closed_form_lr`` gives the value at
``last_epoch`` from ``base_lrs`` directly; it is used when ``step`` gets an explicit (and
deprecated) ``epoch``.

In the formulas below :math:`\eta_0` is a group's ``base_lr`` (its ``initial_lr``),
:math:`\eta_t` the learning rate after ``t`` calls to ``step`` (``t = last_epoch``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import types
import warnings
import weakref
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial, wraps
from typing import Any, Literal, SupportsFloat, TypedDict

from ._validation import wrapper_hint
from ._views import readonly
from .optimizer import Optimizer

__all__ = [
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
]

LRLambda = Callable[[int], float]

EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being "
    "deprecated where possible. Please use `scheduler.step()` to step the "
    "scheduler. During the deprecation, if epoch is different from None, the "
    "closed form is used instead of the new chainable form, where available. "
    "Please open an issue if you are unable to replicate your use case: "
    "https://github.com/pytorch/pytorch/issues/new/choose."
)

_STEP_OVERRIDDEN_WARNING = (
    "Seems like `optimizer.step()` has been overridden after learning rate scheduler "
    "initialization. Please, make sure to call `optimizer.step()` before "
    "`lr_scheduler.step()`. See more details at "
    "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate"
)

_STEP_ORDER_WARNING = (
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`. "
    "In PyTorch 1.1.0 and later, you should call them in the opposite order: "
    "`optimizer.step()` before `lr_scheduler.step()`.  Failure to do this "
    "will result in PyTorch skipping the first value of the learning rate schedule. "
    "See more details at "
    "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate"
)

_GET_LR_WARNING = (
    "To get the last learning rate computed by the scheduler, please use `get_last_lr()`."
)

_NO_MOMENTUM_ERROR = "optimizer must support momentum or beta1 with `cycle_momentum` option enabled"


# ----------------------------------------------------------------------------- helpers
def _check_optimizer(optimizer: object) -> Optimizer:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
    return optimizer


def _format_param(name: str, optimizer: Optimizer, value: Any) -> list[Any]:
    """One value per parameter group: a scalar is repeated, a list or tuple must match."""
    n_groups = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n_groups:
            raise ValueError(
                f"{name} must have the same length as optimizer.param_groups. "
                f"{name} has {len(value)} values, param_groups has {n_groups}."
            )
        return list(value)
    return [value] * n_groups


def _group_values(optimizer: Optimizer, key: str) -> list[Any]:
    """``group[key]`` of every parameter group, in order (KeyError where one lacks it)."""
    return [group[key] for group in optimizer.param_groups]


def _is_integer(value: object) -> bool:
    """A Python or NumPy integer (bool included, as ``isinstance(True, int)`` in torch)."""
    return isinstance(value, numbers.Integral)


@contextlib.contextmanager
def _raised(scheduler: LRScheduler, flag: str) -> Iterator[None]:
    """Set the boolean attribute ``flag`` for the duration of a block."""
    setattr(scheduler, flag, True)
    try:
        yield
    finally:
        setattr(scheduler, flag, False)


def _warn_unless_in_step(scheduler: LRScheduler) -> None:
    """torch's warning for ``get_lr()`` called by user code instead of by ``step()``."""
    if not scheduler._get_lr_called_within_step:
        warnings.warn(_GET_LR_WARNING, UserWarning, stacklevel=3)


def _track_optimizer_steps(optimizer: Optimizer) -> None:
    """Replace ``optimizer.step`` on the instance by a wrapper that records that it ran.

    The wrapper sets ``optimizer._opt_called`` so :meth:`LRScheduler.step` can warn when the
    scheduler steps first, and is marked ``_wrapped_by_lr_sched`` so a second scheduler
    leaves it alone and a later user override is detected. It holds the optimizer weakly:
    no reference cycle keeps an optimizer alive.
    """
    step = optimizer.step
    if hasattr(step, "_wrapped_by_lr_sched"):
        return
    optimizer_ref = weakref.ref(optimizer)
    func = getattr(step, "__func__", None)

    if func is None:  # a plain callable put on the instance by user code
        call: Callable[..., Any] = step

        def run(opt: Optimizer, *args: Any, **kwargs: Any) -> Any:
            return call(*args, **kwargs)
    else:
        unbound: Callable[..., Any] = func

        def run(opt: Optimizer, *args: Any, **kwargs: Any) -> Any:
            return unbound.__get__(opt, type(opt))(*args, **kwargs)

    @wraps(func if func is not None else step)
    def recording_step(*args: Any, **kwargs: Any) -> Any:
        opt = optimizer_ref()
        assert opt is not None
        opt._opt_called = True  # type: ignore[attr-defined]
        return run(opt, *args, **kwargs)

    recording_step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
    setattr(optimizer, "step", recording_step)  # noqa: B010  (mypy: no method assignment)


def _callable_state(fn: Callable[..., Any] | None) -> dict[str, Any] | None:
    """What torch saves for a user callable: nothing for a function or lambda (None), the
    attribute dict of a callable object."""
    if fn is None or isinstance(fn, types.FunctionType):
        return None
    return dict(fn.__dict__)


def _restore_callable_state(fn: Callable[..., Any] | None, saved: dict[str, Any] | None) -> None:
    if saved is not None:
        fn.__dict__.update(copy.deepcopy(saved))


def _cosine_interpolation(high: float, low: float, t: float, period: float) -> float:
    r""":math:`\text{low} + \tfrac12(\text{high} - \text{low})(1 + \cos(\pi t / T))`."""
    return low + (high - low) * (1 + math.cos(math.pi * t / period)) / 2


# ------------------------------------------------------------------------- base class
class LRScheduler:
    r"""Base class of the learning-rate schedulers.

    A subclass implements :meth:`get_lr`, the learning rate of every parameter group after
    one more step, and may override :meth:`step`. Construction records each group's
    ``initial_lr`` (its ``lr`` unless already set), stores them as :attr:`base_lrs`, wraps
    ``optimizer.step`` to detect a scheduler that steps first, and performs an initial step
    that sets ``last_epoch`` to 0.

    Args:
        optimizer (Optimizer): the optimizer whose learning rates are scheduled.
        last_epoch (int): the index of the last epoch. ``-1`` (default) starts a schedule;
            any other value resumes one and needs ``initial_lr`` in every param group.
            Default: -1.

    Attributes:
        base_lrs: each group's ``initial_lr`` when the scheduler was built.
        last_epoch: the number of steps taken (0 after construction).

    .. warning::
        Building a scheduler overwrites each ``group["lr"]``. To resume from a checkpoint,
        build the scheduler **before** calling ``optimizer.load_state_dict``.
    """

    _get_lr_called_within_step: bool = False
    _is_initial: bool = False

    optimizer: Optimizer
    base_lrs: list[float]
    last_epoch: int
    _last_lr: list[float]
    _step_count: int

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        self.optimizer = _check_optimizer(optimizer)
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(
                        f"param 'initial_lr' is not specified in param_groups[{i}] when "
                        "resuming scheduler with last_epoch >= 0.\n"
                        "This typically happens when:\n"
                        "1. You're trying to resume training from a checkpoint but haven't "
                        "properly loaded the optimizer state\n"
                        "2. You're using last_epoch >= 0 for a fresh training run "
                        "(not recommended)"
                    )
        self.base_lrs = _group_values(optimizer, "initial_lr")
        self.last_epoch = last_epoch
        _track_optimizer_steps(optimizer)
        self._initial_step()

    def _initial_step(self) -> None:
        """Reset the step count and take the step that sets the starting learning rates."""
        self._step_count = 0
        with _raised(self, "_is_initial"):
            self.step()

    # ---------------------------------------------------------------- state dicts
    _not_in_state_dict: tuple[str, ...] = ("optimizer",)

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state: every attribute except the optimizer, copied (any array in
        it is a read-only view instead, as in an optimizer's ``state_dict``).

        Load it with :meth:`load_state_dict`; save and load the optimizer's state as well.
        """
        return {
            key: readonly(value)
            for key, value in self.__dict__.items()
            if key not in self._not_in_state_dict
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`state_dict`; a refused load changes nothing.

        The argument must be this scheduler's state dict: every public attribute it saves
        present (so a checkpoint wrapping it, or another scheduler's state, is refused, the
        message naming the keys seen and expected), and one base lr per param group.

        Args:
            state_dict (dict): scheduler state, as returned by :meth:`state_dict`.
        """
        self._check_state_dict(state_dict)
        self._restore(state_dict)

    def _restore(self, state: Mapping[str, Any]) -> None:
        """Take a checked state's attributes (a copy of them)."""
        self.__dict__.update(copy.deepcopy(dict(state)))

    def _check_state_dict(self, state_dict: Any) -> None:
        """Refuse what is not a state dict of this scheduler, before anything changes."""
        name = type(self).__name__
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"{name}.load_state_dict expects a scheduler state_dict (a dict), but got "
                f"{type(state_dict).__name__}"
            )
        expected = sorted(self.state_dict())
        missing = [k for k in expected if not k.startswith("_") and k not in state_dict]
        if missing:
            raise ValueError(
                f"{name}.load_state_dict expects a {name} state_dict with the keys {expected}, "
                f"but got a dict with the keys {sorted(map(str, state_dict))} (no "
                f"{missing[0]!r}){wrapper_hint(state_dict, missing)}"
            )
        n_groups = len(self.optimizer.param_groups)
        base_lrs = state_dict.get("base_lrs", [None] * n_groups)
        if not isinstance(base_lrs, (list, tuple)) or len(base_lrs) != n_groups:
            raise ValueError(
                f"{name}.load_state_dict: the state has base_lrs {base_lrs!r}, but the "
                f"optimizer has {n_groups} param group{'s' if n_groups != 1 else ''}"
            )

    # ----------------------------------------------------------------- stepping
    def get_last_lr(self) -> list[float]:
        """The learning rates of the param groups as set by the most recent step."""
        return self._last_lr

    def get_lr(self) -> list[float]:
        """The learning rate of each param group after the step being taken.

        Called by :meth:`step`; to read the current learning rates use :meth:`get_last_lr`.
        """
        raise NotImplementedError

    def step(self, epoch: int | None = None) -> None:
        """Advance the schedule by one step and write the new ``lr`` into every group.

        Args:
            epoch (int, optional): deprecated. Sets :attr:`last_epoch` to ``epoch`` and uses
                the closed form where the scheduler has one. Call ``step()`` instead.

        Call it after ``optimizer.step()``; the first call warns when the order is reversed.
        """
        if self._step_count == 1:
            if not hasattr(self.optimizer.step, "_wrapped_by_lr_sched"):
                warnings.warn(_STEP_OVERRIDDEN_WARNING, UserWarning, stacklevel=2)
            elif not getattr(self.optimizer, "_opt_called", False):
                warnings.warn(_STEP_ORDER_WARNING, UserWarning, stacklevel=2)
        self._step_count += 1
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self._update_lr(epoch)

    def _update_lr(self, epoch: int | None = None) -> None:
        with _raised(self, "_get_lr_called_within_step"):
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                self.last_epoch = epoch
                closed_form: Callable[[], list[float]] | None = getattr(
                    self, "_get_closed_form_lr", None
                )
                values = closed_form() if closed_form is not None else self.get_lr()
        self._set_lrs(values)

    def _set_lrs(self, values: Sequence[float]) -> None:
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            group["lr"] = lr
        self._last_lr = _group_values(self.optimizer, "lr")


class _LRScheduler(LRScheduler):
    """Old name of :class:`LRScheduler`, kept as torch keeps it."""


# ------------------------------------------------------------- multiplicative factors
class _LambdaScheduler(LRScheduler):
    """Bookkeeping shared by LambdaLR and MultiplicativeLR: one function per group, saved
    in ``state_dict`` as torch saves them."""

    lr_lambdas: list[LRLambda]
    _check_callable: bool = False

    def __init__(
        self,
        optimizer: Optimizer,
        lr_lambda: LRLambda | Sequence[LRLambda],
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        n_groups = len(optimizer.param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n_groups:
                raise ValueError(f"Expected {n_groups} lr_lambdas, but got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * n_groups  # type: ignore[list-item]
        if self._check_callable:
            for fn in self.lr_lambdas:
                if not callable(fn):
                    raise TypeError(f"lr_lambda should be a function, but got {type(fn).__name__}")
        super().__init__(optimizer, last_epoch)

    _not_in_state_dict = ("optimizer", "lr_lambdas")

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state; each lambda is saved as None if it is a function or lambda,
        as a copy of its ``__dict__`` if it is a callable object.

        Save and load the optimizer's state as well.
        """
        state = super().state_dict()
        state["lr_lambdas"] = [_callable_state(fn) for fn in self.lr_lambdas]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`state_dict`; callable objects get their saved
        attributes back, functions are kept as given to the constructor.

        Args:
            state_dict (dict): scheduler state, as returned by :meth:`state_dict`.
        """
        self._check_state_dict(state_dict)
        state = dict(state_dict)
        saved_lambdas = state.pop("lr_lambdas")
        self._restore(state)
        for fn, saved in zip(self.lr_lambdas, saved_lambdas, strict=False):
            _restore_callable_state(fn, saved)


class LambdaLR(_LambdaScheduler):
    r"""Set each group's learning rate to its initial one times a function of the epoch.

    .. math::
        \eta_t = \eta_0 \cdot \lambda(t)

    Args:
        optimizer (Optimizer): wrapped optimizer.
        lr_lambda (function or list): a function of the integer epoch that returns the
            multiplicative factor, or a list of such functions, one per param group.
        last_epoch (int): the index of the last epoch. Default: -1.

    Example:
        >>> sched = LambdaLR(opt, lr_lambda=lambda epoch: 0.95**epoch)
        >>> for epoch in range(100):
        ...     train(...)
        ...     sched.step()
    """

    def get_lr(self) -> list[float]:
        """:attr:`base_lrs` scaled by each group's lambda at :attr:`last_epoch`."""
        _warn_unless_in_step(self)
        return [
            base_lr * fn(self.last_epoch)
            for fn, base_lr in zip(self.lr_lambdas, self.base_lrs, strict=True)
        ]


class MultiplicativeLR(_LambdaScheduler):
    r"""Multiply each group's learning rate by a function of the epoch at every step.

    .. math::
        \eta_t = \eta_{t-1} \cdot \lambda(t), \qquad t \ge 1

    Args:
        optimizer (Optimizer): wrapped optimizer.
        lr_lambda (function or list): a function of the integer epoch that returns the
            factor applied at that step, or a list of such functions, one per param group.
        last_epoch (int): the index of the last epoch. Default: -1.

    Example:
        >>> sched = MultiplicativeLR(opt, lr_lambda=lambda epoch: 0.95)
    """

    _check_callable = True

    def get_lr(self) -> list[float]:
        """The current lrs times each group's lambda at :attr:`last_epoch` (unchanged on
        the initial step)."""
        _warn_unless_in_step(self)
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        return [
            group["lr"] * fn(self.last_epoch)
            for fn, group in zip(self.lr_lambdas, self.optimizer.param_groups, strict=True)
        ]


class StepLR(LRScheduler):
    r"""Decay each group's learning rate by ``gamma`` every ``step_size`` epochs.

    .. math::
        \eta_t = \eta_0 \cdot \gamma^{\lfloor t / \text{step\_size} \rfloor}

    The decay multiplies the current lr, so it composes with changes made by others.

    Args:
        optimizer (Optimizer): wrapped optimizer.
        step_size (int): period of learning-rate decay, in epochs.
        gamma (float): multiplicative factor of the decay. Default: 0.1.
        last_epoch (int): the index of the last epoch. Default: -1.

    Example:
        >>> # lr = 0.05 for epochs 0-29, 0.005 for 30-59, 0.0005 for 60-89, ...
        >>> sched = StepLR(opt, step_size=30, gamma=0.1)
    """

    def __init__(
        self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The current lrs, times :attr:`gamma` when :attr:`last_epoch` is a non-zero multiple
        of :attr:`step_size`."""
        _warn_unless_in_step(self)
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [
            base_lr * self.gamma ** (self.last_epoch // self.step_size) for base_lr in self.base_lrs
        ]


class MultiStepLR(LRScheduler):
    r"""Decay each group's learning rate by ``gamma`` at each milestone epoch.

    .. math::
        \eta_t = \eta_0 \cdot \gamma^{\,|\{m \in \text{milestones} : m \le t\}|}

    A milestone listed ``k`` times decays by :math:`\gamma^k` at once.

    Args:
        optimizer (Optimizer): wrapped optimizer.
        milestones (list): epoch indices, increasing.
        gamma (float): multiplicative factor of the decay. Default: 0.1.
        last_epoch (int): the index of the last epoch. Default: -1.

    Example:
        >>> # lr = 0.05 for epochs 0-29, 0.005 for 30-79, 0.0005 from 80 on
        >>> sched = MultiStepLR(opt, milestones=[30, 80], gamma=0.1)
    """

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: Iterable[int],
        gamma: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The current lrs, times :attr:`gamma` to the number of times :attr:`last_epoch`
        appears in :attr:`milestones`."""
        _warn_unless_in_step(self)
        if self.last_epoch not in self.milestones:
            return _group_values(self.optimizer, "lr")
        factor = self.gamma ** self.milestones[self.last_epoch]
        return [group["lr"] * factor for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state, with :attr:`milestones` as a plain ``{epoch: count}`` dict
        (so that :func:`npoptim.save` can store it).

        Save and load the optimizer's state as well.
        """
        state = super().state_dict()
        state["milestones"] = dict(self.milestones)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`state_dict` (or by torch's, with a Counter).

        Args:
            state_dict (dict): scheduler state, as returned by :meth:`state_dict`.
        """
        super().load_state_dict(state_dict)
        self.milestones = Counter(self.milestones)

    def _get_closed_form_lr(self) -> list[float]:
        passed = bisect_right(sorted(self.milestones.elements()), self.last_epoch)
        return [base_lr * self.gamma**passed for base_lr in self.base_lrs]


class ConstantLR(LRScheduler):
    r"""Multiply each group's learning rate by a constant factor for the first epochs.

    .. math::
        \eta_t = \begin{cases} \eta_0 \cdot \text{factor} & t < \text{total\_iters} \\
                               \eta_0 & t \ge \text{total\_iters} \end{cases}

    Args:
        optimizer (Optimizer): wrapped optimizer.
        factor (float): the factor applied until ``total_iters``, in ``[0, 1]``.
            Default: 1./3.
        total_iters (int): the number of steps the factor is applied for. Default: 5.
        last_epoch (int): the index of the last epoch. Default: -1.

    Example:
        >>> # lr = 0.025 for epochs 0-39, then 0.05
        >>> sched = ConstantLR(opt, factor=0.5, total_iters=40)
    """

    def __init__(
        self,
        optimizer: Optimizer,
        factor: float = 1.0 / 3,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        if factor > 1.0 or factor < 0:
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The current lrs times :attr:`factor` at epoch 0, divided by it at
        :attr:`total_iters`, unchanged otherwise."""
        _warn_unless_in_step(self)
        if self.last_epoch == 0:
            return [group["lr"] * self.factor for group in self.optimizer.param_groups]
        if self.last_epoch != self.total_iters:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * (1.0 / self.factor) for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        done = self.last_epoch >= self.total_iters
        return [base_lr * (self.factor + done * (1 - self.factor)) for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    r"""Scale each group's learning rate by a factor that moves linearly from
    ``start_factor`` to ``end_factor`` over ``total_iters`` epochs.

    .. math::
        \eta_t = \eta_0 \left(s + (e - s)\,\frac{\min(t, T)}{T}\right)

    with :math:`s` = ``start_factor``, :math:`e` = ``end_factor``, :math:`T` = ``total_iters``.
    Each step multiplies the current lr by the ratio of successive factors, so the schedule
    composes with others.

    Args:
        optimizer (Optimizer): wrapped optimizer.
        start_factor (float): the factor at epoch 0, in ``(0, 1]``. Default: 1./3.
        end_factor (float): the factor from ``total_iters`` on, in ``[0, 1]``. Default: 1.0.
        total_iters (int): the number of steps the factor takes to reach ``end_factor``.
            Default: 5.
        last_epoch (int): the index of the last epoch. Default: -1.

    Example:
        >>> # lr = 0.0025, 0.00369, 0.00487, ... reaching 0.05 at epoch 40
        >>> sched = LinearLR(opt, start_factor=0.05, total_iters=40)
    """

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
    ) -> None:
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError(
                "Starting multiplicative factor expected to be greater than 0 and less or "
                "equal to 1."
            )
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The current lrs times the ratio of this step's factor to the previous one."""
        _warn_unless_in_step(self)
        if self.last_epoch == 0:
            return [group["lr"] * self.start_factor for group in self.optimizer.param_groups]
        if self._is_initial or self.last_epoch > self.total_iters:
            return _group_values(self.optimizer, "lr")
        span = self.end_factor - self.start_factor
        ratio = 1.0 + span / (self.total_iters * self.start_factor + (self.last_epoch - 1) * span)
        return [group["lr"] * ratio for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        span = self.end_factor - self.start_factor
        elapsed = min(self.total_iters, self.last_epoch)
        return [
            base_lr * (self.start_factor + span * elapsed / self.total_iters)
            for base_lr in self.base_lrs
        ]


class ExponentialLR(LRScheduler):
    r"""Decay each group's learning rate by ``gamma`` every epoch.

    .. math::
        \eta_t = \eta_0 \cdot \gamma^t

    Args:
        optimizer (Optimizer): wrapped optimizer.
        gamma (float): multiplicative factor of the decay.
        last_epoch (int): the index of the last epoch. Default: -1.

    Example:
        >>> sched = ExponentialLR(opt, gamma=0.95)
    """

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The current lrs times :attr:`gamma` (unchanged on the initial step, so resuming
        does not decay twice)."""
        _warn_unless_in_step(self)
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return [base_lr * self.gamma**self.last_epoch for base_lr in self.base_lrs]


class PolynomialLR(LRScheduler):
    r"""Decay each group's learning rate polynomially to zero over ``total_iters`` epochs.

    .. math::
        \eta_t = \eta_0 \left(1 - \frac{\min(t, T)}{T}\right)^{p}

    with :math:`T` = ``total_iters`` and :math:`p` = ``power``; each step multiplies the
    current lr by the ratio of successive factors.

    Args:
        optimizer (Optimizer): wrapped optimizer.
        total_iters (int): the number of steps over which the lr decays. Default: 5.
        power (float): the power of the polynomial. Default: 1.0.
        last_epoch (int): the index of the last epoch. Default: -1.

    Example:
        >>> # lr = 0.05, 0.0491, 0.0482, ... reaching 0 at epoch 50
        >>> sched = PolynomialLR(opt, total_iters=50, power=0.9)
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_iters: int = 5,
        power: float = 1.0,
        last_epoch: int = -1,
    ) -> None:
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The current lrs times the ratio of this step's decay factor to the previous one
        (unchanged after :attr:`total_iters`)."""
        _warn_unless_in_step(self)
        if self._is_initial or self.last_epoch > self.total_iters:
            return _group_values(self.optimizer, "lr")
        ratio = (
            (1.0 - self.last_epoch / self.total_iters)
            / (1.0 - (self.last_epoch - 1) / self.total_iters)
        ) ** self.power
        return [group["lr"] * ratio for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        factor = (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters) ** self.power
        return [base_lr * factor for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    r"""Anneal each group's learning rate along a cosine from its initial value to
    ``eta_min`` over ``T_max`` epochs (SGDR without restarts).

    .. math::
        \eta_t = \eta_{\min} + \frac12(\eta_0 - \eta_{\min})
                 \left(1 + \cos\frac{t\pi}{T_{\max}}\right)

    Each step applies the recursive form

    .. math::
        \eta_{t} = \eta_{\min} + (\eta_{t-1} - \eta_{\min})
                   \frac{1 + \cos(t\pi / T_{\max})}{1 + \cos((t-1)\pi / T_{\max})},

    which equals the closed form when nothing else changes the lr. Past ``T_max`` the lr
    rises again along the same cosine.

    Args:
        optimizer (Optimizer): wrapped optimizer.
        T_max (int): the number of epochs from the initial lr to ``eta_min``.
        eta_min (float): the minimum learning rate. Default: 0.
        last_epoch (int): the index of the last epoch. Default: -1.

    Example:
        >>> sched = CosineAnnealingLR(opt, T_max=100)

    Reference: Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm Restarts
    <https://arxiv.org/abs/1608.03983>`_.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        T_max: int,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The next lrs of the recursive cosine schedule."""
        _warn_unless_in_step(self)
        if self._is_initial:
            return _group_values(self.optimizer, "lr")
        if self._step_count == 1 and self.last_epoch > 0:  # resumed: restart from base_lrs
            return self._get_closed_form_lr()
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:  # leaving the minimum
            rise = (1 - math.cos(math.pi / self.T_max)) / 2
            return [
                group["lr"] + (base_lr - self.eta_min) * rise
                for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups, strict=True)
            ]
        ratio = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / (
            1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max)
        )
        return [
            ratio * (group["lr"] - self.eta_min) + self.eta_min
            for group in self.optimizer.param_groups
        ]

    def _get_closed_form_lr(self) -> list[float]:
        return [
            _cosine_interpolation(base_lr, self.eta_min, self.last_epoch, self.T_max)
            for base_lr in self.base_lrs
        ]


# -------------------------------------------------------------------- composition
def _check_members(owner: str, optimizer: Optimizer, schedulers: Sequence[LRScheduler]) -> None:
    """torch's checks on the schedulers given to ChainedScheduler or SequentialLR."""
    for idx, scheduler in enumerate(schedulers):
        if not hasattr(scheduler, "optimizer"):
            raise TypeError(f"{owner} at index {idx} should have `optimizer` as its attribute.")
        if isinstance(scheduler, ReduceLROnPlateau):
            raise ValueError(
                f"{owner} does not support `ReduceLROnPlateau` scheduler as it requires "
                "additional kwargs to be specified when calling `step`, but got one at index "
                f"{idx} in the given schedulers sequence."
            )
        if optimizer != scheduler.optimizer:
            raise ValueError(
                f"{owner} expects all schedulers to belong to the same optimizer, but got "
                f"scheduler {scheduler.__class__.__name__} at index {idx} has "
                f"{scheduler.optimizer}, which is different from "
                f"{optimizer.__class__.__name__}."
            )


class _CompositeScheduler(LRScheduler):
    """A scheduler made of others; its state dict nests theirs under ``_schedulers``."""

    _schedulers: list[LRScheduler]
    _not_in_state_dict = ("optimizer", "_schedulers")

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state, with the state of each wrapped scheduler."""
        state = super().state_dict()
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`state_dict`, wrapped schedulers included.

        Args:
            state_dict (dict): scheduler state, as returned by :meth:`state_dict`.
        """
        self._check_state_dict(state_dict)
        nested = state_dict.get("_schedulers")
        if not isinstance(nested, (list, tuple)) or len(nested) != len(self._schedulers):
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: the state holds "
                f"{len(nested) if isinstance(nested, (list, tuple)) else 'no'} wrapped "
                f"scheduler states, but this scheduler wraps {len(self._schedulers)}"
            )
        for scheduler, saved in zip(self._schedulers, nested, strict=True):
            scheduler._check_state_dict(saved)
        state = dict(state_dict)
        state.pop("_schedulers")
        self._restore(state)
        for scheduler, saved in zip(self._schedulers, nested, strict=False):
            scheduler.load_state_dict(saved)


class SequentialLR(_CompositeScheduler):
    r"""Run schedulers one after another, switching at the milestone epochs.

    Scheduler ``i`` drives the learning rate for :math:`m_{i-1} \le t < m_i` (with
    :math:`m_{-1} = 0`). At a milestone the next scheduler restarts from its own epoch 0
    (through its closed form where it has one).

    Args:
        optimizer (Optimizer): wrapped optimizer.
        schedulers (list): the schedulers, in order; they must all wrap ``optimizer``.
        milestones (list): the epochs at which to switch; one fewer than ``schedulers``.
        last_epoch (int): the index of the last epoch. Default: -1.

    Example:
        >>> # lr = 0.005 for epochs 0-19, then 0.05 * 0.9**(epoch - 20)
        >>> warmup = ConstantLR(opt, factor=0.1, total_iters=20)
        >>> decay = ExponentialLR(opt, gamma=0.9)
        >>> sched = SequentialLR(opt, schedulers=[warmup, decay], milestones=[20])
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedulers: list[LRScheduler],
        milestones: list[int],
        last_epoch: int = -1,
    ) -> None:
        name = self.__class__.__name__
        if len(schedulers) < 1:
            raise ValueError(f"{name} expects at least one scheduler, but got no scheduler.")
        _check_members(name, optimizer, schedulers)
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "Sequential Schedulers expects number of schedulers provided to be one more "
                f"than the number of milestone points, but got number of schedulers "
                f"{len(schedulers)} and the number of milestones to be equal to "
                f"{len(milestones)}"
            )
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        self.optimizer = optimizer

        # Undo what constructing the members did: back to the initial lrs and epochs ...
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        self.recursive_undo()
        # ... then start only the scheduler that owns epoch 0.
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def recursive_undo(self, sched: LRScheduler | None = None) -> None:
        """Take back the initial step of every (nested) member scheduler."""
        target = self if sched is None else sched
        if hasattr(target, "_schedulers"):
            for member in target._schedulers:
                self.recursive_undo(member)
        elif hasattr(target, "last_epoch"):
            target.last_epoch -= 1

    def step(self) -> None:  # type: ignore[override]
        """Step the scheduler that owns the next epoch."""
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            scheduler._update_lr(0)
        else:
            scheduler.step()
        self._last_lr = scheduler.get_last_lr()


class ChainedScheduler(_CompositeScheduler):
    r"""Step several chainable schedulers together: one :meth:`step` steps each in turn.

    Their effects multiply: with ``ConstantLR(factor=0.1, total_iters=20)`` and
    ``ExponentialLR(gamma=0.9)`` the lr is :math:`0.1 \cdot 0.9^t \eta_0` for ``t < 20`` and
    :math:`0.9^t \eta_0` after.

    Args:
        schedulers (sequence): the schedulers to chain; they must share one optimizer.
        optimizer (Optimizer, optional): that optimizer; taken from the first scheduler
            when None. Default: None.

    Example:
        >>> sched = ChainedScheduler([ConstantLR(opt, 0.1, 20), ExponentialLR(opt, 0.9)])
    """

    def __init__(
        self, schedulers: Sequence[LRScheduler], optimizer: Optimizer | None = None
    ) -> None:
        name = self.__class__.__name__
        if len(schedulers) < 1:
            raise ValueError(
                f"{name} expects at least one scheduler to be chained, but got no scheduler."
            )
        optimizer = optimizer or schedulers[0].optimizer
        _check_members(name, optimizer, schedulers)
        self._schedulers = list(schedulers)
        self.optimizer = optimizer
        self._last_lr = _group_values(self._schedulers[-1].optimizer, "lr")

    def step(self) -> None:  # type: ignore[override]
        """Step every chained scheduler, in order."""
        for scheduler in self._schedulers:
            scheduler.step()
        self._last_lr = _group_values(self._schedulers[-1].optimizer, "lr")


# ------------------------------------------------------------------- metric driven
class ReduceLROnPlateau(LRScheduler):
    r"""Reduce each group's learning rate when a metric stops improving.

    After more than ``patience`` consecutive epochs without improvement every lr becomes
    :math:`\max(\eta \cdot \text{factor}, \text{min\_lr})` (a change smaller than ``eps``
    is skipped), followed by ``cooldown`` epochs in which bad epochs are not counted.
    A value :math:`a` improves on the best :math:`b` when

    ==========  ======================================  =========================
    mode        ``threshold_mode="rel"``                ``threshold_mode="abs"``
    ==========  ======================================  =========================
    ``"min"``   :math:`a < b(1 - \text{threshold})`     :math:`a < b - \text{threshold}`
    ``"max"``   :math:`a > b(1 + \text{threshold})`     :math:`a > b + \text{threshold}`
    ==========  ======================================  =========================

    Args:
        optimizer (Optimizer): wrapped optimizer.
        mode (str): ``"min"`` reduces when the metric stops decreasing, ``"max"`` when it
            stops increasing. Default: ``"min"``.
        factor (float): the factor the lr is multiplied by, below 1. Default: 0.1.
        patience (int): the number of epochs without improvement tolerated; the lr is
            reduced on the next one. With 0 the lr is reduced on every epoch that does not
            improve on the best. Default: 10.
        threshold (float): the margin an improvement must beat. Default: 1e-4.
        threshold_mode (str): ``"rel"`` or ``"abs"``, see the table. Default: ``"rel"``.
        cooldown (int): epochs to wait after a reduction before counting bad epochs again.
            Default: 0.
        min_lr (float or list): a lower bound on the lr of all groups, or one per group.
            Default: 0.
        eps (float): the smallest reduction applied. Default: 1e-8.

    Example:
        >>> sched = ReduceLROnPlateau(opt, "min")
        >>> for epoch in range(10):
        ...     train(...)
        ...     sched.step(validate(...))
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: Literal["min", "max"] = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: Literal["rel", "abs"] = "rel",
        cooldown: int = 0,
        min_lr: list[float] | float = 0,
        eps: float = 1e-8,
    ) -> None:
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        self.factor = factor
        self.optimizer = _check_optimizer(optimizer)
        self.default_min_lr: float | None
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(optimizer.param_groups):
                raise ValueError(
                    f"expected {len(optimizer.param_groups)} min_lrs, got {len(min_lr)}"
                )
            self.default_min_lr = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = _group_values(self.optimizer, "lr")
        self._init_is_better(mode=mode, threshold=threshold, threshold_mode=threshold_mode)
        self._reset()

    def _reset(self) -> None:
        """Forget the best value, the bad-epoch count and the cooldown."""
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics: SupportsFloat, epoch: int | None = None) -> None:  # type: ignore[override]
        """Record this epoch's metric and reduce the lrs if it is time.

        Args:
            metrics (float): the monitored value.
            epoch (int, optional): deprecated; sets :attr:`last_epoch`.
        """
        current = float(metrics)
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self.last_epoch = epoch

        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1

        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown do not count

        if self.num_bad_epochs > self.patience:
            self._reduce_lr(epoch)
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

        self._last_lr = _group_values(self.optimizer, "lr")

    def _reduce_lr(self, epoch: int) -> None:
        if len(self.optimizer.param_groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    "The number of param groups in the `optimizer` "
                    f"({len(self.optimizer.param_groups)}) differs "
                    "from when `ReduceLROnPlateau` was initialized "
                    f"({len(self.min_lrs)}), usually due to a new "
                    "param group being added to the optimizer. Please "
                    "modify the `min_lrs` field to match the length "
                    "of the `optimizer` param groups."
                )
            self.min_lrs = [self.default_min_lr] * len(self.optimizer.param_groups)
        for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs, strict=True):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    @property
    def in_cooldown(self) -> bool:
        """Whether the scheduler is waiting after a reduction."""
        return self.cooldown_counter > 0

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min" and self.threshold_mode == "abs":
            return a < best - self.threshold
        if self.mode == "max" and self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def _init_is_better(self, mode: str, threshold: float, threshold_mode: str) -> None:
        if mode not in {"min", "max"}:
            raise ValueError(f"mode {mode} is unknown!")
        if threshold_mode not in {"rel", "abs"}:
            raise ValueError(f"threshold mode {threshold_mode} is unknown!")
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`state_dict`.

        Args:
            state_dict (dict): scheduler state, as returned by :meth:`state_dict`.
        """
        super().load_state_dict(state_dict)
        self._init_is_better(
            mode=self.mode, threshold=self.threshold, threshold_mode=self.threshold_mode
        )


# -------------------------------------------------------------------------- cycles
def _momentum_key(optimizer: Optimizer) -> bool:
    """Whether momentum is cycled through ``betas[0]`` (Adam family) rather than
    ``momentum`` (SGD family); torch's error when the optimizer has neither."""
    if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise ValueError(_NO_MOMENTUM_ERROR)
    return "betas" in optimizer.defaults


def _set_momentum(group: dict[str, Any], value: float, use_beta1: bool) -> None:
    if use_beta1:
        group["betas"] = (value, *group["betas"][1:])
    else:
        group["momentum"] = value


def _start_momentum_cycle(
    optimizer: Optimizer, base: list[float], high: list[float], use_beta1: bool
) -> None:
    """Store each group's momentum bounds and start it at the upper one."""
    for group, b, m in zip(optimizer.param_groups, base, high, strict=True):
        _set_momentum(group, m, use_beta1)
        group["max_momentum"] = m
        group["base_momentum"] = b


class CyclicLR(LRScheduler):
    r"""Cycle each group's learning rate between two bounds (cyclical learning rates).

    With :math:`s_u` = ``step_size_up``, :math:`s_d` = ``step_size_down``,
    :math:`r = s_u / (s_u + s_d)` and :math:`t` = ``last_epoch`` (batches seen):

    .. math::
        c = \left\lfloor 1 + \frac{t}{s_u + s_d} \right\rfloor, \quad
        x = 1 + \frac{t}{s_u + s_d} - c, \quad
        h = \begin{cases} x / r & x \le r \\ (x - 1)/(r - 1) & x > r \end{cases}

    .. math::
        \eta_t = \eta_{\text{base}} + (\eta_{\max} - \eta_{\text{base}})\, h\, f(\cdot),
        \qquad \mu_t = \mu_{\max} - (\mu_{\max} - \mu_{\text{base}})\, h\, f(\cdot)

    where the scale :math:`f` is evaluated at the cycle :math:`c` (``scale_mode="cycle"``)
    or at :math:`t` (``"iterations"``). Built-in policies: ``"triangular"``
    (:math:`f = 1`), ``"triangular2"`` (:math:`f(c) = 2^{1-c}`, the amplitude halves each
    cycle) and ``"exp_range"`` (:math:`f(t) = \gamma^t`). Momentum (SGD's ``momentum`` or
    Adam's ``betas[0]``) moves opposite to the lr when ``cycle_momentum`` is set.

    Step it after every batch.

    Args:
        optimizer (Optimizer): wrapped optimizer.
        base_lr (float or list): the lower lr bound, for all groups or one per group; it is
            also the starting lr.
        max_lr (float or list): the upper lr bound, for all groups or one per group; the
            scale function may keep the lr from reaching it.
        step_size_up (int): the number of iterations in the rising half of a cycle.
            Default: 2000.
        step_size_down (int): the number of iterations in the falling half; None means
            ``step_size_up``. Default: None.
        mode (str): ``"triangular"``, ``"triangular2"`` or ``"exp_range"``; ignored when
            ``scale_fn`` is given. Default: ``"triangular"``.
        gamma (float): the base of ``"exp_range"``'s scale :math:`\gamma^t`. Default: 1.0.
        scale_fn (function): a custom scale policy of one argument with values in
            ``[0, 1]``; overrides ``mode``. Default: None.
        scale_mode (str): ``"cycle"`` or ``"iterations"``: what ``scale_fn`` is evaluated
            on. Default: ``"cycle"``.
        cycle_momentum (bool): whether to cycle momentum inversely to the lr between
            ``base_momentum`` and ``max_momentum``. Default: True.
        base_momentum (float or list): the lower momentum bound (reached at the lr peak).
            Default: 0.8.
        max_momentum (float or list): the upper momentum bound (the starting momentum).
            Default: 0.9.
        last_epoch (int): the index of the last batch, to resume a run; -1 starts one.
            Default: -1.

    Example:
        >>> opt = npoptim.SGD(params, lr=0.1, momentum=0.9)
        >>> sched = CyclicLR(opt, base_lr=0.01, max_lr=0.1, step_size_up=10)
        >>> for batch in batches:
        ...     train_batch(...)
        ...     sched.step()

    Reference: Smith, `Cyclical Learning Rates for Training Neural Networks
    <https://arxiv.org/abs/1506.01186>`_.
    """

    _not_in_state_dict = ("optimizer", "_scale_fn_ref", "_scale_fn_custom")

    def __init__(
        self,
        optimizer: Optimizer,
        base_lr: float | list[float],
        max_lr: float | list[float],
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[float], float] | None = None,
        scale_mode: Literal["cycle", "iterations"] = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.8,
        max_momentum: float | list[float] = 0.9,
        last_epoch: int = -1,
    ) -> None:
        self.optimizer = _check_optimizer(optimizer)
        # Everything is checked before any param group changes.
        base_lrs = _format_param("base_lr", optimizer, base_lr)
        self.max_lrs = _format_param("max_lr", optimizer, max_lr)
        if mode not in ["triangular", "triangular2", "exp_range"] and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        if cycle_momentum:
            use_beta1 = _momentum_key(optimizer)
            base_momentums = _format_param("base_momentum", optimizer, base_momentum)
            max_momentums = _format_param("max_momentum", optimizer, max_momentum)

        if last_epoch == -1:
            for lr, group in zip(base_lrs, optimizer.param_groups, strict=True):
                group["lr"] = lr
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        self.mode = mode
        self.gamma = gamma
        self._scale_fn_ref: Callable[[float], float]
        self._scale_fn_custom = scale_fn
        self.scale_mode = scale_mode
        self._init_scale_fn()
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = use_beta1
            self.base_momentums = base_momentums
            self.max_momentums = max_momentums
            if last_epoch == -1:
                _start_momentum_cycle(optimizer, base_momentums, max_momentums, use_beta1)
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _init_scale_fn(self) -> None:
        if self._scale_fn_custom is not None:
            return
        if self.mode == "triangular":
            self._scale_fn_ref = self._triangular_scale_fn
            self.scale_mode = "cycle"
        elif self.mode == "triangular2":
            self._scale_fn_ref = self._triangular2_scale_fn
            self.scale_mode = "cycle"
        elif self.mode == "exp_range":
            self._scale_fn_ref = partial(self._exp_range_scale_fn, self.gamma)
            self.scale_mode = "iterations"

    def scale_fn(self, x: float) -> float:
        """The scale policy: ``scale_fn`` if one was given, else the mode's."""
        if self._scale_fn_custom is not None:
            return self._scale_fn_custom(x)
        return self._scale_fn_ref(x)

    @staticmethod
    def _triangular_scale_fn(x: float) -> float:
        return 1.0

    @staticmethod
    def _triangular2_scale_fn(x: float) -> float:
        return 1 / float(2.0 ** (x - 1))

    @staticmethod
    def _exp_range_scale_fn(gamma: float, x: float) -> float:
        return float(gamma**x)

    def get_lr(self) -> list[float]:
        """The lrs at batch :attr:`last_epoch` of the cycle; moves momentum too when
        ``cycle_momentum`` is set."""
        _warn_unless_in_step(self)
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        # height: 0 -> 1 over the rising part of the cycle, 1 -> 0 over the falling part
        height = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)

        lrs = [
            base_lr + (max_lr - base_lr) * height * scale
            for base_lr, max_lr in zip(self.base_lrs, self.max_lrs, strict=True)
        ]
        if self.cycle_momentum:
            for group, base_m, max_m in zip(
                self.optimizer.param_groups, self.base_momentums, self.max_momentums, strict=True
            ):
                _set_momentum(group, max_m - (max_m - base_m) * height * scale, self.use_beta1)
        return lrs

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state; a custom ``scale_fn`` is saved as None if it is a function
        or lambda, as a copy of its ``__dict__`` if it is a callable object.

        Save and load the optimizer's state as well.
        """
        state = super().state_dict()
        state["_scale_fn_custom"] = _callable_state(self._scale_fn_custom)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`state_dict`; the scale function given to the
        constructor is kept (a callable object gets its saved attributes back).

        Args:
            state_dict (dict): scheduler state, as returned by :meth:`state_dict`.
        """
        self._check_state_dict(state_dict)
        state = dict(state_dict)
        saved_fn = state.pop("_scale_fn_custom", None)
        self._restore(state)
        _restore_callable_state(self._scale_fn_custom, saved_fn)
        self._init_scale_fn()


class _SchedulePhase(TypedDict):
    end_step: float
    start_lr: str
    end_lr: str
    start_momentum: str
    end_momentum: str


class OneCycleLR(LRScheduler):
    r"""The 1cycle policy: warm the lr up to ``max_lr``, then anneal it far below its
    starting value, with momentum moving the other way.

    With :math:`\eta_{\text{init}} = \text{max\_lr} / \text{div\_factor}` and
    :math:`\eta_{\min} = \eta_{\text{init}} / \text{final\_div\_factor}`, the lr goes
    :math:`\eta_{\text{init}} \to \text{max\_lr}` over the first ``pct_start`` of the
    ``total_steps``, then :math:`\text{max\_lr} \to \eta_{\min}` (two phases, fastai's
    default) or, with ``three_phase``, back to :math:`\eta_{\text{init}}` symmetrically and
    then down to :math:`\eta_{\min}`. Within a phase from :math:`a` to :math:`b`, at
    fraction :math:`p` of the phase,

    .. math::
        \text{cos:}\; b + \frac{a - b}{2}(1 + \cos \pi p), \qquad
        \text{linear:}\; a + (b - a) p.

    Momentum goes ``max_momentum`` → ``base_momentum`` → ``max_momentum``. The scheduler is
    not chainable; step it after every batch, ``total_steps`` times at most.

    Args:
        optimizer (Optimizer): wrapped optimizer.
        max_lr (float or list): the peak lr, for all groups or one per group.
        total_steps (int): the number of steps in the cycle; if None it is
            ``epochs * steps_per_epoch``. Default: None.
        epochs (int): the number of epochs, used with ``steps_per_epoch`` when
            ``total_steps`` is None. Default: None.
        steps_per_epoch (int): the number of steps per epoch. Default: None.
        pct_start (float): the fraction of the cycle spent raising the lr. Default: 0.3.
        anneal_strategy (str): ``"cos"`` or ``"linear"``. Default: ``"cos"``.
        cycle_momentum (bool): whether to cycle momentum inversely to the lr between
            ``base_momentum`` and ``max_momentum``. Default: True.
        base_momentum (float or list): the lower momentum bound (at the lr peak).
            Default: 0.85.
        max_momentum (float or list): the upper momentum bound (at the start and end).
            Default: 0.95.
        div_factor (float): initial_lr = max_lr / div_factor. Default: 25.
        final_div_factor (float): min_lr = initial_lr / final_div_factor. Default: 1e4.
        three_phase (bool): use the paper's three phases instead of fastai's two.
            Default: False.
        last_epoch (int): the index of the last batch, to resume a run; -1 starts one.
            Default: -1.

    Example:
        >>> opt = npoptim.SGD(params, lr=1e-4, momentum=0.9)
        >>> sched = OneCycleLR(opt, max_lr=0.01, steps_per_epoch=len(batches), epochs=10)

    Reference: Smith & Topin, `Super-Convergence: Very Fast Training of Neural Networks
    Using Large Learning Rates <https://arxiv.org/abs/1708.07120>`_.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | list[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.85,
        max_momentum: float | list[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        self.optimizer = _check_optimizer(optimizer)
        # Everything is checked before any param group changes.
        if total_steps is not None:
            if total_steps <= 0 or not _is_integer(total_steps):
                raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
            self.total_steps = int(total_steps)
        elif epochs is not None and steps_per_epoch is not None:
            if not _is_integer(epochs) or epochs <= 0:
                raise ValueError(f"Expected positive integer epochs, but got {epochs}")
            if not _is_integer(steps_per_epoch) or steps_per_epoch <= 0:
                raise ValueError(
                    f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}"
                )
            self.total_steps = int(epochs) * int(steps_per_epoch)
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
        self._schedule_phases = self._phases(pct_start, three_phase)
        if pct_start < 0 or pct_start > 1 or not isinstance(pct_start, float):
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError(
                f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}"
            )
        self._anneal_func_type = anneal_strategy
        max_lrs = _format_param("max_lr", self.optimizer, max_lr)
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            self.use_beta1 = _momentum_key(optimizer)
            max_momentums = _format_param("max_momentum", optimizer, max_momentum)
            base_momentums = _format_param("base_momentum", optimizer, base_momentum)

        if last_epoch == -1:
            for group, group_max_lr in zip(optimizer.param_groups, max_lrs, strict=True):
                group["initial_lr"] = group_max_lr / div_factor
                group["max_lr"] = group_max_lr
                group["min_lr"] = group["initial_lr"] / final_div_factor
            if cycle_momentum:
                _start_momentum_cycle(optimizer, base_momentums, max_momentums, self.use_beta1)
        super().__init__(optimizer, last_epoch)

    def _phases(self, pct_start: float, three_phase: bool) -> list[_SchedulePhase]:
        """The phases of the cycle: where each ends and which group keys it runs between."""
        warmup_end = float(pct_start * self.total_steps) - 1
        last = self.total_steps - 1
        if three_phase:
            return [
                _phase(warmup_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                _phase(
                    float(2 * pct_start * self.total_steps) - 2,
                    "max_lr",
                    "initial_lr",
                    "base_momentum",
                    "max_momentum",
                ),
                _phase(last, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
            ]
        return [
            _phase(warmup_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
            _phase(last, "max_lr", "min_lr", "base_momentum", "max_momentum"),
        ]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state returned by :meth:`state_dict`.

        A state saved by an older torch carries the function ``anneal_func`` instead of
        ``_anneal_func_type``; as torch 2.13 does, the strategy given to the constructor is
        kept, and the function (which could not be saved safely) is dropped.

        Args:
            state_dict (dict): scheduler state, as returned by :meth:`state_dict`.
        """
        state = dict(state_dict)
        state.pop("anneal_func", None)
        super().load_state_dict(state)

    def _anneal_func(self, start: float, end: float, pct: float) -> float:
        if "_anneal_func_type" not in self.__dict__:  # an object pickled by an older torch
            legacy: Callable[[float, float, float], float] = self.__dict__["anneal_func"]
            return legacy(start, end, pct)
        if self._anneal_func_type == "cos":
            return self._annealing_cos(start, end, pct)
        if self._anneal_func_type == "linear":
            return self._annealing_linear(start, end, pct)
        raise ValueError(f"Unknown _anneal_func_type: {self._anneal_func_type}")

    @staticmethod
    def _annealing_cos(start: float, end: float, pct: float) -> float:
        """Cosine from ``start`` (pct 0) to ``end`` (pct 1)."""
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    @staticmethod
    def _annealing_linear(start: float, end: float, pct: float) -> float:
        """Straight line from ``start`` (pct 0) to ``end`` (pct 1)."""
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        """The lrs at step :attr:`last_epoch` of the cycle; moves momentum too when
        ``cycle_momentum`` is set."""
        _warn_unless_in_step(self)
        step_num = self.last_epoch
        if step_num > self.total_steps:
            raise ValueError(
                f"Tried to step {step_num} times. The specified number of total steps is "
                f"{self.total_steps}"
            )
        start_step = 0.0
        for i, phase in enumerate(self._schedule_phases):
            end_step = phase["end_step"]
            if step_num <= end_step or i == len(self._schedule_phases) - 1:
                pct = (step_num - start_step) / (end_step - start_step)
                break
            start_step = end_step

        lrs = []
        for group in self.optimizer.param_groups:
            lrs.append(self._anneal_func(group[phase["start_lr"]], group[phase["end_lr"]], pct))
            if self.cycle_momentum:
                momentum = self._anneal_func(
                    group[phase["start_momentum"]], group[phase["end_momentum"]], pct
                )
                _set_momentum(group, momentum, self.use_beta1)
        return lrs


def _phase(
    end_step: float, start_lr: str, end_lr: str, start_momentum: str, end_momentum: str
) -> _SchedulePhase:
    return {
        "end_step": end_step,
        "start_lr": start_lr,
        "end_lr": end_lr,
        "start_momentum": start_momentum,
        "end_momentum": end_momentum,
    }


class CosineAnnealingWarmRestarts(LRScheduler):
    r"""Cosine annealing with warm restarts (SGDR).

    .. math::
        \eta_t = \eta_{\min} + \frac12(\eta_0 - \eta_{\min})
                 \left(1 + \cos\frac{T_{cur}\,\pi}{T_i}\right)

    :math:`T_{cur}` counts the epochs since the last restart and :math:`T_i` is the length of
    the current period: ``T_0`` at first, multiplied by ``T_mult`` at each restart, where the
    lr jumps back to :math:`\eta_0`. ``step`` also takes fractional epochs
    (``sched.step(epoch + i / iters)`` after each batch).

    Args:
        optimizer (Optimizer): wrapped optimizer.
        T_0 (int): the number of iterations until the first restart.
        T_mult (int, optional): the factor by which :math:`T_i` grows after a restart.
            Default: 1.
        eta_min (float, optional): the minimum learning rate. Default: 0.
        last_epoch (int, optional): the index of the last epoch. Default: -1.

    Example:
        >>> sched = CosineAnnealingWarmRestarts(opt, T_0=20)

    Reference: Loshchilov & Hutter, `SGDR: Stochastic Gradient Descent with Warm Restarts
    <https://arxiv.org/abs/1608.03983>`_.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        T_0: int,
        T_mult: int = 1,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if T_0 <= 0 or not _is_integer(T_0):
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if T_mult < 1 or not _is_integer(T_mult):
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if not isinstance(eta_min, numbers.Real):
            raise ValueError(
                f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}"
            )
        self.T_0: int = T_0
        self.T_i: float = T_0
        self.T_mult: int = T_mult
        self.eta_min: float = eta_min
        self.T_cur: float = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The lrs at position :attr:`T_cur` of the current period :attr:`T_i`."""
        _warn_unless_in_step(self)
        return [
            _cosine_interpolation(base_lr, self.eta_min, self.T_cur, self.T_i)
            for base_lr in self.base_lrs
        ]

    def step(self, epoch: float | None = None) -> None:
        """Advance one epoch, or jump to ``epoch`` (which may be fractional).

        Args:
            epoch (float, optional): the epoch to move to; None advances by one.

        Example:
            >>> for epoch in range(20):
            ...     for i, batch in enumerate(batches):
            ...         train_batch(...)
            ...         sched.step(epoch + i / len(batches))
        """
        if epoch is None and self.last_epoch < 0:
            epoch = 0
        if epoch is None:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        else:
            if epoch < 0:
                raise ValueError(f"Expected non-negative epoch, but got {epoch}")
            if epoch >= self.T_0:
                if self.T_mult == 1:
                    self.T_cur = epoch % self.T_0
                else:
                    n = int(math.log(epoch / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
                    self.T_cur = epoch - self.T_0 * (self.T_mult**n - 1) / (self.T_mult - 1)
                    self.T_i = self.T_0 * self.T_mult**n
            else:
                self.T_i = self.T_0
                self.T_cur = epoch
        self.last_epoch = math.floor(epoch)
        with _raised(self, "_get_lr_called_within_step"):
            values = self.get_lr()
        self._set_lrs(values)
