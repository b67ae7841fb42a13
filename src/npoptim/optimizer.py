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
from collections.abc import Callable, Iterable, Mapping
from copy import deepcopy
from typing import Any, ClassVar, TypeVar, Union, cast

import numpy as np

from ._validation import (
    StateKey,
    TypeCheck,
    check_impl_flags,
    check_types,
    flag,
    is_real,
    optional_flag,
    wrapper_hint,
)
from ._views import readonly
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

    #: Type check of each hyperparameter a group may hold (see :mod:`npoptim._validation`);
    #: run where values enter and at every ``step()``, before a kernel path is chosen.
    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        "maximize": flag,
        "foreach": optional_flag,
        "fused": optional_flag,
        "differentiable": flag,
        "capturable": flag,
    }
    #: What each key of a parameter's state holds; ``load_state_dict`` checks loaded state
    #: against it. None (a subclass that declares nothing): loaded state is not checked.
    _state_keys: ClassVar[dict[str, StateKey] | None] = None

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        """torch's value checks of the hyperparameters (``Invalid learning rate: -1``), run by
        the constructor and ``add_param_group`` on well-typed values."""

    def _check_settings(self, settings: dict[str, Any], where: str) -> None:
        """Type checks, then torch's value checks, of a group's (or the defaults')
        hyperparameters; ``where`` names the group in messages (``""`` for the defaults)."""
        check_types(self._hyperparameters, settings, where)
        try:
            self._check_ranges(settings)
        except ValueError as exc:
            if not where:
                raise
            raise ValueError(f"{where}: {exc}") from exc

    def _check_param_groups(self) -> None:
        """The type checks of every group's hyperparameters, run before each ``step()``: a
        value written into ``param_groups`` (``lr = "0.1"``, ``betas = (0.9,)``) raises here,
        naming the group, the key and the value, whatever kernel path would run."""
        for i, group in enumerate(self.param_groups):
            check_types(self._hyperparameters, group, f"param_groups[{i}]")

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self._check_settings(defaults, "")
        check_impl_flags(
            defaults.get("foreach"), defaults.get("fused"), defaults.get("differentiable", False)
        )
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
        self._check_settings(group, f"param_groups[{len(self.param_groups)}]")
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
        self._check_param_groups()
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
        parameters numbered in order of first appearance across groups. State arrays are
        read-only views of the live state, not copies (as torch returns its live tensors): the
        call costs no memory whatever the model's size, writing through them raises
        ``ValueError``, and their values follow training; ``copy.deepcopy`` the result for a
        snapshot. The dicts, lists and Python scalars are the caller's own.
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
            (mapping[id(k)] if isinstance(k, Parameter) else k): readonly(v)
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

        Parameters are matched by position, group by group. Everything is checked before
        anything changes: the argument is a state dict (not a checkpoint holding one), group
        count and sizes, each group's hyperparameters (present, and of the types ``step()``
        requires), and each parameter's state: its keys belong to this algorithm (and its
        options: Adam with ``amsgrad`` needs ``max_exp_avg_sq``), its arrays have the shape
        the parameter needs and a dtype that casts to the parameter's. Array state is copied
        once and, for real floating parameters, cast to the parameter's dtype (``step``
        excepted), as torch does; read-only arrays are accepted. Names in ``param_names``, if
        present, replace the optimizer's.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"{type(self).__name__}.load_state_dict expects an optimizer state_dict "
                f"(a dict), but got {_typename(state_dict)}"
            )
        state_dict = dict(state_dict)
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        _check_state_dict_keys(self, state_dict)
        groups = self.param_groups
        saved_groups = deepcopy(state_dict["param_groups"])
        _check_saved_group_layout(saved_groups)
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(
            len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups, strict=True)
        ):
            raise ValueError(
                "loaded state dict contains a parameter group that doesn't match the size of "
                "optimizer's group"
            )
        for i, saved in enumerate(saved_groups):
            self._check_saved_group(saved, i)
        id_map = dict(
            zip(
                itertools.chain.from_iterable(g["params"] for g in saved_groups),
                itertools.chain.from_iterable(g["params"] for g in groups),
                strict=True,
            )
        )
        where = {
            index: (i, j) for i, g in enumerate(saved_groups) for j, index in enumerate(g["params"])
        }
        saved_state = state_dict["state"]
        if not isinstance(saved_state, Mapping):
            raise TypeError(
                "loaded state dict: 'state' must be a dict of per-parameter states, but got "
                + _typename(saved_state)
            )
        for k, v in saved_state.items():
            if k not in id_map:
                raise ValueError(
                    f"loaded state dict has a state for parameter {k!r}, which no param group "
                    f"lists (the groups list {sorted(id_map, key=repr)})"
                )
            i, j = where[k]
            self._check_param_state(v, saved_groups[i], id_map[k], k, i, groups[i], j)
        # Checked: from here on nothing raises.
        state: defaultdict[Any, Any] = defaultdict(dict)
        for k, v in saved_state.items():
            param = id_map[k]
            state[param] = self._cast_state(param, v)
        new_groups = []
        for group, saved in zip(groups, saved_groups, strict=True):
            saved["params"] = group["params"]
            if "param_names" in group and "param_names" not in saved:
                saved["param_names"] = group["param_names"]
            new_groups.append(saved)
        self.__setstate__({"state": state, "param_groups": new_groups})
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _check_saved_group(self, saved: dict[str, Any], index: int) -> None:
        """A loaded group holds every hyperparameter this optimizer needs (the flags
        :meth:`__setstate__` fills in may be missing, as in older checkpoints), each of the
        type ``step()`` requires.

        torch's range checks are not run here: a scheduler may legitimately have written a
        value the constructor refuses (OneCycleLR's ``max_momentum`` into ``betas[0]``), and
        a state dict this optimizer produced must load back."""
        probe = {**self._group_flags, **saved}
        needed = [k for k in self.defaults if k not in probe and k != "differentiable"]
        if needed:
            known = sorted(k for k in saved if k != "params")
            raise ValueError(
                f"loaded param_groups[{index}] has no {needed[0]!r}: it is not a param group of "
                f"{type(self).__name__} (its keys: {known}; {type(self).__name__} needs "
                f"{sorted(k for k in self.defaults if k not in self._group_flags)})"
            )
        check_types(self._hyperparameters, probe, f"loaded param_groups[{index}]")

    def _check_param_state(
        self,
        value: Any,
        saved_group: dict[str, Any],
        param: Parameter,
        index: Any,
        group_index: int,
        group: dict[str, Any],
        position: int,
    ) -> None:
        """A loaded state of one parameter matches what this algorithm keeps for it."""
        names = saved_group.get("param_names") or group.get("param_names")
        name = f" ({names[position]!r})" if names and position < len(names) else ""
        label = f"loaded state for parameter {index}{name} of param_groups[{group_index}]"
        if not isinstance(value, Mapping):
            raise TypeError(f"{label} must be a dict, but got {_typename(value)}")
        specs = self._state_keys
        if specs is None:
            return
        probe = {**self._group_flags, **saved_group, "params": group["params"]}
        own = {k: s for k, s in specs.items() if s.shape(probe, param) is not None}
        for key, item in value.items():
            spec = own.get(key)
            if spec is None:
                raise ValueError(
                    f"{label}: {key!r} is not a state of {type(self).__name__} for this "
                    f"parameter (its state keys: {sorted(own)})"
                )
            _check_state_value(f"{label}: {key!r}", item, spec, probe, param)
        if value:
            missing = [k for k, s in own.items() if k not in value and s.required(probe, param)]
            if missing:
                raise ValueError(
                    f"{label} has no {missing[0]!r}, which {type(self).__name__} needs with "
                    f"these options (it has {sorted(value, key=repr)})"
                )

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
# Helpers of the algorithm modules.


def _eval_closure(closure: Callable[[], float] | None) -> float | None:
    """The closure's loss, or None without a closure."""
    return None if closure is None else closure()


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


def _check_state_dict_keys(optimizer: Optimizer, state_dict: Any) -> None:
    """The argument of ``load_state_dict`` is an optimizer state dict, not a checkpoint or
    another wrapper around one (then the message says where the state dict is)."""
    expected = ["param_groups", "state"]
    if isinstance(state_dict, Mapping) and all(k in state_dict for k in expected):
        return
    seen = sorted(map(repr, state_dict)) if isinstance(state_dict, Mapping) else []
    raise ValueError(
        f"{type(optimizer).__name__}.load_state_dict expects an optimizer state_dict with the "
        f"keys {expected}, but got a dict with the keys [{', '.join(seen)}]"
        f"{wrapper_hint(state_dict, expected)}"
    )


def _check_saved_group_layout(saved_groups: Any) -> None:
    """``param_groups`` is a list of dicts, each listing its parameters' indices, no index
    twice."""
    if not isinstance(saved_groups, (list, tuple)):
        raise TypeError(
            "loaded state dict: 'param_groups' must be a list of dicts, but got "
            + _typename(saved_groups)
        )
    seen: set[Any] = set()
    for i, saved in enumerate(saved_groups):
        if not isinstance(saved, dict) or not isinstance(saved.get("params"), (list, tuple)):
            raise TypeError(
                f"loaded param_groups[{i}] must be a dict with a 'params' list, but got "
                + (f"the keys {sorted(saved)}" if isinstance(saved, dict) else _typename(saved))
            )
        for index in saved["params"]:
            if index in seen:
                raise ValueError(
                    f"loaded param_groups[{i}] lists parameter {index!r}, already listed"
                )
            seen.add(index)


def _castable(source: np.dtype[Any], param: Parameter) -> bool:
    """Whether state of dtype ``source`` converts to the parameter's dtype without losing
    its kind (float64 -> float32 yes; complex -> float, str, object no)."""
    return source.kind in "biufc" and np.can_cast(source, param.dtype, casting="same_kind")


def _check_state_value(
    label: str, value: Any, spec: StateKey, group: dict[str, Any], param: Parameter
) -> None:
    """One loaded state value has the kind, shape and dtype ``spec`` declares."""
    if value is None and spec.nullable:
        return
    if spec.kind == "scalar":
        if not is_real(value):
            raise TypeError(f"{label} must be a real number, but got {_typename(value)}")
        return
    if spec.kind == "scalars":
        if not isinstance(value, (list, tuple)) or not all(
            v is None or is_real(v) for v in value
        ):
            raise TypeError(f"{label} must be a list of real numbers")
        return
    expected = spec.shape(group, param)
    items = value if spec.kind == "arrays" else [value]
    if spec.kind == "arrays" and not isinstance(value, (list, tuple)):
        raise TypeError(f"{label} must be a list of arrays, but got {_typename(value)}")
    each = None if spec.shapes is None else spec.shapes(group, param)
    if each is not None and len(items) != len(each):
        raise ValueError(
            f"{label} holds {len(items)} arrays, but for a parameter of shape {param.shape} "
            f"with these options it must hold {len(each)}"
        )
    for i, item in enumerate(items):
        if each is not None:  # entry i has a shape of its own
            expected, item_label = each[i], f"{label}[{i}]"
        else:
            item_label = label
        if isinstance(item, SparseGrad) and spec.sparse:
            shape, dtype = item.shape, item.values.dtype
        elif isinstance(item, np.ndarray):
            shape, dtype = item.shape, item.dtype
        else:
            raise TypeError(f"{item_label} must be an array, but got {_typename(item)}")
        if tuple(shape) != expected:
            whose = (
                "the parameter has shape"
                if expected == param.shape and each is None
                else f"for a parameter of shape {param.shape} it must have shape"
            )
            raise ValueError(f"{item_label} has shape {tuple(shape)}, but {whose} {expected}")
        if not _castable(dtype, param):
            raise TypeError(
                f"{item_label} has dtype {dtype}, which does not cast to the parameter's dtype "
                f"{param.dtype}"
            )


def _zeros_like(p: Parameter) -> np.ndarray[Any, Any]:
    """A plain zero array of the parameter's shape, dtype and memory layout (new state)."""
    return np.zeros_like(p.view(np.ndarray))
