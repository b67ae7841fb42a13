"""The for-loop path of the elementwise kernels, and what the NumPy paths share: real views,
pieces in memory order, scratch buffers, threads, and the NumPy prologues of the updates.

An algorithm's *piece* function (see :class:`npoptim._kernels.registry.Algorithm`) updates
matching pieces of a parameter and its arrays with NumPy calls. This path (``foreach=False``)
runs it parameter by parameter, on pieces of at most ``CHUNK_BYTES`` taken in the parameter's
memory order, so that the few intermediate results an update needs live in small reused
scratch buffers (cache-resident) instead of parameter-sized temporaries, whatever the layouts
of the parameter, its gradient and its state (C order, Fortran order, strided views, any mix).
The pieces of a large parameter are shared among :func:`get_num_threads` threads (NumPy
releases the GIL inside its loops).

Complex parameters are updated as torch does, as pairs of reals: :func:`as_real` views a
complex array of shape ``S`` as a real array of shape ``S + (2,)`` sharing its memory.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import numpy as np

__all__ = [
    "CHUNK_BYTES",
    "Array",
    "Job",
    "Piece",
    "as_real",
    "average_of_squares",
    "get_num_threads",
    "gradient",
    "job",
    "moments",
    "parallel_map",
    "pieces",
    "real_views",
    "reduce_pieces",
    "run_pieces",
    "scratch",
    "set_num_threads",
    "temporaries",
]

Array = np.ndarray[Any, Any]
Piece = Callable[..., None]
Job = tuple[Sequence["Array | None"], Mapping[str, Any]]  # a parameter's arrays and keywords
_T = TypeVar("_T")
_R = TypeVar("_R")

#: Size in bytes of the pieces an elementwise kernel works on at a time.
CHUNK_BYTES = 1 << 20

#: Elements of the blocks in which the sums of an algorithm with ``sums`` are taken (see
#: :func:`reduce_pieces`); the compiled path reads it at each call too.
REDUCE_BLOCK = 1 << 14
#: Lanes of a block's sum (see :func:`block_totals`): independent running sums, so that the
#: compiled kernels add in vectors.
REDUCE_LANES = 256

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
    otherwise."""
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


# ------------------------------------------------------------------- the NumPy prologues
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
    is scratch. The compiled counterpart: :func:`npoptim._kernels.element.decayed`."""
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
    :math:`v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2`; ``tmp`` is scratch. The compiled
    counterpart: :func:`npoptim._kernels.element.moments`."""
    np.subtract(g, m, out=tmp)
    tmp *= 1 - beta1
    m += tmp
    average_of_squares(v, g, beta2, tmp)


# -------------------------------------------------------------------------------- pieces
def memory_order(a: Array) -> tuple[int, ...]:
    """The axes of ``a`` from the slowest-varying in memory to the fastest (the order in
    which ``a.transpose(order)`` is C-ordered, when ``a`` is contiguous in some order)."""
    return tuple(sorted(range(a.ndim), key=lambda axis: -abs(a.strides[axis])))


def same_layout(arrays: Sequence[Array | None]) -> bool:
    """Whether the arrays (None aside) share one contiguous layout, C or Fortran order."""
    c_order = f_order = True
    for a in arrays:
        if a is not None:
            flags = a.flags
            c_order = c_order and flags.c_contiguous
            f_order = f_order and flags.f_contiguous
            if not (c_order or f_order):
                return False
    return True


def same_layouts(roles: Sequence[Sequence[Array] | None]) -> list[bool]:
    """:func:`same_layout` of each parameter's arrays, for arrays given by role."""
    present = [r for r in roles if r is not None]
    return [same_layout(arrays) for arrays in zip(*present, strict=True)]


def as_rows_and_columns(arrays: Sequence[Array | None]) -> list[Array | None] | None:
    """2-D views (rows, columns) of same-shaped arrays (None stays None), in the memory order
    of ``arrays[0]``: element ``[a, j]`` of each is the same element of the arrays, rows and
    columns each a fixed stride apart in every array. None where an array cannot be seen so
    (its leading axes, in that order, do not merge into one)."""
    first = arrays[0]
    assert first is not None
    order = [axis for axis in memory_order(first) if first.shape[axis] != 1]
    views = [None if a is None else a.transpose(*order, *(
        axis for axis in range(a.ndim) if axis not in order)) for a in arrays]  # fmt: skip
    shape = [first.shape[axis] for axis in order] or [1]
    rows = int(np.prod(shape[:-1]))
    found: list[Array | None] = []
    for v in views:
        if v is None:
            found.append(None)
            continue
        strides = list(v.strides[: len(order)]) or [v.itemsize]
        if any(strides[k] != shape[k + 1] * strides[k + 1] for k in range(len(shape) - 2)):
            return None
        row_stride = strides[-2] if len(shape) > 1 else 0
        found.append(np.lib.stride_tricks.as_strided(
            v, (rows, shape[-1]), (row_stride, strides[-1]), writeable=True))  # fmt: skip
    return found


def pieces(arrays: Sequence[Array | None], limit: int) -> list[list[Array | None]]:
    """Matching views of same-shaped ``arrays`` (None stays None) that cover them in pieces
    of at most ``limit`` elements, taken in the memory order of ``arrays[0]``: each piece of
    ``arrays[0]`` is contiguous where it is, whatever the layouts of the others (their pieces
    are then strided views: :func:`run_pieces` copies a tile whose rows are not contiguous
    before the update, see :func:`_staged`). Arrays that share one contiguous layout are cut
    as flat 1-D pieces."""
    first = arrays[0]
    assert first is not None
    if first.ndim == 0:
        return [list(arrays)]
    if not same_layout(arrays):
        matrices = as_rows_and_columns(arrays)
        if matrices is not None:  # tiles, so that every array's piece stays in the cache
            return _tiles(matrices, limit)
    order = memory_order(first)
    views = [None if a is None else a.transpose(order) for a in arrays]
    if all(v.flags.c_contiguous for v in views if v is not None):
        views = [None if v is None else v.reshape(-1) for v in views]
    shape = cast(Array, views[0]).shape
    # the innermost axes whose product fits in a piece are taken whole; the next one is cut
    # into ranges; the outer ones are walked index by index
    inner, axis = 1, len(shape)
    while axis > 0 and inner * shape[axis - 1] <= limit:
        axis -= 1
        inner *= shape[axis]
    if axis == 0:
        return [views]
    cut = axis - 1
    step = max(1, limit // inner)
    found = []
    for outer in itertools.product(*map(range, shape[:cut])):
        for start in range(0, shape[cut], step):
            index = (*outer, slice(start, start + step))
            found.append([None if v is None else v[index] for v in views])
    return found


def _tiles(matrices: Sequence[Array | None], limit: int) -> list[list[Array | None]]:
    """Tiles of at most ``limit`` elements of same-shaped 2-D arrays: as many whole rows as
    fit (rows longer than ``limit`` cut into pieces of it), so that the arrays whose rows are
    contiguous are walked in long runs (runs of a few KiB a row apart are read much more
    slowly); :func:`_staged` copies the tile of an array whose rows are not contiguous."""
    rows, columns = cast(Array, matrices[0]).shape
    width = min(columns, limit)
    height = max(1, limit // width)
    return [
        [None if m is None else m[a : a + height, c : c + width] for m in matrices]
        for a in range(0, rows, height)
        for c in range(0, columns, width)
    ]


# ------------------------------------------------------------------------------- threads
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
    parameter's pieces among them; the fused path runs its kernels on that many numba threads).
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


# ------------------------------------------------------------------------------ the path
def run_pieces(piece: Piece, jobs: Sequence[Job]) -> None:
    """The for-loop path: ``piece(*arrays, **kwargs)`` for each parameter's job, over matching
    pieces of its arrays (real views; None for a role the update does not use).

    Small parameters are updated in turn, as one piece each. The pieces of the others are
    shared among :func:`get_num_threads` threads, which take the next one as they finish
    (NumPy releases the GIL inside its loops; the order does not change the results).
    """
    small: list[Job] = []
    tasks: list[tuple[Sequence[Array | None], Mapping[str, Any]]] = []
    for arrays, kwargs in jobs:
        p = cast(Array, arrays[0])
        if p.nbytes < _TASK_BYTES:
            small.append((arrays, kwargs))
        else:
            limit = max(1, CHUNK_BYTES // p.itemsize)
            tasks += [(views, kwargs) for views in pieces(arrays, limit)]

    def update_small() -> None:
        for arrays, kwargs in small:
            piece(*arrays, **kwargs)

    def update_piece(task: tuple[Sequence[Array | None], Mapping[str, Any]]) -> None:
        staged = _staged(task[0])
        piece(*staged, **task[1])
        _write_back(task[0], staged)

    # the helpers start on the pieces while this thread does the small ones
    parallel_map(update_piece, tasks, first=update_small)


#: The scratch slots of :func:`_staged`'s copies, one per role (the piece functions use 0-7,
#: the multi-tensor path's packed buffers 16 and up).
_STAGE_SLOT = 32
#: Columns of a tile that one copy of :func:`_staged` takes. NumPy copies along the target's
#: rows: a row of the copy reads one element from each of this many cache lines of the array,
#: which the next rows of the copy read again (their next elements); fewer at a time, those
#: lines are still in the cache then. A Fortran-ordered 2,000 x 2,000 float32 weight's
#: C-ordered gradient, in tiles of 131 rows: 3.7 ms with 512 columns, 5.2 ms whole rows.
_STAGE_COLUMNS = 512


def _staged(views: Sequence[Array | None]) -> list[Array | None]:
    """A tile's views (:func:`_tiles`), those whose rows are not contiguous where the
    parameter's are (the C-ordered gradient of a Fortran-ordered weight: the elements of a
    row of the tile a row of the array apart) replaced by C-ordered copies in scratch buffers.
    NumPy's loops over such a view read one element per cache line, in every pass of the
    update; the copy is read along its rows, as the others are."""
    first = views[0]
    if first is None or first.ndim != 2 or first.strides[1] != first.itemsize:
        return list(views)
    staged: list[Array | None] = []
    for r, v in enumerate(views):
        if v is None or v.strides[1] == v.itemsize or v.shape[1] == 1:
            staged.append(v)
        else:
            copy = scratch(v.size, v.dtype, _STAGE_SLOT + r).reshape(v.shape)
            _copy_in_columns(copy, v)
            staged.append(copy)
    return staged


def _write_back(views: Sequence[Array | None], staged: Sequence[Array | None]) -> None:
    """Copy the copies of :func:`_staged` back into their arrays, but the gradient's (role 1),
    which an update only reads."""
    for r, (v, copy) in enumerate(zip(views, staged, strict=True)):
        if r != 1 and v is not None and copy is not v:
            _copy_in_columns(v, cast(Array, copy))


def _copy_in_columns(target: Array, source: Array) -> None:
    """``target[...] = source`` for 2-D arrays, ``_STAGE_COLUMNS`` columns at a time."""
    for c in range(0, target.shape[1], _STAGE_COLUMNS):
        np.copyto(target[:, c : c + _STAGE_COLUMNS], source[:, c : c + _STAGE_COLUMNS])


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


# ------------------------------------------------------------------------ sums of terms
#: The block totals of a piece computed another way (the compiled path's), from the index of
#: the piece's parameter and the piece's arrays (as :func:`_staged` gives them); None where
#: it cannot take that piece.
PieceTotals = Callable[[int, Sequence["Array | None"]], "list[Array] | None"]


def reduce_pieces(
    piece: Piece, jobs: Sequence[Job], sums: int, totals_of: PieceTotals | None = None
) -> list[tuple[float, ...]]:
    """The NumPy path of an algorithm with ``sums`` (see
    :class:`npoptim._kernels.registry.Algorithm`): ``piece(*arrays, **kwargs)`` over each
    parameter's pieces, shared among threads, each returning its ``sums`` arrays of terms;
    returns each parameter's totals. ``totals_of``, when given, updates a piece and gives its
    block totals instead, where it can.

    The order of the additions is fixed, whatever the threads and the path: a parameter's
    terms, in the order its pieces cover it, are cut into blocks of :data:`REDUCE_BLOCK`;
    each block is added up in float64 in :data:`REDUCE_LANES` lanes (:func:`block_totals`),
    and the block totals from the first block to the last, starting from 0. A piece is a
    whole number of blocks, so a block never spans two pieces (a tile of a parameter of mixed
    layouts may end in a shorter one); the compiled path adds in the same order.
    """
    tasks: list[tuple[int, Sequence[Array | None], Mapping[str, Any]]] = []
    for i, (arrays, kwargs) in enumerate(jobs):
        p = cast(Array, arrays[0])
        limit = max(1, CHUNK_BYTES // p.itemsize // REDUCE_BLOCK) * REDUCE_BLOCK
        tasks += [(i, views, kwargs) for views in pieces(arrays, limit)]

    def reduce(task: tuple[int, Sequence[Array | None], Mapping[str, Any]]) -> list[Array]:
        staged = _staged(task[1])
        found = None if totals_of is None else totals_of(task[0], staged)
        if found is None:
            terms = cast(Sequence[Array], piece(*staged, **task[2]))
            found = [block_totals(t) for t in terms]
        _write_back(task[1], staged)
        return found

    totals = [[0.0] * sums for _ in jobs]
    for (i, _, _), found in zip(tasks, parallel_map(reduce, tasks), strict=True):
        for k, blocks in enumerate(found):
            totals[i][k] = add_in_order(totals[i][k], blocks)
    return [tuple(t) for t in totals]


def block_totals(terms: Array) -> Array:
    """The float64 totals of the blocks of :data:`REDUCE_BLOCK` elements of ``terms`` (in
    C order). Within a block, element ``j`` goes to lane ``j % REDUCE_LANES``; each lane
    adds its elements in order, and the block's total is its lanes added in order. (A
    reduction over the first axis of ``(rows, REDUCE_LANES)`` adds row after row, ``cumsum``
    one element after the other; a plain ``sum`` adds pairwise, an order the compiled
    kernels would not reproduce.)"""
    flat = terms.reshape(-1)
    whole = flat.size // REDUCE_BLOCK  # whole blocks, then maybe a shorter last one
    totals = np.empty(-(-flat.size // REDUCE_BLOCK))
    if whole:
        rows = flat[: whole * REDUCE_BLOCK].reshape(whole, -1, REDUCE_LANES)
        lanes = rows.sum(axis=1, dtype=np.float64)  # row after row, in each block
        totals[:whole] = np.cumsum(lanes, axis=1)[:, -1]  # the lanes, first to last
    last = flat[whole * REDUCE_BLOCK :]
    if last.size:
        full = last.size // REDUCE_LANES * REDUCE_LANES
        if full:
            lanes = last[:full].reshape(-1, REDUCE_LANES).sum(axis=0, dtype=np.float64)
            lanes[: last.size - full] += last[full:]
        else:
            lanes = last.astype(np.float64)
        totals[whole] = np.cumsum(lanes)[-1]
    return totals


def add_in_order(total: float, blocks: Array) -> float:
    """``total`` plus the block totals ``blocks``, one after the other (as Python floats)."""
    for value in blocks.tolist():
        total += value
    return total
