"""Side-by-side runs of npoptim's beyond-torch.optim optimizers and their oracles.

An *oracle* is the implementation the algorithm is checked against: the authors' package or
``pytorch_optimizer`` (see ``tests/beyond_cases.py`` for which, and the ``beyond`` extra in
pyproject.toml for the pinned versions). The problem is ``tests/harness.py``'s noisy quadratic
on shapes each case chooses: parameter ``j`` starts from a seeded normal draw and gets the
gradient ``CURVATURE[j % 3] * p + r_{k,j}`` at step ``k`` (noise drawn from a generator seeded
with ``(seed, k, j)``), so an error in one update feeds into every later gradient. At step
``missing[0]`` parameter ``missing[1]`` has no grad. The oracle runs in torch on the same
values in the same dtype; the parameters after every step are compared.

Golden files (``tests/golden/beyond/<case>.npz``, written by ``tools/make_golden_beyond.py``)
hold the oracle's trajectories, so the comparisons also run without the oracle installed.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import npoptim
from harness import CURVATURE, DTYPES, Trajectory, max_relative_error

GOLDEN_DIR = pathlib.Path(__file__).parent / "golden" / "beyond"
DTYPE_NAMES = ["float64", "float32"]
#: Allowed relative deviation from the oracle (float64 to rounding; float32 at 1e-6).
TOLERANCE = {"float64": 1e-10, "float32": 1e-6}

Shapes = list[tuple[int, ...]]
Config = tuple[str, dict[str, Any]]

__all__ = [
    "DTYPES",
    "DTYPE_NAMES",
    "TOLERANCE",
    "Case",
    "golden_path",
    "load_golden",
    "max_relative_error",
    "resumed_run",
    "run_npoptim",
    "run_oracle",
    "run_reference",
    "save_golden",
    "train",
]


@dataclass(frozen=True)
class Case:
    """One optimizer and its oracle.

    ``build_npoptim(params, kwargs)`` and ``build_oracle(params, kwargs)`` make the two
    optimizers from the same configuration; ``shapes(kwargs)`` gives the parameters' shapes;
    ``oracle_module`` is the package the oracle comes from (tests skip the live comparison
    without it); ``exact_oracle(dtype)`` is a context in which the oracle computes in the
    parameters' dtype throughout, for an oracle that deliberately does not (e.g. a float32
    QR); None where the oracle has no such cut.
    """

    name: str
    configs: list[Config]
    build_npoptim: Callable[[list[npoptim.Parameter], dict[str, Any]], npoptim.Optimizer]
    build_oracle: Callable[[list[Any], dict[str, Any]], Any]
    oracle_module: str
    shapes: Callable[[dict[str, Any]], Shapes] = lambda kwargs: [(3, 4), (5,), ()]
    missing: tuple[int, int] | None = (7, 1)
    steps: int = 21
    exact_oracle: Callable[[Any], contextlib.AbstractContextManager[None]] | None = None


# ------------------------------------------------------------------------ the problem
def initial_values(shapes: Shapes, dtype: Any, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.asarray(rng.standard_normal(shape), dtype=dtype) for shape in shapes]


def gradient(
    k: int, j: int, p: np.ndarray, missing: tuple[int, int] | None, seed: int = 0
) -> np.ndarray | None:
    """The gradient of parameter ``j`` at step ``k`` (0-based), or None where it is missing."""
    if (k, j) == missing:
        return None
    noise = np.random.default_rng([seed, k, j]).standard_normal(p.shape)
    return np.asarray(CURVATURE[j % len(CURVATURE)] * p + noise, dtype=p.dtype)


def _steps(case: Case, steps: int | None) -> int:
    return case.steps if steps is None else steps


def run_npoptim(
    case: Case,
    kwargs: dict[str, Any],
    dtype: Any,
    steps: int | None = None,
    missing: tuple[int, int] | str | None = "case",
    seed: int = 0,
) -> tuple[Trajectory, npoptim.Optimizer]:
    """npoptim's trajectory on the problem, and the optimizer after it."""
    gap = case.missing if missing == "case" else missing
    params = [npoptim.Parameter(v) for v in initial_values(case.shapes(kwargs), dtype, seed)]
    opt = case.build_npoptim(params, kwargs)
    return train(params, opt, range(_steps(case, steps)), gap, seed), opt


def train(
    params: list[npoptim.Parameter],
    opt: npoptim.Optimizer,
    ks: range,
    missing: tuple[int, int] | None,
    seed: int = 0,
) -> Trajectory:
    """Steps ``ks`` of the problem (gradients set on ``params``, then ``opt.step()``)."""
    trajectory: Trajectory = []
    for k in ks:
        for j, p in enumerate(params):
            p.grad = gradient(k, j, np.array(p), missing, seed)  # type: ignore[assignment]
        opt.step()
        trajectory.append([np.array(p) for p in params])
    return trajectory


def resumed_run(
    case: Case, kwargs: dict[str, Any], dtype: Any, path: pathlib.Path, stop: int = 10
) -> tuple[list[np.ndarray], npoptim.Optimizer]:
    """The problem run for ``stop`` steps, checkpointed with ``npoptim.save`` (parameters and
    state_dict), loaded with ``npoptim.load`` into a new optimizer, and run to the end."""
    params = [npoptim.Parameter(v) for v in initial_values(case.shapes(kwargs), dtype)]
    opt = case.build_npoptim(params, kwargs)
    train(params, opt, range(stop), case.missing)
    npoptim.save({"params": [np.array(p) for p in params], "optimizer": opt.state_dict()}, path)
    del params, opt
    checkpoint = npoptim.load(path)
    params = [npoptim.Parameter(v) for v in checkpoint["params"]]
    opt = case.build_npoptim(params, kwargs)
    opt.load_state_dict(checkpoint["optimizer"])
    train(params, opt, range(stop, case.steps), case.missing)
    return [np.array(p) for p in params], opt


def run_oracle(
    case: Case,
    kwargs: dict[str, Any],
    dtype: Any,
    steps: int | None = None,
    exact: bool = True,
    missing: tuple[int, int] | str | None = "case",
    seed: int = 0,
) -> Trajectory:
    """The oracle's trajectory on the problem (in torch, same dtype); with ``exact``, inside
    ``case.exact_oracle``."""
    gap = case.missing if missing == "case" else missing
    import torch

    values = initial_values(case.shapes(kwargs), dtype, seed)
    params = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    opt = case.build_oracle(params, kwargs)
    trajectory: Trajectory = []
    context = (
        case.exact_oracle(dtype)
        if exact and case.exact_oracle is not None
        else contextlib.nullcontext()
    )
    with context:
        for k in range(_steps(case, steps)):
            for j, p in enumerate(params):
                g = gradient(k, j, p.detach().numpy().copy(), gap, seed)
                p.grad = None if g is None else torch.from_numpy(g)
            opt.step()
            trajectory.append([p.detach().numpy().copy() for p in params])
    return trajectory


def run_reference(
    reference: Callable[..., np.ndarray],
    case: Case,
    kwargs: dict[str, Any],
    dtype: Any,
    missing: tuple[int, int] | str | None = "case",
    steps: int | None = None,
    seed: int = 0,
) -> Trajectory:
    """A reference (``tests/references/beyond``) in float64 arithmetic on the problem.

    The reference is ``ref(p, g, state, t, **kwargs) -> new p`` for one parameter, with
    ``t`` the number of steps this parameter has taken (1, 2, ...); results are rounded to
    ``dtype`` only for the comparison.
    """
    gap = case.missing if missing == "case" else missing
    values = [v.astype(np.float64) for v in initial_values(case.shapes(kwargs), dtype, seed)]
    states: list[dict[str, Any]] = [{} for _ in values]
    counts = [0 for _ in values]
    trajectory: Trajectory = []
    for k in range(_steps(case, steps)):
        for j, p in enumerate(values):
            g = gradient(k, j, p.astype(dtype), gap, seed)
            if g is None:
                continue
            counts[j] += 1
            values[j] = np.asarray(
                reference(p.copy(), g.astype(np.float64), states[j], counts[j], **kwargs)
            )
        trajectory.append([v.astype(dtype) for v in values])
    return trajectory


# ----------------------------------------------------------------- golden trajectories
def golden_path(case: Case) -> pathlib.Path:
    return GOLDEN_DIR / f"{case.name}.npz"


def _key(desc: str, dtype_name: str, j: int) -> str:
    return f"{desc}|{dtype_name}|{j}"


def save_golden(case: Case, runs: dict[tuple[str, str], Trajectory]) -> None:
    """Store trajectories keyed by (config description, dtype name): one array per
    parameter, its values after every step stacked along a leading axis."""
    arrays = {
        _key(desc, dtype_name, j): np.stack([step[j] for step in trajectory])
        for (desc, dtype_name), trajectory in runs.items()
        for j in range(len(trajectory[0]))
    }
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(golden_path(case), **arrays)  # type: ignore[arg-type]


def load_golden(case: Case, desc: str, dtype_name: str) -> Trajectory:
    kwargs = dict(case.configs)[desc]
    count = len(case.shapes(kwargs))
    with np.load(golden_path(case), allow_pickle=False) as data:
        stacks = [data[_key(desc, dtype_name, j)] for j in range(count)]
    return [[stack[k] for stack in stacks] for k in range(stacks[0].shape[0])]


def cases_for(case: Case, dtype_names: Sequence[str] = DTYPE_NAMES) -> list[Any]:
    """pytest parameters ``(kwargs, desc, dtype_name)`` for every config and dtype."""
    import pytest

    return [
        pytest.param(kwargs, desc, dtype_name, id=f"{case.name}-{desc}-{dtype_name}")
        for desc, kwargs in case.configs
        for dtype_name in dtype_names
    ]


@contextlib.contextmanager
def module_attribute(module: Any, name: str, value: Any) -> Iterator[None]:
    """Temporarily replace ``module.name`` (undone on exit)."""
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


def assert_identical(actual: Any, expected: Any, path: str = "") -> None:
    """Nested dicts/lists/arrays/scalars equal bit for bit (same types, shapes, dtypes)."""
    assert type(actual) is type(expected), f"{path}: {type(actual)} != {type(expected)}"
    if isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for key in expected:
            assert_identical(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_identical(a, e, f"{path}[{i}]")
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype and actual.shape == expected.shape, path
        assert np.array_equal(actual, expected, equal_nan=True), path
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
