"""The multi-tensor (``foreach``) path of the elementwise kernels.

Updating many small parameters one at a time costs a dozen NumPy calls each, whatever their
size. This path packs the small parameters of a group, role by role (parameters, gradients,
each state), into cache-sized buffers, runs the piece function once per buffer and copies the
updated roles back. Parameters whose per-parameter scalars differ (bias corrections after a
missing gradient, say) are packed apart, so every element sees exactly the operations and
scalars of the for-loop path: the results are bit-identical. Large parameters gain nothing
from packing and take the for-loop path (:func:`npoptim._kernel.run_pieces`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._kernel import CHUNK_BYTES, Array, Job, Piece, as_real, run_pieces, scratch

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
    """Run ``piece`` on every parameter (see :func:`npoptim._kernel.elementwise`)."""
    used = [r for r in roles if r is not None]
    gaps = [r is None for r in roles]
    names = list(per_param)
    columns = [per_param[key] for key in names]
    packs: dict[tuple[Any, ...], list[list[Array]]] = {}
    large: list[Job] = []
    for i in range(len(used[0])):
        arrays = [as_real(r[i]) for r in used]
        values = tuple(column[i] for column in columns)
        if arrays[0].nbytes <= SMALL_BYTES:
            packs.setdefault((arrays[0].dtype, values), []).append(arrays)
        else:
            kwargs = {**shared, **dict(zip(names, values, strict=True))}
            large.append((_with_gaps(arrays, gaps), kwargs))
    run_pieces(piece, large)
    for (_, values), members in packs.items():
        kwargs = {**shared, **dict(zip(names, values, strict=True))}
        start, size = 0, 0
        for k, arrays in enumerate(members):
            if size + arrays[0].nbytes > CHUNK_BYTES:
                _run_packed(piece, members[start:k], gaps, kwargs)
                start, size = k, 0
            size += arrays[0].nbytes
        _run_packed(piece, members[start:], gaps, kwargs)


def _with_gaps(arrays: Sequence[Array], gaps: Sequence[bool]) -> list[Array | None]:
    """The arguments of a piece function: ``arrays`` with None for the unused roles."""
    it = iter(arrays)
    return [None if gap else next(it) for gap in gaps]


def _run_packed(
    piece: Piece,
    members: Sequence[Sequence[Array]],
    gaps: Sequence[bool],
    kwargs: Mapping[str, Any],
) -> None:
    """``piece`` once on buffers holding the members' arrays end to end, then every role but
    the gradients (role 1) copied back."""
    dtype = members[0][0].dtype
    total = sum(m[0].size for m in members)
    buffers = []
    for r in range(len(members[0])):
        buf = scratch(total, dtype, _FIRST_SLOT + r)
        np.concatenate([m[r] for m in members], axis=None, out=buf)
        buffers.append(buf)
    piece(*_with_gaps(buffers, gaps), **kwargs)
    for r, buf in enumerate(buffers):
        if r == 1:
            continue
        offset = 0
        for m in members:
            a = m[r]
            end = offset + a.size
            if a.ndim == 1:
                a[:] = buf[offset:end]
            else:
                a[...] = buf[offset:end].reshape(a.shape)
            offset = end
