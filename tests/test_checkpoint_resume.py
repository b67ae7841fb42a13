"""A run resumed from a checkpoint on disk continues bit for bit.

For every optimizer of ``configs.CONFIGS`` that npoptim has, every torch config and dtype:
train ``2 * N`` steps straight; versus train ``N`` steps, write the parameters and
``optimizer.state_dict()`` to disk with :func:`npoptim.save`, read them back with
:func:`npoptim.load` into fresh Parameters and a fresh optimizer, and train ``N`` more. The
parameters, the optimizer's state_dict and (for schedulers) the learning rates must equal the
straight run's exactly. Each scheduler is checkpointed together with its optimizer.

Optimizers are found at run time: a class npoptim does not have is simply not parametrized.

The problems (shared with ``test_interop_torch.py``) are deterministic NumPy functions of the
parameter values, so two runs see the same gradients exactly when their parameters are equal:

* ``dense``: the noisy quadratic of ``harness.py`` (a matrix, a vector and a 0-d scalar; one
  gradient is missing at step ``harness.MISSING[0]``).
* ``matrix``: the same gradients on three matrices, for Muon, which takes only 2-D parameters.
* ``sparse``: row-sparse gradients (:class:`npoptim.SparseGrad`, indices unsorted and
  repeated) of an embedding table and a vector, for SparseAdam, and for SGD and Adagrad,
  which accept them as torch does.
* ``closure``: a convex quartic ``sum c/2 |p|^2 + 1/4 |p|^4 + Re(conj(b) p)``, for L-BFGS,
  whose ``step`` takes a closure. ``max_iter`` and ``history_size`` are lowered so that every
  step does work and the curvature memory fills and shifts.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import npoptim
from configs import CONFIGS, FLAGS
from harness import CURVATURE, MISSING
from harness import gradient as dense_gradient
from harness import initial_values as dense_initial_values
from npoptim import Parameter, SparseGrad

N = 6  # steps before and after the checkpoint

# ------------------------------------------------------------------------------ discovery
_MODULES = {"SparseAdam": "sparse_adam"}


def _npoptim_attr(module: str, name: str) -> Any:
    """``npoptim.<module>.<name>``, or None where that module does not exist (yet)."""
    try:
        mod = importlib.import_module(f"npoptim.{module}")
    except ModuleNotFoundError as error:
        if error.name == f"npoptim.{module}":
            return None
        raise
    return getattr(mod, name, None)


def optimizer_class(name: str) -> Any:
    """npoptim's optimizer ``name``, or None if npoptim does not have it."""
    return getattr(npoptim, name, None) or _npoptim_attr(_MODULES.get(name, name.lower()), name)


def serialization() -> tuple[Callable[[Any, Any], None], Callable[[Any], Any]]:
    save = getattr(npoptim, "save", None) or _npoptim_attr("serialization", "save")
    load = getattr(npoptim, "load", None) or _npoptim_attr("serialization", "load")
    return save, load


def npoptim_schedulers() -> SimpleNamespace:
    """Every scheduler class npoptim has (``lr_scheduler`` and ``swa_utils.SWALR``)."""
    classes: dict[str, Any] = {}
    for module in ("lr_scheduler", "swa_utils"):
        try:
            mod = importlib.import_module(f"npoptim.{module}")
        except ModuleNotFoundError as error:
            if error.name != f"npoptim.{module}":
                raise
            continue
        classes.update({k: v for k, v in vars(mod).items() if isinstance(v, type)})
    return SimpleNamespace(**classes)


# ------------------------------------------------------------------------------- problems
MATRIX_SHAPES: list[tuple[int, ...]] = [(3, 4), (6, 2), (4, 4)]  # wide, tall, square
SPARSE_SHAPES: list[tuple[int, ...]] = [(6, 3), (5,)]  # an embedding table and a vector
SPARSE_ROWS = 4  # rows per sparse gradient, drawn with repetition
PROBLEMS = {"LBFGS": "closure", "Muon": "matrix", "SparseAdam": "sparse"}
EXTRA_KWARGS: dict[str, dict[str, Any]] = {"LBFGS": {"max_iter": 2, "history_size": 3}}


def initial_values(problem: str, dtype: Any, seed: int = 0) -> list[np.ndarray]:
    if problem in ("dense", "closure"):
        return dense_initial_values(dtype, seed)
    rng = np.random.default_rng([seed, 1])
    shapes = MATRIX_SHAPES if problem == "matrix" else SPARSE_SHAPES
    return [np.asarray(rng.standard_normal(shape), dtype=dtype) for shape in shapes]


def sparse_gradient(k: int, j: int, p: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Rows and values of the sparse gradient of parameter ``j`` at step ``k``: the
    quadratic's gradient at a few random rows, some repeated, plus noise."""
    if (k, j) == MISSING:
        return None
    rng = np.random.default_rng([k, j, 2])
    rows = rng.integers(0, p.shape[0], size=SPARSE_ROWS)
    noise = rng.standard_normal((SPARSE_ROWS, *p.shape[1:]))
    return rows, np.asarray(CURVATURE[j] * p[rows] + noise, dtype=p.dtype)


def quartic(values: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
    """Loss and gradients of ``sum_j c_j/2 |p_j|^2 + 1/4 |p_j|^4 + Re(conj(b_j) p_j)``
    (torch's convention for complex gradients: d/dRe + i d/dIm)."""
    loss = 0.0
    grads = []
    for j, p in enumerate(values):
        rng = np.random.default_rng([j, 3])
        b = rng.standard_normal(p.shape) + (
            1j * rng.standard_normal(p.shape) if p.dtype.kind == "c" else 0
        )
        b = np.asarray(b, dtype=p.dtype)
        sq = np.abs(p) ** 2
        loss += float(
            np.sum(0.5 * CURVATURE[j] * sq + 0.25 * sq**2) + np.sum((np.conj(b) * p).real)
        )
        grads.append(np.asarray((CURVATURE[j] + sq) * p + b, dtype=p.dtype))
    return loss, grads


def npoptim_step(opt: Any, params: list[Parameter], problem: str, k: int) -> None:
    """Set the gradients of step ``k`` and take one optimizer step."""
    if problem == "closure":

        def closure() -> float:
            loss, grads = quartic([np.array(p) for p in params])
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            return loss

        opt.step(closure)
        return
    for j, p in enumerate(params):
        value = np.array(p)
        if problem == "sparse":
            rows_values = sparse_gradient(k, j, value)
            p.grad = None if rows_values is None else SparseGrad(*rows_values, p.shape)
        else:
            p.grad = dense_gradient(k, j, value)
    opt.step()


# ---------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    name: str
    desc: str
    kwargs: dict[str, Any]
    dtype: str
    problem: str
    marks: list[Any] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.name}-{self.desc}-{self.dtype}-{self.problem}"

    def param(self) -> Any:
        return pytest.param(self, id=self.id, marks=self.marks)


def _sparse_ok(name: str, kwargs: dict[str, Any]) -> bool:
    """torch refuses weight decay with sparse gradients (as does npoptim)."""
    return kwargs.get("weight_decay", 0) == 0


def optimizer_cases(dtypes: tuple[str, ...]) -> Iterator[Case]:
    """Every config of every optimizer npoptim has, in each supported dtype of ``dtypes``."""
    for name, configs in CONFIGS.items():
        if optimizer_class(name) is None:
            continue
        problem = PROBLEMS.get(name, "dense")
        for desc, kwargs in configs:
            kwargs = {**kwargs, **EXTRA_KWARGS.get(name, {})}
            for dtype in dtypes:
                if dtype.startswith("complex") and not (
                    FLAGS[name]["supports_complex"] and problem != "sparse"
                ):
                    continue
                yield Case(name, desc, kwargs, dtype, problem)
            if name != "SparseAdam" and FLAGS[name]["supports_sparse"] and _sparse_ok(name, kwargs):
                yield Case(name, desc, kwargs, "float64", "sparse")


def make_params(case: Case) -> list[Parameter]:
    return [Parameter(v) for v in initial_values(case.problem, np.dtype(case.dtype))]


def train(case: Case, params: list[Parameter], opt: Any, steps: range) -> None:
    for k in steps:
        npoptim_step(opt, params, case.problem, k)


# ----------------------------------------------------------------------------- comparison
def assert_identical(actual: Any, expected: Any, path: str = "") -> None:
    """Equal values of equal types, arrays of equal dtype and shape bit for bit."""
    assert type(actual) is type(expected), f"{path}: {type(actual)} != {type(expected)}"
    if isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(actual, expected, err_msg=path, strict=True)
    elif isinstance(expected, SparseGrad):
        assert actual.shape == expected.shape, path
        np.testing.assert_array_equal(actual.indices, expected.indices, err_msg=path, strict=True)
        np.testing.assert_array_equal(actual.values, expected.values, err_msg=path, strict=True)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for key in expected:
            assert_identical(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_identical(a, e, f"{path}[{i}]")
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(actual), path
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


# ----------------------------------------------------------------------------- optimizers
OPTIMIZER_CASES = list(optimizer_cases(("float64", "float32", "complex128")))


@pytest.mark.parametrize(
    "case",
    [c.param() for c in OPTIMIZER_CASES],
)
def test_optimizer_resumed_from_disk_continues_bit_for_bit(case: Case, tmp_path: Path) -> None:
    save, load = serialization()
    cls = optimizer_class(case.name)
    straight = make_params(case)
    straight_opt = cls(straight, **case.kwargs)
    train(case, straight, straight_opt, range(2 * N))

    params = make_params(case)
    opt = cls(params, **case.kwargs)
    train(case, params, opt, range(N))
    path = tmp_path / "ckpt.npz"
    save({"params": [np.array(p) for p in params], "optimizer": opt.state_dict()}, path)
    del params, opt

    checkpoint = load(path)
    params = [Parameter(v) for v in checkpoint["params"]]
    opt = cls(params, **case.kwargs)
    opt.load_state_dict(checkpoint["optimizer"])
    train(case, params, opt, range(N, 2 * N))

    assert_identical([np.array(p) for p in params], [np.array(p) for p in straight])
    assert_identical(opt.state_dict(), straight_opt.state_dict())


# ----------------------------------------------------------------------------- schedulers
class Decay:
    """A callable object as ``lr_lambda``: its ``__dict__`` is saved with the scheduler."""

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def __call__(self, epoch: int) -> float:
        return float(self.rate**epoch)


# A plateau-detecting metric: improves, stalls, improves.
METRICS = [1.0, 0.9, 0.95, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85, 0.85, 0.7, 0.75, 0.75, 0.75, 0.75]

SchedulerFactory = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class SchedulerCase:
    id: str
    make: SchedulerFactory  # (namespace of scheduler classes, optimizer) -> scheduler
    needs: tuple[str, ...]  # the classes it uses
    optimizer: str = "SGD"  # SGD with momentum, or Adam (betas) for momentum cycling
    metric: bool = False  # step(metric), for ReduceLROnPlateau

    def param(self) -> Any:
        return pytest.param(self, id=self.id)


SCHEDULER_CASES = [
    SchedulerCase("StepLR", lambda s, o: s.StepLR(o, step_size=3, gamma=0.5), ("StepLR",)),
    SchedulerCase(
        "MultiStepLR",
        lambda s, o: s.MultiStepLR(o, milestones=[2, 5, 5, 9], gamma=0.5),
        ("MultiStepLR",),
    ),
    SchedulerCase(
        "ConstantLR", lambda s, o: s.ConstantLR(o, factor=0.5, total_iters=4), ("ConstantLR",)
    ),
    SchedulerCase(
        "LinearLR", lambda s, o: s.LinearLR(o, start_factor=0.25, total_iters=8), ("LinearLR",)
    ),
    SchedulerCase("ExponentialLR", lambda s, o: s.ExponentialLR(o, gamma=0.9), ("ExponentialLR",)),
    SchedulerCase(
        "PolynomialLR", lambda s, o: s.PolynomialLR(o, total_iters=9, power=2.0), ("PolynomialLR",)
    ),
    SchedulerCase(
        "CosineAnnealingLR",
        lambda s, o: s.CosineAnnealingLR(o, T_max=5, eta_min=0.001),
        ("CosineAnnealingLR",),
    ),
    SchedulerCase(
        "LambdaLR/function", lambda s, o: s.LambdaLR(o, lambda e: 0.95**e), ("LambdaLR",)
    ),
    SchedulerCase("LambdaLR/object", lambda s, o: s.LambdaLR(o, Decay(0.9)), ("LambdaLR",)),
    SchedulerCase(
        "MultiplicativeLR", lambda s, o: s.MultiplicativeLR(o, lambda e: 0.9), ("MultiplicativeLR",)
    ),
    SchedulerCase(
        "CosineAnnealingWarmRestarts",
        lambda s, o: s.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=0.01),
        ("CosineAnnealingWarmRestarts",),
    ),
    SchedulerCase(
        "CyclicLR/triangular2",
        lambda s, o: s.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=3, mode="triangular2"),
        ("CyclicLR",),
    ),
    SchedulerCase(
        "CyclicLR/exp_range-Adam",
        lambda s, o: s.CyclicLR(
            o,
            base_lr=0.01,
            max_lr=0.1,
            step_size_up=2,
            step_size_down=3,
            mode="exp_range",
            gamma=0.9,
        ),
        ("CyclicLR",),
        optimizer="Adam",
    ),
    SchedulerCase(
        "OneCycleLR/cos",
        lambda s, o: s.OneCycleLR(o, max_lr=0.5, total_steps=20),
        ("OneCycleLR",),
    ),
    SchedulerCase(
        "OneCycleLR/linear-three_phase-Adam",
        lambda s, o: s.OneCycleLR(
            o, max_lr=0.5, total_steps=16, anneal_strategy="linear", three_phase=True
        ),
        ("OneCycleLR",),
        optimizer="Adam",
    ),
    SchedulerCase(
        "ReduceLROnPlateau",
        lambda s, o: s.ReduceLROnPlateau(o, factor=0.5, patience=1, threshold=0.01, cooldown=1),
        ("ReduceLROnPlateau",),
        metric=True,
    ),
    SchedulerCase(
        "SequentialLR",
        lambda s, o: s.SequentialLR(
            o, [s.ConstantLR(o, factor=0.5, total_iters=3), s.ExponentialLR(o, gamma=0.9)], [3]
        ),
        ("SequentialLR", "ConstantLR", "ExponentialLR"),
    ),
    SchedulerCase(
        "ChainedScheduler",
        lambda s, o: s.ChainedScheduler(
            [s.ConstantLR(o, factor=0.5, total_iters=4), s.ExponentialLR(o, gamma=0.9)], o
        ),
        ("ChainedScheduler", "ConstantLR", "ExponentialLR"),
    ),
    SchedulerCase(
        "SWALR",
        lambda s, o: s.SWALR(o, swa_lr=0.05, anneal_epochs=3, anneal_strategy="cos"),
        ("SWALR",),
    ),
]


def scheduler_cases(classes: SimpleNamespace) -> list[Any]:
    return [c.param() for c in SCHEDULER_CASES if all(hasattr(classes, n) for n in c.needs)]


SCHEDULER_OPTIMIZER_KWARGS: dict[str, dict[str, Any]] = {
    "SGD": {"lr": 0.1, "momentum": 0.9},
    "Adam": {"lr": 0.1, "betas": (0.9, 0.99)},
}
NP_SCHEDULERS = npoptim_schedulers()


def scheduler_step(case: SchedulerCase, scheduler: Any, k: int) -> None:
    if case.metric:
        scheduler.step(METRICS[k])
    else:
        scheduler.step()


def make_scheduled(case: SchedulerCase) -> tuple[list[Parameter], Any, Any]:
    params = [Parameter(v) for v in dense_initial_values(np.float64)]
    opt = getattr(npoptim, case.optimizer)(params, **SCHEDULER_OPTIMIZER_KWARGS[case.optimizer])
    return params, opt, case.make(NP_SCHEDULERS, opt)


def train_scheduled(
    case: SchedulerCase, params: list[Parameter], opt: Any, scheduler: Any, steps: range
) -> list[list[float]]:
    """Train and step the scheduler; the learning rates after each scheduler step."""
    lrs = []
    for k in steps:
        npoptim_step(opt, params, "dense", k)
        scheduler_step(case, scheduler, k)
        lrs.append([float(g["lr"]) for g in opt.param_groups])
    return lrs


@pytest.mark.parametrize("case", scheduler_cases(NP_SCHEDULERS))
def test_scheduler_resumed_from_disk_continues_bit_for_bit(
    case: SchedulerCase, tmp_path: Path
) -> None:
    save, load = serialization()
    straight, straight_opt, straight_sched = make_scheduled(case)
    expected_lrs = train_scheduled(case, straight, straight_opt, straight_sched, range(2 * N))

    params, opt, sched = make_scheduled(case)
    lrs = train_scheduled(case, params, opt, sched, range(N))
    path = tmp_path / "ckpt.npz"
    save(
        {
            "params": [np.array(p) for p in params],
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
        },
        path,
    )
    del params, opt, sched

    checkpoint = load(path)
    params, opt, sched = make_scheduled(case)  # built first, then loaded, as in torch
    for p, value in zip(params, checkpoint["params"], strict=True):
        p[...] = value
    opt.load_state_dict(checkpoint["optimizer"])
    sched.load_state_dict(checkpoint["scheduler"])
    lrs += train_scheduled(case, params, opt, sched, range(N, 2 * N))

    assert lrs == expected_lrs
    assert_identical([np.array(p) for p in params], [np.array(p) for p in straight])
    assert_identical(opt.state_dict(), straight_opt.state_dict())
    assert_identical(sched.state_dict(), straight_sched.state_dict())


def test_every_optimizer_present_is_covered() -> None:
    """Discovery finds each optimizer npoptim exports (none hides behind a failed import)."""
    covered = {c.name for c in OPTIMIZER_CASES}
    exported = {name for name in CONFIGS if hasattr(npoptim, name)}
    assert exported <= covered
