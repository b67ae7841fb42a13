r"""Lookahead: slow weights that follow any optimizer's fast weights (beyond torch.optim)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from ._kernels.loop import Array
from ._math import lerp_
from ._views import readonly
from .optimizer import Optimizer, StateDict
from .parameter import Parameter

__all__ = ["Lookahead", "lookahead"]

PULLBACK_MOMENTUM = ("none", "reset", "pullback")


class Lookahead(Optimizer):
    def __init__(
        self,
        optimizer: Optimizer | type[Optimizer],
        k: int = 5,
        alpha: float = 0.5,
        pullback_momentum: str = "none",
        **kwargs: Any,
    ) -> None:
        if not k > 0:
            raise ValueError(f"Invalid k value: {k}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"Invalid alpha value: {alpha}")
        if pullback_momentum not in PULLBACK_MOMENTUM:
            raise ValueError(
                f"Invalid pullback_momentum value: {pullback_momentum!r}, expected one of "
                f"{PULLBACK_MOMENTUM}"
            )
        if not isinstance(optimizer, Optimizer):
            if not (isinstance(optimizer, type) and issubclass(optimizer, Optimizer)):
                raise TypeError(
                    "Lookahead wraps an npoptim Optimizer (an instance, or a class with "
                    f"params=...), but got {type(optimizer).__name__}"
                )
            if "params" not in kwargs:
                raise ValueError("need to pass `params` when you pass an optimizer class")
            optimizer = optimizer(kwargs.pop("params"), **kwargs)
        elif kwargs:
            raise TypeError(f"unexpected keyword arguments for a built optimizer: {sorted(kwargs)}")
        self._init_hooks()
        self.optimizer = optimizer
        self.k = k
        self.alpha = alpha
        self.pullback_momentum = pullback_momentum
        self.state = defaultdict(dict)
        for group in self.param_groups:
            self._init_slow(group)
        self.defaults = {
            "lookahead_alpha": alpha,
            "lookahead_k": k,
            "lookahead_pullback_momentum": pullback_momentum,
            **optimizer.defaults,
        }

    # The wrapped optimizer's groups, so schedulers and group edits act on it.
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, groups: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = groups

    def _init_slow(self, group: dict[str, Any]) -> None:
        group.setdefault("counter", 0)
        for p in group["params"]:
            state = self.state[p]
            if "slow_params" not in state:
                state["slow_params"] = np.array(p, copy=True, subok=False)
                if self.pullback_momentum == "pullback":
                    state["slow_momentum"] = np.zeros_like(state["slow_params"])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the wrapped optimizer and give its parameters slow copies."""
        self.optimizer.add_param_group(param_group)
        self._init_slow(self.param_groups[-1])

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The wrapped optimizer's ``zero_grad``."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """A step of the wrapped optimizer; every ``k``-th step of a group pulls its weights
        toward the slow ones. Returns the closure's loss."""
        loss = self.optimizer.step(closure)
        for group in self.param_groups:
            group["counter"] += 1
            if group["counter"] >= self.k:
                group["counter"] = 0
                self._synchronize(group)
        return loss

    def _synchronize(self, group: dict[str, Any]) -> None:
        # As the oracle: only parameters that have a grad now are pulled back.
        params = [p for p in group["params"] if p.grad is not None]
        lookahead(params, [self.state[p]["slow_params"] for p in params], alpha=self.alpha)
        inner = self.optimizer.state
        if self.pullback_momentum == "pullback":
            for p in params:
                if inner[p].get("momentum_buffer") is None:
                    inner[p]["momentum_buffer"] = np.zeros_like(self.state[p]["slow_params"])
            lookahead(
                [inner[p]["momentum_buffer"] for p in params],
                [self.state[p]["slow_momentum"] for p in params],
                alpha=self.alpha,
            )
        elif self.pullback_momentum == "reset":
            for p in params:
                inner[p]["momentum_buffer"] = np.zeros_like(self.state[p]["slow_params"])

    def backup_and_load_cache(self) -> None:
        """Put the slow weights into the parameters (keeping the fast ones aside), e.g. to
        evaluate them; :meth:`clear_and_load_backup` undoes it."""
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["backup_params"] = np.array(p, copy=True, subok=False)
                p[...] = state["slow_params"]

    def clear_and_load_backup(self) -> None:
        """Put back the fast weights saved by :meth:`backup_and_load_cache`."""
        for group in self.param_groups:
            for p in group["params"]:
                p[...] = self.state[p].pop("backup_params")

    # ------------------------------------------------------------------ state dicts
    def _indices(self) -> dict[int, int]:
        """Parameter id -> index, numbered as the wrapped optimizer's state_dict numbers them."""
        mapping: dict[int, int] = {}
        for p in (p for g in self.param_groups for p in g["params"]):
            mapping.setdefault(id(p), len(mapping))
        return mapping

    def state_dict(self) -> StateDict:
        """``{"lookahead_state": {index: {"slow_params": ..., ...}}, "base_optimizer":
        <the wrapped optimizer's state_dict>}``, indices as in the wrapped one's."""
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        mapping = self._indices()
        packed = {mapping[id(p)]: readonly(s) for p, s in self.state.items() if id(p) in mapping}
        state_dict: StateDict = {
            "lookahead_state": packed,
            "base_optimizer": self.optimizer.state_dict(),
        }
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def load_state_dict(self, state_dict: StateDict) -> None:
        """Load a dict of :meth:`state_dict`'s layout (``pytorch_optimizer``'s
        ``(group, position)`` keys are accepted too); a refused load changes nothing."""
        state_dict = state_dict.copy()
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        saved = state_dict["lookahead_state"]
        ordered = [p for g in self.param_groups for p in g["params"]]
        by_position = {
            (gi, pi): p
            for gi, g in enumerate(self.param_groups)
            for pi, p in enumerate(g["params"])
        }
        restored: dict[Parameter, dict[str, Any]] = {}
        for key, value in saved.items():
            p = by_position.get(key) if isinstance(key, tuple) else None
            if isinstance(key, int) and 0 <= key < len(ordered):
                p = ordered[key]
            if p is None:
                raise ValueError(f"lookahead state has a key {key!r} that names no parameter")
            self._check_slow_state(key, p, value)
            restored[p] = {k: self._cast_state(p, v, k) for k, v in value.items()}
        if len(restored) != len({id(p) for p in ordered}):
            raise ValueError(
                f"lookahead state holds {len(restored)} parameters but the optimizer has "
                f"{len({id(p) for p in ordered})}"
            )
        base, buffers = self._split_pullback_buffers(state_dict["base_optimizer"], ordered)
        self.optimizer.load_state_dict(base)  # checks before it changes
        for p, buffer in buffers.items():
            self.optimizer.state[p]["momentum_buffer"] = buffer
        self.state = defaultdict(dict, restored)
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _check_slow_state(self, key: Any, p: Parameter, value: Any) -> None:
        """A loaded slow state fits its parameter: ``slow_params`` (and ``slow_momentum`` with
        pullback) of the parameter's shape, nothing else but the evaluation backup."""
        label = f"lookahead state for parameter {key!r}"
        if not isinstance(value, dict):
            raise TypeError(f"{label} must be a dict, but got {type(value).__name__}")
        needed = ["slow_params"]
        if self.pullback_momentum == "pullback":
            needed.append("slow_momentum")
        known = {"slow_params", "slow_momentum", "backup_params"}
        for name in needed:
            if name not in value:
                raise ValueError(f"{label} has no {name!r} (it has {sorted(value)})")
        for name, item in value.items():
            if name not in known:
                raise ValueError(f"{label}: {name!r} is not a state of Lookahead")
            if not isinstance(item, np.ndarray) or item.shape != p.shape:
                shape = getattr(item, "shape", type(item).__name__)
                raise ValueError(
                    f"{label}: {name!r} has shape {shape}, but the parameter has shape {p.shape}"
                )

    def _split_pullback_buffers(
        self, base: StateDict, ordered: list[Parameter]
    ) -> tuple[StateDict, dict[Parameter, Any]]:
        """Set aside the ``momentum_buffer`` that pullback leaves in the state of a wrapped
        optimizer that has no such state of its own (Adam's, as the oracle does), so that the
        wrapped optimizer's checks of its loaded state accept the rest; each is checked here
        and copied (cast to its parameter's dtype) before anything changes."""
        keys = self.optimizer._state_keys
        if keys is None or "momentum_buffer" in keys or not isinstance(base, dict):
            return base, {}
        saved_state = base.get("state")
        if not isinstance(saved_state, dict):
            return base, {}
        buffers: dict[Parameter, Any] = {}
        state = {}
        for index, value in saved_state.items():
            if isinstance(value, dict) and "momentum_buffer" in value:
                value = dict(value)
                buffer = value.pop("momentum_buffer")
                p = ordered[index] if isinstance(index, int) and 0 <= index < len(ordered) else None
                if p is None or not isinstance(buffer, np.ndarray) or buffer.shape != p.shape:
                    shape = getattr(buffer, "shape", type(buffer).__name__)
                    raise ValueError(
                        f"loaded state for parameter {index} of the wrapped optimizer: "
                        f"'momentum_buffer' of shape {shape} does not fit "
                        f"{'no parameter' if p is None else f'a parameter of shape {p.shape}'}"
                    )
                buffers[p] = self._cast_state(p, buffer, "momentum_buffer")
            state[index] = value
        return {**base, "state": state}, buffers

    # ---------------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "optimizer": self.optimizer,
            "alpha": self.alpha,
            "k": self.k,
            "pullback_momentum": self.pullback_momentum,
            "defaults": self.defaults,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_hooks()

    def __repr__(self) -> str:
        return f"Lookahead(k={self.k}, alpha={self.alpha}, " + repr(self.optimizer) + ")"


Lookahead.__doc__ = r"""Implements Lookahead, a wrapper around any npoptim optimizer.

    .. math::
       \begin{aligned}
            &\textbf{input}: \text{an optimizer } A, \: k \text{ (sync period)},
                \: \alpha \text{ (slow step size)}, \: \theta_0 \text{ (params)} \\
            &\textbf{initialize}: \phi_0 \leftarrow \theta_0 \text{ (slow weights)},
                \: c \leftarrow 0 \\
            &\textbf{for} \: t=1 \: \textbf{to} \: \ldots \: \textbf{do} \\
            &\quad \theta_t \leftarrow A(\theta_{t-1}) \quad \text{(a step of the fast
                optimizer)}, \quad c \leftarrow c + 1 \\
            &\quad \textbf{if} \: c = k: \: c \leftarrow 0, \:
                \phi \leftarrow \phi + \alpha (\theta_t - \phi), \: \theta_t \leftarrow \phi \\
            &\textbf{return} \: \theta_t
       \end{aligned}

    From Zhang et al., "Lookahead Optimizer: k steps forward, 1 step back" (NeurIPS 2019,
    https://arxiv.org/abs/1907.08610). It is beyond torch.optim; it matches
    ``pytorch_optimizer.Lookahead`` (version 4.1.0): its argument names and defaults, the
    counter kept per parameter group (``group["counter"]``), the momentum options, and its
    quirk that a parameter without a grad at a synchronization step is not pulled back
    (its slow weights wait for the next one). With ``pullback_momentum="pullback"`` the
    wrapped optimizer's ``momentum_buffer`` (SGD's) is interpolated toward a slow copy the
    same way; ``"reset"`` zeroes it at each synchronization.

    ``param_groups`` are the wrapped optimizer's own list, so learning-rate schedulers,
    ``add_param_group`` and group edits act on the wrapped optimizer; ``state`` holds the slow
    weights. Step hooks registered on the Lookahead run around its whole step.

    The state_dict is ``{"lookahead_state": {index: {...}}, "base_optimizer": ...}`` with
    the parameters numbered as in the wrapped optimizer's state_dict (the oracle keys them by
    ``(group, position)`` tuples, which :meth:`load_state_dict` also accepts; integer keys
    let :func:`npoptim.save` store it).

    Args:
        optimizer (Optimizer): the optimizer to wrap, or an optimizer class, built as
            ``optimizer(params, **kwargs)`` from the keyword arguments (``params`` among them)
        k (int, optional): number of fast steps between synchronizations (default: 5)
        alpha (float, optional): slow step size :math:`\alpha`, in [0, 1) (default: 0.5)
        pullback_momentum (str, optional): ``"none"``, ``"reset"`` or ``"pullback"``, what
            happens to the wrapped optimizer's momentum buffer at a synchronization
            (default: "none")

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, SGD, Lookahead
        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> opt = Lookahead(SGD([w], lr=0.1), k=2, alpha=0.5)
        >>> for _ in range(2):
        ...     w.grad = 2 * w.view(np.ndarray)
        ...     opt.step()
        >>> w  # halfway between the start and two SGD steps (0.64 of it)
        Parameter([ 0.82, -1.64])
    """


def lookahead(params: list[Array], slow_params: list[Array], *, alpha: float) -> None:
    r"""Functional Lookahead synchronization: :math:`\phi \leftarrow \phi + \alpha (\theta -
    \phi)`, then :math:`\theta \leftarrow \phi`, for each pair, in place. Computed as torch's
    ``lerp_`` of :math:`\theta` toward :math:`\phi` with weight :math:`1 - \alpha`."""
    for fast, slow in zip(params, slow_params, strict=True):
        lerp_(fast, slow, 1.0 - alpha)
        slow[...] = fast
