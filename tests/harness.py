"""Shared test machinery: a deterministic problem, runners for npoptim, torch and reference
implementations, and golden-trajectory files.

The problem: three parameters of shapes ``SHAPES`` (a matrix, a vector and a 0-d scalar).
At step ``k`` parameter ``j`` gets the gradient of a noisy quadratic,
``g = c_j * p + r_{k,j}`` with fixed curvatures ``c_j`` and noise ``r`` drawn from a seeded
generator, so errors in an update feed back into later gradients. At step ``MISSING[0]``
parameter ``MISSING[1]`` has no gradient (``grad is None``) and must be skipped.

A *reference* is a pure function written from an algorithm's published pseudo-code,
independent of ``src/``::

    ref(p, g, state, t, **hyperparameters) -> new p

where ``p`` and ``g`` are real float64 arrays (complex parameters are handed over as
``(..., 2)`` real pairs, as torch treats them), ``state`` is a dict the reference owns for
that parameter (empty at first), and ``t`` counts the steps this parameter has taken (1, 2, ...).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import npoptim

SHAPES: list[tuple[int, ...]] = [(3, 4), (5,), ()]
CURVATURE = [1.0, 0.5, 2.0]
STEPS = 21
MISSING = (7, 1)
GOLDEN_DIR = pathlib.Path(__file__).parent / "golden"
DTYPES = {"float64": np.float64, "float32": np.float32, "complex128": np.complex128}

Trajectory = list[list[np.ndarray]]  # trajectory[k][j]: parameter j after step k + 1
Reference = Callable[..., np.ndarray]


def initial_values(dtype: Any, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    values = []
    for shape in SHAPES:
        v = rng.standard_normal(shape)
        if np.issubdtype(dtype, np.complexfloating):
            v = v + 1j * rng.standard_normal(shape)
        values.append(np.asarray(v, dtype=dtype))
    return values


def gradient(k: int, j: int, p: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """The gradient of parameter ``j`` at step ``k`` (0-based), or None where it is missing."""
    if (k, j) == MISSING:
        return None
    rng = np.random.default_rng([seed, k, j])
    noise = rng.standard_normal(p.shape)
    if np.iscomplexobj(p):
        noise = noise + 1j * rng.standard_normal(p.shape)
    return np.asarray(CURVATURE[j] * p + noise, dtype=p.dtype)


def run_npoptim(
    name: str, kwargs: dict[str, Any], dtype: Any, steps: int = STEPS, seed: int = 0
) -> tuple[Trajectory, npoptim.Optimizer]:
    params = [npoptim.Parameter(v) for v in initial_values(dtype, seed)]
    opt = getattr(npoptim, name)(params, **kwargs)
    trajectory: Trajectory = []
    for k in range(steps):
        for j, p in enumerate(params):
            p.grad = gradient(k, j, np.array(p), seed)
        opt.step()
        trajectory.append([np.array(p) for p in params])
    return trajectory, opt


def run_torch(
    name: str, kwargs: dict[str, Any], dtype: Any, steps: int = STEPS, seed: int = 0
) -> Trajectory:
    import torch

    params = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in initial_values(dtype, seed)]
    opt = getattr(torch.optim, name)(params, **kwargs)
    trajectory: Trajectory = []
    for k in range(steps):
        for j, p in enumerate(params):
            g = gradient(k, j, p.detach().numpy().copy(), seed)
            p.grad = None if g is None else torch.from_numpy(g)
        opt.step()
        trajectory.append([p.detach().numpy().copy() for p in params])
    return trajectory


def _to_real(a: np.ndarray) -> np.ndarray:
    return np.stack([a.real, a.imag], axis=-1) if np.iscomplexobj(a) else a.astype(np.float64)


def _from_real(a: np.ndarray, dtype: Any) -> np.ndarray:
    if np.issubdtype(dtype, np.complexfloating):
        return np.asarray(a[..., 0] + 1j * a[..., 1], dtype=dtype)
    return np.asarray(a, dtype=dtype)


def run_reference(
    ref: Reference, kwargs: dict[str, Any], dtype: Any, steps: int = STEPS, seed: int = 0
) -> Trajectory:
    """Run a reference in float64 arithmetic (complex as real pairs) on the problem."""
    values = [_to_real(v) for v in initial_values(dtype, seed)]
    states: list[dict[str, Any]] = [{} for _ in values]
    counts = [0 for _ in values]
    trajectory: Trajectory = []
    for k in range(steps):
        for j, p in enumerate(values):
            g = gradient(k, j, _from_real(p, dtype), seed)
            if g is None:
                continue
            counts[j] += 1
            values[j] = np.asarray(ref(p.copy(), _to_real(g), states[j], counts[j], **kwargs))
        trajectory.append([_from_real(v, dtype) for v in values])
    return trajectory


def max_relative_error(actual: Trajectory, expected: Trajectory) -> float:
    """The largest ``max|a - e| / max(max|e|, 1e-30)`` over steps and parameters."""
    assert len(actual) == len(expected)
    worst = 0.0
    for step_a, step_e in zip(actual, expected, strict=True):
        for a, e in zip(step_a, step_e, strict=True):
            assert a.shape == e.shape and a.dtype == e.dtype, (a.shape, e.shape, a.dtype, e.dtype)
            scale = max(float(np.max(np.abs(e), initial=0.0)), 1e-30)
            worst = max(worst, float(np.max(np.abs(a - e), initial=0.0)) / scale)
    return worst


def config_ids(configs: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    return [desc for desc, _ in configs]


# ------------------------------------------------------------------- golden trajectories
def golden_path(name: str) -> pathlib.Path:
    return GOLDEN_DIR / f"{name}.npz"


def golden_key(desc: str, dtype_name: str, j: int) -> str:
    return f"{desc}|{dtype_name}|{j}"


def save_golden(name: str, runs: dict[tuple[str, str], Trajectory]) -> None:
    """Store trajectories keyed by (config description, dtype name): one array per
    parameter, its values after every step stacked along a leading axis."""
    arrays = {
        golden_key(desc, dtype_name, j): np.stack([step[j] for step in trajectory])
        for (desc, dtype_name), trajectory in runs.items()
        for j in range(len(SHAPES))
    }
    GOLDEN_DIR.mkdir(exist_ok=True)
    np.savez_compressed(golden_path(name), **arrays)  # type: ignore[arg-type]


def load_golden(name: str, desc: str, dtype_name: str) -> Trajectory:
    with np.load(golden_path(name), allow_pickle=False) as data:
        stacks = [data[golden_key(desc, dtype_name, j)] for j in range(len(SHAPES))]
    return [[stack[k] for stack in stacks] for k in range(stacks[0].shape[0])]
