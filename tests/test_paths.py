"""The foreach, fused and default paths compute exactly what the for-loop path computes.

Like torch's ``test_foreach_matches_forloop`` and ``test_fused_matches_forloop``: every
elementwise optimizer, with every option combination of torch's own tests (``configs.py``),
takes 8 steps on two parameter groups, float32 (and a float16) and float64 (and complex128),
that hold a 0-d parameter, a frozen one (grad None throughout), one whose grad is missing at
step 3 (so that step counts and bias corrections differ within a group), one large enough to be
cut into chunks that threads share, a Fortran-ordered one and a strided view, and parameters
whose gradient and state have other layouts than theirs (a Fortran-ordered parameter with a
C-ordered gradient, a C-ordered one with a Fortran-ordered gradient and state, a strided view
with Fortran-ordered state), large enough to be cut into pieces. After every step
each path's parameters and state must equal the for-loop's bit for bit: the fused kernels run
the same IEEE operations in the same order (numba without fast-math does not contract
``a * b + c`` into a fused multiply-add), so no tolerance is needed.

The fused path needs numba (``pip install "npoptim[fused]"``); without it those cases skip.
Compiling its kernels takes some seconds per algorithm and dtype the first time; numba caches
the machine code on disk, so later runs load it. The kernels are compiled before the tests run
(``npoptim.compile_kernels()``), so that the default path runs them too rather than the NumPy
path it takes while they are not ready.
"""

from __future__ import annotations

import importlib
import importlib.util
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import npoptim
from beyond_cases import ELEMENTWISE_CONFIGS, in_train_mode
from configs import CONFIGS
from harness import config_ids
from npoptim import Parameter, SparseGrad
from npoptim._kernels import loop, registry

ELEMENTWISE = registry.optimizer_names(elementwise_only=True)
CONFIGS = {**CONFIGS, **ELEMENTWISE_CONFIGS}
CASES = [(name, desc, kwargs) for name in ELEMENTWISE for desc, kwargs in CONFIGS[name]]
HAS_NUMBA = importlib.util.find_spec("numba") is not None
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason='needs numba: pip install "npoptim[fused]"')

PATHS = {
    "foreach": {"foreach": True},
    "default": {},
    "fused": {"fused": True},
}
STEPS = 8
MISSING_STEP = 3


@pytest.fixture(scope="module", autouse=True)
def compiled_kernels() -> None:
    """Every kernel compiled (or loaded from the cache) up front, so that the default path
    runs the compiled kernels, as it does once they are ready."""
    if HAS_NUMBA:
        npoptim.compile_kernels()


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pieces of 4 KiB and two threads, so that a parameter of a few thousand elements is cut
    into pieces that the threads share, as a large one is with the real sizes (and the
    compiled kernels run on both threads, which they do only for large work otherwise)."""
    monkeypatch.setattr(loop, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(loop, "_TASK_BYTES", 1024)
    monkeypatch.setattr(loop, "REDUCE_BLOCK", 1024)  # sums over several blocks and pieces
    if HAS_NUMBA:  # and the compiled kernels on every thread, however little the work
        compiled = importlib.import_module("npoptim._kernels.compiled")
        monkeypatch.setattr(compiled, "_PER_THREAD", 1)
        # and tiles of a few rows and columns, so that the strided kernel cuts both
        monkeypatch.setattr(compiled, "_TILE_ROW_BYTES", 64)
        monkeypatch.setattr(compiled, "_TILE_COLUMNS", 24)
    threads = npoptim.get_num_threads()
    npoptim.set_num_threads(2)
    yield
    npoptim.set_num_threads(threads)


def make_groups(seed: int = 0) -> list[list[Parameter]]:
    rng = np.random.default_rng(seed)
    single = [
        Parameter(np.float32(0.75)),  # 0-d
        Parameter(rng.standard_normal((3, 4)).astype(np.float32)),  # grad missing at step 3
        Parameter(rng.standard_normal(3000).astype(np.float32)),  # cut into chunks
        Parameter(np.ones(5, dtype=np.float32)),  # frozen: never a grad
        Parameter(rng.standard_normal(6).astype(np.float16)),
        Parameter(np.asfortranarray(rng.standard_normal((45, 70)).astype(np.float32))),
    ]
    double = [
        Parameter(rng.standard_normal((2, 3))),
        Parameter(rng.standard_normal(3) + 1j * rng.standard_normal(3)),  # complex128
        Parameter(np.asfortranarray(rng.standard_normal((5, 6)))),
        Parameter(rng.standard_normal((6, 8))[:, ::2]),  # not contiguous
        Parameter(np.float64(-1.5)),  # 0-d
        Parameter(rng.standard_normal((30, 22))),
        Parameter(rng.standard_normal((3, 40, 30))[:, ::2, 1:]),  # strided, 3-d
    ]
    return [single, double]


#: Layouts that differ from the parameter's: (group, index) -> (gradient's, state's), each
#: "C", "F" or None (the parameter's).
MIXED = {(0, 5): ("C", None), (1, 5): ("F", "F"), (1, 6): ("C", "F")}


def relayout(a: np.ndarray, order: str | None) -> np.ndarray:
    if order is None:
        return a
    return np.ascontiguousarray(a) if order == "C" else np.asfortranarray(a)


def mix_state_layouts(opt: npoptim.Optimizer, groups: list[list[Parameter]]) -> None:
    """The state arrays of the parameters of MIXED in the layout MIXED gives them."""
    for (g, j), (_, order) in MIXED.items():
        state = opt.state[groups[g][j]]
        for key, value in state.items():
            if isinstance(value, np.ndarray) and value.ndim > 1:
                state[key] = relayout(value, order)


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
            grad = relayout(grad, MIXED.get((g, j), (None, None))[0])
            frozen = g == 0 and j == 3
            missing = g == 0 and j == 1 and step == MISSING_STEP
            p.grad = None if frozen or missing else grad


def run(name: str, kwargs: dict[str, Any], flags: dict[str, bool]) -> list[Any]:
    """The parameters and state after each step."""
    groups = make_groups()
    groups_ = [{"params": groups[0]}, {"params": groups[1]}]
    opt = in_train_mode(getattr(npoptim, name)(groups_, **{**kwargs, **flags}))
    history = []
    for step in range(STEPS):
        set_grads(groups, step)
        opt.step()
        if step == 0:
            mix_state_layouts(opt, groups)
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


FIRST_STEPS = """
import numpy as np
import npoptim
from npoptim._kernels import _compiled_module, _wait_for_background

def trajectory(**flags):
    rng = np.random.default_rng(0)
    w = npoptim.Parameter(rng.standard_normal((50, 40)).astype(np.float32))
    opt = npoptim.Adam([w], weight_decay=0.1, **flags)
    out = []
    for step in range(4):
        w.grad = rng.standard_normal(w.shape).astype(np.float32)
        opt.step()
        compiled = _compiled_module()
        out.append((np.array(w), compiled is not None and bool(compiled._ready)))
        if step == 1:
            _wait_for_background()
    return out

default = trajectory()
# the first step ran on NumPy without waiting for numba (which the step set to work in the
# background, taking seconds); once the kernel is ready, the steps run on it
ready = [ready for _, ready in default]
assert not ready[0] and ready[2:] == [True, True], ready
for (a, _), (b, _) in zip(default, trajectory(foreach=False)):
    np.testing.assert_array_equal(a, b)
"""


@needs_numba
def test_the_default_path_steps_on_numpy_until_the_kernel_is_ready(tmp_path: Any) -> None:
    """With an empty cache, the default path's first steps run on NumPy while the kernel is
    compiled in the background, then the kernel runs: the same results throughout."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "PYTHONPATH": SRC}
    subprocess.run([sys.executable, "-c", FIRST_STEPS], check=True, env=env)


LOAD_FROM_CACHE = """
import numpy as np
import npoptim
w = npoptim.Parameter(np.ones(3, dtype=np.float32))
w.grad = np.ones(3, dtype=np.float32)
npoptim.RMSprop([w], fused=True).step()
"""


@needs_numba
def test_a_second_process_loads_the_kernel_from_the_cache(tmp_path: Any) -> None:
    """Only the kernel that runs is compiled, and the next process loads it from the disk
    cache instead of compiling it again."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "PYTHONPATH": SRC,
           "NUMBA_DEBUG_CACHE": "1"}  # fmt: skip
    first = subprocess.run([sys.executable, "-c", LOAD_FROM_CACHE], check=True, env=env,
                           capture_output=True, text=True)  # fmt: skip
    second = subprocess.run([sys.executable, "-c", LOAD_FROM_CACHE], check=True, env=env,
                            capture_output=True, text=True)  # fmt: skip
    def kernel_lines(out: str, event: str) -> list[str]:
        return [line for line in out.splitlines() if event in line and "_run" in line]

    assert any("_rmsprop_" in line for line in kernel_lines(first.stdout, "data saved"))
    assert all("_rmsprop_" in line for line in kernel_lines(first.stdout, "saved")), first.stdout
    assert not kernel_lines(second.stdout, "saved"), second.stdout
    assert any("_rmsprop_" in line for line in kernel_lines(second.stdout, "data loaded"))


NO_CACHE_FOLDER = """
import warnings
import numba.core.caching
numba.core.caching.CacheImpl._locator_classes = []  # as where no folder is writable
import numpy as np
import npoptim
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for name in ["Adam", "SGD"]:
        w = npoptim.Parameter(np.ones(3))
        w.grad = np.ones(3)
        getattr(npoptim, name)([w], lr=0.1, fused=True).step()
messages = [str(w.message) for w in caught if "NUMBA_CACHE_DIR" in str(w.message)]
assert len(messages) == 1, [str(w.message) for w in caught]
"""


@needs_numba
def test_no_writable_cache_folder_gives_one_warning_naming_numba_cache_dir() -> None:
    subprocess.run([sys.executable, "-c", NO_CACHE_FOLDER], check=True,
                   env={**os.environ, "PYTHONPATH": SRC})  # fmt: skip


def test_compile_kernels_refuses_a_name_that_is_not_an_elementwise_optimizer() -> None:
    if not HAS_NUMBA:
        pytest.skip('needs numba: pip install "npoptim[fused]"')
    with pytest.raises(ValueError, match="'LBFGS' is not an elementwise optimizer"):
        npoptim.compile_kernels(["LBFGS"])


@pytest.mark.parametrize(
    ("make", "contiguous"),
    [
        (np.asfortranarray, True),
        (lambda a: np.moveaxis(a, 0, 2), True),
        (lambda a: a[:, ::2, 1:], False),
    ],
    ids=["fortran", "moved-axes", "strided"],
)
def test_pieces_cover_every_element_once_in_the_parameter_memory_order(
    make: Any, contiguous: bool
) -> None:
    """The pieces of a parameter and of a C-ordered copy of it (another layout) match element
    for element, cover every element once, and, where the parameter is contiguous in some
    order, walk its memory in that order (their last axis is contiguous)."""
    p = make(np.arange(720.0).reshape(6, 10, 12))
    copy = np.ascontiguousarray(p)
    seen = []
    for p_piece, copy_piece in loop.pieces([p, copy], limit=7):
        assert 0 < p_piece.size <= 7
        np.testing.assert_array_equal(p_piece, copy_piece)
        assert np.shares_memory(p_piece, p)
        assert p_piece.strides[-1] == p.itemsize or not contiguous
        seen += list(p_piece.reshape(-1))
    assert sorted(seen) == sorted(p.reshape(-1))


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "strides",
    [(1, 70), (1, -70), (3, 140), (140, 2)],
    ids=["transposed", "transposed-reversed", "strided", "row-strided"],
)
def test_a_tile_is_copied_into_the_scratch_and_back_bit_for_bit(
    dtype: Any, strides: tuple[int, int]
) -> None:
    """The strided kernel's copy of a tile (square blocks transposed in registers where the
    array's other axis is contiguous, element by element otherwise) puts each element at its
    place in the scratch copy, every bit kept (NaN payloads included), and back. The tile of
    21 rows x 19 columns starts at row 5, column 3, so that whole squares and the rows and
    columns left over are all taken."""
    numba = importlib.import_module("numba")
    compiled = importlib.import_module("npoptim._kernels.compiled")
    copy_tile = compiled._copy_tile

    @numba.njit
    def copy(addresses: Any, strides: Any, tile: Any, buffer: Any, into: bool) -> None:
        copy_tile(addresses, strides, tile, buffer, into)

    bits = np.dtype(dtype).itemsize * 8
    unsigned = np.dtype(f"u{bits // 8}")
    raw = np.random.default_rng(3).integers(0, 2**bits - 1, size=70 * 70, dtype=unsigned)
    memory = raw.view(dtype)  # NaNs with payloads among the values
    row_stride, column_stride = strides
    origin = 69 * 70 if column_stride < 0 else 0

    def seen(a: np.ndarray) -> np.ndarray:
        """``a`` (one element per element of memory) seen as the strided matrix."""
        return np.lib.stride_tricks.as_strided(
            a[origin:],
            shape=(30, 25),
            strides=(row_stride * a.itemsize, column_stride * a.itemsize),
        )

    matrix = seen(memory)
    tile = np.array([0, 5, 26, 3, 22], dtype=np.int64)
    addresses = np.array([memory[origin:].ctypes.data], dtype=np.int64)
    table = np.array([strides], dtype=np.int64)
    buffer = np.zeros((21, 19 + 5), dtype=dtype)
    copy(addresses, table, tile, buffer, True)
    expected = matrix[5:26, 3:22].view(unsigned).copy()
    np.testing.assert_array_equal(buffer[:, :19].view(unsigned), expected)
    before = memory.copy()
    buffer[:, :19] = np.flip(buffer[:, :19].view(unsigned), axis=0).view(dtype)
    copy(addresses, table, tile, buffer, False)
    np.testing.assert_array_equal(matrix[5:26, 3:22].view(unsigned), np.flip(expected, 0))
    outside = np.ones(memory.shape, dtype=bool)
    outside[seen(np.arange(memory.size))[5:26, 3:22].reshape(-1)] = False
    assert np.array_equal(memory.view(unsigned)[outside], before.view(unsigned)[outside])


def _sum_in_lanes_and_blocks(terms: np.ndarray) -> float:
    """The order of the sums of an algorithm with ``sums``, from its definition: in each
    block of ``REDUCE_BLOCK`` terms, term ``j`` goes to lane ``j % REDUCE_LANES`` and each
    lane adds its terms in order; a block's total is its lanes in order; the parameter's
    total is 0 plus the block totals in order."""
    block, lanes = loop.REDUCE_BLOCK, loop.REDUCE_LANES
    total = 0.0
    for start in range(0, terms.size, block):
        running: list[float] = []
        for j, term in enumerate(terms[start : start + block].tolist()):
            if j < lanes:
                running.append(term)
            else:
                running[j % lanes] += term
        block_total = running[0]
        for value in running[1:]:
            block_total += value
        total += block_total
    return total


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("size", [3000, 200, 2048])
def test_sums_are_added_in_lanes_and_blocks_in_a_fixed_order(path: str, size: int) -> None:
    # LARS's norms pass (‖θ‖², ‖g‖² in float64 of float32 squares), over several blocks
    # (REDUCE_BLOCK is 1024 here), a short last block, and fewer terms than lanes.
    if path == "fused" and not HAS_NUMBA:
        pytest.skip('needs numba: pip install "npoptim[fused]"')
    from npoptim.lars import NORMS

    rng = np.random.default_rng(size)
    p = Parameter((rng.standard_normal(size) * 10 ** rng.uniform(-3, 3, size)).astype(np.float32))
    g = rng.standard_normal(size).astype(np.float32)
    flags = {"foreach": None, "fused": None, **PATHS[path]}
    ((weight_sq, grad_sq),) = npoptim._kernels.elementwise(NORMS, [[p], [g]], {}, **flags)
    assert weight_sq == _sum_in_lanes_and_blocks(np.square(p).astype(np.float64))
    assert grad_sq == _sum_in_lanes_and_blocks(np.square(g).astype(np.float64))


def test_tiles_whose_rows_are_not_contiguous_reach_the_update_as_copies() -> None:
    """The for-loop path gives an update the tiles of a Fortran-ordered parameter's C-ordered
    gradient and state as C-ordered copies (NumPy's loops would read the arrays themselves
    one element per cache line), in tiles of whole rows, and copies back what the update
    wrote, except to the gradient, which an update only reads."""
    rng = np.random.default_rng(0)
    p = np.asfortranarray(rng.standard_normal((300, 40)))  # 40 rows of 300 in memory
    g, s = rng.standard_normal((300, 40)), rng.standard_normal((300, 40))
    p0, g0, s0 = p.copy(), g.copy(), s.copy()
    seen = []

    def piece(p: np.ndarray, g: np.ndarray, s: np.ndarray) -> None:
        seen.append((p.shape, [a.flags.c_contiguous for a in (p, g, s)]))
        p += g
        s -= g
        g[...] = 0  # written to the copy only

    loop.run_pieces(piece, [([p, g, s], {})])
    assert len(seen) > 1  # several pieces (4 KiB here)
    assert all(shape[1] == 300 and all(contiguous) for shape, contiguous in seen)
    np.testing.assert_array_equal(p, p0 + g0)
    np.testing.assert_array_equal(s, s0 - g0)
    np.testing.assert_array_equal(g, g0)


@needs_numba
def test_sums_over_mixed_layouts_come_from_the_compiled_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fused path's sums over a Fortran-ordered parameter with a C-ordered gradient
    come from its compiled kernel, tile by staged tile, and equal the NumPy path's."""
    from npoptim.lars import NORMS

    compiled = importlib.import_module("npoptim._kernels.compiled")
    original = compiled._tile_totals
    taken: list[bool] = []

    def spy(*args: Any) -> Any:
        found = original(*args)
        taken.append(found is not None)
        return found

    monkeypatch.setattr(compiled, "_tile_totals", spy)
    rng = np.random.default_rng(1)
    p = Parameter(np.asfortranarray(rng.standard_normal((45, 70)).astype(np.float32)))
    g = rng.standard_normal((45, 70)).astype(np.float32)
    fused = npoptim._kernels.elementwise(NORMS, [[p], [g]], {}, foreach=None, fused=True)
    assert len(taken) > 1 and all(taken)  # several tiles (4 KiB here), each compiled
    numpy_path = npoptim._kernels.elementwise(NORMS, [[p], [g]], {}, foreach=True, fused=None)
    assert fused == numpy_path
