"""SparseAdam and sparse gradients: against torch 2.13 (live and golden), a dense reference
written from the lazy-Adam formula, dense Adam on rows touched at every step, SparseGrad's own
contract, and which optimizers accept a SparseGrad.

The problem: two parameters, a (40, 3) table and a (25,) vector. At step ``k`` each gets a
row-sparse gradient with unsorted and repeated rows whose values depend on the current
parameter (so errors feed back), except that at ``EMPTY`` the vector's gradient holds no rows
and at ``MISSING`` the table has no gradient at all.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pytest

import npoptim
from harness import GOLDEN_DIR
from npoptim import Adam, Parameter, SparseAdam, SparseGrad

SHAPES: list[tuple[int, ...]] = [(40, 3), (25,)]
STEPS = 12
EMPTY = (4, 1)  # (step, parameter) whose gradient has no rows
MISSING = (6, 0)  # (step, parameter) without a gradient
DTYPES = {"float64": np.float64, "float32": np.float32}
TOLERANCE = {"float64": 1e-12, "float32": 1e-6}
GOLDEN = GOLDEN_DIR / "SparseAdam.npz"

CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("default", {}),
    ("lr and betas", {"lr": 0.05, "betas": (0.8, 0.99)}),
    ("eps", {"lr": 0.01, "eps": 1e-2}),
    ("maximize", {"lr": 0.02, "maximize": True}),
]
GOLDEN_CASES = [(desc, kwargs, dtype) for desc, kwargs in CONFIGS for dtype in DTYPES]

Trajectory = list[list[np.ndarray]]


def initial_values(dtype: Any) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]


def gradient(k: int, j: int, p: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows, values) of parameter ``j``'s gradient at step ``k``, or None when missing."""
    if (k, j) == MISSING:
        return None
    rng = np.random.default_rng([k, j])
    nnz = 0 if (k, j) == EMPTY else 2 * p.shape[0] // 3
    rows = rng.integers(0, p.shape[0], size=nnz)  # unsorted, with repeats
    values = 0.5 * p[rows] + rng.standard_normal((nnz, *p.shape[1:]))
    return rows, values.astype(p.dtype)


def run_npoptim(kwargs: dict[str, Any], dtype: Any, steps: int = STEPS) -> Trajectory:
    params = [Parameter(v) for v in initial_values(dtype)]
    opt = SparseAdam(params, **kwargs)
    trajectory = []
    for k in range(steps):
        for j, p in enumerate(params):
            g = gradient(k, j, np.array(p))
            p.grad = None if g is None else SparseGrad(g[0], g[1], p.shape)
        opt.step()
        trajectory.append([np.array(p) for p in params])
    return trajectory


def run_torch(kwargs: dict[str, Any], dtype: Any, steps: int = STEPS) -> Trajectory:
    import torch

    params = [torch.nn.Parameter(torch.from_numpy(v)) for v in initial_values(dtype)]
    opt = torch.optim.SparseAdam(params, **kwargs)
    trajectory = []
    for k in range(steps):
        for j, p in enumerate(params):
            g = gradient(k, j, p.detach().numpy().copy())
            p.grad = None
            if g is not None:
                index = torch.from_numpy(g[0])[None]
                p.grad = torch.sparse_coo_tensor(
                    index, torch.from_numpy(g[1]), tuple(p.shape), check_invariants=True
                )
        opt.step()
        trajectory.append([p.detach().numpy().copy() for p in params])
    return trajectory


def run_reference(kwargs: dict[str, Any], steps: int = STEPS) -> Trajectory:
    """Lazy Adam from its formula, row by row in float64: a touched row r at step t gets
    m_r = b1 m_r + (1 - b1) g_r, v_r = b2 v_r + (1 - b2) g_r^2 and
    p_r -= lr sqrt(1 - b2^t) / (1 - b1^t) m_r / (sqrt(v_r) + eps); other rows keep all."""
    lr = kwargs.get("lr", 1e-3)
    b1, b2 = kwargs.get("betas", (0.9, 0.999))
    eps = kwargs.get("eps", 1e-8)
    sign = -1.0 if kwargs.get("maximize", False) else 1.0
    values = initial_values(np.float64)
    moments = [(np.zeros_like(v), np.zeros_like(v)) for v in values]
    counts = [0 for _ in values]
    trajectory = []
    for k in range(steps):
        for j, p in enumerate(values):
            g = gradient(k, j, p)
            if g is None:
                continue
            counts[j] += 1
            t = counts[j]
            dense: dict[int, np.ndarray] = {}
            for row, value in zip(*g, strict=True):
                dense[int(row)] = dense.get(int(row), 0.0) + sign * value
            m, v = moments[j]
            for r, g_r in dense.items():
                m[r] = b1 * m[r] + (1 - b1) * g_r
                v[r] = b2 * v[r] + (1 - b2) * g_r**2
                p[r] -= lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m[r] / (np.sqrt(v[r]) + eps)
        trajectory.append([v.copy() for v in values])
    return trajectory


def max_relative_error(actual: Trajectory, expected: Trajectory) -> float:
    worst = 0.0
    for step_a, step_e in zip(actual, expected, strict=True):
        for a, e in zip(step_a, step_e, strict=True):
            worst = max(worst, float(np.max(np.abs(a - e)) / np.max(np.abs(e))))
    return worst


def golden_key(desc: str, dtype_name: str, j: int) -> str:
    return f"{desc}|{dtype_name}|{j}"


CASE_IDS = [f"{desc}-{dtype}" for desc, _, dtype in GOLDEN_CASES]


# ----------------------------------------------------------------------------- SparseAdam
@pytest.mark.parametrize(("desc", "kwargs", "dtype_name"), GOLDEN_CASES, ids=CASE_IDS)
def test_matches_torch(desc: str, kwargs: dict[str, Any], dtype_name: str) -> None:
    pytest.importorskip("torch")
    actual = run_npoptim(kwargs, DTYPES[dtype_name])
    expected = run_torch(kwargs, DTYPES[dtype_name])
    assert actual[-1][0].dtype == DTYPES[dtype_name]
    assert max_relative_error(actual, expected) <= TOLERANCE[dtype_name]


@pytest.mark.parametrize(("desc", "kwargs", "dtype_name"), GOLDEN_CASES, ids=CASE_IDS)
def test_matches_torch_golden(desc: str, kwargs: dict[str, Any], dtype_name: str) -> None:
    if not GOLDEN.exists():
        pytest.fail("no golden file for SparseAdam: run tools/make_golden_lbfgs_sparse.py")
    actual = run_npoptim(kwargs, DTYPES[dtype_name])
    with np.load(GOLDEN, allow_pickle=False) as data:
        stacks = [data[golden_key(desc, dtype_name, j)] for j in range(len(SHAPES))]
    expected = [[stack[k] for stack in stacks] for k in range(STEPS)]
    assert max_relative_error(actual, expected) <= TOLERANCE[dtype_name]


@pytest.mark.parametrize(("desc", "kwargs"), CONFIGS, ids=[desc for desc, _ in CONFIGS])
def test_matches_lazy_adam_reference(desc: str, kwargs: dict[str, Any]) -> None:
    actual = run_npoptim(kwargs, np.float64)
    assert max_relative_error(actual, run_reference(kwargs)) <= 1e-12


def test_equals_dense_adam_when_every_row_is_touched() -> None:
    """With every row in every gradient (split over duplicate entries) and an eps too small
    to matter, lazy Adam is Adam."""
    rng = np.random.default_rng(3)
    init = rng.standard_normal((6, 4))
    sparse_p, dense_p = Parameter(init.copy()), Parameter(init.copy())
    sparse_opt = SparseAdam([sparse_p], lr=0.1, eps=1e-30)
    dense_opt = Adam([dense_p], lr=0.1, eps=1e-30)
    for _ in range(10):
        g = np.array(sparse_p) + rng.standard_normal((6, 4))
        first, second = rng.permutation(6), rng.permutation(6)
        rows = np.concatenate([first, second])
        parts = np.concatenate([0.25 * g[first], 0.75 * g[second]])
        sparse_p.grad = SparseGrad(rows, parts, (6, 4))
        dense_p.grad = g
        sparse_opt.step()
        dense_opt.step()
        np.testing.assert_allclose(sparse_p, dense_p, rtol=1e-13, atol=1e-15)


def test_untouched_rows_keep_values_and_moments() -> None:
    p = Parameter(np.arange(12.0).reshape(6, 2))
    opt = SparseAdam([p], lr=0.1)
    p.grad = SparseGrad(np.array([1, 4]), np.ones((2, 2)), (6, 2))
    opt.step()
    after_first = np.array(p)
    p.grad = SparseGrad(np.array([4]), np.ones((1, 2)), (6, 2))
    opt.step()
    state = opt.state[p]
    untouched = [0, 2, 3, 5]
    np.testing.assert_array_equal(p[untouched], np.arange(12.0).reshape(6, 2)[untouched])
    np.testing.assert_array_equal(p[1], after_first[1])  # row 1: no momentum drift
    assert not state["exp_avg"][untouched].any() and not state["exp_avg_sq"][untouched].any()
    np.testing.assert_allclose(state["exp_avg"][1], 0.1)  # decayed only when touched
    np.testing.assert_allclose(state["exp_avg"][4], 0.9 * 0.1 + 0.1)


def test_empty_gradient_counts_a_step_and_changes_nothing_else() -> None:
    p = Parameter(np.ones((3, 2)))
    opt = SparseAdam([p])
    p.grad = SparseGrad(np.array([2]), np.ones((1, 2)), (3, 2))
    opt.step()
    before = (np.array(p), opt.state[p]["exp_avg"].copy(), opt.state[p]["exp_avg_sq"].copy())
    p.grad = SparseGrad(np.zeros(0, dtype=np.int64), np.zeros((0, 2)), (3, 2))
    opt.step()
    assert opt.state[p]["step"] == 2.0
    for a, b in zip(before, (p, opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_warm_step_allocates_nothing_the_size_of_the_table() -> None:
    table = Parameter(np.zeros((200_000, 16), dtype=np.float32))
    opt = SparseAdam([table])
    rng = np.random.default_rng(1)

    def step() -> None:
        rows = rng.integers(0, table.shape[0], size=512)
        table.grad = SparseGrad(rows, np.ones((512, 16), np.float32), table.shape)
        opt.step()

    step()
    tracemalloc.start()
    try:
        step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < table.nbytes // 8, peak


def test_refuses_dense_gradients_before_changing_anything() -> None:
    a, b = Parameter(np.zeros((3, 2))), Parameter(np.zeros(2))
    opt = SparseAdam([a, b])
    a.grad = SparseGrad(np.array([0]), np.ones((1, 2)), (3, 2))
    b.grad = np.ones(2)
    message = "^SparseAdam does not support dense gradients, please consider Adam instead$"
    with pytest.raises(RuntimeError, match=message):
        opt.step()
    assert len(opt.state) == 0
    np.testing.assert_array_equal(a, np.zeros((3, 2)))


def test_refuses_complex_parameters_with_torchs_message() -> None:
    params = [Parameter(np.zeros(2)), Parameter(np.zeros(2, dtype=np.complex128))]
    message = (
        r"^Complex params at indices \[\[0, 1\]\]: SparseAdam does not support complex "
        r"parameters$"
    )
    with pytest.raises(ValueError, match=message):
        SparseAdam(params)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, "Invalid learning rate: 0.0"),
        ({"eps": 0.0}, "Invalid epsilon value: 0.0"),
        ({"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0: 1.0"),
        ({"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1: -0.1"),
    ],
)
def test_invalid_hyperparameters_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        SparseAdam([Parameter(np.zeros(2))], **kwargs)


def test_repr_and_state_dict_keys_match_torch() -> None:
    torch = pytest.importorskip("torch")
    kwargs = {"lr": 0.01, "betas": (0.8, 0.99), "maximize": True}
    p, tp = Parameter(np.zeros((3, 2))), torch.nn.Parameter(torch.zeros(3, 2, dtype=torch.float64))
    ours, theirs = SparseAdam([p], **kwargs), torch.optim.SparseAdam([tp], **kwargs)
    assert repr(ours) == repr(theirs)
    p.grad = SparseGrad(np.array([1]), np.ones((1, 2)), (3, 2))
    tp.grad = torch.sparse_coo_tensor(
        torch.tensor([[1]]), torch.ones(1, 2, dtype=torch.float64), (3, 2), check_invariants=True
    )
    ours.step()
    theirs.step()
    sd, tsd = ours.state_dict(), theirs.state_dict()
    assert sd["state"][0].keys() == tsd["state"][0].keys()
    assert sd["param_groups"][0].keys() == tsd["param_groups"][0].keys()
    assert sd["state"][0]["step"] == float(tsd["state"][0]["step"]) == 1.0


def test_functional_kernel_is_exported() -> None:
    p = Parameter(np.zeros((2, 2)))
    m, v = np.zeros((2, 2)), np.zeros((2, 2))
    grad = SparseGrad(np.array([1]), np.array([[2.0, -2.0]]), (2, 2))
    npoptim.functional.sparse_adam(
        [p], [grad], [m], [v], [1.0], eps=1e-8, beta1=0.9, beta2=0.999, lr=0.5, maximize=False
    )
    # t = 1: m = 0.1 g, v = 0.001 g^2, step lr sqrt(0.001) / 0.1 · m / sqrt(v) = lr sign(g)
    np.testing.assert_allclose(p, [[0.0, 0.0], [-0.5, 0.5]], rtol=1e-6)


# ----------------------------------------------------------------------------- SparseGrad
def test_coalesce_sorts_rows_and_sums_duplicates() -> None:
    rows = np.array([3, 0, 3, 1, 0, 3])
    values = np.arange(12.0).reshape(6, 2)
    c = SparseGrad(rows, values, (5, 2)).coalesce()
    np.testing.assert_array_equal(c.indices, [0, 1, 3])
    expected = np.array([values[1] + values[4], values[3], values[0] + values[2] + values[5]])
    np.testing.assert_array_equal(c.values, expected)
    assert c.is_coalesced()


def test_to_dense_adds_duplicate_rows() -> None:
    g = SparseGrad(np.array([2, 2, 0]), np.array([1.0, 2.0, 5.0]), (4,))
    np.testing.assert_array_equal(g.to_dense(), [5.0, 0.0, 3.0, 0.0])


def test_empty_gradient_is_valid() -> None:
    g = SparseGrad(np.zeros(0, dtype=np.int64), np.zeros((0, 3), dtype=np.float32), (7, 3))
    assert g.nnz == 0 and g.coalesce().nnz == 0
    np.testing.assert_array_equal(g.to_dense(), np.zeros((7, 3), dtype=np.float32))


@pytest.mark.parametrize(
    ("indices", "values", "shape", "error", "message"),
    [
        ([0, 1], np.zeros((2, 4)), (3, 3), ValueError, r"values must have shape"),
        ([0, 1], np.zeros(2), (3, 3), ValueError, r"values must have shape"),
        ([0, 3], np.zeros((2, 3)), (3, 3), IndexError, r"index out of range"),
        ([-1, 0], np.zeros((2, 3)), (3, 3), IndexError, r"index out of range"),
        ([0.0, 1.0], np.zeros((2, 3)), (3, 3), ValueError, r"1-D integer array"),
        ([[0, 1]], np.zeros((2, 3)), (3, 3), ValueError, r"1-D integer array"),
        ([0], np.zeros((1, 3), dtype=np.int64), (3, 3), TypeError, r"floating or complex"),
    ],
)
def test_invalid_sparse_grads_are_refused(
    indices: Any, values: np.ndarray, shape: tuple[int, ...], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        SparseGrad(np.array(indices), values, shape)


def test_sparse_grad_must_match_the_parameter() -> None:
    p = Parameter(np.zeros((3, 2)))
    with pytest.raises(RuntimeError, match="different size"):
        p.grad = SparseGrad(np.array([0]), np.zeros((1, 3)), (3, 3))
    with pytest.raises(TypeError, match="different type"):
        p.grad = SparseGrad(np.array([0]), np.zeros((1, 2), np.float32), (3, 2))


# --------------------------------------------------------- which optimizers take SparseGrad
ACCEPTING = {"SGD", "Adagrad", "SparseAdam", "LBFGS"}  # as in torch 2.13


def _in_torch_optim(name: str) -> bool:
    """Whether torch.optim has ``name`` (the optimizers beyond it are checked on their own);
    True without torch, where the test skips anyway."""
    try:
        import torch
    except ImportError:
        return True
    return hasattr(torch.optim, name)


def _refusing_optimizers() -> list[str]:
    return sorted(
        name
        for name in npoptim.__all__
        if isinstance(getattr(npoptim, name), type)
        and issubclass(getattr(npoptim, name), npoptim.Optimizer)
        and name not in ACCEPTING | {"Optimizer"}
        and _in_torch_optim(name)
    )


@pytest.mark.parametrize("name", _refusing_optimizers())
def test_other_optimizers_refuse_sparse_grads_with_torchs_message(name: str) -> None:
    torch = pytest.importorskip("torch")
    tp = torch.nn.Parameter(torch.zeros(4, 3))
    tp.grad = torch.sparse_coo_tensor(
        torch.tensor([[1]]), torch.ones(1, 3), (4, 3), check_invariants=True
    )
    with pytest.raises(Exception) as expected:
        getattr(torch.optim, name)([tp]).step()
    p = Parameter(np.zeros((4, 3), dtype=np.float32))
    p.grad = SparseGrad(np.array([1]), np.ones((1, 3), np.float32), (4, 3))
    with pytest.raises(type(expected.value)) as actual:
        getattr(npoptim, name)([p]).step()
    assert str(actual.value) == str(expected.value)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("SGD", {"lr": 0.1}),
        ("SGD", {"lr": 0.1, "momentum": 0.9}),
        ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "maximize": True}),
        ("Adagrad", {"lr": 0.1}),
        ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "maximize": True}),
    ],
)
def test_sgd_and_adagrad_accept_sparse_grads_like_torch(name: str, kwargs: dict[str, Any]) -> None:
    pytest.importorskip("torch")
    if not hasattr(npoptim, name):
        pytest.fail(f"npoptim has no {name}")
    import torch

    tp = torch.nn.Parameter(torch.from_numpy(initial_values(np.float64)[0]))
    p = Parameter(initial_values(np.float64)[0])
    opt, topt = getattr(npoptim, name)([p], **kwargs), getattr(torch.optim, name)([tp], **kwargs)
    rng = np.random.default_rng(5)
    for _ in range(6):
        rows = rng.integers(0, p.shape[0], size=20)  # unsorted, with repeats
        values = 0.5 * np.array(p)[rows] + rng.standard_normal((20, *p.shape[1:]))
        p.grad = SparseGrad(rows, values, p.shape)
        tp.grad = torch.sparse_coo_tensor(
            torch.from_numpy(rows)[None],
            torch.from_numpy(values),
            tuple(tp.shape),
            check_invariants=True,
        )
        opt.step()
        topt.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-14)
