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

from model import Problem, digest, problem_and_zero, steps  # noqa: E402
from mpi4py import MPI  # noqa: E402

import npoptim  # noqa: E402
from npoptim.distributed import checkpoint as sharded_checkpoint  # noqa: E402
from npoptim.distributed import (  # noqa: E402
    load_sharded,
    save_sharded,
    shard_files,
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
        """A save after 5 steps replaced by one after 10 (its shards removed), 10 more steps."""
        problem, zero = problem_and_zero()
        path = DIR / f"ckpt_{K}.npz"
        steps(problem, zero, 5)
        save_sharded(zero, path)
        first = shard_files(path)
        steps(problem, zero, 5)
        save_sharded(zero, path)
        save_params(problem, f"params_{K}.npz")
        shards = shard_files(path)
        files = sorted(f.name for f in DIR.glob(f"ckpt_{K}.npz.*"))
        steps(problem, zero, 10)
        save_params(problem, f"final_{K}.npz")
        return {
            "same": same_everywhere(problem.all),
            "first": [os.path.basename(f) for f in first],
            "shards": [os.path.basename(f) for f in shards],
            "files": files,
        }


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
            shard = Path(shard_files(path)[2])
            shard.write_bytes(shard.read_bytes()[:100])
        COMM.Barrier()
        _, zero = problem_and_zero()
        return errors_on_every_rank(lambda: load_sharded(zero, path))

    @check
    def missing_shard() -> list[str]:
        path = fault_copy("missing", f"ckpt_{K}.npz")
        if RANK == 0:
            os.unlink(shard_files(path)[1])
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
            shutil.copy(shard_files(path)[1], DIR / "stale" / "old")
        COMM.Barrier()
        save_sharded(zero, path)
        if RANK == 0:
            os.replace(DIR / "stale" / "old", shard_files(path)[1])
        COMM.Barrier()
        return errors_on_every_rank(lambda: load_sharded(zero, path))

    @check
    def failed_save() -> dict[str, Any]:
        """Writing rank 3's shard fails (the disk is full): every rank raises, the files are
        the previous checkpoint's, and it still loads."""
        path = fault_copy("failed", f"ckpt_{K}.npz")
        before = path.read_bytes() if RANK == 0 else b""
        files = sorted(f.name for f in path.parent.iterdir())
        problem, zero = problem_and_zero()
        steps(problem, zero, 1)
        original = sharded_checkpoint._save

        def full_disk(obj: object, f: Any, fmt: str) -> None:
            if fmt == npoptim.serialization.FORMAT:
                raise OSError(28, "No space left on device", str(f))
            original(obj, f, fmt)

        if RANK == 3:
            sharded_checkpoint._save = full_disk  # type: ignore[assignment]
        try:
            errors = errors_on_every_rank(lambda: save_sharded(zero, path))
        finally:
            sharded_checkpoint._save = original  # type: ignore[assignment]
        COMM.Barrier()
        kept = RANK != 0 or path.read_bytes() == before
        unchanged = files == sorted(f.name for f in path.parent.iterdir())
        load_sharded(zero, path)
        return {"errors": errors, "manifest_kept": kept, "files_unchanged": unchanged}


if RANK == 0:
    Path(OPTS.out).write_text(json.dumps(RESULTS, indent=1, default=str))
