"""npoptim.distributed against torch.distributed on gloo, side by side in one MPI job.

    mpiexec -n 2 python benchmarks/distributed.py            # about two minutes on 2 cores
    mpiexec -n 2 python benchmarks/distributed.py --quick --markdown

Every rank runs both libraries, one thread each (float32, ResNet-50's parameter shapes: the
step-time benchmark's W1, 161 tensors, 25,557,032 values). torch's process group is started
from inside the MPI job (gloo over TCP on 127.0.0.1; the port chosen by rank 0 and sent to the
others over MPI), so the two libraries share the job, the ranks and the machine.

* **allreduce**: ``all_reduce_grads_`` (pack the grads into 25 MB buckets, one non-blocking
  allreduce each, unpack the average in place) against the same work in torch on gloo (the
  same buckets packed with ``copy_``, one async ``all_reduce`` each, unpacked with
  ``torch.div(out=)``), and against gloo's allreduce of the already packed buckets alone
  (communication only, what DDP adds to a backward pass when its grads are bucket views).
* **ZeRO Adam step**: ``ZeroRedundancyOptimizer(Adam)``'s step (each rank's share of Adam,
  then every parameter broadcast from its owner) against torch's ``ZeroRedundancyOptimizer``
  with ``torch.optim.Adam``, per-parameter broadcasts and ``parameters_as_bucket_view=True``.

The variants of one row run in turn, in a new random order each round (the same on every
rank), each after an MPI barrier; a sample is the slowest rank's time. ``OMP_WAIT_POLICY`` is
``PASSIVE``, so that OpenMP threads one library leaves idle do not spin while the other runs.
The table gives medians in milliseconds; ratios are npoptim's time over torch's (below 1:
npoptim is faster). The state bytes per rank of both ZeRO optimizers are printed too.
"""

from __future__ import annotations

import os
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
# OpenMP threads that one library's step leaves waiting must sleep, not spin: spinning, numba's
# OpenMP pool (npoptim's compiled kernels) made torch's step that followed up to 5 times slower
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

# ruff: noqa: E402  (the imports follow the thread settings on purpose)
import argparse
import json
import random
import socket
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from mpi4py import MPI
from torch.distributed.optim import ZeroRedundancyOptimizer as TorchZeRO

import npoptim
from npoptim import Parameter
from npoptim.distributed import ZeroRedundancyOptimizer, all_reduce_grads_
from step_time import dense_workload, machine, resnet50_shapes

COMM = MPI.COMM_WORLD
RANK, WORLD = COMM.Get_rank(), COMM.Get_size()
BUCKET_MB = 25


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument(
        "--json", default=os.path.join(os.path.dirname(__file__), "results", "distributed.json")
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    return parser.parse_args()


def start_gloo() -> None:
    """torch's process group on gloo, inside this MPI job (rank and size from MPI)."""
    port = None
    if RANK == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    port = COMM.bcast(port, root=0)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=RANK, world_size=WORLD
    )


def race(
    variants: dict[str, Callable[[], object]], warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Each variant's samples in ms: the slowest rank's time of one call, the variants in a
    new random order each round (the same order on every rank), a barrier before each."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for round_ in range(warmup + repeats):
        random.Random(round_).shuffle(order)
        for name in order:
            COMM.Barrier()
            start = time.perf_counter()
            variants[name]()
            elapsed = COMM.allreduce(time.perf_counter() - start, op=MPI.MAX)
            if round_ >= warmup:
                samples[name].append(elapsed * 1e3)
    return samples


def bucket_bounds(sizes: list[int], itemsize: int) -> list[tuple[int, int]]:
    """DDP's buckets over parameters in order: up to 25 MB each, a larger parameter alone
    (the bounds are parameter indices)."""
    bounds, start, size = [], 0, 0
    for i, n in enumerate(sizes):
        if i > start and (size + n) * itemsize > BUCKET_MB * 2**20:
            bounds.append((start, i))
            start, size = i, 0
        size += n
    bounds.append((start, len(sizes)))
    return bounds


def bench_allreduce(warmup: int, repeats: int) -> dict[str, Any]:
    values, grads = dense_workload(resnet50_shapes(), seed=RANK)
    params = [Parameter(v) for v in values]
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    torch_grads = [torch.from_numpy(g.copy()) for g in grads]
    bounds = bucket_bounds([g.size for g in grads], 4)
    buckets = [torch.empty(sum(g.numel() for g in torch_grads[a:b])) for a, b in bounds]

    def torch_packed() -> None:
        for work in [dist.all_reduce(bucket, async_op=True) for bucket in buckets]:
            work.wait()

    def torch_pack_reduce_unpack() -> None:
        works = []
        for (a, b), bucket in zip(bounds, buckets, strict=True):
            offset = 0
            for g in torch_grads[a:b]:
                bucket[offset : offset + g.numel()].view_as(g).copy_(g)
                offset += g.numel()
            works.append(dist.all_reduce(bucket, async_op=True))
        for work, (a, b), bucket in zip(works, bounds, buckets, strict=True):
            work.wait()
            offset = 0
            for g in torch_grads[a:b]:
                torch.div(bucket[offset : offset + g.numel()].view_as(g), WORLD, out=g)
                offset += g.numel()

    samples = race(
        {
            "npoptim all_reduce_grads_": lambda: all_reduce_grads_(params),
            "torch gloo, same work": torch_pack_reduce_unpack,
            "torch gloo, allreduce only": torch_packed,
        },
        warmup,
        repeats,
    )
    return {
        "row": "allreduce of W1 grads (25 MB buckets)",
        "buckets": len(bounds),
        "samples_ms": samples,
    }


def state_bytes(state: Any) -> int:
    return sum(
        v.nbytes if isinstance(v, np.ndarray) else v.numel() * v.element_size()
        for s in state.values()
        for v in s.values()
        if isinstance(v, (np.ndarray, torch.Tensor))
    )


def bench_zero(warmup: int, repeats: int, bucket_view: bool) -> dict[str, Any]:
    values, grads = dense_workload(resnet50_shapes(), seed=0)  # the same on every rank
    params = [Parameter(v.copy()) for v in values]
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    ours = ZeroRedundancyOptimizer(
        params, npoptim.Adam, parameters_as_bucket_view=bucket_view, lr=1e-3
    )
    tensors = [torch.from_numpy(v.copy()).requires_grad_() for v in values]
    for t, g in zip(tensors, grads, strict=True):
        t.grad = torch.from_numpy(g.copy())
    theirs = TorchZeRO(tensors, torch.optim.Adam, parameters_as_bucket_view=bucket_view, lr=1e-3)
    samples = race(
        {"npoptim ZeRO Adam": ours.step, "torch ZeRO Adam (gloo)": theirs.step}, warmup, repeats
    )
    return {
        "row": "ZeRO Adam step on W1" + (", bucket view" if bucket_view else ""),
        "samples_ms": samples,
        "state_bytes_per_rank": {
            "npoptim": COMM.allgather(state_bytes(ours.optim.state)),
            "torch": COMM.allgather(state_bytes(theirs.optim.state)),
        },
    }


def table(rows: list[dict[str, Any]], markdown: bool) -> str:
    head = ["", "npoptim (ms)", "torch (ms)", "ratio", "torch comm. only (ms)", "ratio"]
    lines = []
    for row in rows:
        medians = {k: statistics.median(v) for k, v in row["samples_ms"].items()}
        ours = next(v for k, v in medians.items() if k.startswith("npoptim"))
        torch_times = [v for k, v in medians.items() if k.startswith("torch")]
        cells = [row["row"], f"{ours:.1f}"]
        for t in torch_times:
            cells += [f"{t:.1f}", f"{ours / t:.2f}"]
        cells += [""] * (len(head) - len(cells))
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(out + ["| " + " | ".join(c) + " |" for c in lines])
    widths = [max(len(head[k]), *(len(c[k]) for c in lines)) for k in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*c) for c in lines])


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    npoptim.set_num_threads(1)
    warmup, repeats = (1, 4) if args.quick else (2, 10)
    start_gloo()
    if RANK == 0:
        print(f"{WORLD} ranks x 1 thread, load {os.getloadavg()[0]:.2f}", flush=True)
    rows = [bench_allreduce(warmup, repeats)]
    for bucket_view in (False, True):
        rows.append(bench_zero(warmup, repeats, bucket_view))
    dist.destroy_process_group()
    if RANK != 0:
        return
    print("\nMedian time (ms), the slowest rank; ratios are npoptim / torch\n")
    print(table(rows, args.markdown))
    for row in rows[1:]:
        print(f"\n{row['row']}: optimizer state bytes per rank {row['state_bytes_per_rank']}")
    mpi = MPI.Get_library_version().splitlines()[0]
    info = {"machine": machine(), "ranks": WORLD, "threads": 1, "quick": args.quick,
            "mpi": mpi, "load_after": os.getloadavg()}  # fmt: skip
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({**info, "results": rows}, f, indent=1)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    sys.exit(main(_parse()))
