"""Read-only views of live state, for the ``state_dict()`` methods.

A ``state_dict`` hands out the arrays it is made of without copying them, as torch hands out
its tensors: checkpointing a model of any size costs no memory. Unlike torch's, the arrays are
read-only views (NumPy's ``writeable`` flag off), so writing through a ``state_dict`` raises
``ValueError: assignment destination is read-only`` instead of changing the optimizer. Like
torch's, they follow training; ``copy.deepcopy`` of a ``state_dict`` is a snapshot (its
arrays are writeable copies).
"""

from __future__ import annotations

__all__ = ["readonly"]

import copy
from typing import Any

import numpy as np

from .parameter import SparseGrad


def readonly(value: Any) -> Any:
    """``value`` with each array replaced by a read-only view of it (no copy of the data).

    dicts, lists and tuples are rebuilt around the views (so the caller may add or remove
    entries freely); a ``SparseGrad`` gets views of its indices and values; any other value
    is deep-copied (a Python or NumPy scalar comes back as it is).
    """
    if isinstance(value, np.ndarray):
        view = value.view(np.ndarray)
        view.flags.writeable = False
        return view
    if isinstance(value, SparseGrad):
        return SparseGrad(
            readonly(value.indices),
            readonly(value.values),
            value.shape,
            _coalesced=value.is_coalesced(),
        )
    kind = type(value)
    if kind is dict:
        return {key: readonly(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return kind(readonly(item) for item in value)
    return copy.deepcopy(value)
