"""Shared machinery of the elementwise kernels: real views, chunking and scratch buffers.

Every elementwise algorithm updates a parameter and its state arrays element by element. The
kernels here run that update over matching pieces of the arrays, ``CHUNK_BYTES`` at a time, so
that the few intermediate results an update needs live in small reusable scratch buffers (a
few hundred KiB, cache-resident) instead of parameter-sized temporaries.

Complex parameters are updated as torch does, as pairs of reals: :func:`as_real` views a
complex array of shape ``S`` as a real array of shape ``S + (2,)`` sharing its memory.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["CHUNK_BYTES", "Array", "as_real", "chunks", "scratch"]

Array = np.ndarray[Any, Any]

#: Size in bytes of the pieces an elementwise kernel works on at a time.
CHUNK_BYTES = 1 << 18

_local = threading.local()


def as_real(a: Array) -> Array:
    """``a`` itself if real, else a real view of shape ``a.shape + (2,)`` (torch's
    ``view_as_real``) that shares memory with ``a``."""
    if np.iscomplexobj(a):
        return a[..., None].view(a.real.dtype)
    return a


def scratch(size: int, dtype: np.dtype[Any], slot: int = 0) -> Array:
    """A reusable 1-D buffer of ``size`` elements (contents undefined), one per thread,
    slot and dtype. Kernels take distinct slots for buffers alive at the same time."""
    buffers: dict[tuple[int, np.dtype[Any]], Array] | None = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    key = (slot, np.dtype(dtype))
    buf = buffers.get(key)
    if buf is None or buf.shape[0] < size:
        buf = np.empty(max(size, 1), dtype=dtype)
        buffers[key] = buf
    return buf[:size]


def chunks(*arrays: Array) -> Iterator[tuple[Array, ...]]:
    """Matching pieces of same-shaped arrays, for an elementwise update in place.

    When every array is C-contiguous the pieces are flat views of at most ``CHUNK_BYTES``;
    otherwise the arrays come whole, once. Writes to a piece write to the array.
    """
    if not all(a.flags.c_contiguous for a in arrays):
        yield arrays
        return
    flat = [a.reshape(-1) for a in arrays]
    n = flat[0].shape[0]
    step = max(1, CHUNK_BYTES // max(a.itemsize for a in arrays))
    if n <= step:
        yield tuple(flat)
        return
    for start in range(0, n, step):
        yield tuple(f[start : start + step] for f in flat)


def temporaries(like: Array, count: int) -> Sequence[Array]:
    """``count`` scratch arrays shaped like the piece ``like`` (buffers reused across calls
    when the piece is a chunk, fresh when the arrays could not be chunked)."""
    if like.ndim == 1 and like.shape[0] * like.itemsize <= CHUNK_BYTES:
        return [scratch(like.shape[0], like.dtype, slot) for slot in range(count)]
    return [np.empty_like(like) for _ in range(count)]
