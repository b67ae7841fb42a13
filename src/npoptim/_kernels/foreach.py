"""The multi-tensor (``foreach``) path of the elementwise kernels.

Updating many small parameters one at a time costs a dozen NumPy calls each, whatever their
size. This path packs the small parameters of a group, role by role (parameters, gradients,
each state), into cache-sized buffers, runs the piece function once per buffer and copies the
updated roles back. Parameters whose per-parameter scalars differ (bias corrections after a
missing gradient, say) are packed apart, so every element sees exactly the operations and
scalars of the for-loop path: the results are bit-identical. Large parameters gain nothing
from packing and take the for-loop path (:func:`npoptim._kernels.loop.run_pieces`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np

from . import loop
from .loop import Array, Job, Piece, real_views, run_pieces, scratch

__all__ = ["SMALL_BYTES", "run"]

#: Parameters of at most this many bytes are packed; larger ones take the for-loop path
#: (copying them in and out would cost more than the Python it saves).
SMALL_BYTES = 1 << 14

_FIRST_SLOT = 16  # scratch slots of the packed buffers (the piece functions use 0-7)


def run(
    piece: Piece,
    roles: Sequence[Sequence[Array] | None],
    per_param: Mapping[str, Sequence[Any]],
    shared: Mapping[str, Any],
) -> None:
    """Run ``piece`` on every parameter (see :func:`npoptim._kernels.elementwise`)."""
    names = list(per_param)
    columns = [per_param[key] for key in names]
    packs: dict[tuple[Any, ...], list[list[Array | None]]] = {}
    large: list[Job] = []
    params = roles[0]
    assert params is not None
    for i in range(len(params)):
        arrays = real_views(roles, i)
        p = arrays[0]
        assert p is not None
        values = tuple(column[i] for column in columns)
        if p.nbytes <= SMALL_BYTES:
            packs.setdefault((p.dtype, values), []).append(arrays)
        else:
            large.append((arrays, {**shared, **dict(zip(names, values, strict=True))}))
    run_pieces(piece, large)
    for (_, values), members in packs.items():
        kwargs = {**shared, **dict(zip(names, values, strict=True))}
        start, size = 0, 0
        for k, arrays in enumerate(members):
            nbytes = cast(Array, arrays[0]).nbytes
            if size + nbytes > loop.CHUNK_BYTES and k > start:  # never an empty pack
                _run_packed(piece, members[start:k], kwargs)
                start, size = k, 0
            size += nbytes
        _run_packed(piece, members[start:], kwargs)


def _run_packed(
    piece: Piece, members: Sequence[Sequence[Array | None]], kwargs: Mapping[str, Any]
) -> None:
    """``piece`` once on buffers holding the members' arrays end to end (None for a role the
    update does not use), then every role but the gradients (role 1) copied back."""
    first = cast(Array, members[0][0])
    total = sum(cast(Array, m[0]).size for m in members)
    buffers: list[Array | None] = []
    for r, role in enumerate(members[0]):
        if role is None:
            buffers.append(None)
            continue
        packed = scratch(total, first.dtype, _FIRST_SLOT + r)
        np.concatenate([cast(Array, m[r]) for m in members], axis=None, out=packed)
        buffers.append(packed)
    piece(*buffers, **kwargs)
    for r, buf in enumerate(buffers):
        if r == 1 or buf is None:
            continue
        offset = 0
        for m in members:
            a = cast(Array, m[r])
            end = offset + a.size
            if a.ndim == 1:
                a[:] = buf[offset:end]
            else:
                a[...] = buf[offset:end].reshape(a.shape)
            offset = end
