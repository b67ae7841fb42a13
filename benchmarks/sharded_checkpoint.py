"""Sharded checkpoints of a ZeRO Adam on W1 at 1, 2 and 4 ranks, against the consolidated path.

    python benchmarks/sharded_checkpoint.py                   # starts the MPI jobs itself
    python benchmarks/sharded_checkpoint.py --ranks 1 2 --rounds 1 --values 100000

For each world size K (one ``mpiexec -n K`` job each, one thread per rank), ZeRO Adam over
ResNet-50's parameter shapes (the step-time benchmark's W1, float32, 25,557,032 values; or the
first ``--values`` of them) takes one step, so that its state (``exp_avg``, ``exp_avg_sq``,
``step``) exists, then, in each round (after ``--warmup`` untimed ones), after a barrier,
timed on the slowest rank (before each, every rank touches and frees twice its share of the
state, untimed, as ``checkpoint.py`` does and for the same reason: on a virtual machine that
hands free memory back to its host, memory a process has not used lately costs several times a
copy to touch again; ``--no-warm-memory`` skips it):

* **sharded save**: :func:`npoptim.distributed.save_sharded` (each rank writes its shard,
  fsync-ed, then rank 0 the manifest);
* **sharded load**: :func:`npoptim.distributed.load_sharded` into a second ZeRO Adam at the
  same K (each rank maps its shard and copies its values once);
* **consolidated save**: ``consolidate_state_dict(to=0)`` then ``npoptim.save`` on rank 0;
* **consolidated load**: ``npoptim.load(mmap=True)`` and ``load_state_dict`` on every rank.

The K = 1 job also loads the 4-rank sharded checkpoint into a plain Adam (no ZeRO). Loads
read files the save has just written: from the page cache (no cache dropping). Bytes written
are the files' sizes on disk against the state's bytes (its arrays' ``nbytes``). The table
gives medians in seconds; the JSON (``--json``) every sample.
"""

from __future__ import annotations

import os
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

# ruff: noqa: E402  (the imports follow the thread settings on purpose)
import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import npoptim
from npoptim import Parameter

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from workloads import dense_workload, resnet50_shapes


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 2, 1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument(
        "--no-warm-memory", action="store_true", help="no memory touched before each call"
    )
    parser.add_argument("--values", type=int, default=0, help="first values of W1 (0: all)")
    parser.add_argument("--dir", default="", help="folder for the files (default: a temp one)")
    parser.add_argument(
        "--json", default=str(HERE / "results" / "sharded_checkpoint.json"), help="output"
    )
    parser.add_argument("--inside", default="", help=argparse.SUPPRESS)  # a job's JSON
    return parser.parse_args()


def workload(values: int) -> list[Parameter]:
    shapes = resnet50_shapes()
    if values:
        kept, total = [], 0
        for s in shapes:
            if total >= values:
                break
            kept.append(s)
            total += int(np.prod(s))
        shapes = kept
    arrays, grads = dense_workload(shapes, seed=0)
    params = [Parameter(a) for a in arrays]
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    return params


def file_bytes(folder: Path, prefix: str) -> int:
    return sum(f.stat().st_size for f in folder.glob(f"{prefix}*") if f.is_file())


def state_bytes(state: Any) -> int:
    return sum(v.nbytes for s in state.values() for v in s.values() if isinstance(v, np.ndarray))


def job(args: argparse.Namespace) -> None:
    """One MPI job: every measurement at this world size."""
    from mpi4py import MPI

    from npoptim.distributed import ZeroRedundancyOptimizer, load_sharded, save_sharded

    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    npoptim.set_num_threads(1)
    folder = Path(args.dir)
    params = workload(args.values)
    zero = ZeroRedundancyOptimizer(params, npoptim.Adam, lr=1e-3)
    zero.step()
    target = ZeroRedundancyOptimizer(params, npoptim.Adam, lr=1e-3)
    sharded, consolidated = folder / f"sharded_{world}.npz", folder / f"consolidated_{world}.npz"

    warm = 0 if args.no_warm_memory else 2 * state_bytes(zero.optim.state)

    def timed(fn: Callable[[], None]) -> float:
        if warm:
            np.ones(warm, dtype=np.uint8)  # touched and freed: see the docstring
        comm.Barrier()
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        return float(comm.allreduce(elapsed, op=MPI.MAX))

    def consolidated_save() -> None:
        zero.consolidate_state_dict(to=0)
        if rank == 0:
            npoptim.save(zero.state_dict(), consolidated)

    def consolidated_load() -> None:
        target.load_state_dict(npoptim.load(consolidated, mmap=True))

    samples: dict[str, list[float]] = {
        "sharded save": [],
        "sharded load": [],
        "consolidated save": [],
        "consolidated load": [],
    }
    operations = {
        "sharded save": lambda: save_sharded(zero, sharded),
        "sharded load": lambda: load_sharded(target, sharded),
        "consolidated save": consolidated_save,
        "consolidated load": consolidated_load,
    }
    for r in range(-args.warmup, args.rounds):
        for name, operation in operations.items():
            elapsed = timed(operation)
            if r >= 0:
                samples[name].append(elapsed)
    total_state = int(comm.allreduce(state_bytes(zero.optim.state)))
    result: dict[str, Any] = {
        "ranks": world,
        "values": int(sum(p.size for p in params)),
        "state_bytes": total_state,
        "state_bytes_per_rank": comm.allgather(state_bytes(zero.optim.state)),
        "sharded_bytes_written": file_bytes(folder, sharded.name),
        "consolidated_bytes_written": file_bytes(folder, consolidated.name),
        "samples_s": samples,
    }
    plain_source = folder / "sharded_4.npz"
    if world == 1 and plain_source.exists():
        plain = npoptim.Adam(params, lr=1e-3)
        times = []
        for r in range(-args.warmup, args.rounds):
            elapsed = timed(lambda: load_sharded(plain, plain_source))
            if r >= 0:
                times.append(elapsed)
        result["samples_s"]["plain Adam loads the 4-rank sharded checkpoint"] = times
    if rank == 0:
        Path(args.inside).write_text(json.dumps(result))


def mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        raise SystemExit("no mpiexec next to sys.executable or on PATH")
    return found


def main(args: argparse.Namespace) -> None:
    folder = Path(args.dir or tempfile.mkdtemp(prefix="npoptim-sharded-"))
    folder.mkdir(exist_ok=True)
    env = dict(os.environ, MPIR_CVAR_ENABLE_HEAVY_YIELD="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and Path(p).is_dir())
    jobs = []
    try:
        for k in args.ranks:
            out = folder / f"job_{k}.json"
            command = [mpiexec(), "-n", str(k), sys.executable, __file__, "--inside", str(out)]
            command += ["--dir", str(folder), "--rounds", str(args.rounds)]
            command += ["--warmup", str(args.warmup)] + ["--no-warm-memory"] * args.no_warm_memory
            command += ["--values", str(args.values)]
            subprocess.run(command, check=True, env=env, timeout=1800)
            jobs.append(json.loads(out.read_text()))
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"load {os.getloadavg()[0]:.2f} (shared machine); {jobs[0]['values']:,} values")
    print(table(jobs))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"cpus": os.cpu_count(), "jobs": jobs}, f, indent=1)
    print(f"\nwrote {args.json}")


def table(jobs: list[dict[str, Any]]) -> str:
    """The markdown table: median seconds per operation and world size, and bytes written."""
    head = "| ranks | operation | median (s) | bytes written | / state bytes |"
    lines = [head, "|---|---|---|---|---|"]
    for j in jobs:
        for name, samples in j["samples_s"].items():
            written = ""
            if name.endswith("save"):
                key = "sharded" if name.startswith("sharded") else "consolidated"
                b = j[f"{key}_bytes_written"]
                written = f"{b:,} | {b / j['state_bytes']:.4f}"
            else:
                written = " | "
            cells = f"| {j['ranks']} | {name} | {statistics.median(samples):.3f} | {written} |"
            lines.append(cells)
        per_rank = ", ".join(f"{b:,}" for b in j["state_bytes_per_rank"])
        lines.append(f"| {j['ranks']} | state bytes per rank | | {per_rank} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    ARGS = _parse()
    job(ARGS) if ARGS.inside else main(ARGS)
