r"""Sharded checkpoints: each rank of a ZeRO run writes its own shard, in parallel
(torch's ``torch.distributed.checkpoint``).

:func:`save_sharded` at :math:`W` ranks writes, for a manifest path ``P``:

* ``P.<save id>.rank-<r>-of-<W>.npz`` on each rank :math:`r` (the save id: 16 random hex
  digits, new for each save): an ordinary npoptim checkpoint (format 2,
  written atomically and durably) holding that rank's ZeRO partition of the state, keyed by
  global parameter indices::

      {"save_id": <hex>, "rank": r, "world_size": W, "state": {<global index>: {...}, ...}}

* ``P`` on rank 0, last, after every rank has reported its shard written: the manifest, a file
  of the same layout whose format name is ``"npoptim-sharded-checkpoint"`` (so
  :func:`npoptim.load` refuses it and names :func:`load_sharded`)::

      {"save_id": <hex>, "world_size": W, "shards": [<file name of rank 0's shard>, ...],
       "params": [{"shape": (...), "dtype": "float32"}, ...],        # per global index
       "param_groups": [...],                                          # torch's layout
       "state": {<global index>: <rank whose shard holds it>, ...}}

The manifest's appearance is the commit point; rank 0 then removes the shards of the
checkpoint it replaced. A save that fails on any rank raises on every rank, each rank removes
the shard it wrote, and the previous checkpoint (manifest and shards) is left whole. A shard
file that does not belong to the manifest (copied over from another save) is detected by its
``save_id``. Every rank writes only its own :math:`1/W` of the state, so
the bytes written in all are the state once (plus a manifest of a few kB).

:func:`load_sharded` loads into a :class:`~npoptim.distributed.ZeroRedundancyOptimizer` at any
world size :math:`W'` or into a plain optimizer (no MPI): each rank memory-maps only the shard
files that hold the state of the parameters it owns (all of them for a plain optimizer) and
``load_state_dict`` copies each value once. The result equals loading the consolidated
state_dict.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Any

import numpy as np

from ..optimizer import Optimizer, StateDict
from ..serialization import FORMAT, SHARDED_FORMAT, CheckpointError, _load, _save, load
from ._comm import agree
from .zero import ZeroRedundancyOptimizer

__all__ = ["load_sharded", "save_sharded", "shard_files"]


def _shard_name(target: str, save_id: str, rank: int, world_size: int) -> str:
    return f"{os.path.basename(target)}.{save_id}.rank-{rank}-of-{world_size}.npz"


def shard_files(path: str | os.PathLike[str]) -> list[str]:
    """The paths of the shard files, in rank order, of the sharded checkpoint whose manifest
    is ``path`` (``<path>.<save id>.rank-<r>-of-<W>.npz``, beside it): what to copy with it.

    Raises:
        CheckpointError: the manifest is missing or is not a sharded checkpoint's.
    """
    target = os.fspath(path)
    folder = os.path.dirname(target)
    return [os.path.join(folder, name) for name in _read_manifest(target)["shards"]]


def save_sharded(optimizer: ZeroRedundancyOptimizer, path: str | os.PathLike[str]) -> None:
    """Save a ZeRO optimizer's state as one shard per rank plus a manifest at ``path``,
    without gathering it anywhere (collective: every rank calls it with the same ``path``).

    Each rank writes its own shard (:func:`shard_files`), a new file named with this save's
    id, atomically, in parallel; then rank 0 writes the manifest at ``path``, atomically,
    last, and removes the shards of the checkpoint it replaced. The state is saved as it is
    now, with the current param_groups; the optimizer's state_dict hooks do not run (there is
    no single state_dict).

    Args:
        optimizer: the :class:`~npoptim.distributed.ZeroRedundancyOptimizer`.
        path: the manifest's path; the shards are written beside it.

    Raises:
        TypeError: ``optimizer`` is not a ZeroRedundancyOptimizer (nothing written).
        ValueError: the ranks passed different paths (nothing written).
        RuntimeError: writing failed on another rank; the rank that failed raises its own
            error (``OSError``, ...). Every rank raises and removes the shard it wrote: the
            checkpoint at ``path`` (if any) is left as it was, and still loads.
    """
    if not isinstance(optimizer, ZeroRedundancyOptimizer):
        raise TypeError(
            "save_sharded needs a ZeroRedundancyOptimizer (a plain optimizer's state is not "
            f"sharded: use npoptim.save(optimizer.state_dict(), path)), got "
            f"{type(optimizer).__name__}"
        )
    comm, rank, world = optimizer.comm, optimizer.rank, optimizer.world_size
    target = os.fspath(path)
    save_id = comm.bcast(uuid.uuid4().hex[:16] if rank == 0 else None, root=0)
    names = [_shard_name(target, save_id, r, world) for r in range(world)]
    mine = os.path.join(os.path.dirname(target), names[rank])

    def write_shard() -> tuple[list[str], list[int]]:
        optimizer._sync_param_groups(optimizer.param_groups, optimizer.optim.param_groups)
        state = optimizer._global_state(rank, optimizer.optim.state_dict())
        shard = {"save_id": save_id, "rank": rank, "world_size": world, "state": state}
        _save(shard, mine, FORMAT)
        return [f"path={target!r}"], sorted(state)

    try:
        held = agree(comm, "save_sharded", write_shard)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(mine)
        raise
    replaced: list[str] = []

    def write_manifest() -> tuple[list[str], None]:
        if rank == 0:
            with contextlib.suppress(CheckpointError, OSError):
                replaced.extend(shard_files(target))
            params = [p for g in optimizer.param_groups for p in g["params"]]
            manifest = {
                "save_id": save_id,
                "world_size": world,
                "shards": names,
                "params": [{"shape": tuple(p.shape), "dtype": p.dtype.name} for p in params],
                "param_groups": optimizer._global_param_groups(),
                "state": {i: r for r, indices in enumerate(held) for i in sorted(indices)},
            }
            manifest["state"] = dict(sorted(manifest["state"].items()))
            _save(manifest, target, SHARDED_FORMAT)
        return [], None

    try:
        agree(comm, "save_sharded (manifest)", write_manifest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(mine)
        raise
    for old in replaced:  # rank 0: the replaced checkpoint's shards (none on other ranks)
        if os.path.basename(old) not in names:
            with contextlib.suppress(OSError):
                os.unlink(old)


def load_sharded(optimizer: Optimizer, path: str | os.PathLike[str]) -> None:
    """Load a checkpoint written by :func:`save_sharded` at any world size.

    Into a :class:`~npoptim.distributed.ZeroRedundancyOptimizer` (collective: every rank calls
    it), each rank reads only the shards holding the parameters it owns; into a plain
    optimizer over the same parameters (no MPI), every shard. The shards are memory-mapped and
    ``load_state_dict`` copies each value once. The result is the same as loading the
    consolidated state_dict: the saved state and hyperparameters.

    Raises:
        CheckpointError: the manifest or a shard file is missing, damaged, not of this
            checkpoint (another save's, or another rank's) or lacks a parameter's state; the
            message names the file.
        ValueError: the optimizer's parameters differ from the saved ones in number, shape or
            dtype (the message names the parameter and both sides).

    For these, on a ZeRO optimizer every rank raises (the others a ``RuntimeError`` naming
    the rank that failed) and nothing has changed. The final ``load_state_dict`` is the
    ZeRO optimizer's, all or nothing as in the consolidated path: if a rank refuses its share
    (say, Adam with ``amsgrad=True`` given a state without ``max_exp_avg_sq``), every rank
    raises the same error naming that rank, and no rank has changed.
    """
    target = os.fspath(path)
    zero = optimizer if isinstance(optimizer, ZeroRedundancyOptimizer) else None

    loaded: list[StateDict] = []

    def read() -> tuple[list[str], None]:  # the state stays here: agree() sends the payload
        manifest = _read_manifest(target)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        _check_params(manifest["params"], params, target)
        wanted = zero._owned_indices() if zero is not None else list(range(len(params)))
        located = manifest["state"]
        state: dict[int, Any] = {}
        for rank in sorted({located[i] for i in wanted if i in located}):
            name = manifest["shards"][rank]
            shard = _read_shard(os.path.join(os.path.dirname(target), name), name, manifest, rank)
            for i in wanted:
                if located.get(i) == rank:
                    if i not in shard["state"]:
                        raise CheckpointError(
                            f"shard file {name!r} lacks the state of parameter {i}, which the "
                            f"manifest {target!r} places there"
                        )
                    state[i] = shard["state"][i]
        state_dict: StateDict = {
            "state": dict(sorted(state.items())),
            "param_groups": manifest["param_groups"],
        }
        loaded.append(state_dict)
        return [f"path={target!r}"], None

    if zero is not None:
        agree(zero.comm, "load_sharded", read)
    else:
        read()
    optimizer.load_state_dict(loaded[0])


def _read_manifest(target: str) -> dict[str, Any]:
    try:
        manifest = _load(target, False, SHARDED_FORMAT)
    except FileNotFoundError as error:
        raise CheckpointError(f"sharded checkpoint manifest {target!r} does not exist") from error
    except CheckpointError as error:
        raise CheckpointError(f"sharded checkpoint manifest {target!r}: {error}") from error
    keys = {"save_id", "world_size", "shards", "params", "param_groups", "state"}
    if not isinstance(manifest, dict) or manifest.keys() != keys:
        found = sorted(manifest) if isinstance(manifest, dict) else type(manifest).__name__
        raise CheckpointError(
            f"sharded checkpoint manifest {target!r}: expected keys {sorted(keys)}, got {found}"
        )
    shards, located = manifest["shards"], manifest["state"]
    if (
        not isinstance(shards, list)
        or len(shards) != manifest["world_size"]
        or not all(isinstance(n, str) and os.path.basename(n) == n for n in shards)
        or not isinstance(manifest["params"], list)
        or not isinstance(located, dict)
        or not all(type(r) is int and 0 <= r < len(shards) for r in located.values())
        or not all(type(i) is int and 0 <= i < len(manifest["params"]) for i in located)
    ):
        raise CheckpointError(
            f"sharded checkpoint manifest {target!r}: invalid shard list or state locations"
        )
    return manifest


def _read_shard(file: str, name: str, manifest: dict[str, Any], rank: int) -> dict[str, Any]:
    try:
        shard = load(file, mmap=True)
    except FileNotFoundError as error:
        raise CheckpointError(f"shard file {name!r} is missing (expected at {file!r})") from error
    except CheckpointError as error:
        raise CheckpointError(f"shard file {name!r}: {error}") from error
    expected = {
        "save_id": manifest["save_id"],
        "rank": rank,
        "world_size": manifest["world_size"],
    }
    if not isinstance(shard, dict) or not isinstance(shard.get("state"), dict):
        raise CheckpointError(f"shard file {name!r} is not a shard of a sharded checkpoint")
    for key, want in expected.items():
        if shard.get(key) != want:
            raise CheckpointError(
                f"shard file {name!r} is not part of this checkpoint: its {key} is "
                f"{shard.get(key)!r}, the manifest expects {want!r} (a file from another save "
                "put in its place?)"
            )
    return shard


def _check_params(saved: list[dict[str, Any]], params: list[Any], target: str) -> None:
    if len(saved) != len(params):
        raise ValueError(
            f"the sharded checkpoint {target!r} holds {len(saved)} parameters, the optimizer "
            f"has {len(params)}"
        )
    for i, (entry, p) in enumerate(zip(saved, params, strict=True)):
        if tuple(entry["shape"]) != p.shape or entry["dtype"] != np.dtype(p.dtype).name:
            raise ValueError(
                f"parameter {i} has shape {tuple(entry['shape'])} and dtype {entry['dtype']} "
                f"in the sharded checkpoint {target!r}, but shape {p.shape} and dtype "
                f"{p.dtype} in the optimizer"
            )
