"""The optimizer base class, hooks, and the pieces every algorithm shares.

:class:`Optimizer` is torch 2.13's ``torch.optim.Optimizer`` for NumPy: parameter groups,
lazily created per-parameter state, ``zero_grad``, ``state_dict`` / ``load_state_dict`` in
torch's packed layout, and the step, state-dict and load-state-dict hooks. Subclasses keep
only bookkeeping; the arithmetic lives in each algorithm's functional kernel.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from copy import deepcopy
from typing import Any, ClassVar, TypeVar, Union, cast

import numpy as np

from ._kernel import require_numba
from .parameter import Parameter, SparseGrad

__all__ = [
    "Optimizer",
    "RemovableHandle",
    "register_optimizer_step_post_hook",
    "register_optimizer_step_pre_hook",
    "required",
]

StateDict = dict[str, Any]
Args = tuple[Any, ...]
Kwargs = dict[str, Any]
ParamsT = Union[  # noqa: UP007
    Iterable[Parameter], Iterable[tuple[str, Parameter]], Iterable[dict[str, Any]]
]
StepPreHook = Callable[["Optimizer", Args, Kwargs], Union[tuple[Args, Kwargs], None]]  # noqa: UP007
StepPostHook = Callable[["Optimizer", Args, Kwargs], None]
_F = TypeVar("_F", bound=Callable[..., Any])


class _RequiredParameter:
    """Marks a hyperparameter every param group must give (torch's ``required``)."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


class RemovableHandle:
    """A handle that removes the hook it was returned for (torch.utils.hooks analog).

    Usable as a context manager: the hook is removed on exit.
    """

    _next_id = 0

    def __init__(self, hooks_dict: OrderedDict[int, Any]) -> None:
        self.hooks_dict_ref = hooks_dict
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self) -> None:
        """Remove the hook; a second call does nothing."""
        self.hooks_dict_ref.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _register(hooks: OrderedDict[int, Any], hook: Any, prepend: bool = False) -> RemovableHandle:
    handle = RemovableHandle(hooks)
    hooks[handle.id] = hook
    if prepend:
        hooks.move_to_end(handle.id, last=False)
    return handle


_global_optimizer_pre_hooks: OrderedDict[int, StepPreHook] = OrderedDict()
_global_optimizer_post_hooks: OrderedDict[int, StepPostHook] = OrderedDict()


def register_optimizer_step_pre_hook(hook: StepPreHook) -> RemovableHandle:
    """Register a pre hook run before every optimizer's ``step``.

    The hook is called as ``hook(optimizer, args, kwargs)`` and returns None or a new
    ``(args, kwargs)`` pair. Global pre hooks run before the optimizer's own.
    """
    return _register(_global_optimizer_pre_hooks, hook)


def register_optimizer_step_post_hook(hook: StepPostHook) -> RemovableHandle:
    """Register a post hook run after every optimizer's ``step``, after its own."""
    return _register(_global_optimizer_post_hooks, hook)


def _hooked_step(step: _F) -> _F:
    """Wrap a subclass's ``step`` so the global and per-instance step hooks run around it."""

    @functools.wraps(step)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        self = cast(Optimizer, args[0])
        for pre_hook in itertools.chain(
            _global_optimizer_pre_hooks.values(), self._optimizer_step_pre_hooks.values()
        ):
            result = pre_hook(self, args, kwargs)
            if result is not None:
                if isinstance(result, tuple) and len(result) == 2:
                    args, kwargs = result
                else:
                    raise RuntimeError(
                        f"{step} must return None or a tuple of (new_args, new_kwargs), "
                        f"but got {result}."
                    )
        out = step(*args, **kwargs)
        for post_hook in itertools.chain(
            self._optimizer_step_post_hooks.values(), _global_optimizer_post_hooks.values()
        ):
            post_hook(self, args, kwargs)
        return out

    wrapper.hooked = True  # type: ignore[attr-defined]
    return cast(_F, wrapper)


def _typename(obj: object) -> str:
    cls = type(obj)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _copy_value(value: Any) -> Any:
    """A deep copy of a state value that shares no array with the original."""
    if isinstance(value, np.ndarray):
        return np.array(value, copy=True, subok=False)
    if isinstance(value, SparseGrad):
        return SparseGrad(value.indices.copy(), value.values.copy(), value.shape)
    if isinstance(value, dict):
        return {k: _copy_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy_value(v) for v in value)
    return deepcopy(value)


class Optimizer:
    """Base class for all optimizers (torch 2.13's ``torch.optim.Optimizer`` for NumPy).

    Args:
        params: an iterable of :class:`~npoptim.Parameter` s, of ``(name, Parameter)`` pairs,
            or of dicts that define parameter groups (each with a ``"params"`` entry and any
            per-group hyperparameters).
        defaults: the default hyperparameters, used by groups that do not set them.

    Attributes:
        defaults: the hyperparameter defaults.
        state: per-parameter state, a ``defaultdict(dict)`` keyed by the parameter itself.
        param_groups: the list of groups; each is a dict holding ``"params"`` and the
            group's hyperparameters.
    """

    defaults: dict[str, Any]
    state: defaultdict[Any, Any]
    param_groups: list[dict[str, Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        step = cls.__dict__.get("step")
        if step is not None and not getattr(step, "hooked", False):
            cls.step = _hooked_step(step)  # type: ignore[method-assign]

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self._init_hooks()
        if isinstance(params, np.ndarray):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Parameters "
                "or dicts, but got " + _typename(params)
            )
        self.state = defaultdict(dict)
        self.param_groups = []
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for param_group in param_groups:
            self.add_param_group(cast(dict[str, Any], param_group))

    def _init_hooks(self) -> None:
        for name in (
            "_optimizer_step_pre_hooks",
            "_optimizer_step_post_hooks",
            "_optimizer_state_dict_pre_hooks",
            "_optimizer_state_dict_post_hooks",
            "_optimizer_load_state_dict_pre_hooks",
            "_optimizer_load_state_dict_post_hooks",
        ):
            if name not in self.__dict__:
                setattr(self, name, OrderedDict())

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    #: Group flags that state saved by an older version may lack, with their defaults;
    #: :meth:`__setstate__` fills them in (torch's subclasses do this one by one).
    _group_flags: ClassVar[dict[str, Any]] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_hooks()
        self.defaults.setdefault("differentiable", False)
        for group in self.param_groups:
            for key, value in self._group_flags.items():
                group.setdefault(key, value)
            for p in group["params"]:
                p_state = self.state.get(p)
                if p_state and "step" in p_state:
                    p_state["step"] = float(p_state["step"])

    def __repr__(self) -> str:
        text = self.__class__.__name__ + " ("
        for i, group in enumerate(self.param_groups):
            text += f"\nParameter Group {i}\n"
            for key in sorted(group.keys()):
                if key != "params":
                    text += f"    {key}: {group[key]}\n"
        return text + ")"

    # --------------------------------------------------------------- param groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group; checks everything before it changes anything.

        Args:
            param_group: a dict with ``"params"`` (a Parameter, or a list of Parameters or of
                ``(name, Parameter)`` pairs) and any hyperparameters for this group.
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        group = dict(param_group)  # validated on a copy: a refusal changes nothing
        params = group["params"]
        if isinstance(params, np.ndarray):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but "
                "the ordering of tensors in sets will change between runs. Please use a list "
                "instead."
            )
        else:
            params = list(params)
        tensors = [p[1] if isinstance(p, tuple) else p for p in params]
        names = [p[0] for p in params if isinstance(p, tuple)]
        group["params"] = tensors
        if names:
            if len(names) != len(tensors):
                raise ValueError(
                    "all optimizer params should be with/without names. Some param names are "
                    "missing"
                )
            group["param_names"] = names
        for p in tensors:
            if not isinstance(p, Parameter):
                raise TypeError(
                    "optimizer can only optimize Parameters, but one of the params is "
                    + _typename(p)
                )
            if not p.flags.writeable:
                raise ValueError("can't optimize a read-only Parameter")
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(
                    "parameter group didn't specify a value of required optimization "
                    f"parameter {name}"
                )
            group.setdefault(name, default)
        if len(tensors) != len({id(p) for p in tensors}):
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; "
                "in future, this will cause an error; "
                "see github.com/pytorch/pytorch/issues/40967 for more information",
                stacklevel=3,
            )
        existing: set[int] = set()
        for other in self.param_groups:
            existing.update(id(p) for p in other["params"])
            if ("param_names" in group) != ("param_names" in other):
                text = "with names" if "param_names" in group else "without names"
                raise ValueError(
                    "all optimizer param groups should be with/without names. "
                    f"cannot add param group {text} to the optimizer"
                )
        if not existing.isdisjoint(id(p) for p in tensors):
            raise ValueError("some parameters appear in more than one parameter group")
        param_group.clear()
        param_group.update(group)
        self.param_groups.append(param_group)

    # ------------------------------------------------------------------ gradients
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of every parameter.

        Args:
            set_to_none: set grads to None (the default) instead of filling them with zeros.
                Optimizers skip parameters whose grad is None but step those with a zero grad.
        """
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                elif isinstance(p.grad, SparseGrad):
                    p.grad.zero_()
                else:
                    p.grad.fill(0)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform a single optimization step.

        Args:
            closure: a callable that re-evaluates the model (setting the grads) and returns
                the loss; optional for every optimizer but LBFGS.

        Returns:
            The closure's loss, or None without a closure.
        """
        loss = _eval_closure(closure)
        for group in self.param_groups:
            self._step_group(group)
        return loss

    step = _hooked_step(step)

    def _step_group(self, group: dict[str, Any]) -> None:
        """Update the parameters of one group (what an algorithm implements)."""
        raise NotImplementedError

    def _init_group(
        self,
        group: dict[str, Any],
        init_state: Callable[[dict[str, Any], Parameter, dict[str, Any]], None],
        name: str,
        *,
        sparse_hint: str = "",
        real_only: bool = False,
    ) -> tuple[list[Parameter], list[np.ndarray[Any, Any]], list[dict[str, Any]]]:
        """The parameters of ``group`` that have a grad, their grads and their states.

        A parameter's state is created on its first step (``step`` = 0.0, then
        ``init_state(group, p, state)`` adds the algorithm's arrays), and ``step`` is counted
        here, so the kernel sees the number of the step it performs. Sparse grads (and, with
        ``real_only``, complex parameters) are refused with torch's messages naming ``name``.
        """
        params, grads = _dense_params_and_grads(group, name, sparse_hint, real_only)
        states = []
        for p in params:
            state = self.state[p]
            if len(state) == 0:
                state["step"] = 0.0
                init_state(group, p, state)
            state["step"] += 1
            states.append(state)
        return params, grads, states

    # ---------------------------------------------------------------- state dicts
    def state_dict(self) -> StateDict:
        """The optimizer's state in torch's packed layout.

        ``{"state": {index: {...}}, "param_groups": [{..., "params": [index, ...]}]}``, with
        parameters numbered in order of first appearance across groups. Arrays are copies:
        changing the returned dict never changes the optimizer.
        """
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        mapping: dict[int, int] = {}
        start = 0

        def pack_group(group: dict[str, Any]) -> dict[str, Any]:
            nonlocal start
            packed = {k: _copy_value(v) for k, v in group.items() if k != "params"}
            for i, p in enumerate(group["params"], start):
                mapping.setdefault(id(p), i)
            packed["params"] = [mapping[id(p)] for p in group["params"]]
            start += len(packed["params"])
            return packed

        param_groups = [pack_group(g) for g in self.param_groups]
        packed_state = {
            (mapping[id(k)] if isinstance(k, Parameter) else k): _copy_value(v)
            for k, v in self.state.items()
        }
        state_dict: StateDict = {"state": packed_state, "param_groups": param_groups}
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    @staticmethod
    def _cast_state(param: Parameter, value: Any, key: Any = None) -> Any:
        """Copy a loaded state value, casting arrays to a real parameter's dtype (not step)."""
        if isinstance(value, np.ndarray):
            if key != "step" and np.issubdtype(param.dtype, np.floating):
                return np.array(value, dtype=param.dtype, copy=True, subok=False)
            return np.array(value, copy=True, subok=False)
        if isinstance(value, dict):
            return {k: Optimizer._cast_state(param, v, k) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(Optimizer._cast_state(param, v) for v in value)
        return _copy_value(value)

    def load_state_dict(self, state_dict: StateDict) -> None:
        """Load a state produced by :meth:`state_dict`; a refused load changes nothing.

        Parameters are matched by position, group by group. Array state is copied and, for
        real floating parameters, cast to the parameter's dtype (``step`` excepted), as torch
        does. Names in ``param_names``, if present, replace the optimizer's.
        """
        state_dict = state_dict.copy()
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        groups = self.param_groups
        saved_groups = deepcopy(state_dict["param_groups"])
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(
            len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups, strict=True)
        ):
            raise ValueError(
                "loaded state dict contains a parameter group that doesn't match the size of "
                "optimizer's group"
            )
        id_map = dict(
            zip(
                itertools.chain.from_iterable(g["params"] for g in saved_groups),
                itertools.chain.from_iterable(g["params"] for g in groups),
                strict=True,
            )
        )
        state: defaultdict[Any, Any] = defaultdict(dict)
        for k, v in state_dict["state"].items():
            if k in id_map:
                param = id_map[k]
                state[param] = self._cast_state(param, v)
            else:
                state[k] = _copy_value(v)
        new_groups = []
        for group, saved in zip(groups, saved_groups, strict=True):
            saved["params"] = group["params"]
            if "param_names" in group and "param_names" not in saved:
                saved["param_names"] = group["param_names"]
            new_groups.append(saved)
        self.__setstate__({"state": state, "param_groups": new_groups})
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    # ---------------------------------------------------------------------- hooks
    def register_step_pre_hook(self, hook: StepPreHook) -> RemovableHandle:
        """Register a hook ``hook(optimizer, args, kwargs) -> None | (args, kwargs)``
        run before each ``step``."""
        return _register(self._optimizer_step_pre_hooks, hook)

    def register_step_post_hook(self, hook: StepPostHook) -> RemovableHandle:
        """Register a hook ``hook(optimizer, args, kwargs) -> None`` run after each ``step``."""
        return _register(self._optimizer_step_post_hooks, hook)

    def register_state_dict_pre_hook(
        self, hook: Callable[[Optimizer], None], prepend: bool = False
    ) -> RemovableHandle:
        """Register ``hook(optimizer) -> None``, run before :meth:`state_dict` builds its dict.

        With ``prepend=True`` it runs before the hooks already registered.
        """
        return _register(self._optimizer_state_dict_pre_hooks, hook, prepend)

    def register_state_dict_post_hook(
        self, hook: Callable[[Optimizer, StateDict], StateDict | None], prepend: bool = False
    ) -> RemovableHandle:
        """Register ``hook(optimizer, state_dict) -> state_dict | None``, run on the result of
        :meth:`state_dict`; a returned dict replaces it."""
        return _register(self._optimizer_state_dict_post_hooks, hook, prepend)

    def register_load_state_dict_pre_hook(
        self, hook: Callable[[Optimizer, StateDict], StateDict | None], prepend: bool = False
    ) -> RemovableHandle:
        """Register ``hook(optimizer, state_dict) -> state_dict | None``, run on a shallow copy
        of the dict given to :meth:`load_state_dict`; a returned dict is loaded instead."""
        return _register(self._optimizer_load_state_dict_pre_hooks, hook, prepend)

    def register_load_state_dict_post_hook(
        self, hook: Callable[[Optimizer], None], prepend: bool = False
    ) -> RemovableHandle:
        """Register ``hook(optimizer) -> None``, run after :meth:`load_state_dict` loaded."""
        return _register(self._optimizer_load_state_dict_post_hooks, hook, prepend)

    _optimizer_step_pre_hooks: OrderedDict[int, StepPreHook]
    _optimizer_step_post_hooks: OrderedDict[int, StepPostHook]
    _optimizer_state_dict_pre_hooks: OrderedDict[int, Callable[[Optimizer], None]]
    _optimizer_state_dict_post_hooks: OrderedDict[
        int, Callable[[Optimizer, StateDict], StateDict | None]
    ]
    _optimizer_load_state_dict_pre_hooks: OrderedDict[
        int, Callable[[Optimizer, StateDict], StateDict | None]
    ]
    _optimizer_load_state_dict_post_hooks: OrderedDict[int, Callable[[Optimizer], None]]


# --------------------------------------------------------------------------------------
# Shared argument documentation and validation helpers of the algorithm modules.

_params_doc = r"""params (iterable): iterable of Parameters or of ``(name, Parameter)`` pairs to
            optimize, or iterable of dicts defining parameter groups. When names are given,
            every parameter of every group must be named."""

_maximize_doc = r"""maximize (bool, optional): maximize the objective with respect to the
            params, instead of minimizing (default: False)"""

_foreach_doc = r"""foreach (bool, optional): whether the multi-tensor implementation is used.
            It computes the same values as the for-loop path; ``None`` lets npoptim choose
            (default: None)"""

_fused_doc = r"""fused (bool, optional): whether the compiled single-pass implementation is
            used (needs numba: ``pip install numba``). It computes the same values as the
            for-loop path; with neither flag, npoptim uses it when numba is installed
            (default: None)"""

_differentiable_doc = r"""differentiable (bool, optional): accepted for compatibility with
            torch; npoptim has no autograd, so only False is allowed (default: False)"""


def _eval_closure(closure: Callable[[], float] | None) -> float | None:
    """The closure's loss, or None without a closure."""
    return None if closure is None else closure()


def _check_impl_flags(foreach: bool | None, fused: bool | None, differentiable: bool) -> None:
    """torch's checks on the implementation flags, plus what npoptim cannot do."""
    if differentiable:
        raise ValueError("differentiable=True needs autograd, which npoptim does not have")
    if fused:
        if foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        require_numba()


def _dense_params_and_grads(
    group: dict[str, Any], optimizer_name: str, hint: str = "", real_only: bool = False
) -> tuple[list[Parameter], list[np.ndarray[Any, Any]]]:
    """The parameters of ``group`` that have a grad, and their grads; sparse grads (and, with
    ``real_only``, complex parameters) are refused with torch's messages, in torch's order."""
    params: list[Parameter] = []
    grads: list[np.ndarray[Any, Any]] = []
    for p in group["params"]:
        grad = p.grad
        if grad is None:
            continue
        if real_only and np.iscomplexobj(p):
            raise RuntimeError(f"{optimizer_name} does not support complex parameters")
        if isinstance(grad, SparseGrad):
            raise RuntimeError(f"{optimizer_name} does not support sparse gradients{hint}")
        params.append(p)
        grads.append(grad)
    return params, grads


_INVALID = {"lr": "Invalid learning rate: {}", "eps": "Invalid epsilon value: {}"}


def _check_nonnegative(**values: float) -> None:
    """torch's range checks, in the order given: each value must be >= 0 (NaN is refused).

    Messages are torch's: "Invalid learning rate: -1", "Invalid epsilon value: ...",
    "Invalid <name> value: ..." for the others.
    """
    for name, value in values.items():
        if not 0.0 <= value:
            raise ValueError(_INVALID.get(name, f"Invalid {name} value: {{}}").format(value))


def _check_betas(betas: tuple[float, float]) -> None:
    """torch's check that each beta lies in [0, 1)."""
    for index, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {index}: {beta}")


def _zeros_like(p: Parameter) -> np.ndarray[Any, Any]:
    """A plain zero array of the parameter's shape, dtype and memory layout (new state)."""
    return np.zeros_like(p.view(np.ndarray))
