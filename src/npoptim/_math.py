"""Small in-place array operations that several algorithms share, rounded as torch rounds them.

The elementwise kernels of the registry have their own pieces (``npoptim._kernels``); these
serve the algorithms that run plain NumPy (Adafactor, SOAP, Lookahead, the averages of
``swa_utils``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["lerp_"]

Array = np.ndarray[Any, Any]


def lerp_(start: Array, end: Array, weight: float, scratch: Array | None = None) -> None:
    r"""``start`` moved toward ``end`` in place: :math:`s \leftarrow s + w (e - s)`.

    Rounded as torch's ``lerp_``: for :math:`|w| < 0.5` as written, otherwise from the other
    end, :math:`s \leftarrow e - (e - s)(1 - w)`, which is exact at :math:`w = 1`.
    ``scratch`` (shaped like ``start``) receives :math:`e - s` instead of a new array.
    """
    diff = np.subtract(end, start, out=scratch)
    if abs(weight) < 0.5:
        diff *= weight
        start += diff
    else:
        diff *= 1 - weight
        np.subtract(end, diff, out=start)
