"""Shared machinery of the elementwise kernels: real views, chunking, scratch buffers, threads,
and the choice between the three implementations of an update.

Every elementwise algorithm updates a parameter and its state arrays element by element. Its
module writes that update once, as a *piece* function over matching pieces of the arrays
(``_adam_piece(p, g, m, v, ..., **hyperparameters)``), and hands it to :func:`elementwise`,
which runs it by one of three paths:

* **for-loop** (``foreach=False``): parameter by parameter, ``CHUNK_BYTES`` at a time, so
  that the few intermediate results an update needs live in small reusable scratch buffers
  (cache-resident) instead of parameter-sized temporaries. The chunks of a large parameter are
  shared among :func:`get_num_threads` threads (NumPy releases the GIL inside its loops).
* **foreach** (``foreach=True``; the default where numba is missing): the same, except that
  small parameters are packed together and updated in one call of the piece function
  (:mod:`npoptim._foreach`), which removes the per-parameter Python overhead. Its results are
  bit-identical to the for-loop's: the same operations run on the same values.
* **fused** (``fused=True``; the default where numba is installed): compiled single-pass
  kernels (:mod:`npoptim._fused`, needs numba). Also bit-identical to the for-loop, as the
  tests check.

Complex parameters are updated as torch does, as pairs of reals: :func:`as_real` views a
complex array of shape ``S`` as a real array of shape ``S + (2,)`` sharing its memory.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import itertools
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, TypeVar, cast

import numpy as np

__all__ = [
    "CHUNK_BYTES",
    "Array",
    "as_real",
    "average_of_squares",
    "elementwise",
    "fused_module",
    "get_num_threads",
    "gradient",
    "job",
    "moments",
    "parallel_map",
    "real_views",
    "require_numba",
    "run_pieces",
    "scratch",
    "set_num_threads",
    "temporaries",
]

Array = np.ndarray[Any, Any]
_T = TypeVar("_T")
_R = TypeVar("_R")

#: Size in bytes of the pieces an elementwise kernel works on at a time.
CHUNK_BYTES = 1 << 20

#: Parameters of at least this many bytes go to the threads (smaller ones: less work than
#: the Python that runs it, so threads would only contend for the GIL).
_TASK_BYTES = 1 << 16

_local = threading.local()


def as_real(a: Array) -> Array:
    """A plain ndarray view of ``a`` (never a subclass such as Parameter); for complex ``a``,
    the real view of shape ``a.shape + (2,)`` (torch's ``view_as_real``)."""
    if a.dtype.kind == "c":
        return a[..., None].view(dtype=a.real.dtype, type=np.ndarray)
    if type(a) is not np.ndarray:
        return a.view(np.ndarray)
    return a


def scratch(size: int, dtype: np.dtype[Any], slot: int = 0) -> Array:
    """A reusable 1-D buffer of ``size`` elements (contents undefined), one per thread,
    slot and dtype. Buffers alive at the same time take distinct slots: piece functions use
    slots 0-7 (through :func:`temporaries`), the drivers 16 and up."""
    buffers: dict[tuple[int, np.dtype[Any]], Array] | None = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    key = (slot, np.dtype(dtype))
    buf = buffers.get(key)
    if buf is None or buf.shape[0] < size:
        # At least a chunk's worth, so that pieces never make a buffer grow.
        buf = np.empty(max(size, CHUNK_BYTES // key[1].itemsize), dtype=dtype)
        buffers[key] = buf
    return buf[:size]


def temporaries(like: Array, count: int, dtype: Any = None) -> Sequence[Array]:
    """``count`` scratch arrays shaped like the piece ``like`` (of its dtype, or ``dtype``):
    views of the reused buffers when the piece is at most ``CHUNK_BYTES``, fresh arrays
    otherwise (a parameter that could not be cut into chunks)."""
    dtype = like.dtype if dtype is None else np.dtype(dtype)
    if like.nbytes > CHUNK_BYTES:
        return [np.empty(like.shape, dtype=dtype) for _ in range(count)]
    views: dict[tuple[Any, ...], list[Array]] | None = getattr(_local, "views", None)
    if views is None or len(views) > 4096:
        views = _local.views = {}
    key = (dtype, like.shape, count)
    found = views.get(key)
    if found is None:
        found = views[key] = [
            scratch(like.size, dtype, slot).reshape(like.shape) for slot in range(count)
        ]
    return found


def gradient(
    p: Array,
    g: Array,
    g_t: Array,
    tmp: Array,
    *,
    maximize: bool,
    weight_decay: float,
    decoupled_lr: float | None = None,
) -> Array:
    r"""The gradient :math:`g_t` of a piece, the prologue of most updates: the grad, negated
    to maximize, plus L2 weight decay :math:`\lambda \theta_{t-1}`; or, with ``decoupled_lr``
    :math:`\gamma`, the grad alone and :math:`\theta \leftarrow \theta (1 - \gamma\lambda)`
    (decoupled weight decay). Returns ``g`` itself or ``g_t``, where it was written; ``tmp``
    is scratch."""
    if maximize:
        np.negative(g, out=g_t)
        g = g_t
    if weight_decay != 0:
        if decoupled_lr is not None:
            p *= 1 - decoupled_lr * weight_decay  # θ ← θ(1 - γλ)
        else:
            np.multiply(p, weight_decay, out=tmp)
            np.add(g, tmp, out=g_t)  # g ← g + λθ
            g = g_t
    return g


def average_of_squares(v: Array, g: Array, beta: float, tmp: Array) -> None:
    r""":math:`v \leftarrow \beta v + (1 - \beta) g^2` in place; ``tmp`` is scratch."""
    v *= beta
    np.multiply(g, g, out=tmp)
    tmp *= 1 - beta
    v += tmp


def moments(g: Array, m: Array, v: Array, beta1: float, beta2: float, tmp: Array) -> None:
    r"""Adam's moments in place: :math:`m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t` (as
    :math:`m_{t-1} + (1 - \beta_1)(g_t - m_{t-1})`, torch's lerp) and
    :math:`v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2`; ``tmp`` is scratch."""
    np.subtract(g, m, out=tmp)
    tmp *= 1 - beta1
    m += tmp
    average_of_squares(v, g, beta2, tmp)


def _flat(arrays: Sequence[Array | None]) -> list[Array | None] | None:
    """1-D views of same-shaped arrays (None stays None) that walk them in the same element
    order, or None when their memory layouts do not allow it."""
    present = [a for a in arrays if a is not None]
    if all(a.flags.c_contiguous for a in present):
        return [None if a is None else a.reshape(-1) for a in arrays]
    if all(a.flags.f_contiguous for a in present):
        return [None if a is None else a.T.reshape(-1) for a in arrays]
    return None


# --------------------------------------------------------------------------------- threads
_threads = {"count": 0}
_pool: dict[str, Any] = {"executor": None, "workers": 0, "pid": 0}
_pool_lock = threading.Lock()


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_num_threads(n: int) -> None:
    """Set the number of threads the elementwise kernels use (the NumPy paths share a large
    parameter's chunks among them; the fused path runs its kernels on that many numba threads).
    The default is the number of CPUs this process may run on."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"Invalid number of threads: {n}")
    _threads["count"] = n


def get_num_threads() -> int:
    """The number of threads the elementwise kernels use (see :func:`set_num_threads`)."""
    if _threads["count"] == 0:
        _threads["count"] = _available_cpus()
    return _threads["count"]


def _executor(workers: int) -> ThreadPoolExecutor:
    """The shared pool of helper threads, made anew when the count changes or after a fork."""
    with _pool_lock:
        executor: ThreadPoolExecutor | None = _pool["executor"]
        if executor is None or _pool["workers"] != workers or _pool["pid"] != os.getpid():
            if executor is not None and _pool["pid"] == os.getpid():
                executor.shutdown(wait=False)
            executor = ThreadPoolExecutor(workers, thread_name_prefix="npoptim")
            _pool.update(executor=executor, workers=workers, pid=os.getpid())
        return executor


# ------------------------------------------------------------------------------ the paths
Piece = Callable[..., None]


Job = tuple[Sequence[Array | None], Mapping[str, Any]]  # a parameter's arrays and keywords


def run_pieces(piece: Piece, jobs: Sequence[Job]) -> None:
    """The for-loop path: ``piece(*arrays, **kwargs)`` for each parameter's job, over matching
    chunks of its arrays (real views; None for a role the update does not use).

    Small parameters are updated in turn, as one piece each. The chunks of the others are
    shared among :func:`get_num_threads` threads, which take the next one as they finish
    (NumPy releases the GIL inside its loops; the order does not change the results).
    """
    small: list[Job] = []
    tasks: list[tuple[list[Array | None], Mapping[str, Any], int, int]] = []
    for arrays, kwargs in jobs:
        p = arrays[0]
        assert p is not None
        views = None if p.nbytes < _TASK_BYTES else _flat(arrays)
        if views is None:  # small, or no common layout: one call on the whole arrays
            small.append((arrays, kwargs))
            continue
        step = max(1, CHUNK_BYTES // p.itemsize)
        tasks += [(views, kwargs, start, start + step) for start in range(0, p.size, step)]

    def update_small() -> None:
        for arrays, kwargs in small:
            piece(*arrays, **kwargs)

    def update_chunk(task: tuple[list[Array | None], Mapping[str, Any], int, int]) -> None:
        views, kwargs, start, stop = task
        piece(*(None if v is None else v[start:stop] for v in views), **kwargs)

    # the helpers start on the chunks while this thread does the small ones
    parallel_map(update_chunk, tasks, first=update_small)


def parallel_map(
    fn: Callable[[_T], _R], items: Sequence[_T], first: Callable[[], object] | None = None
) -> list[_R]:
    """``[fn(x) for x in items]``, the items shared among :func:`get_num_threads` threads
    (NumPy releases the GIL inside its loops); the results come in the order of ``items``.
    ``first``, when given, runs on this thread before it joins the others on the items (work
    too small to share among threads)."""
    threads = min(get_num_threads(), len(items) + (first is not None))
    results: list[_R | None] = [None] * len(items)
    counter = itertools.count()

    def work() -> None:
        while (k := next(counter)) < len(items):
            results[k] = fn(items[k])

    futures = [_executor(threads - 1).submit(work) for _ in range(threads - 1)]
    try:
        if first is not None:
            first()
        work()
    finally:
        for future in futures:
            future.result()
    return cast(list[_R], results)


def elementwise(
    name: str,
    piece: Piece,
    roles: Sequence[Sequence[Array] | None],
    per_param: Mapping[str, Sequence[Any]],
    *,
    foreach: bool | None,
    fused: bool | None,
    **shared: Any,
) -> None:
    """Run the update ``piece`` of algorithm ``name`` on every parameter, by the path the flags
    choose (see the module docstring): ``fused=True`` the compiled kernels, ``foreach=True``
    the multi-tensor path, ``foreach=False`` the for-loop; with neither flag, the compiled
    kernels when numba is installed and the multi-tensor path otherwise.

    ``roles[0]`` are the parameters, ``roles[1]`` their gradients (read only), the other roles
    state arrays updated in place, one per parameter; a role the update does not use is None
    and reaches ``piece`` as None. ``per_param`` holds the keyword arguments of ``piece`` that
    differ between parameters (one value per parameter, e.g. bias corrections), ``shared``
    the others.
    """
    if not roles[0]:
        return
    if fused or (fused is None and foreach is None):
        compiled = fused_module(required=bool(fused))
        if compiled is not None and compiled.usable():
            compiled.run(name, piece, roles, per_param, shared)
            return
    if foreach is False:
        run_pieces(piece, [job(roles, per_param, shared, i) for i in range(len(roles[0]))])
    else:
        from . import _foreach

        _foreach.run(piece, roles, per_param, shared)


_FUSED_MISSING = "fused=True needs numba, which is not installed: pip install numba"


def require_numba() -> None:
    """Raise torch's kind of error for ``fused=True`` when numba is not installed."""
    if importlib.util.find_spec("numba") is None:
        raise ImportError(_FUSED_MISSING)


@functools.cache
def _import_fused() -> ModuleType | None:
    if importlib.util.find_spec("numba") is None:
        return None
    try:
        return importlib.import_module("npoptim._fused")
    except ImportError:  # numba is there but cannot load (say, built for another NumPy)
        return None


def fused_module(required: bool) -> ModuleType | None:
    """:mod:`npoptim._fused` (which imports numba), or None where numba cannot be imported;
    ``required`` (``fused=True``) raises instead, with the install command."""
    if required:
        require_numba()
        return importlib.import_module("npoptim._fused")
    return _import_fused()


def job(
    roles: Sequence[Sequence[Array] | None],
    per_param: Mapping[str, Sequence[Any]],
    shared: Mapping[str, Any],
    i: int,
) -> Job:
    """Parameter ``i``'s arrays (real views) and keyword arguments."""
    kwargs = {**shared, **{key: values[i] for key, values in per_param.items()}}
    return real_views(roles, i), kwargs


def real_views(roles: Sequence[Sequence[Array] | None], i: int) -> list[Array | None]:
    """Parameter ``i``'s arrays as real views, None for a role the update does not use."""
    return [None if r is None else as_real(r[i]) for r in roles]
