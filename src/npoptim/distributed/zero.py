"""ZeRO stage 1: optimizer state sharded across ranks (torch's ``ZeroRedundancyOptimizer``)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .._views import readonly
from ..optimizer import (
    Optimizer,
    ParamsT,
    StateDict,
    _check_saved_group_layout,
    _check_state_dict_keys,
    _typename,
)
from ..parameter import Parameter
from ._comm import Array, agree, bcast_in_place, resolve, scratch

if TYPE_CHECKING:
    from mpi4py.MPI import Intracomm

__all__ = ["ZeroRedundancyOptimizer"]

_NOT_SHARED = ("params", "param_names")  # group entries that differ between global and local

_LBFGS_REFUSED = (
    "ZeroRedundancyOptimizer cannot shard LBFGS: its line search and its two-loop recursion "
    "work on all the parameters at once. Run LBFGS on every rank instead, with a closure "
    "that calls npoptim.distributed.all_reduce_grads_ (data parallel)."
)

_PRODIGY_REFUSED = (
    "ZeroRedundancyOptimizer cannot shard Prodigy: its step size is estimated from sums over "
    "all the parameters, which a rank holding a share of them cannot form. Run Prodigy on "
    "every rank instead, after npoptim.distributed.all_reduce_grads_ (data parallel)."
)


class ZeroRedundancyOptimizer(Optimizer):
    r"""Wrap any npoptim optimizer so that each rank keeps the state of only its share of the
    parameters (ZeRO stage 1, torch's ``torch.distributed.optim.ZeroRedundancyOptimizer``).

    The parameters are partitioned across the :math:`K` ranks of ``comm``, whole parameters,
    group by group: largest first, each to the rank with the fewest values so far (torch's
    sorted-greedy partition). Each rank builds a local ``optimizer_class`` over its share
    (:attr:`optim`), so Adam's two moments take about :math:`1/K` of the memory on each rank
    (at most :math:`1/K` of the total plus the largest parameter). :meth:`step` updates the
    local share, then every parameter is broadcast from its owner, so all ranks hold the same
    parameters again. Every rank must therefore hold the full gradients first (the same on all
    ranks, e.g. after :func:`~npoptim.distributed.all_reduce_grads_`); an owner's update is
    then exactly the one a single-process optimizer makes, bit for bit.

    :attr:`param_groups` are the global groups: their hyperparameters (``lr``, ...) are copied
    to the local optimizer before each step, so lr schedulers, ``add_param_group`` and the
    step hooks work on this object as on any optimizer. :attr:`defaults` are the local
    optimizer's (torch keeps only the keyword arguments given, so there ``OneCycleLR`` finds
    no ``betas`` on a ZeRO Adam). :meth:`consolidate_state_dict` then
    :meth:`state_dict` on the target rank give exactly the state_dict one process running
    ``optimizer_class`` over all the parameters would have (global indices), so a checkpoint
    moves between world sizes, to a plain optimizer and to torch; :meth:`load_state_dict` of
    such a dict on every rank keeps each rank's own shard.

    Construction, :meth:`add_param_group` and :meth:`consolidate_state_dict` are collective
    (every rank calls them) and check collectively that every rank passed the same parameter
    shapes, dtypes and groups: a mismatch raises the same error on every rank.

    Args:
        params: Parameters, ``(name, Parameter)`` pairs or parameter groups, the same on
            every rank.
        optimizer_class: the local optimizer's class (any npoptim optimizer but LBFGS and
            Prodigy, whose steps need all the parameters).
        comm: the MPI communicator (an ``mpi4py`` intracommunicator), torch's
            ``process_group``; ``MPI.COMM_WORLD`` by default.
        parameters_as_bucket_view: send each rank's parameters as one flat buffer per dtype
            instead of one broadcast per parameter. torch makes the parameters views into that
            buffer; NumPy arrays cannot move into another buffer, so npoptim packs and
            unpacks them (one copy each way; fewer, larger messages) (default: False).
        overlap_with_ddp: accepted for torch's signature; only False (npoptim has no
            ``DistributedDataParallel`` communication hook to overlap with).
        **defaults: the local optimizer's keyword arguments (``lr``, ...).

    Example:
        >>> opt = ZeroRedundancyOptimizer(model_params, npoptim.Adam, lr=1e-3)  # doctest: +SKIP
        >>> all_reduce_grads_(model_params)
        >>> opt.step()
        >>> opt.consolidate_state_dict(to=0)
        >>> if rank == 0:
        ...     npoptim.save({"optimizer": opt.state_dict()}, "ckpt.npz")
    """

    def __init__(
        self,
        params: ParamsT,
        optimizer_class: type[Optimizer],
        comm: Intracomm | None = None,
        parameters_as_bucket_view: bool = False,
        overlap_with_ddp: bool = False,
        **defaults: Any,
    ) -> None:
        self.initialized = False
        self.comm = resolve(comm)
        self.rank: int = self.comm.Get_rank()
        self.world_size: int = self.comm.Get_size()
        self.parameters_as_bucket_view = parameters_as_bucket_view
        self._partition_cache: list[list[dict[str, Any]]] = []
        self._all_state_dicts: list[StateDict] = []

        def describe() -> tuple[list[str], None]:
            if overlap_with_ddp:
                raise ValueError(
                    "overlap_with_ddp=True needs DistributedDataParallel's communication "
                    "hook, which npoptim does not have; call all_reduce_grads_ then step()"
                )
            _check_optimizer_class(optimizer_class)
            if isinstance(params, np.ndarray):
                raise TypeError(
                    "`params` argument should be an iterable of Tensors, but got "
                    f"{type(params).__name__}"
                )
            param_list = list(params)
            if len(param_list) == 0:
                raise ValueError("ZeroRedundancyOptimizer got an empty parameter list")
            Optimizer.__init__(self, cast(ParamsT, param_list), defaults)
            self.optim = optimizer_class(self._partition_parameters()[self.rank], **defaults)
            self.defaults = dict(self.optim.defaults)  # all of them (torch: those given)
            return _describe_groups(self.param_groups), None

        agree(self.comm, "ZeroRedundancyOptimizer", describe)
        self._sync_param_groups(self.optim.param_groups, self.param_groups)
        self.initialized = True

    # ------------------------------------------------------------------ partition
    def _partition_parameters(self) -> list[list[dict[str, Any]]]:
        """Each rank's parameter groups: copies of the global groups holding the parameters
        that rank owns; per group, the largest parameter first goes to the rank with the fewest
        values so far (the first such rank on a tie), as torch does."""
        if not self._partition_cache:
            partition: list[list[dict[str, Any]]] = [[] for _ in range(self.world_size)]
            sizes = [0] * self.world_size
            for group in self.param_groups:
                owned: list[list[int]] = [[] for _ in range(self.world_size)]
                order = sorted(
                    range(len(group["params"])), key=lambda i: group["params"][i].size, reverse=True
                )
                for i in order:
                    rank = sizes.index(min(sizes))
                    owned[rank].append(i)
                    sizes[rank] += group["params"][i].size
                for rank, indices in enumerate(owned):
                    rank_group = dict(group)
                    rank_group["params"] = [group["params"][i] for i in indices]
                    if "param_names" in group:
                        rank_group["param_names"] = [group["param_names"][i] for i in indices]
                    partition[rank].append(rank_group)
            self._partition_cache = partition
        return self._partition_cache

    @staticmethod
    def _sync_param_groups(src: list[dict[str, Any]], dst: list[dict[str, Any]]) -> None:
        """Copy every hyperparameter of the ``src`` groups into the ``dst`` groups."""
        for src_group, dst_group in zip(src, dst, strict=True):
            for key, value in src_group.items():
                if key not in _NOT_SHARED:
                    dst_group[key] = value

    # ----------------------------------------------------------------- param groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group on every rank (collective); the new group's parameters are
        partitioned across the ranks and this rank's share joins the local optimizer. The
        groups already there keep their owners."""
        if not self.initialized:
            super().add_param_group(param_group)
            return
        original = dict(param_group) if isinstance(param_group, dict) else None
        added: list[str] = []

        def describe() -> tuple[list[str], None]:
            super(ZeroRedundancyOptimizer, self).add_param_group(param_group)
            added.append("global")
            self._partition_cache = []
            self.optim.add_param_group(self._partition_parameters()[self.rank][-1])
            added.append("local")
            return _describe_groups(self.param_groups), None

        try:
            agree(self.comm, "add_param_group", describe)
        except Exception:
            if "local" in added:
                self.optim.param_groups.pop()
            if "global" in added:
                self.param_groups.pop()
                self._partition_cache = []
                if original is not None:
                    param_group.clear()
                    param_group.update(original)
            raise
        self._sync_param_groups(self.optim.param_groups[-1:], self.param_groups[-1:])

    # ------------------------------------------------------------------------ step
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Update this rank's share of the parameters with the local optimizer, then send
        every parameter from its owner to all ranks (collective).

        Args:
            closure: passed to the local optimizer's ``step``.

        Returns:
            The local optimizer's return value (the closure's loss, or None).
        """
        self._sync_param_groups(self.param_groups, self.optim.param_groups)
        loss = self.optim.step() if closure is None else self.optim.step(closure)
        self._sync_param_groups(self.optim.param_groups, self.param_groups)
        self._sync_params()
        return loss

    @property
    def train(self) -> Callable[[], None]:
        """Schedule-Free's switch to the training point, present only where the local
        optimizer has one (``hasattr(zero, "train")`` tells): ``zero.train()`` is collective;
        each rank moves its own share, then every parameter is sent from its owner, as after
        a step."""
        return self._mode_switch("train")

    @property
    def eval(self) -> Callable[[], None]:
        """Schedule-Free's switch to the evaluation point, present only where the local
        optimizer has one (collective; see :attr:`train`)."""
        return self._mode_switch("eval")

    def _mode_switch(self, mode: str) -> Callable[[], None]:
        """The local optimizer's ``mode`` switch, wrapped to keep the groups and the
        parameters in step across ranks; AttributeError (so ``hasattr`` is False) where the
        local optimizer has none."""
        local = getattr(self.__dict__.get("optim"), mode, None)
        if local is None:
            raise AttributeError(
                f"'{type(self).__name__}' object has no attribute '{mode}': its local "
                f"optimizer {type(self.__dict__.get('optim')).__name__} has no {mode}() "
                "switch (Schedule-Free has one)"
            )

        def switch() -> None:
            self._sync_param_groups(self.param_groups, self.optim.param_groups)
            local()
            self._sync_param_groups(self.optim.param_groups, self.param_groups)
            self._sync_params()

        return switch

    def _sync_params(self) -> None:
        """Broadcast every parameter from its owner: one broadcast per parameter, or with
        ``parameters_as_bucket_view`` one per owner and dtype."""
        if self.world_size == 1:
            return
        partition = self._partition_parameters()
        if not self.parameters_as_bucket_view:
            owners = [
                (p, r) for r, groups in enumerate(partition) for g in groups for p in g["params"]
            ]
            bcast_in_place(self.comm, owners)
            return
        buckets: list[tuple[Array, int, list[Parameter]]] = []
        for rank, groups in enumerate(partition):
            by_dtype: dict[str, list[Parameter]] = {}
            for p in itertools.chain.from_iterable(g["params"] for g in groups):
                by_dtype.setdefault(p.dtype.str, []).append(p)
            for key, params in by_dtype.items():
                flat = scratch(f"zero bucket {rank}", np.dtype(key), sum(p.size for p in params))
                if rank == self.rank:
                    _pack(flat, params)
                buckets.append((flat, rank, params))
        bcast_in_place(self.comm, [(flat, rank) for flat, rank, _ in buckets])
        for flat, rank, params in buckets:
            if rank != self.rank:
                _unpack(flat, params)

    # ------------------------------------------------------------------ state dicts
    def consolidate_state_dict(self, to: int = 0) -> None:
        """Gather every rank's local state on rank ``to`` (collective), for :meth:`state_dict`.

        The state is copied as it is now; a later :meth:`state_dict` on ``to`` joins it with the
        current param_groups. Other ranks drop what they consolidated before.
        """

        def describe() -> tuple[list[str], None]:
            if not 0 <= to < self.world_size:
                raise ValueError(f"Invalid rank: to={to} (the world size is {self.world_size})")
            return [f"to={to}"], None

        agree(self.comm, "consolidate_state_dict", describe)
        self._sync_param_groups(self.param_groups, self.optim.param_groups)
        from mpi4py.util import pkl5

        local = copy.deepcopy(self.optim.state_dict())  # a snapshot, not live views
        gathered = pkl5.Intracomm(self.comm).gather(local, root=to)
        self._all_state_dicts = [_read_only(d) for d in gathered or []] if self.rank == to else []

    def state_dict(self) -> StateDict:
        """The consolidated state, exactly a single-process optimizer's state_dict over all the
        parameters: torch's layout, parameters numbered across the global groups. Its arrays
        are read-only views of the copy :meth:`consolidate_state_dict` gathered (no copy), the
        param_groups the current ones.

        Raises:
            RuntimeError: if :meth:`consolidate_state_dict` has not gathered the state on this
                rank (torch's message).
        """
        if not self._all_state_dicts:
            raise RuntimeError(
                "Optimizer state has not been consolidated on this rank. "
                f"Please call `consolidate_state_dict(to={self.rank})` on "
                "all ranks beforehand if you meant to save the global state."
            )
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        state: dict[int, Any] = {}
        for rank, local in enumerate(self._all_state_dicts):
            # dicts of the caller's own around read-only views of the consolidated arrays
            state.update(readonly(self._global_state(rank, local)))
        state_dict: StateDict = {
            "state": dict(sorted(state.items())),
            "param_groups": self._global_param_groups(),
        }
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def _global_param_groups(self) -> list[dict[str, Any]]:
        """The param_groups of a state_dict (copies): parameters as global indices."""
        index = _global_indices(self.param_groups)
        param_groups = []
        for group in self.param_groups:
            packed = copy.deepcopy({k: v for k, v in group.items() if k != "params"})
            packed["params"] = [index[id(p)] for p in group["params"]]
            param_groups.append(packed)
        return param_groups

    def _global_state(self, rank: int, local: StateDict) -> dict[int, Any]:
        """Rank ``rank``'s local state_dict's ``state``, keyed by global parameter indices."""
        index = _global_indices(self.param_groups)
        owned = self._partition_parameters()[rank]
        state: dict[int, Any] = {}
        for local_group, owned_group in zip(local["param_groups"], owned, strict=True):
            pairs = zip(local_group["params"], owned_group["params"], strict=True)
            for local_index, p in pairs:
                if local_index in local["state"]:
                    state[index[id(p)]] = local["state"][local_index]
        return state

    def _owned_indices(self) -> list[int]:
        """The global indices of the parameters this rank owns."""
        index = _global_indices(self.param_groups)
        owned = self._partition_parameters()[self.rank]
        return [index[id(p)] for g in owned for p in g["params"]]

    def load_state_dict(self, state_dict: StateDict) -> None:
        """Load a full state_dict (a consolidated one, or a single-process optimizer's over the
        same parameters) and keep this rank's shard of it; the global groups take the saved
        hyperparameters.

        Collective, and all or nothing across the ranks: every rank checks its shard first
        (loading it into a copy of the local optimizer that shares nothing it changes), the
        ranks then agree, in one collective, that all succeeded, and only then does any rank
        change anything. If a rank refuses its shard, or the ranks were given different
        hyperparameters, every rank raises the same error, naming the failing rank, and none
        has changed. Messages name each parameter by its index in the given dict.
        """
        staged: list[tuple[Optimizer, list[dict[str, Any]]]] = []

        def describe() -> tuple[list[str], None]:
            loaded = self._run_pre_hooks(self, state_dict)
            _check_state_dict_keys(self, loaded)
            saved_groups = loaded["param_groups"]
            _check_saved_group_layout(saved_groups)
            if len(saved_groups) != len(self.param_groups):
                raise ValueError("loaded state dict has a different number of parameter groups")
            if any(
                len(g["params"]) != len(s["params"])
                for g, s in zip(self.param_groups, saved_groups, strict=True)
            ):
                raise ValueError(
                    "loaded state dict contains a parameter group that doesn't match the size "
                    "of optimizer's group"
                )
            local = self._run_pre_hooks(self.optim, self._local_part(loaded))
            trial = _detached(self.optim)
            trial.load_state_dict(local)  # every check; changes only the trial's own objects
            staged.append((trial, saved_groups))
            shared = [{k: v for k, v in s.items() if k not in _NOT_SHARED} for s in saved_groups]
            return [f"group {i} with options {options!r}" for i, options in enumerate(shared)], None

        agree(self.comm, "load_state_dict", describe, same_error=True)
        # Agreed: from here on nothing raises.
        trial, saved_groups = staged[0]
        self.optim.state, self.optim.param_groups = trial.state, trial.param_groups
        for group, saved in zip(self.param_groups, saved_groups, strict=True):
            for key, value in saved.items():
                if key != "params":
                    group[key] = copy.deepcopy(value)
        for post_hook in self.optim._optimizer_load_state_dict_post_hooks.values():
            post_hook(self.optim)
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    @staticmethod
    def _run_pre_hooks(owner: Optimizer, state_dict: StateDict) -> StateDict:
        """A shallow copy of ``state_dict`` passed through ``owner``'s load_state_dict
        pre-hooks (this object's, or the local optimizer's), as ``load_state_dict`` does."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"{type(owner).__name__}.load_state_dict expects an optimizer state_dict "
                f"(a dict), but got {_typename(state_dict)}"
            )
        state_dict = dict(state_dict)
        for pre_hook in owner._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(owner, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def _local_part(self, state_dict: StateDict) -> StateDict:
        """This rank's shard of a full state_dict, as a state_dict of the local optimizer whose
        parameters keep their indices in the full one (so its messages name them)."""
        saved_groups = state_dict["param_groups"]
        saved_ids = list(itertools.chain.from_iterable(s["params"] for s in saved_groups))
        position = _global_indices(self.param_groups)
        saved_state = state_dict["state"]
        local: StateDict = {"state": {}, "param_groups": []}
        owned = self._partition_parameters()[self.rank]
        for saved, local_group in zip(saved_groups, owned, strict=True):
            packed = {k: v for k, v in saved.items() if k not in _NOT_SHARED}
            if "param_names" in local_group:
                packed["param_names"] = local_group["param_names"]
            packed["params"] = [saved_ids[position[id(p)]] for p in local_group["params"]]
            for saved_id in packed["params"]:
                if isinstance(saved_state, Mapping) and saved_id in saved_state:
                    local["state"][saved_id] = saved_state[saved_id]
            local["param_groups"].append(packed)
        if not isinstance(saved_state, Mapping):
            local["state"] = saved_state  # refused by the local optimizer, with its message
        return local


def _detached(optimizer: Optimizer) -> Optimizer:
    """A copy of ``optimizer`` that shares its attributes (defaults, state, groups) but no
    hooks, made without ``__setstate__`` (which would touch the shared state): its
    ``load_state_dict`` checks a state and builds new state and groups for itself only,
    leaving ``optimizer``'s untouched."""
    trial = object.__new__(type(optimizer))
    trial.__dict__.update({k: v for k, v in vars(optimizer).items() if not k.endswith("_hooks")})
    trial._init_hooks()
    return trial


def _check_optimizer_class(optimizer_class: Any) -> None:
    from ..lbfgs import LBFGS
    from ..prodigy import Prodigy

    if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
        raise TypeError(
            f"optimizer_class must be an npoptim Optimizer class, but got {optimizer_class!r}"
        )
    if issubclass(optimizer_class, LBFGS):
        raise ValueError(_LBFGS_REFUSED)
    if issubclass(optimizer_class, Prodigy):
        raise ValueError(_PRODIGY_REFUSED)


def _global_indices(groups: list[dict[str, Any]]) -> dict[int, int]:
    """Each parameter's index in a state_dict, by ``id``: numbered across the groups in order
    (first appearance)."""
    index: dict[int, int] = {}
    for p in itertools.chain.from_iterable(g["params"] for g in groups):
        index.setdefault(id(p), len(index))
    return index


def _describe_groups(groups: list[dict[str, Any]]) -> list[str]:
    """The lines every rank must agree on: each group's size and hyperparameters, each
    parameter's shape and dtype."""
    lines = []
    for g, group in enumerate(groups):
        options = {k: v for k, v in group.items() if k != "params"}
        lines.append(f"group {g} with {len(group['params'])} parameters and options {options!r}")
        lines += [
            f"group {g} parameter {i} of shape {p.shape} and dtype {p.dtype}"
            for i, p in enumerate(group["params"])
        ]
    return lines


def _read_only(tree: Any) -> Any:
    """``tree`` with every array in it made read-only, in place (consolidated state is
    handed out without copies; writing through them must not change it)."""
    if isinstance(tree, np.ndarray):
        tree.flags.writeable = False
    elif isinstance(tree, dict):
        for value in tree.values():
            _read_only(value)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            _read_only(value)
    return tree


def _pack(flat: Array, params: list[Parameter]) -> None:
    start = 0
    for p in params:
        np.copyto(flat[start : start + p.size].reshape(p.shape), p)
        start += p.size


def _unpack(flat: Array, params: list[Parameter]) -> None:
    start = 0
    for p in params:
        np.copyto(p.view(np.ndarray), flat[start : start + p.size].reshape(p.shape))
        start += p.size
