"""What every distributed function shares: the communicator, collective validation, reusable
flat buffers, in-place broadcasts, and the per-node thread default.

mpi4py is imported here, lazily, the first time a distributed function runs: ``import npoptim``
and ``import npoptim.distributed`` never load MPI.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable, Sequence
from itertools import zip_longest
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .._kernels import get_num_threads, set_num_threads
from .._kernels.loop import _available_cpus

if TYPE_CHECKING:
    from mpi4py.MPI import Intracomm, Request

__all__ = ["Array", "agree", "bcast_in_place", "node_threads", "resolve", "scratch"]

Array = np.ndarray[Any, Any]

_T = TypeVar("_T")
_MPI_MISSING = (
    'npoptim.distributed needs mpi4py, which is not installed: pip install "npoptim[mpi]"'
)
_thread_default = {"applied": False}

#: Flat buffers reused from call to call, one per purpose and dtype (grown when too small).
_buffers: dict[tuple[str, str], Array] = {}


def scratch(purpose: str, dtype: np.dtype[Any], size: int) -> Array:
    """A reusable flat buffer of at least ``size`` elements of ``dtype`` (first ``size``)."""
    key = (purpose, dtype.str)
    buf = _buffers.get(key)
    if buf is None or buf.size < size:
        buf = _buffers[key] = np.empty(size, dtype=dtype)
    return buf[:size]


def resolve(comm: Intracomm | None) -> Intracomm:
    """``comm``, or ``MPI.COMM_WORLD`` for None; the first call also applies the per-node
    thread default (see :func:`node_threads`)."""
    if comm is None:
        try:
            from mpi4py import MPI
        except ImportError as exc:
            raise ImportError(_MPI_MISSING) from exc
        comm = MPI.COMM_WORLD
    if not _thread_default["applied"]:
        _thread_default["applied"] = True
        threads = node_threads(comm)
        if get_num_threads() == _available_cpus():  # the user has not chosen a count
            set_num_threads(threads)
    return comm


def node_threads(comm: Intracomm) -> int:
    """The kernel threads one rank of ``comm`` should use so that the ranks sharing its node
    do not oversubscribe it: the node's cores divided by the number of those ranks (MPI's
    shared-memory split), at least 1, and at most the CPUs this process may run on.
    Collective over ``comm``."""
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        ranks_on_node = local.Get_size()
    finally:
        local.Free()
    cores = os.cpu_count() or 1
    return max(1, min(_available_cpus(), cores // ranks_on_node))


def agree(
    comm: Intracomm,
    what: str,
    describe: Callable[[], tuple[Sequence[str], _T]],
    *,
    same_error: bool = False,
) -> list[_T]:
    """Check collectively that every rank of ``comm`` passed matching input to ``what``.

    ``describe()`` runs on each rank and returns lines that must be equal on every rank
    (shapes, dtypes, groups) and a payload that may differ (say, which grads are present);
    one allgather carries each rank's digest of the lines and its payload. If ``describe``
    raised on some rank, or the lines differ, every rank raises: the rank that failed its own
    error, the others a ``RuntimeError`` naming that rank and its error (with ``same_error``,
    every rank the same error instead: the failing rank's type, its message prefixed with
    ``what`` and the rank); for differing lines a ``ValueError`` that names the first
    difference and both sides. No rank is left waiting in a collective and nothing has
    changed.

    Returns:
        The payloads, one per rank, in rank order.
    """
    error: Exception | None = None
    lines: Sequence[str] = ()
    payload: Any = None
    try:
        lines, payload = describe()
    except Exception as exc:  # raised again below, after every rank knows
        error = exc
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    failure = None if error is None else (_type_name(error), str(error))
    gathered = comm.allgather((failure, digest, payload))
    failed = [(rank, failure) for rank, (failure, _, _) in enumerate(gathered) if failure]
    if failed:
        rank, (kind, message) = failed[0]
        if same_error:
            others = f" (and on ranks {[r for r, _ in failed[1:]]})" if len(failed) > 1 else ""
            raise _remade(kind, f"{what} refused on rank {rank}{others}: {message}") from error
        if error is not None:
            raise error
        raise RuntimeError(
            f"{what}: rank {rank} refused its input ({kind.rpartition('.')[2]}: {message})"
        )
    if len({d for _, d, _ in gathered}) > 1:
        raise ValueError(_first_difference(what, comm.allgather(list(lines))))
    return [p for _, _, p in gathered]


def _type_name(error: Exception) -> str:
    """``module.QualName`` of the error's type (builtins as ``builtins.ValueError``)."""
    kind = type(error)
    return f"{kind.__module__}.{kind.__qualname__}"


def _remade(kind: str, message: str) -> Exception:
    """An error of the type named ``kind`` (as :func:`_type_name` gives it) with ``message``;
    a ``RuntimeError`` where that type cannot be found or made from one message."""
    module_name, _, name = kind.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), name)
        if isinstance(found, type) and issubclass(found, Exception):
            made = found(message)
            if str(made) == message:
                return made
    except Exception:  # an unknown or unusual type: say it in a RuntimeError
        pass
    return RuntimeError(f"{message} ({name})")


def _first_difference(what: str, everyone: list[list[str]]) -> str:
    """The message for ranks whose descriptions differ: the first differing line of the first
    rank that differs from rank 0, both sides."""
    for rank, lines in enumerate(everyone):
        for mine, theirs in zip_longest(everyone[0], lines, fillvalue="nothing"):
            if mine != theirs:
                return (
                    f"{what}: every rank must pass the same parameters, but rank 0 has "
                    f"{mine} where rank {rank} has {theirs}"
                )
    raise AssertionError("descriptions differ in digest only")  # pragma: no cover


def bcast_in_place(comm: Intracomm, arrays: list[tuple[Array, int]]) -> None:
    """Broadcast each ``(array, root)`` pair from its root, in place: every broadcast is
    started (non-blocking), then all are waited for (arrays that are not contiguous go
    through a copy)."""
    from mpi4py import MPI

    pending: list[tuple[Request, Array | None, Array]] = []
    for a, root in arrays:
        plain = a.view(np.ndarray)
        buf = plain if plain.flags.c_contiguous else np.ascontiguousarray(plain)
        pending.append((comm.Ibcast(buf, root=root), None if buf is plain else buf, plain))
    MPI.Request.Waitall([r for r, _, _ in pending])
    for _, copy, target in pending:
        if copy is not None:
            np.copyto(target, copy)
