"""Reference implementations, one module per algorithm, written from the published
pseudo-code independently of ``src/``.

Each module defines ``NAME`` (the optimizer's class name), ``reference`` (see
``tests/harness.py`` for its signature) and may define ``TOLERANCE``, a dict from dtype name
to the relative error allowed against torch and the reference (defaults below).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

DEFAULT_TOLERANCE = {"float64": 1e-10, "complex128": 1e-10, "float32": 1e-5}


def load_all() -> dict[str, ModuleType]:
    modules = {}
    for info in pkgutil.iter_modules(__path__):
        if info.ispkg:  # beyond/: optimizers torch lacks, tested against their own oracles
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        modules[module.NAME] = module
    return dict(sorted(modules.items()))


def tolerance(module: ModuleType, dtype_name: str) -> float:
    table = {**DEFAULT_TOLERANCE, **getattr(module, "TOLERANCE", {})}
    return float(table[dtype_name])
