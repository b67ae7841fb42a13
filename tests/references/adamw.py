"""AdamW (Loshchilov & Hutter, 2019): Adam whose weight decay is applied to the parameter."""

from typing import Any

import numpy as np

from . import adam

NAME = "AdamW"


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    weight_decay: float = 1e-2,
    **kwargs: Any,
) -> np.ndarray:
    return adam.reference(
        p, g, state, t, weight_decay=weight_decay, decoupled_weight_decay=True, **kwargs
    )
