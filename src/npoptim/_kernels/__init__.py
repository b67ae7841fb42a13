"""The elementwise kernels: the registry of algorithms and the three paths that run them.

Every elementwise algorithm declares itself once (:class:`registry.Algorithm`, in its own
module): its NumPy piece function and its compiled element update, side by side. This package
runs a declaration by one of three paths, bit-identical to each other:

* **for-loop** (``foreach=False``, :mod:`.loop`): parameter by parameter, in pieces of
  ``CHUNK_BYTES`` in the parameter's memory order with reused scratch buffers, the pieces of a
  large parameter shared among threads;
* **multi-tensor** (``foreach=True``, :mod:`.foreach`): the same, with small parameters
  packed together so that one call of the piece function updates many;
* **compiled** (``fused=True``, :mod:`.compiled`, needs numba): one parallel pass over every
  parameter, generated from the element update and compiled on first use.

With neither flag (the default), the compiled kernel runs when it is ready; until then the
multi-tensor path does, while the kernel is compiled (or loaded from numba's disk cache) on a
background thread: a step never waits for numba, and the switch changes no result.
:func:`compile_kernels` compiles ahead of time (say, when a container image is built).

Imports point one way: the paths import the registry, never the reverse, and nothing here
imports an algorithm's module except :func:`registry.algorithms`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any, cast

import numpy as np

from . import foreach as foreach_path
from .loop import (
    Array,
    get_num_threads,
    job,
    reduce_pieces,
    run_pieces,
    same_layouts,
    set_num_threads,
)
from .registry import Algorithm

__all__ = [
    "compile_kernels",
    "elementwise",
    "get_num_threads",
    "require_numba",
    "set_num_threads",
]

_FUSED_MISSING = "fused=True needs numba, which is not installed: pip install numba"


def require_numba() -> None:
    """Raise torch's kind of error for ``fused=True`` when numba is not installed."""
    if importlib.util.find_spec("numba") is None:
        raise ImportError(_FUSED_MISSING)


@functools.cache
def _has_numba() -> bool:
    """Whether numba is installed (looked up once: the default path asks at every step)."""
    return importlib.util.find_spec("numba") is not None


def elementwise(
    algorithm: Algorithm,
    roles: Sequence[Sequence[Array] | None],
    per_param: Mapping[str, Sequence[Any]],
    *,
    foreach: bool | None,
    fused: bool | None,
    **shared: Any,
) -> list[tuple[float, ...]]:
    """Run ``algorithm`` on every parameter, by the path the flags choose (see the module
    docstring): ``fused=True`` the compiled kernel (compiled now if need be),
    ``foreach=True`` the multi-tensor path, ``foreach=False`` the for-loop; with neither, the
    compiled kernel if it is ready and the multi-tensor path otherwise.

    ``roles[0]`` are the parameters, ``roles[1]`` their gradients (read only), the other roles
    state arrays updated in place, one per parameter; a role the call does not have is None
    and reaches the piece function as None. ``per_param`` holds the keyword arguments of the
    piece function that differ between parameters (one value per parameter, e.g. bias
    corrections), ``shared`` the others.

    Returns each parameter's totals for an algorithm with ``sums`` (which both NumPy paths
    run parameter by parameter, unpacked: :func:`.loop.reduce_pieces`), else ``[]``.
    """
    if not roles[0]:
        return []
    if algorithm.sums:
        return _with_sums(algorithm, roles, per_param, shared, foreach=foreach, fused=fused)
    default = fused is None and foreach is None
    if fused:
        require_numba()
        compiled = importlib.import_module("npoptim._kernels.compiled")
        if compiled.run(algorithm, roles, per_param, shared, wait=True):
            return []
    elif default and algorithm.element is not None and _has_numba():
        module = _compiled_module()
        if module is not None and module.run(algorithm, roles, per_param, shared, wait=False):
            return []
    if foreach is False:
        jobs = [job(roles, per_param, shared, i) for i in range(len(roles[0]))]
        run_pieces(algorithm.piece, jobs)
    else:
        foreach_path.run(algorithm.piece, roles, per_param, shared)
    if default and algorithm.element is not None and _has_numba():
        # after the step, so that the background work does not slow this one down
        _prepare_in_background(algorithm, roles, per_param, shared)
    return []


def _with_sums(
    algorithm: Algorithm,
    roles: Sequence[Sequence[Array] | None],
    per_param: Mapping[str, Sequence[Any]],
    shared: Mapping[str, Any],
    *,
    foreach: bool | None,
    fused: bool | None,
) -> list[tuple[float, ...]]:
    """:func:`elementwise` for an algorithm with ``sums``: the same choice of path."""
    default = fused is None and foreach is None
    found = None
    if fused:
        require_numba()
        compiled = importlib.import_module("npoptim._kernels.compiled")
        found = compiled.run_sums(algorithm, roles, per_param, shared, wait=True)
    elif default and algorithm.element is not None and _has_numba():
        module = _compiled_module()
        if module is not None:
            found = module.run_sums(algorithm, roles, per_param, shared, wait=False)
    if found is not None:
        return cast(list[tuple[float, ...]], found)
    jobs = [job(roles, per_param, shared, i) for i in range(len(cast(Sequence[Array], roles[0])))]
    totals = reduce_pieces(algorithm.piece, jobs, algorithm.sums)
    if default and algorithm.element is not None and _has_numba():
        _prepare_in_background(algorithm, roles, per_param, shared)
    return totals


# --------------------------------------------------------------------- the background
_background: dict[str, Any] = {"module": None}
_requested: set[tuple[Any, ...]] = set()
_requested_lock = threading.Lock()
_threads: list[threading.Thread] = []


def _after_fork_in_child() -> None:
    """A forked child has none of its parent's background threads: it starts its own."""
    global _requested_lock
    _requested.clear()
    _threads.clear()
    _requested_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _compiled_module() -> ModuleType | None:
    """:mod:`.compiled` once a background thread (or ``fused=True``) has imported it."""
    module: ModuleType | None = _background["module"]
    if module is None:
        found = sys.modules.get("npoptim._kernels.compiled")
        if found is not None and getattr(found, "_IMPORTED", False):
            _background["module"] = module = found
    return module


def _prepare_in_background(
    algorithm: Algorithm,
    roles: Sequence[Sequence[Array] | None],
    per_param: Mapping[str, Sequence[Any]],
    shared: Mapping[str, Any],
) -> None:
    """Start compiling (or loading) the kernels this call needs on a background thread, once:
    numba's import and compilation never hold up a step."""
    scalars, flags = algorithm.numbers(roles, per_param, shared)
    params = cast(Sequence[Array], roles[0])
    layouts = {(p.dtype.str, whole) for p, whole in zip(params, same_layouts(roles), strict=True)}
    key = (algorithm.name, tuple(scalars), tuple(flags), frozenset(layouts))
    with _requested_lock:
        if key in _requested:
            return
        _requested.add(key)

    def work() -> None:
        try:
            compiled = importlib.import_module("npoptim._kernels.compiled")
            compiled.prepare(algorithm, roles, per_param, shared)
        except Exception:
            return

    thread = threading.Thread(target=work, name="npoptim-compile", daemon=True)
    _threads.append(thread)
    thread.start()


# ----------------------------------------------------------------- ahead of time
def compile_kernels(
    optimizers: Sequence[str] | None = None,
    dtypes: Sequence[Any] = (np.float32, np.float64),
) -> list[str]:
    """Compile the kernels of the fused path now, and store them in numba's disk cache, so
    that no later process compiles them (e.g. ``RUN python -c "import npoptim;
    npoptim.compile_kernels()"`` in a container build). Also makes the default path of this
    process use them from its next step on.

    Args:
        optimizers: names of elementwise optimizer classes (default: all of them).
        dtypes: the parameter dtypes to compile for (complex ones use their real kernels).

    Returns:
        The names of the optimizers compiled.

    Raises:
        ImportError: numba is not installed.
        ValueError: a name that is not an elementwise optimizer of npoptim.
    """
    require_numba()
    from . import registry

    names = list(registry.ELEMENTWISE) if optimizers is None else list(optimizers)
    for name in names:
        if name not in registry.ELEMENTWISE:
            raise ValueError(
                f"compile_kernels: {name!r} is not an elementwise optimizer of npoptim "
                f"(those are {', '.join(registry.ELEMENTWISE)})"
            )
    npoptim = importlib.import_module("npoptim")
    for name in names:
        for dtype in dtypes:
            # a step on arrays of one layout, and one on a Fortran-ordered parameter with a
            # C-ordered gradient: the contiguous kernel and the strided one
            for order in ("C", "F"):
                w = npoptim.Parameter(np.ones((2, 2), dtype=np.dtype(dtype), order=order))
                w.grad = np.ones((2, 2), dtype=dtype)
                optimizer = getattr(npoptim, name)([w], fused=True)
                if hasattr(optimizer, "train"):  # a train/eval switch (Schedule-Free)
                    optimizer.train()
                optimizer.step()
    return names


def _wait_for_background(timeout: float | None = None) -> None:
    """Wait until the background compilations started so far have finished (for tests)."""
    for thread in list(_threads):
        thread.join(timeout)
