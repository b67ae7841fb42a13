"""Sharded checkpoints inside one MPI job; tests/test_distributed_sharded.py starts it.

    mpiexec -n K python tests/mpi/sharded.py OUT.json DIR [--save] [--resume-from W] [--faults]

``--save``: 10 Adam steps under ZeRO, ``save_sharded`` to ``DIR/ckpt_K.npz`` (and the
parameters to ``DIR/params_K.npz``), 10 more steps, the final parameters to
``DIR/final_K.npz``. ``--resume-from W``: the parameters and the sharded state saved at W
ranks loaded at this world size, 10 steps, the parameters to ``DIR/resumed_W_at_K.npz``.
``--faults``: damaged, missing and stale shards and a failed save, each must raise on every
rank. Rank 0 writes a JSON object of results to OUT.json; a check that raises records its
traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # model.py

ARGS = argparse.ArgumentParser()
ARGS.add_argument("out")
ARGS.add_argument("dir")
ARGS.add_argument("--save", action="store_true")
ARGS.add_argument("--resume-from", type=int, default=0)
ARGS.add_argument("--faults", action="store_true")
OPTS = ARGS.parse_args()

from model import Problem, digest  # noqa: E402
from mpi4py import MPI  # noqa: E402

import npoptim  # noqa: E402
from npoptim.distributed import (  # noqa: E402
    ZeroRedundancyOptimizer,
    load_sharded,
    save_sharded,
    shard_path,
)

COMM = MPI.COMM_WORLD
RANK, K = COMM.Get_rank(), COMM.Get_size()
DIR = Path(OPTS.dir)
RESULTS: dict[str, Any] = {"world": K}


def check(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``fn`` on every rank; record rank 0's result or every rank's traceback."""
    try:
        result, error = fn(), None
    except Exception:
        result, error = None, traceback.format_exc()
    errors = [e for e in COMM.allgather(error) if e]
    RESULTS[fn.__name__] = {"result": result, "errors": errors}
    return fn


def problem_and_zero() -> tuple[Problem, ZeroRedundancyOptimizer]:
    problem = Problem("Adam")
    zero = ZeroRedundancyOptimizer(problem.all, npoptim.Adam, lr=0.05, amsgrad=True, foreach=False)
    return problem, zero


def steps(problem: Problem, opt: npoptim.Optimizer, n: int) -> None:
    for _ in range(n):
        problem.set_grads(slice(None))
        opt.step()


def same_everywhere(arrays: list[Any]) -> bool:
    return len(set(COMM.allgather(digest(arrays)))) == 1


def save_params(problem: Problem, name: str) -> None:
    if RANK == 0:
        npoptim.save({"params": [np.asarray(p) for p in problem.all]}, DIR / name)


def errors_on_every_rank(action: Callable[[], None]) -> list[str]:
    """Each rank's ``"Type: message"`` from ``action`` (which must raise on every rank)."""
    try:
        action()
        mine = "nothing raised"
    except Exception as exc:
        mine = f"{type(exc).__name__}: {exc}"
    return COMM.allgather(mine)


if OPTS.save:

    @check
    def sharded_save() -> dict[str, Any]:
        problem, zero = problem_and_zero()
        steps(problem, zero, 10)
        path = DIR / f"ckpt_{K}.npz"
        save_sharded(zero, path)
        save_params(problem, f"params_{K}.npz")
        local = int(sum(os.path.getsize(shard_path(path, r, K)) for r in [RANK]))
        sizes = COMM.allgather(local)
        steps(problem, zero, 10)
        save_params(problem, f"final_{K}.npz")
        return {"same": same_everywhere(problem.all), "shard_bytes": sizes}


if OPTS.resume_from:

    @check
    def sharded_resume() -> bool:
        w = OPTS.resume_from
        problem, zero = problem_and_zero()
        saved = npoptim.load(DIR / f"params_{w}.npz")["params"]
        for p, value in zip(problem.all, saved, strict=True):
            p[...] = value
        load_sharded(zero, DIR / f"ckpt_{w}.npz")
        steps(problem, zero, 10)
        save_params(problem, f"resumed_{w}_at_{K}.npz")
        return same_everywhere(problem.all)


def fault_copy(name: str, source: str) -> Path:
    """A copy of the sharded checkpoint ``source`` (manifest and shards) under ``name``."""
    folder = DIR / name
    if RANK == 0:
        folder.mkdir()
        for f in DIR.glob(f"{source}*"):
            shutil.copy(f, folder / f.name)
    COMM.Barrier()
    return folder / source


if OPTS.faults:

    @check
    def damaged_shard() -> list[str]:
        path = fault_copy("damaged", f"ckpt_{K}.npz")
        if RANK == 0:
            shard = Path(shard_path(path, 2, K))
            shard.write_bytes(shard.read_bytes()[:100])
        COMM.Barrier()
        _, zero = problem_and_zero()
        return errors_on_every_rank(lambda: load_sharded(zero, path))

    @check
    def missing_shard() -> list[str]:
        path = fault_copy("missing", f"ckpt_{K}.npz")
        if RANK == 0:
            os.unlink(shard_path(path, 1, K))
        COMM.Barrier()
        _, zero = problem_and_zero()
        return errors_on_every_rank(lambda: load_sharded(zero, path))

    @check
    def stale_shard() -> list[str]:
        """Shard 1 of an earlier save beside the manifest of a later one."""
        path = fault_copy("stale", f"ckpt_{K}.npz")
        problem, zero = problem_and_zero()
        steps(problem, zero, 1)
        if RANK == 0:
            shutil.copy(shard_path(path, 1, K), DIR / "stale" / "old")
        COMM.Barrier()
        save_sharded(zero, path)
        if RANK == 0:
            os.replace(DIR / "stale" / "old", shard_path(path, 1, K))
        COMM.Barrier()
        return errors_on_every_rank(lambda: load_sharded(zero, path))

    @check
    def failed_save() -> dict[str, Any]:
        """Rank 3's shard cannot be written (a folder is in its place): every rank raises,
        the previous manifest is kept."""
        path = fault_copy("failed", f"ckpt_{K}.npz")
        before = path.read_bytes() if RANK == 0 else b""
        if RANK == 0:
            os.unlink(shard_path(path, 3, K))
            os.mkdir(shard_path(path, 3, K))
        COMM.Barrier()
        problem, zero = problem_and_zero()
        steps(problem, zero, 1)
        errors = errors_on_every_rank(lambda: save_sharded(zero, path))
        return {"errors": errors, "manifest_kept": RANK != 0 or path.read_bytes() == before}


if RANK == 0:
    Path(OPTS.out).write_text(json.dumps(RESULTS, indent=1, default=str))
