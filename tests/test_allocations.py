"""A step allocates no temporary the size of a parameter.

The elementwise kernels work through a parameter in cache-sized pieces with reused scratch
buffers (the NumPy paths) or in one compiled pass (the fused path), so after a warm-up step
(which creates the state, the scratch buffers, the helper threads and the compiled code) a step
on a parameter of a million elements allocates less than a quarter of its size in all, also
when the parameter is Fortran-ordered and its gradient C-ordered (pieces in the parameter's
memory order). tracemalloc sees NumPy's allocations, in every thread. The compiled kernels are
compiled before the tests run, so that the default path runs them and no background
compilation allocates while a step is measured.

Muon and LBFGS are left out: their updates are not elementwise (Newton–Schulz iterations on
the parameter's matrix; flat direction and history vectors) and keep parameter-sized arrays
by nature.
"""

from __future__ import annotations

import functools
import importlib.util
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import npoptim
from beyond_cases import ELEMENTWISE_CONFIGS, in_train_mode
from configs import CONFIGS
from harness import config_ids
from npoptim import Parameter, SparseGrad
from npoptim._kernels import _wait_for_background, registry

ELEMENTWISE = registry.optimizer_names(elementwise_only=True)
CONFIGS = {**CONFIGS, **ELEMENTWISE_CONFIGS}
CASES = [(f"{name}-{desc}", name, kwargs) for name in ELEMENTWISE for desc, kwargs in CONFIGS[name]]
HAS_NUMBA = importlib.util.find_spec("numba") is not None
PATHS = {"default": {}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}
ALL_PATHS = {**PATHS, "fused": {"fused": True}} if HAS_NUMBA else PATHS
SIZE = 1_000_000


@pytest.fixture(scope="module", autouse=True)
def compiled_kernels() -> None:
    if HAS_NUMBA:
        npoptim.compile_kernels(dtypes=[np.float32])


def extra_bytes_of_a_step(opt: npoptim.Optimizer, set_grads: Any) -> int:
    """The most memory a step had allocated at once, beyond what was allocated before it."""
    for _ in range(2):  # warm-up
        set_grads()
        opt.step()
    set_grads()
    # A kernel compiling in the background (started by an earlier test of this process) would
    # allocate while the step runs, and tracemalloc counts every thread's allocations.
    _wait_for_background()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        opt.step()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - before


@functools.cache
def _pool() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(3 * SIZE, dtype=np.float32)


def normal(rng: np.random.Generator, shape: tuple[int, ...], order: str = "C") -> np.ndarray:
    """A new float32 array of standard normal values: a window of one pool, drawn once, at a
    place ``rng`` picks (a million new values a parameter or gradient would take most of a
    test's time; a step does the same work whatever the values)."""
    size = int(np.prod(shape))
    start = int(rng.integers(0, _pool().size - size + 1))
    return _pool()[start : start + size].reshape(shape).astype(np.float32, order=order)


def dense(p: Parameter, rng: np.random.Generator, order: str = "K") -> Callable[[], None]:
    def set_grads() -> None:
        p.grad = normal(rng, p.shape).astype(p.dtype, order=order, copy=False)

    return set_grads


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(("name", "kwargs"), [c[1:] for c in CASES],
                         ids=config_ids([(c[0], c[2]) for c in CASES]))  # fmt: skip
def test_elementwise_step_allocates_no_parameter_sized_temporary(
    name: str, kwargs: dict[str, Any], path: str
) -> None:
    rng = np.random.default_rng(0)
    p = Parameter(normal(rng, (SIZE,)))
    opt = in_train_mode(getattr(npoptim, name)([p], **{**kwargs, **PATHS[path]}))
    assert extra_bytes_of_a_step(opt, dense(p, rng)) < p.nbytes / 4


@pytest.mark.skipif(not HAS_NUMBA, reason='needs numba: pip install "npoptim[fused]"')
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_fused_step_allocates_no_parameter_sized_temporary(name: str) -> None:
    rng = np.random.default_rng(0)
    p = Parameter(normal(rng, (SIZE,)))
    kwargs = {"lr": 0.1} if name == "SGD" else {}
    opt = in_train_mode(getattr(npoptim, name)([p], fused=True, **kwargs))
    assert extra_bytes_of_a_step(opt, dense(p, rng)) < p.nbytes / 4


@pytest.mark.parametrize("path", list(ALL_PATHS))
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_fortran_parameter_with_c_gradient_allocates_no_parameter_sized_temporary(
    name: str, path: str
) -> None:
    rng = np.random.default_rng(0)
    p = Parameter(normal(rng, (1000, SIZE // 1000), order="F"))
    opt = in_train_mode(getattr(npoptim, name)([p], **ALL_PATHS[path]))
    assert extra_bytes_of_a_step(opt, dense(p, rng, order="C")) < p.nbytes / 4


def test_sparse_adam_step_allocates_no_parameter_sized_temporary() -> None:
    rng = np.random.default_rng(0)
    p = Parameter(rng.standard_normal((SIZE // 10, 10)).astype(np.float32))

    def set_grads() -> None:
        rows = rng.choice(p.shape[0], 256, replace=False)
        values = rng.standard_normal((256, 10)).astype(np.float32)
        p.grad = SparseGrad(rows, values, p.shape)

    opt = npoptim.SparseAdam([p])
    assert extra_bytes_of_a_step(opt, set_grads) < p.nbytes / 4


@pytest.mark.parametrize("shape", [(1000, 1000), (SIZE,)])
def test_adafactor_step_allocates_no_parameter_sized_temporary(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    p = Parameter(rng.standard_normal(shape).astype(np.float32))
    opt = npoptim.Adafactor([p])
    assert extra_bytes_of_a_step(opt, dense(p, rng)) < p.nbytes / 4
