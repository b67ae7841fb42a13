"""The workloads' parameter shapes and arrays, shared by the benchmark scripts.

NumPy only: ``sharded_checkpoint.py`` starts a process per MPI rank, and none of them needs
torch (``step_time.py``, which times torch too, imports it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Shape = tuple[int, ...]


def resnet50_shapes() -> list[Shape]:
    """The parameter shapes of torchvision's ResNet-50, in order."""
    shapes: list[Shape] = [(64, 3, 7, 7), (64,), (64,)]
    inplanes = 64
    for planes, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            shapes += [(planes, inplanes, 1, 1), (planes,), (planes,)]
            shapes += [(planes, planes, 3, 3), (planes,), (planes,)]
            shapes += [(planes * 4, planes, 1, 1), (planes * 4,), (planes * 4,)]
            if b == 0:  # the downsampling shortcut
                shapes += [(planes * 4, inplanes, 1, 1), (planes * 4,), (planes * 4,)]
            inplanes = planes * 4
    shapes += [(1000, 2048), (1000,)]
    assert len(shapes) == 161 and sum(int(np.prod(s)) for s in shapes) == 25_557_032
    return shapes


def dense_workload(shapes: Sequence[Shape], seed: int = 0) -> tuple[list[Any], list[Any]]:
    """float32 values (standard normal) and gradients (1e-2 times that) of these shapes."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    grads = [rng.standard_normal(s, dtype=np.float32) * np.float32(1e-2) for s in shapes]
    return values, grads
