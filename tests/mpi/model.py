"""The fixed model of the MPI checks, shared by tests/mpi/checks.py (inside the jobs) and
tests/test_distributed.py (the single-process side of the elastic resume).

A small tanh network fitted by least squares, its gradient written out by hand in float64, and
an embedding table whose gradient is row-sparse (for SparseAdam).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

import npoptim
from npoptim import Parameter, SparseGrad
from npoptim.distributed import ZeroRedundancyOptimizer


def digest(arrays: list[Any]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


N = 24  # the batch: an equal share for 1, 2, 3 and 4 ranks
_rng = np.random.default_rng(1234)
X = _rng.standard_normal((N, 4))
Y = _rng.standard_normal((N, 3))
INIT = [_rng.standard_normal(s) * 0.5 for s in ((6, 4), (6,), (3, 6), (3,))]
ROWS = _rng.integers(0, 10, N)  # the embedding model's rows, one per sample
TARGETS = _rng.standard_normal((N, 4))
TABLE = _rng.standard_normal((10, 4))


def shard(rank: int, world: int) -> slice:
    """Rank ``rank``'s equal share of the batch."""
    size = N // world
    return slice(rank * size, (rank + 1) * size)


def mlp_loss_and_grads(params: list[Parameter], rows: slice) -> tuple[float, list[Any]]:
    """0.5 * mean ||tanh(x W^T + b) V^T + c - y||^2 over ``rows`` of the batch, and its
    gradient by hand (backpropagation written out)."""
    W, b, V, c = params
    x, y = X[rows], Y[rows]
    h = np.tanh(x @ W.T + b)
    r = h @ V.T + c - y
    n = x.shape[0]
    d_out = r / n
    dz = (d_out @ V) * (1 - h**2)
    return 0.5 * float((r**2).sum()) / n, [dz.T @ x, dz.sum(0), d_out.T @ h, d_out.sum(0)]


def embedding_grads(table: Parameter, rows: slice) -> SparseGrad:
    """The gradient of 0.5 * mean ||E[row] - t||^2: row-sparse."""
    idx = ROWS[rows]
    values = (np.asarray(table)[idx] - TARGETS[rows]) / len(idx)
    return SparseGrad(idx, values, table.shape)


class Problem:
    """One optimizer's model: its parameters and the grads of a share of the batch."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sparse = name == "SparseAdam"
        if self.sparse:
            self.all = [Parameter(TABLE.copy())]
        else:
            self.all = [Parameter(a.copy()) for a in INIT]
        # Muon takes matrices only: it optimizes W and V, the biases stay fixed
        self.optimized = [p for p in self.all if p.ndim == 2] if name == "Muon" else self.all

    def set_grads(self, rows: slice) -> float:
        if self.sparse:
            self.all[0].grad = embedding_grads(self.all[0], rows)
            return 0.0
        loss, grads = mlp_loss_and_grads(self.all, rows)
        for p, g in zip(self.all, grads, strict=True):
            p.grad = g
        return loss


def problem_and_zero() -> tuple[Problem, ZeroRedundancyOptimizer]:
    """The checkpoint checks' model and its Adam (with ``amsgrad``, for a third state array)
    sharded by ZeroRedundancyOptimizer; collective: every rank calls it."""
    problem = Problem("Adam")
    zero = ZeroRedundancyOptimizer(problem.all, npoptim.Adam, lr=0.05, amsgrad=True, foreach=False)
    return problem, zero


def steps(problem: Problem, opt: npoptim.Optimizer, n: int) -> None:
    """``n`` steps of ``opt`` on the whole batch."""
    for _ in range(n):
        problem.set_grads(slice(None))
        opt.step()
