"""LBFGS: against torch 2.13 (live and golden), the strong Wolfe conditions, the cubic
interpolation formula, and itself resumed from a state_dict.

The problems are deterministic NumPy functions ``fun(values) -> (loss, grads)`` over a list of
parameter values, so npoptim and torch see exactly the same losses and gradients and differ only
in the optimizer's own arithmetic.

Why 1e-10 and not bitwise: torch adds ``alpha * v`` with a fused multiply-add and takes dot
products with MKL, NumPy with two roundings and OpenBLAS, so single operations differ in the
last bit. Rosenbrock amplifies such differences exactly as it amplifies a one-ulp change of the
starting point in torch itself; each case below runs for as many steps as the problem stays
well-conditioned enough that last-bit differences stay far below 1e-10 (measured margins are
50x or more). Within that horizon, the number of closure calls and iterations must be equal.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import npoptim
from harness import GOLDEN_DIR
from npoptim import LBFGS, Parameter, SparseGrad
from npoptim.lbfgs import _cubic_interpolate, _strong_wolfe
from npoptim.serialization import load, save

Values = list[np.ndarray]
Fun = Callable[[Values], tuple[float, Values]]
GOLDEN = GOLDEN_DIR / "LBFGS.npz"
RTOL = 1e-10


# ------------------------------------------------------------------------------- problems
def rosenbrock(values: Values) -> tuple[float, Values]:
    """The chained Rosenbrock function sum 100 (x[i+1] - x[i]^2)^2 + (1 - x[i])^2."""
    (x,) = values
    a, b = x[:-1], x[1:]
    loss = np.sum(100.0 * (b - a**2) ** 2 + (1.0 - a) ** 2)
    grad = np.zeros_like(x)
    grad[:-1] += -400.0 * a * (b - a**2) - 2.0 * (1.0 - a)
    grad[1:] += 200.0 * (b - a**2)
    return float(loss), [grad]


def _least_squares_data() -> tuple[np.ndarray, np.ndarray]:
    """A 30 x 10 matrix with singular values 1 ... 100 (Hessian condition number 1e4)."""
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((30, 30)))
    v, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    return u[:, :10] @ np.diag(np.logspace(0, 2, 10)) @ v.T, rng.standard_normal(30)


LSQ_A, LSQ_B = _least_squares_data()


def least_squares(values: Values) -> tuple[float, Values]:
    """0.5 |A x - b|^2 with an ill-conditioned A."""
    (x,) = values
    r = LSQ_A @ x - LSQ_B
    return float(0.5 * r @ r), [LSQ_A.T @ r]


def _logistic_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    features = rng.standard_normal((60, 6))
    labels = np.sign(features @ rng.standard_normal(6) + 0.5 * rng.standard_normal(60))
    return features, labels


LOGREG_X, LOGREG_Y = _logistic_data()


def logistic_regression(values: Values) -> tuple[float, Values]:
    """Mean logistic loss of a linear model with weights ``w`` (2 x 3, flattened) and a 0-d
    bias ``c``, plus 0.005 |w|^2: two parameters of different shapes."""
    w, c = values
    z = LOGREG_Y * (LOGREG_X @ w.reshape(-1) + c)
    loss = np.mean(np.logaddexp(0.0, -z)) + 0.005 * np.sum(w * w)
    dz = -LOGREG_Y / (1.0 + np.exp(z)) / LOGREG_Y.shape[0]  # d loss / d (x·w + c)
    return float(loss), [(LOGREG_X.T @ dz).reshape(w.shape) + 0.01 * w, np.asarray(dz.sum())]


PROBLEMS: dict[str, tuple[Fun, Values]] = {
    "rosenbrock2": (rosenbrock, [np.array([-1.5, 2.0])]),
    "rosenbrock10": (rosenbrock, [np.linspace(-1.2, 1.0, 10)]),
    "least_squares": (least_squares, [np.zeros(10)]),
    "logistic": (logistic_regression, [np.zeros((2, 3)), np.asarray(0.0)]),
}

CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "strong_wolfe": {"line_search_fn": "strong_wolfe"},
    "history3_iter7": {"history_size": 3, "max_iter": 7},
    "history3_iter7_wolfe": {"history_size": 3, "max_iter": 7, "line_search_fn": "strong_wolfe"},
    "history5_iter5_lr0.5": {"history_size": 5, "max_iter": 5, "lr": 0.5},
    "history5_iter5_wolfe": {"history_size": 5, "max_iter": 5, "line_search_fn": "strong_wolfe"},
    "history1_iter10_wolfe": {"history_size": 1, "max_iter": 10, "line_search_fn": "strong_wolfe"},
    "history2_iter10_lr0.3": {"history_size": 2, "max_iter": 10, "lr": 0.3},
    # stopping rules: tiny steps, tiny loss changes, a small gradient, few evaluations
    "lr0.001_change1e-3": {"lr": 1e-3, "tolerance_change": 1e-3},
    "change1e-2_wolfe": {"tolerance_change": 1e-2, "line_search_fn": "strong_wolfe"},
    "grad1e-4": {"tolerance_grad": 1e-4},
    "grad1e-4_wolfe": {"tolerance_grad": 1e-4, "line_search_fn": "strong_wolfe"},
    "iter6_eval3_wolfe": {"max_iter": 6, "max_eval": 3, "line_search_fn": "strong_wolfe"},
}

# (problem, config, number of step() calls compared)
CASES: list[tuple[str, str, int]] = [
    ("rosenbrock2", "strong_wolfe", 5),
    ("rosenbrock2", "history3_iter7", 3),
    ("rosenbrock2", "history5_iter5_lr0.5", 5),
    ("rosenbrock2", "history5_iter5_wolfe", 4),
    ("rosenbrock2", "history2_iter10_lr0.3", 3),
    ("rosenbrock10", "default", 1),
    ("rosenbrock10", "strong_wolfe", 1),
    ("rosenbrock10", "history3_iter7", 5),
    ("rosenbrock10", "history3_iter7_wolfe", 5),
    ("rosenbrock10", "history5_iter5_lr0.5", 5),
    ("rosenbrock10", "history5_iter5_wolfe", 5),
    ("rosenbrock10", "history1_iter10_wolfe", 3),
    ("rosenbrock10", "history2_iter10_lr0.3", 5),
    *[("least_squares", c, 5) for c in ("default", "strong_wolfe", "history5_iter5_lr0.5")],
    ("least_squares", "history3_iter7", 4),
    ("least_squares", "history3_iter7_wolfe", 3),
    ("least_squares", "history5_iter5_wolfe", 5),
    ("least_squares", "history1_iter10_wolfe", 2),
    ("least_squares", "history2_iter10_lr0.3", 3),
    ("rosenbrock2", "lr0.001_change1e-3", 3),
    ("rosenbrock2", "change1e-2_wolfe", 3),
    ("rosenbrock2", "iter6_eval3_wolfe", 3),
    *[("least_squares", c, 3) for c in ("lr0.001_change1e-3", "change1e-2_wolfe")],
    *[("least_squares", c, 3) for c in ("grad1e-4", "grad1e-4_wolfe", "iter6_eval3_wolfe")],
    *[("logistic", c, 5) for c in CONFIGS],
]


class Run:
    """The parameters after every step, and the cumulative counters after the last."""

    def __init__(self, trajectory: list[Values], func_evals: int, n_iter: int) -> None:
        self.trajectory, self.func_evals, self.n_iter = trajectory, func_evals, n_iter


def run_npoptim(
    fun: Fun, init: Values, kwargs: dict[str, Any], steps: int, dtype: Any = np.float64
) -> Run:
    params = [Parameter(np.array(v, dtype=dtype)) for v in init]
    opt = LBFGS(params, **kwargs)

    def closure() -> float:
        loss, grads = fun([np.array(p) for p in params])
        for p, g in zip(params, grads, strict=True):
            p.grad = np.asarray(g, dtype=dtype)
        return loss

    trajectory = []
    for _ in range(steps):
        opt.step(closure)
        trajectory.append([np.array(p) for p in params])
    state = opt.state[params[0]]
    return Run(trajectory, state["func_evals"], state["n_iter"])


def run_torch(
    fun: Fun, init: Values, kwargs: dict[str, Any], steps: int, dtype: Any = np.float64
) -> Run:
    import torch

    params = [torch.nn.Parameter(torch.from_numpy(np.array(v, dtype=dtype))) for v in init]
    opt = torch.optim.LBFGS(params, **kwargs)

    def closure() -> float:
        loss, grads = fun([p.detach().numpy().copy() for p in params])
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.from_numpy(np.array(g, dtype=dtype))
        return loss

    trajectory = []
    for _ in range(steps):
        opt.step(closure)
        trajectory.append([p.detach().numpy().copy() for p in params])
    state = opt.state[params[0]]
    return Run(trajectory, int(state["func_evals"]), int(state["n_iter"]))


def relative_error(actual: list[Values], expected: list[Values]) -> float:
    """max |a - e| / max |e| over the steps and parameters."""
    worst = 0.0
    for step_a, step_e in zip(actual, expected, strict=True):
        diff = max(float(np.max(np.abs(a - e))) for a, e in zip(step_a, step_e, strict=True))
        scale = max(float(np.max(np.abs(e))) for e in step_e)
        worst = max(worst, diff / scale)
    return worst


def case_id(problem: str, config: str, steps: int) -> str:
    return f"{problem}-{config}-{steps}"


# ------------------------------------------------------------------ against torch (float64)
@pytest.mark.parametrize(("problem", "config", "steps"), CASES, ids=[case_id(*c) for c in CASES])
def test_float64_matches_torch(problem: str, config: str, steps: int) -> None:
    pytest.importorskip("torch")
    fun, init = PROBLEMS[problem]
    ours = run_npoptim(fun, init, CONFIGS[config], steps)
    theirs = run_torch(fun, init, CONFIGS[config], steps)
    assert relative_error(ours.trajectory, theirs.trajectory) <= RTOL
    assert (ours.func_evals, ours.n_iter) == (theirs.func_evals, theirs.n_iter)


@pytest.mark.parametrize(("problem", "config", "steps"), CASES, ids=[case_id(*c) for c in CASES])
def test_float64_matches_torch_golden(problem: str, config: str, steps: int) -> None:
    if not GOLDEN.exists():
        pytest.fail("no golden file for LBFGS: run tools/make_golden_lbfgs_sparse.py")
    fun, init = PROBLEMS[problem]
    ours = run_npoptim(fun, init, CONFIGS[config], steps)
    key = case_id(problem, config, steps)
    with np.load(GOLDEN, allow_pickle=False) as data:
        expected = [[data[f"{key}|{j}"][k] for j in range(len(init))] for k in range(steps)]
        counters = tuple(int(n) for n in data[f"{key}|counters"])
    assert relative_error(ours.trajectory, expected) <= RTOL
    assert (ours.func_evals, ours.n_iter) == counters


def test_line_search_is_exercised_by_the_cases() -> None:
    """The strong-Wolfe cases call the closure more often than they iterate, so bracketing
    and zoom steps, not only first trial steps, are compared with torch."""
    fun, init = PROBLEMS["rosenbrock2"]
    run = run_npoptim(fun, init, CONFIGS["strong_wolfe"], 5)
    assert run.func_evals > run.n_iter + 5


# ----------------------------------------------------------- float32, complex, odd grads
FLOAT32_CONFIGS = [
    {"max_iter": 5},
    {"max_iter": 5, "line_search_fn": "strong_wolfe"},
    {"history_size": 3, "max_iter": 6, "line_search_fn": "strong_wolfe"},
]


@pytest.mark.parametrize("problem", ["least_squares", "logistic"])
@pytest.mark.parametrize("kwargs", FLOAT32_CONFIGS, ids=["iter5", "iter5_wolfe", "history3_wolfe"])
def test_float32_matches_torch(problem: str, kwargs: dict[str, Any]) -> None:
    """float32 runs, two steps of a few iterations (later, near convergence, float32 rounding
    decides when to stop, in torch as here)."""
    pytest.importorskip("torch")
    fun, init = PROBLEMS[problem]
    ours = run_npoptim(fun, init, kwargs, 2, np.float32)
    theirs = run_torch(fun, init, kwargs, 2, np.float32)
    assert ours.trajectory[-1][0].dtype == np.float32
    # Not 1e-6: L-BFGS's step lengths come from float32 reductions (dot products, sums)
    # whose summation order differs from torch's; on the ill-conditioned least-squares
    # problem those last-bit differences grow over the iterations to about 7e-6.
    assert relative_error(ours.trajectory, theirs.trajectory) <= 1e-5
    assert (ours.func_evals, ours.n_iter) == (theirs.func_evals, theirs.n_iter)


def complex_least_squares(values: Values) -> tuple[float, Values]:
    """0.5 |A z - b|^2 over a complex z; its gradient (torch's convention) is A^H (A z - b)."""
    (z,) = values
    rng = np.random.default_rng(2)
    a = rng.standard_normal((8, 4)) + 1j * rng.standard_normal((8, 4))
    b = rng.standard_normal(8) + 1j * rng.standard_normal(8)
    r = a @ z - b
    return float(0.5 * np.vdot(r, r).real), [a.conj().T @ r]


@pytest.mark.parametrize("config", ["default", "strong_wolfe"])
def test_complex_matches_torch(config: str) -> None:
    pytest.importorskip("torch")
    init = [np.zeros(4, dtype=np.complex128)]
    ours = run_npoptim(complex_least_squares, init, CONFIGS[config], 2, np.complex128)
    theirs = run_torch(complex_least_squares, init, CONFIGS[config], 2, np.complex128)
    assert relative_error(ours.trajectory, theirs.trajectory) <= RTOL
    assert (ours.func_evals, ours.n_iter) == (theirs.func_evals, theirs.n_iter)


def test_complex_value_counts_as_two_reals() -> None:
    """A complex parameter follows exactly the path of its (real, imag) pairs."""
    z = Parameter(np.zeros(4, dtype=np.complex128))
    x = Parameter(np.zeros(8))
    opt_z = LBFGS([z], line_search_fn="strong_wolfe")
    opt_x = LBFGS([x], line_search_fn="strong_wolfe")

    def closure_z() -> float:
        loss, (g,) = complex_least_squares([np.array(z)])
        z.grad = g
        return loss

    def closure_x() -> float:
        pairs = np.array(x).reshape(4, 2)
        loss, (g,) = complex_least_squares([pairs[:, 0] + 1j * pairs[:, 1]])
        x.grad = np.stack([g.real, g.imag], axis=1).reshape(-1)
        return loss

    for _ in range(2):
        opt_z.step(closure_z)
        opt_x.step(closure_x)
    np.testing.assert_array_equal(np.stack([z.real, z.imag], axis=1).reshape(-1), x)


def test_missing_and_sparse_grads_match_torch() -> None:
    """A parameter without grad counts as zero gradient, a SparseGrad as its dense form."""
    torch = pytest.importorskip("torch")
    fun, init = PROBLEMS["least_squares"]
    table0 = np.arange(12.0).reshape(4, 3) / 10

    def sparse_part(table: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        rows = np.array([2, 0, 2])  # unsorted, with a duplicate
        return float(np.sum(table[rows] ** 2)), rows, 2 * table[rows]

    x, unused, table = Parameter(init[0].copy()), Parameter(np.ones(3)), Parameter(table0.copy())
    opt = LBFGS([x, unused, table], line_search_fn="strong_wolfe")

    def closure() -> float:
        loss, (g,) = fun([np.array(x)])
        extra, rows, values = sparse_part(np.array(table))
        x.grad = g
        table.grad = SparseGrad(rows, values, table.shape)
        return loss + extra

    tx, tu, tt = (
        torch.nn.Parameter(torch.from_numpy(v.copy())) for v in (init[0], np.ones(3), table0)
    )
    topt = torch.optim.LBFGS([tx, tu, tt], line_search_fn="strong_wolfe")

    def tclosure() -> float:
        loss, (g,) = fun([tx.detach().numpy().copy()])
        extra, rows, values = sparse_part(tt.detach().numpy().copy())
        tx.grad = torch.from_numpy(g)
        index = torch.from_numpy(rows)[None]
        tt.grad = torch.sparse_coo_tensor(
            index, torch.from_numpy(values), tuple(tt.shape), check_invariants=True
        )
        return loss + extra

    for _ in range(2):
        opt.step(closure)
        topt.step(tclosure)
    ours = [[np.array(p) for p in (x, unused, table)]]
    theirs = [[p.detach().numpy() for p in (tx, tu, tt)]]
    assert relative_error(ours, theirs) <= RTOL
    assert opt.state[x]["func_evals"] == topt.state[tx]["func_evals"]
    np.testing.assert_array_equal(unused, np.ones(3))


# ------------------------------------------------------------- the line search, by itself
def wiggly(values: Values) -> tuple[float, Values]:
    """sum x^2 + 0.8 sin(6 x): many local minima along a line."""
    (x,) = values
    return float(np.sum(x**2 + 0.8 * np.sin(6 * x))), [2 * x + 4.8 * np.cos(6 * x)]


def double_well(values: Values) -> tuple[float, Values]:
    """sum (x^2 - 1)^2."""
    (x,) = values
    return float(np.sum((x**2 - 1) ** 2)), [4 * x * (x**2 - 1)]


def slope_with_bump(values: Values) -> tuple[float, Values]:
    """-x plus a Gaussian bump 13.7 exp(-(x - 14.5)^2 / (2 3.7^2)) ahead."""
    (x,) = values
    bump = 13.7 * np.exp(-((x - 14.5) ** 2) / (2 * 3.7**2))
    return float(np.sum(bump - x)), [-1 - bump * (x - 14.5) / 3.7**2]


LINE_FUNCTIONS: dict[str, Fun] = {
    "slope_with_bump": slope_with_bump,
    "wiggly": wiggly,
    "double_well": double_well,
    "rosenbrock": rosenbrock,
}

# (function, start, first trial step, max_ls, tolerance_change): searches along -gradient
# that between them take every branch of Algorithms 3.5 and 3.6 in torch's form.
LINE_SEARCHES: list[tuple[str, list[float], float, int, float]] = [
    ("wiggly", [2.3, -1.7, 0.4], 1e-4, 25, 1e-9),  # extrapolates (step too short), then zooms
    ("wiggly", [2.3, -1.7, 0.4], 1e-4, 2, 1e-9),  # out of evaluations while extrapolating
    ("wiggly", [-1.54, -0.14, -1.78], 9.4276, 25, 1e-9),  # accepted with c1 = 1e-4, not 1e-3
    ("double_well", [0.1, 2.0], 1e-4, 25, 1e-9),  # cubic without minimizer: bisection
    ("double_well", [0.1, 2.0], 1.0, 0, 1e-9),  # max_ls = 0: the first trial only
    ("double_well", [0.1, 2.0], 1.0, 2, 1e-9),  # out of evaluations while zooming
    ("double_well", [0.1, 2.0], 100.0, 25, 1e-9),  # a long zoom
    ("double_well", [-0.95, 1.0, -0.88], 0.267, 25, 0.1),  # bracketed by a rising slope
    ("rosenbrock", [-0.81, 0.75], 0.284, 25, 0.1),  # bracket too small to refine
    ("wiggly", [-0.26, -1.28, -1.85], 6.965, 25, 0.1),  # trial at the bracket's end moved in
    ("rosenbrock", [0.42, 1.45], 4.59, 25, 1e-9),  # the old low end becomes the high end
    ("rosenbrock", [-1.5, 2.0], 100.0, 25, 1e-9),  # accepted after many evaluations
    # The second trial is above the first but passes: torch compares with the previous
    # trial's loss only from the third trial on (where Algorithm 3.5 does from the second).
    ("slope_with_bump", [0.0], 1.3, 25, 1e-9),
]


def line_search_id(function: str, start: list[float], t0: float, max_ls: int, tol: float) -> str:
    return f"{function}-{start}-{t0}-{max_ls}-{tol}"


def line_search_npoptim(
    function: str, start: list[float], t0: float, max_ls: int, tol: float
) -> tuple[float, float, int]:
    """(accepted step, loss there, evaluations) of npoptim's search along -gradient."""
    fun, x0 = LINE_FUNCTIONS[function], np.array(start)
    f0, (g0,) = fun([x0])
    d = -g0

    def obj_func(x: Values, t: float, d: np.ndarray) -> tuple[float, np.ndarray]:
        loss, (g,) = fun([x[0] + t * d])
        return loss, g

    f, _, t, evals = _strong_wolfe(
        obj_func, [x0], t0, d, f0, g0, g0 @ d, tolerance_change=tol, max_ls=max_ls
    )
    return float(t), float(f), evals


def line_search_torch(
    function: str, start: list[float], t0: float, max_ls: int, tol: float
) -> tuple[float, float, int]:
    import torch
    from torch.optim.lbfgs import _strong_wolfe as torch_strong_wolfe

    fun, x0 = LINE_FUNCTIONS[function], np.array(start)
    f0, (g0,) = fun([x0])
    g = torch.from_numpy(g0)
    d = -g

    def obj_func(x: Any, t: float, d: Any) -> tuple[float, Any]:
        loss, (grad,) = fun([torch.from_numpy(x0.copy()).add_(d, alpha=t).numpy()])
        return loss, torch.from_numpy(grad)

    f, _, t, evals = torch_strong_wolfe(
        obj_func, [x0], t0, d, f0, g, g.dot(d), tolerance_change=tol, max_ls=max_ls
    )
    return float(t), float(f), int(evals)


@pytest.mark.parametrize("search", LINE_SEARCHES, ids=[line_search_id(*s) for s in LINE_SEARCHES])
def test_line_search_matches_torch(search: tuple[str, list[float], float, int, float]) -> None:
    pytest.importorskip("torch")
    t, f, evals = line_search_npoptim(*search)
    t_ref, f_ref, evals_ref = line_search_torch(*search)
    assert evals == evals_ref
    assert t == pytest.approx(t_ref, rel=RTOL, abs=0)
    assert f == pytest.approx(f_ref, rel=RTOL, abs=0)


@pytest.mark.parametrize("search", LINE_SEARCHES, ids=[line_search_id(*s) for s in LINE_SEARCHES])
def test_line_search_matches_torch_golden(
    search: tuple[str, list[float], float, int, float],
) -> None:
    if not GOLDEN.exists():
        pytest.fail("no golden file for LBFGS: run tools/make_golden_lbfgs_sparse.py")
    t, f, evals = line_search_npoptim(*search)
    with np.load(GOLDEN, allow_pickle=False) as data:
        t_ref, f_ref, evals_ref = data[f"line_search|{line_search_id(*search)}"]
    assert evals == int(evals_ref)
    assert t == pytest.approx(t_ref, rel=RTOL, abs=0)
    assert f == pytest.approx(f_ref, rel=RTOL, abs=0)


def _cubic_minimizer(coef: np.ndarray) -> float:
    """The local minimizer of a x^3 + b x^2 + c x + d: the root of p' where p'' > 0."""
    a, b, c, _ = coef
    roots = np.roots([3 * a, 2 * b, c]).real
    return float(next(r for r in roots if 6 * a * r + 2 * b > 0))


@pytest.mark.parametrize(
    ("coef", "x1", "x2"),
    [
        (np.array([1.0, -2.0, -1.0, 3.0]), 0.0, 2.5),
        (np.array([-0.5, 1.0, 2.0, 0.0]), -2.0, 0.5),
        (np.array([2.0, 0.0, -3.0, 1.0]), 1.5, 0.2),  # points given in decreasing order
    ],
)
def test_cubic_interpolation_finds_the_cubic_minimizer(
    coef: np.ndarray, x1: float, x2: float
) -> None:
    p, dp = np.poly1d(coef), np.poly1d(coef).deriv()
    t = _cubic_interpolate(x1, p(x1), dp(x1), x2, p(x2), dp(x2))
    assert t == pytest.approx(_cubic_minimizer(coef), rel=1e-12)


def test_cubic_interpolation_clips_to_bounds_and_bisects_without_minimizer() -> None:
    p = np.poly1d([1.0, -2.0, -1.0, 3.0])  # local minimizer near 1.55
    dp = p.deriv()
    assert _cubic_interpolate(0.0, p(0), dp(0), 1.0, p(1), dp(1), bounds=(0.0, 1.2)) == 1.2
    # f = x^3 + x rises everywhere (slope 4 at -1 and 1): the midpoint of the bounds.
    assert _cubic_interpolate(-1.0, -2.0, 4.0, 1.0, 2.0, 4.0, bounds=(2.0, 5.0)) == 3.5


@pytest.mark.parametrize("problem", ["rosenbrock2", "rosenbrock10", "least_squares"])
def test_accepted_steps_satisfy_the_strong_wolfe_conditions(problem: str) -> None:
    """One L-BFGS iteration per step(): the move x_k -> x_{k+1} it makes along s = x_{k+1} - x_k
    must satisfy f(x_{k+1}) <= f(x_k) + c1 g_k·s and |g_{k+1}·s| <= c2 |g_k·s|, with
    c1 = 1e-4 and c2 = 0.9 (Nocedal & Wright, eq. 3.7), checked with f and g evaluated here."""
    c1, c2 = 1e-4, 0.9
    fun, init = PROBLEMS[problem]
    x = Parameter(init[0].copy())
    opt = LBFGS([x], max_iter=1, max_eval=25, line_search_fn="strong_wolfe")
    calls = 0

    def closure() -> float:
        nonlocal calls
        calls += 1
        loss, (g,) = fun([np.array(x)])
        x.grad = g
        return loss

    searched = 0  # steps whose search needed more than the first trial step
    for _ in range(12):
        x0 = np.array(x)
        f0, (g0,) = fun([x0])
        before = calls
        opt.step(closure)
        s = np.array(x) - x0
        f1, (g1,) = fun([np.array(x)])
        assert g0 @ s < 0
        assert f1 <= f0 + c1 * (g0 @ s)
        assert abs(g1 @ s) <= c2 * abs(g0 @ s)
        searched += calls - before > 2
    assert searched > 0


# -------------------------------------------------------------- state and its round trip
def test_state_has_torchs_keys_under_the_first_parameter() -> None:
    fun, init = PROBLEMS["logistic"]
    params = [Parameter(v.copy()) for v in init]
    opt = LBFGS(params, history_size=2, max_iter=4)

    def closure() -> float:
        loss, grads = fun([np.array(p) for p in params])
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        return loss

    opt.step(closure)
    state = opt.state_dict()["state"]
    assert list(state) == [0]
    assert set(state[0]) == {
        "func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag",
        "prev_flat_grad", "prev_loss", "al",
    }  # fmt: skip
    assert (state[0]["func_evals"], state[0]["n_iter"]) == (4, 4)
    assert len(state[0]["old_dirs"]) == len(state[0]["old_stps"]) == len(state[0]["ro"]) == 2
    assert state[0]["d"].shape == state[0]["prev_flat_grad"].shape == (7,)


@pytest.mark.parametrize("config", ["history3_iter7", "history3_iter7_wolfe"])
def test_resume_from_state_dict_equals_never_stopping(config: str) -> None:
    fun, init = PROBLEMS["rosenbrock10"]
    kwargs = CONFIGS[config]
    straight = run_npoptim(fun, init, kwargs, 6)

    x = Parameter(init[0].copy())
    opt = LBFGS([x], **kwargs)

    def closure_for(p: Parameter) -> Callable[[], float]:
        def closure() -> float:
            loss, (g,) = fun([np.array(p)])
            p.grad = g
            return loss

        return closure

    for _ in range(3):
        opt.step(closure_for(x))
    buffer = io.BytesIO()
    save({"x": np.array(x), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = load(buffer)
    del x, opt

    y = Parameter(checkpoint["x"])
    resumed = LBFGS([y], **kwargs)
    resumed.load_state_dict(checkpoint["optimizer"])
    for k in range(3, 6):
        resumed.step(closure_for(y))
        np.testing.assert_array_equal(y, straight.trajectory[k][0])
    state = resumed.state[y]
    assert (state["func_evals"], state["n_iter"]) == (straight.func_evals, straight.n_iter)


# ------------------------------------------------------------------- behaviour and errors
def test_step_returns_the_first_loss_and_updates_in_place() -> None:
    fun, init = PROBLEMS["least_squares"]
    x = Parameter(init[0].copy())
    alias = x.view(np.ndarray)
    opt = LBFGS([x])
    losses = []

    def closure() -> float:
        loss, (g,) = fun([np.array(x)])
        x.grad = g
        losses.append(loss)
        return loss

    assert opt.step(closure) == losses[0]
    assert len(losses) == 20
    np.testing.assert_array_equal(alias, x)
    assert fun([np.array(x)])[0] < losses[0]


def test_optimal_start_evaluates_once_and_does_not_move() -> None:
    x = Parameter(np.ones(5))
    opt = LBFGS([x], line_search_fn="strong_wolfe")
    calls = []

    def closure() -> float:
        loss, (g,) = rosenbrock([np.array(x)])
        x.grad = g
        calls.append(loss)
        return loss

    assert opt.step(closure) == 0.0
    assert len(calls) == 1
    np.testing.assert_array_equal(x, np.ones(5))
    assert opt.state[x] == {"func_evals": 1, "n_iter": 0}


def test_max_eval_defaults_to_five_quarters_of_max_iter() -> None:
    assert LBFGS([Parameter(np.zeros(2))], max_iter=9).defaults["max_eval"] == 11
    assert LBFGS([Parameter(np.zeros(2))], max_iter=9, max_eval=3).defaults["max_eval"] == 3


def test_negative_learning_rate_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^Invalid learning rate: -0.5$"):
        LBFGS([Parameter(np.zeros(2))], lr=-0.5)


def test_several_parameter_groups_are_refused() -> None:
    groups = [{"params": [Parameter(np.zeros(2))]}, {"params": [Parameter(np.zeros(2))]}]
    with pytest.raises(ValueError, match=r"^LBFGS doesn't support per-parameter options"):
        LBFGS(groups)


def test_unknown_line_search_is_refused_like_torch() -> None:
    x = Parameter(np.array([3.0]))
    opt = LBFGS([x], line_search_fn="backtracking")

    def closure() -> float:
        x.grad = 2 * np.array(x)
        return float(x[0] ** 2)

    with pytest.raises(RuntimeError, match=r"^only 'strong_wolfe' is supported$"):
        opt.step(closure)


def test_step_requires_a_closure() -> None:
    opt = LBFGS([Parameter(np.zeros(2))])
    with pytest.raises(TypeError):
        opt.step()  # type: ignore[call-arg]


def test_repr_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    kwargs = {"lr": 0.5, "max_iter": 7, "history_size": 3, "line_search_fn": "strong_wolfe"}
    ours = npoptim.LBFGS([Parameter(np.zeros(2))], **kwargs)
    theirs = torch.optim.LBFGS([torch.nn.Parameter(torch.zeros(2))], **kwargs)
    assert repr(ours) == repr(theirs)
