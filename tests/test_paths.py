"""The foreach, fused and default paths compute exactly what the for-loop path computes.

Like torch's ``test_foreach_matches_forloop`` and ``test_fused_matches_forloop``: every
elementwise optimizer, with every option combination of torch's own tests (``configs.py``),
takes 8 steps on two parameter groups, float32 (and a float16) and float64 (and complex128),
that hold a 0-d parameter, a frozen one (grad None throughout), one whose grad is missing at
step 3 (so that step counts and bias corrections differ within a group), one large enough to be
cut into chunks that threads share, a Fortran-ordered one and a strided view. After every step
each path's parameters and state must equal the for-loop's bit for bit: the fused kernels run
the same IEEE operations in the same order (numba without fast-math does not contract
``a * b + c`` into a fused multiply-add), so no tolerance is needed.

The fused path needs numba (``pip install "npoptim[fused]"``); without it those cases skip.
Compiling its kernels takes some seconds per algorithm and dtype the first time; numba caches
the machine code on disk, so later runs load it.
"""

from __future__ import annotations

import importlib
import importlib.util
import multiprocessing
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import npoptim
from configs import CONFIGS
from harness import config_ids
from npoptim import Parameter, SparseGrad
from npoptim import _kernel as kernel

ELEMENTWISE = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "ASGD",
               "Rprop", "NAdam", "RAdam"]  # fmt: skip
CASES = [(name, desc, kwargs) for name in ELEMENTWISE for desc, kwargs in CONFIGS[name]]
HAS_NUMBA = importlib.util.find_spec("numba") is not None
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason='needs numba: pip install "npoptim[fused]"')

PATHS = {
    "foreach": {"foreach": True},
    "default": {},
    "fused": {"fused": True},
}
STEPS = 8
MISSING_STEP = 3


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Chunks of 4 KiB and two threads, so that a parameter of a few thousand elements is cut
    into chunks that the threads share, as a large one is with the real sizes (and the
    compiled kernels run on both threads, which they do only for large work otherwise)."""
    monkeypatch.setattr(kernel, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(kernel, "_TASK_BYTES", 1024)
    if HAS_NUMBA:  # and the compiled kernels on every thread, however little the work
        monkeypatch.setattr(importlib.import_module("npoptim._fused"), "_PER_THREAD", 1)
    threads = kernel.get_num_threads()
    kernel.set_num_threads(2)
    yield
    kernel.set_num_threads(threads)


def make_groups(seed: int = 0) -> list[list[Parameter]]:
    rng = np.random.default_rng(seed)
    single = [
        Parameter(np.float32(0.75)),  # 0-d
        Parameter(rng.standard_normal((3, 4)).astype(np.float32)),  # grad missing at step 3
        Parameter(rng.standard_normal(3000).astype(np.float32)),  # cut into chunks
        Parameter(np.ones(5, dtype=np.float32)),  # frozen: never a grad
        Parameter(rng.standard_normal(6).astype(np.float16)),
    ]
    double = [
        Parameter(rng.standard_normal((2, 3))),
        Parameter(rng.standard_normal(3) + 1j * rng.standard_normal(3)),  # complex128
        Parameter(np.asfortranarray(rng.standard_normal((5, 6)))),
        Parameter(rng.standard_normal((6, 8))[:, ::2]),  # not contiguous
        Parameter(np.float64(-1.5)),  # 0-d
    ]
    return [single, double]


def set_grads(groups: list[list[Parameter]], step: int) -> None:
    rng = np.random.default_rng(1000 + step)
    for g, group in enumerate(groups):
        for j, p in enumerate(group):
            grad = rng.standard_normal(p.shape)
            if p.dtype.kind == "c":
                grad = grad + 1j * rng.standard_normal(p.shape)
            grad = grad.astype(p.dtype)
            if p.ndim > 1 and p.flags.f_contiguous:
                grad = np.asfortranarray(grad)
            frozen = g == 0 and j == 3
            missing = g == 0 and j == 1 and step == MISSING_STEP
            p.grad = None if frozen or missing else grad


def run(name: str, kwargs: dict[str, Any], flags: dict[str, bool]) -> list[Any]:
    """The parameters and state after each step."""
    groups = make_groups()
    opt = getattr(npoptim, name)(
        [{"params": groups[0]}, {"params": groups[1]}], **{**kwargs, **flags}
    )
    history = []
    for step in range(STEPS):
        set_grads(groups, step)
        opt.step()
        params = [p for group in groups for p in group]
        history.append(
            [(np.array(p), {k: np.array(v) for k, v in opt.state[p].items()}) for p in params]
        )
    return history


def assert_same(expected: list[Any], actual: list[Any]) -> None:
    for step, (want, got) in enumerate(zip(expected, actual, strict=True)):
        for j, ((p, state), (q, other)) in enumerate(zip(want, got, strict=True)):
            where = f"step {step}, parameter {j}"
            np.testing.assert_array_equal(q, p, err_msg=where, strict=True)
            assert other.keys() == state.keys(), where
            for key in state:
                np.testing.assert_array_equal(other[key], state[key], err_msg=f"{where}: {key}")


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(("name", "desc", "kwargs"), CASES, ids=config_ids(
    [(f"{name}-{desc}", kwargs) for name, desc, kwargs in CASES]))  # fmt: skip
def test_path_matches_forloop(name: str, desc: str, kwargs: dict[str, Any], path: str) -> None:
    if path == "fused" and not HAS_NUMBA:
        pytest.skip('needs numba: pip install "npoptim[fused]"')
    expected = run(name, kwargs, {"foreach": False})
    assert_same(expected, run(name, kwargs, PATHS[path]))


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("SGD", {"lr": 0.1, "momentum": 0.9}), ("SGD", {"lr": 0.1}), ("Adagrad", {"lr": 0.1})],
)
def test_sparse_grads_take_the_same_path_in_every_mode(
    name: str, kwargs: dict[str, Any], path: str
) -> None:
    """SGD and Adagrad with a row-sparse grad among dense ones: the sparse rows are updated
    apart, the dense parameters by the chosen path, with the for-loop's results."""
    if path == "fused" and not HAS_NUMBA:
        pytest.skip('needs numba: pip install "npoptim[fused]"')

    def trajectory(flags: dict[str, bool]) -> list[np.ndarray]:
        rng = np.random.default_rng(0)
        table = Parameter(rng.standard_normal((6, 3)))
        dense = Parameter(rng.standard_normal(4))
        opt = getattr(npoptim, name)([table, dense], **kwargs, **flags)
        out = []
        for _ in range(4):
            rows = rng.choice(6, 3, replace=False)
            table.grad = SparseGrad(rows, rng.standard_normal((3, 3)), (6, 3))
            dense.grad = rng.standard_normal(4)
            opt.step()
            out += [np.array(table), np.array(dense)]
        return out

    for want, got in zip(trajectory({"foreach": False}), trajectory(PATHS[path]), strict=True):
        np.testing.assert_array_equal(got, want)


def test_fused_and_foreach_together_are_refused() -> None:
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together."):
        npoptim.Adam([Parameter(np.zeros(2))], fused=True, foreach=True)


def test_fused_without_numba_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "numba" else real_find_spec(name, *args),
    )
    with pytest.raises(ImportError, match=r"pip install numba"):
        npoptim.Adam([Parameter(np.zeros(2))], fused=True)
    w = Parameter(np.zeros(2))
    with pytest.raises(ImportError, match=r"pip install numba"):
        npoptim.functional.adam(
            [w], [np.ones(2)], [np.zeros(2)], [np.zeros(2)], [], [1.0], amsgrad=False,
            beta1=0.9, beta2=0.999, lr=0.1, weight_decay=0.0, eps=1e-8, maximize=False,
            fused=True,
        )  # fmt: skip


def test_importing_npoptim_does_not_import_numba() -> None:
    code = "import sys, npoptim; assert 'numba' not in sys.modules, 'numba was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


WITHOUT_NUMBA = """
import importlib.util, sys
real_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == "numba" else real_find_spec(name, *a)
import numpy as np
import npoptim

def trajectory(name, **flags):
    rng = np.random.default_rng(0)
    params = [npoptim.Parameter(rng.standard_normal(s)) for s in [(3, 4), (5,), ()]]
    opt = getattr(npoptim, name)(params, **flags)
    out = []
    for _ in range(4):
        for p in params:
            p.grad = rng.standard_normal(p.shape)
        opt.step()
        out += [np.array(p) for p in params]
    return out

for name in ["SGD", "Adam", "Rprop"]:
    for a, b in zip(trajectory(name), trajectory(name, foreach=False)):
        np.testing.assert_array_equal(a, b)
assert "numba" not in sys.modules, "numba was imported"
"""


def test_without_numba_the_default_path_is_numpy_and_equals_the_for_loop() -> None:
    """Where numba is not installed, a step with neither flag runs the multi-tensor path
    (numba is never imported) and its results equal the for-loop's."""
    subprocess.run([sys.executable, "-c", WITHOUT_NUMBA], check=True)


def _step_in_child(queue: Any) -> None:
    w = Parameter(np.arange(4.0))
    w.grad = np.ones(4)
    npoptim.Adam([w], lr=0.5).step()
    queue.put(np.array(w))


@needs_numba
def test_a_forked_child_steps_after_its_parent_ran_the_compiled_kernels() -> None:
    """numba's GNU OpenMP threads cannot start again in a forked child: there the default
    path is the NumPy one (same results) instead of an abort."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    w = Parameter(np.arange(4.0))
    w.grad = np.ones(4)
    npoptim.Adam([w], lr=0.5).step()  # the parent runs the compiled kernel
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_step_in_child, args=(queue,))
    child.start()
    result = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(result, np.array(w))
