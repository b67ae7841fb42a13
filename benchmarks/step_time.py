"""Time one optimizer step of npoptim and torch.optim on the same workloads.

    python benchmarks/step_time.py             # the full run (about 15 minutes on 2 cores)
    python benchmarks/step_time.py --quick     # a smaller run (about 2 minutes)
    python benchmarks/step_time.py --threads 4 --json out.json --markdown

``--quick`` takes fewer steps, a smaller sweep, a W4 table of 100,000 rows, and measures the
bandwidth on arrays of 64 MiB (a smoke run: its figures are not the benchmark's).

Workloads (float32):

* W1: the parameter shapes of ResNet-50 (161 tensors, 25,557,032 values);
* W2: 2,000 tensors of 256 values (per-tensor overhead);
* W3: one tensor of 16,000,000 values (memory bandwidth);
* W4: SparseAdam on a 1,000,000 x 64 table, 1,024 rows touched per step;
* a sweep of Adam's step time against total size (one tensor of 1K to 64M values) and
  against tensor count (tensors of 256 values), to show that cost grows linearly.

Every optimizer runs on every path each library has: torch's for-loop (``foreach=False``),
``foreach=True`` and ``fused=True`` (SGD, Adam, AdamW and Adagrad only), npoptim's for-loop,
foreach, fused (when numba is installed) and default (neither flag). Adafactor, Muon and Prodigy,
which are not elementwise, run on their for-loop path only (Prodigy against its oracle,
``prodigyopt``); Muon, which takes matrices only, gets
the workloads' shapes as matrices (W1: the 54 weights of rank >= 2, reshaped to
``(out, in * kh * kw)``; W2: 2,000 of 16 x 16; W3: 1,000 x 16,000).

torch runs with ``THP_MEM_ALLOC_ENABLE=1`` (set here before torch is imported): NumPy's
allocations get transparent huge pages by themselves, torch's allocator only when asked, and
without them torch's for-loop and foreach steps on large tensors take up to twice as long.
The "torch compiled" column is ``torch.compile`` of ``optimizer.step`` (the recipe torch
documents for optimizers without a fused kernel), for the elementwise optimizers on the
workloads of ``--compile-workloads`` (W1 and W3 by default: compiling a step over W2's 2,000
tensors takes many minutes); its compile time (the first call) is reported apart, and a
compilation that fails is noted and leaves the column empty.

The bandwidth bound: each elementwise optimizer must read every parameter, gradient and state
array once and write every parameter and state array once per step; those bytes over the
machine's memory bandwidth (measured here: ``a += b`` on arrays of 256 MiB on ``--threads``
threads, bytes read plus bytes written per second) are about the least time a step can
take. The table gives that bound and npoptim's fastest path over it.

Both libraries use the same number of threads (``--threads``, 2 by default): torch through
``torch.set_num_threads``, npoptim through ``npoptim.set_num_threads`` (numba's threads on the
fused path) and BLAS (Muon's matrix products) through the usual environment variables, set
before NumPy is imported. Each configuration is warmed up (numba compiles then), then the
variants of one workload and optimizer take their steps in turn, in a new random order each
round and after a pause of 5 ms (so that no variant runs while the threads of the one before
are still spinning), so that a disturbance of the machine falls on all of them alike; the
table gives the median step time in milliseconds.
Gradients are set once and kept, as in torch's own optimizer benchmarks.

Ratios are npoptim's time over torch's, so below 1 means npoptim is faster. The targets:
npoptim's for-loop no slower than torch's for-loop; npoptim's fused no slower than torch's
fused where torch has one, and at most half the time of torch's fastest path where it has
none; SparseAdam no slower than torch's.
"""

from __future__ import annotations

import argparse
import os
import sys


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, a smaller sweep")
    parser.add_argument("--threads", type=int, default=2, help="threads for both libraries")
    parser.add_argument(
        "--json", default=os.path.join(os.path.dirname(__file__), "results", "step_time.json")
    )
    parser.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    parser.add_argument("--workloads", default="W1,W2,W3,W4,sweep", help="comma-separated")
    parser.add_argument("--optimizers", default="", help="comma-separated (default: all)")
    parser.add_argument(
        "--compile-workloads", default="W1,W3", help="workloads with a torch.compile column"
    )
    return parser.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:  # BLAS reads these when it loads, with NumPy or torch
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)
    # torch's allocator asks for transparent huge pages only with this, read when it starts
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"

# ruff: noqa: E402  (the imports follow the thread settings on purpose)
import gc
import importlib.util
import json
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

import npoptim
from npoptim._kernels import registry
from workloads import Shape, dense_workload, resnet50_shapes

#: Hyperparameters other than the defaults.
HYPERPARAMETERS: dict[str, dict[str, Any]] = {"SGD": {"lr": 1e-3, "momentum": 0.9}}
#: Every optimizer of the registry but SparseAdam (W4, below) and LBFGS (a closure per step).
OPTIMIZERS: dict[str, dict[str, Any]] = {
    name: HYPERPARAMETERS.get(name, {})
    for name in registry.optimizer_names()
    if name not in {"SparseAdam", "LBFGS"}
}
TORCH_FUSED = {"SGD", "Adam", "AdamW", "Adagrad"}
#: The optimizers torch.optim lacks: their oracle on torch takes torch's place (module,
#: class, the paths it has).
ORACLES: dict[str, tuple[str, str, list[str]]] = {
    "Lion": ("lion_pytorch", "Lion", ["for-loop"]),
    "LAMB": ("pytorch_optimizer", "Lamb", ["for-loop", "foreach"]),
    "AdEMAMix": ("pytorch_optimizer", "AdEMAMix", ["for-loop", "foreach"]),
    "AdamWScheduleFree": ("schedulefree", "AdamWScheduleFree", ["for-loop", "foreach"]),
    "SGDScheduleFree": ("schedulefree", "SGDScheduleFree", ["for-loop", "foreach"]),
    "Prodigy": ("prodigyopt", "Prodigy", ["for-loop"]),
    "LARS": ("pytorch_optimizer", "LARS", ["for-loop", "foreach"]),
}
NOT_ELEMENTWISE = set(registry.OTHERS)
HAS_NUMBA = importlib.util.find_spec("numba") is not None


WORKLOADS: dict[str, list[Shape]] = {
    "W1": resnet50_shapes(),
    "W2": [(256,)] * 2000,
    "W3": [(16_000_000,)],
}
MUON_WORKLOADS: dict[str, list[Shape]] = {
    "W1": [(s[0], int(np.prod(s[1:]))) for s in resnet50_shapes() if len(s) >= 2],
    "W2": [(16, 16)] * 2000,
    "W3": [(1000, 16_000)],
}


# ---------------------------------------------------------------------------- variants
class Variant:
    """One optimizer on one path of one library, with its own copy of the parameters."""

    def __init__(
        self, library: str, path: str, step: Callable[[], object], optimizer: Any = None
    ) -> None:
        self.library, self.path, self.step = library, path, step
        self.optimizer = optimizer
        self.samples: list[float] = []

    def time_step(self) -> None:
        start = time.perf_counter()
        self.step()
        self.samples.append((time.perf_counter() - start) * 1e3)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def _flags(path: str) -> dict[str, bool]:
    return {"for-loop": {"foreach": False}, "foreach": {"foreach": True},
            "fused": {"fused": True}, "default": {}, "compiled": {}}[path]  # fmt: skip


def torch_paths(name: str, compiled: bool = False) -> list[str]:
    if name in NOT_ELEMENTWISE:
        return ["for-loop"]
    if name in ORACLES:
        return ORACLES[name][2]
    paths = ["for-loop", "foreach"] + (["fused"] if name in TORCH_FUSED else [])
    return paths + (["compiled"] if compiled else [])


def npoptim_paths(name: str) -> list[str]:
    if name in NOT_ELEMENTWISE or name == "SparseAdam":
        return ["default"]
    return ["for-loop", "foreach"] + (["fused"] if HAS_NUMBA else []) + ["default"]


def make_variant(
    library: str, name: str, path: str, values: Sequence[np.ndarray], grads: Sequence[np.ndarray]
) -> Variant:
    kwargs = {**OPTIMIZERS[name], **_flags(path)}
    if name in NOT_ELEMENTWISE:
        kwargs = dict(OPTIMIZERS[name])  # one path: no flags
    if library == "torch":
        tparams = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
        for p, g in zip(tparams, grads, strict=True):
            p.grad = torch.from_numpy(g.copy())
        if name in ORACLES:
            module, cls, paths = ORACLES[name]
            oracle = getattr(importlib.import_module(module), cls)
            optimizer = oracle(tparams, **(kwargs if len(paths) > 1 else OPTIMIZERS[name]))
            if hasattr(optimizer, "train"):  # Schedule-Free steps in train mode
                optimizer.train()
        else:
            optimizer = getattr(torch.optim, name)(tparams, **kwargs)
        if path == "compiled":
            return compiled_variant(optimizer)
        return Variant(library, path, optimizer.step)
    nparams = [npoptim.Parameter(v.copy()) for v in values]
    for p, g in zip(nparams, grads, strict=True):
        p.grad = g.copy()
    optimizer = getattr(npoptim, name)(nparams, **kwargs)
    if hasattr(optimizer, "train"):  # Schedule-Free steps in train mode
        optimizer.train()
    return Variant(library, path, optimizer.step, optimizer)


class CompiledVariant(Variant):
    """torch.compile of ``optimizer.step``; the first call compiles, and its time is kept."""

    def __init__(self, step: Callable[[], object]) -> None:
        super().__init__("torch", "compiled", step)
        self.compile_s: float | None = None
        self.error: str | None = None

    def warm_up(self) -> None:
        if self.compile_s is None and self.error is None:
            start = time.perf_counter()
            try:
                self.step()
            except Exception as error:  # noted in the report
                self.error = f"{type(error).__name__}: {error}"[:200]
                print(f"    torch.compile failed: {self.error}", flush=True)
                return
            self.compile_s = time.perf_counter() - start
        elif self.error is None:
            self.step()

    def time_step(self) -> None:
        if self.error is None:
            super().time_step()


def compiled_variant(optimizer: Any) -> CompiledVariant:
    @torch.compile(fullgraph=False)
    def step() -> None:
        optimizer.step()

    return CompiledVariant(step)


#: Pause before each timed step, so that the worker threads of the step before (which spin
#: for a while after their work, torch's and numba's alike) are idle again.
PAUSE_S = 0.005


def run_round_robin(variants: list[Variant], warmup: int, repeats: int) -> None:
    for v in variants:
        for _ in range(warmup):
            if isinstance(v, CompiledVariant):
                v.warm_up()
            else:
                v.step()
    order = random.Random(0)
    for _ in range(repeats):
        for v in order.sample(variants, len(variants)):  # a new order each round
            time.sleep(PAUSE_S)
            v.time_step()


def bytes_moved(optimizer: npoptim.Optimizer) -> int:
    """The bytes an elementwise step must move at least: every parameter, gradient and state
    array (of the parameter's size) read once, every parameter and state array written once."""
    total = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            states = [
                v for v in optimizer.state[p].values()
                if isinstance(v, np.ndarray) and v.size == p.size
            ]  # fmt: skip
            total += p.nbytes * (1 + 2 * (1 + len(states)))
    return total


def memory_bandwidth(threads: int, size: int) -> float:
    """The machine's memory bandwidth as an optimizer step uses it: bytes read plus bytes
    written per second by ``a += b`` on two arrays of ``size`` bytes, shared among ``threads``
    threads (the best of 5). An in-place update, like an optimizer's (a copy to another array
    would also read the destination before writing it, which this count would not see)."""
    from concurrent.futures import ThreadPoolExecutor

    a = np.ones(size // 4, dtype=np.float32)
    b = np.ones_like(a)
    parts = np.array_split(np.arange(a.size), threads)
    bounds = [(int(part[0]), int(part[-1]) + 1) for part in parts]
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(5):
            start = time.perf_counter()
            list(pool.map(lambda r: np.add(a[r[0] : r[1]], b[r[0] : r[1]], out=a[r[0] : r[1]]),
                          bounds))  # fmt: skip
            best = min(best, time.perf_counter() - start)
    return 3 * size / best


def bench_dense(
    workload: str, names: Sequence[str], warmup: int, repeats: int, compiled: bool = False
) -> list[dict]:
    rows = []
    for name in names:
        shapes = (MUON_WORKLOADS if name == "Muon" else WORKLOADS)[workload]
        values, grads = dense_workload(shapes)
        variants = [make_variant("torch", name, p, values, grads)
                    for p in torch_paths(name, compiled)]  # fmt: skip
        variants += [make_variant("npoptim", name, p, values, grads) for p in npoptim_paths(name)]
        del values, grads
        slow = name == "Muon" and workload != "W2"  # seconds a step: fewer of them
        run_round_robin(variants, min(warmup, 1) if slow else warmup, 3 if slow else repeats)
        row: dict[str, Any] = {"workload": workload, "optimizer": name}
        row["times_ms"] = {f"{v.library} {v.path}": v.median for v in variants if v.samples}
        row["samples_ms"] = {f"{v.library} {v.path}": v.samples for v in variants if v.samples}
        for v in variants:
            if isinstance(v, CompiledVariant):
                row["torch_compile_s"] = v.compile_s
                row["torch_compile_error"] = v.error
        if name not in NOT_ELEMENTWISE:
            row["bytes_per_step"] = bytes_moved(variants[-1].optimizer)
        rows.append(row)
        print(f"  {workload} {name}: " + ", ".join(
            f"{k} {t:.2f}" for k, t in row["times_ms"].items()), flush=True)  # fmt: skip
        del variants
        gc.collect()
    return rows


def bench_sparse_adam(warmup: int, repeats: int, rows: int) -> list[dict]:
    cols, touched = 64, 1024
    rng = np.random.default_rng(0)
    table = rng.standard_normal((rows, cols), dtype=np.float32)
    index = rng.choice(rows, touched, replace=False)
    values = rng.standard_normal((touched, cols), dtype=np.float32)
    tp = torch.nn.Parameter(torch.from_numpy(table.copy()))
    tp.grad = torch.sparse_coo_tensor(
        torch.from_numpy(index)[None, :], torch.from_numpy(values.copy()), (rows, cols)
    )
    npp = npoptim.Parameter(table.copy())
    npp.grad = npoptim.SparseGrad(index.copy(), values.copy(), (rows, cols))
    variants = [
        Variant("torch", "for-loop", torch.optim.SparseAdam([tp]).step),
        Variant("npoptim", "default", npoptim.SparseAdam([npp]).step),
    ]
    run_round_robin(variants, warmup, repeats * 4)  # fast steps: more of them
    times = {f"{v.library} {v.path}": v.median for v in variants}
    print("  W4 SparseAdam: " + ", ".join(f"{k} {t:.3f}" for k, t in times.items()), flush=True)
    samples = {f"{v.library} {v.path}": v.samples for v in variants}
    return [{"workload": "W4", "optimizer": "SparseAdam", "times_ms": times, "samples_ms": samples}]


def bench_sweep(quick: bool, warmup: int, repeats: int) -> list[dict]:
    """Adam against total size (one tensor) and against tensor count (256 values each)."""
    sizes = [1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24, 1 << 26]
    counts = [1, 8, 64, 512, 4096]
    if quick:
        sizes, counts = sizes[:-2], counts[:-1]
    points = [("size", n, [(n,)]) for n in sizes] + [("count", c, [(256,)] * c) for c in counts]
    rows = []
    for axis, x, shapes in points:
        values, grads = dense_workload(shapes)
        variants = [make_variant("torch", "Adam", p, values, grads) for p in torch_paths("Adam")]
        variants += [make_variant("npoptim", "Adam", p, values, grads)
                     for p in npoptim_paths("Adam")]  # fmt: skip
        del values, grads
        big = x >= 1 << 24
        run_round_robin(variants, 1 if big else warmup, max(3, repeats // 3) if big else repeats)
        times = {f"{v.library} {v.path}": v.median for v in variants}
        rows.append({"axis": axis, "x": x, "times_ms": times})
        print(f"  sweep {axis}={x}: " + ", ".join(f"{k} {t:.3f}" for k, t in times.items()),
              flush=True)  # fmt: skip
        del variants
        gc.collect()
    return rows


# ------------------------------------------------------------------------------- report
def targets(row: dict) -> dict[str, tuple[float, float] | None]:
    """Each target's (ratio, limit) for a row, None where it does not apply."""
    t = row["times_ms"]
    name = row["optimizer"]
    out: dict[str, tuple[float, float] | None] = {"for-loop": None, "fused": None}
    if name == "SparseAdam":
        out["for-loop"] = (t["npoptim default"] / t["torch for-loop"], 1.0)
        return out
    if name in NOT_ELEMENTWISE:
        out["for-loop"] = (t["npoptim default"] / t["torch for-loop"], 1.0)
        return out
    out["for-loop"] = (t["npoptim for-loop"] / t["torch for-loop"], 1.0)
    if "npoptim fused" in t:
        if "torch fused" in t:
            out["fused"] = (t["npoptim fused"] / t["torch fused"], 1.0)
        else:
            best = min(v for k, v in t.items() if k.startswith("torch"))
            out["fused"] = (t["npoptim fused"] / best, 0.5)
    return out


COLUMNS = ["torch for-loop", "torch foreach", "torch fused", "torch compiled",
           "npoptim for-loop", "npoptim foreach", "npoptim fused", "npoptim default"]  # fmt: skip


def _cell(ratio_limit: tuple[float, float] | None) -> str:
    if ratio_limit is None:
        return "-"
    ratio, limit = ratio_limit
    return f"{ratio:.2f}" + ("" if ratio <= limit else " MISS")


def report(rows: list[dict], markdown: bool, bandwidth: float) -> str:
    head = ["workload", "optimizer", *COLUMNS, "loop ratio (<=1)", "fused ratio (target)",
            "compile s", "bound ms", "best / bound"]  # fmt: skip
    lines = []
    for row in rows:
        t = row["times_ms"]
        goal = targets(row)
        fused = goal["fused"]
        fused_cell = _cell(fused) + ("" if fused is None else f" (<={fused[1]:g})")
        cells = [row["workload"], row["optimizer"]]
        cells += [f"{t[c]:.3g}" if c in t else "" for c in COLUMNS]
        cells += [_cell(goal["for-loop"]), fused_cell]
        compile_s = row.get("torch_compile_s")
        cells.append(f"{compile_s:.1f}" if compile_s else ("failed" if row.get(
            "torch_compile_error") else ""))  # fmt: skip
        moved = row.get("bytes_per_step")
        if moved:
            bound = 1e3 * moved / bandwidth
            best = min(v for k, v in t.items() if k.startswith("npoptim"))
            cells += [f"{bound:.3g}", f"{best / bound:.2f}"]
        else:
            cells += ["", ""]
        lines.append(cells)
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(c or " " for c in cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(head[k]), *(len(cells[k]) for cells in lines)) for k in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*cells) for cells in lines])


def sweep_report(rows: list[dict], markdown: bool) -> str:
    keys = [k for k in COLUMNS if k in rows[0]["times_ms"]]
    head = ["axis", "x", *keys]
    lines = [[r["axis"], str(r["x"]), *(f"{r['times_ms'][k]:.3g}" for k in keys)] for r in rows]
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(out + ["| " + " | ".join(cells) + " |" for cells in lines])
    widths = [max(len(head[k]), *(len(c[k]) for c in lines)) for k in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*cells) for cells in lines])


def machine() -> dict[str, Any]:
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "torch": torch.__version__, "npoptim": npoptim.__version__}  # fmt: skip
    if HAS_NUMBA:
        import numba

        versions["numba"] = numba.__version__
    return {"cpu": model, "cpus": os.cpu_count(), "platform": platform.platform(), **versions}


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    npoptim.set_num_threads(args.threads)
    warmup, repeats = (1, 5) if args.quick else (3, 15)
    names = [n for n in args.optimizers.split(",") if n] or list(OPTIMIZERS)
    chosen = args.workloads.split(",")
    info = {"machine": machine(), "threads": args.threads, "quick": args.quick,
            "load_before": os.getloadavg()}  # fmt: skip
    print(f"{info['machine']['cpu']}, {info['machine']['cpus']} CPUs, {args.threads} threads,"
          f" load {info['load_before'][0]:.2f}", flush=True)  # fmt: skip
    bandwidth = memory_bandwidth(args.threads, 1 << 26 if args.quick else 1 << 28)
    info["memory_bandwidth_GBps"] = bandwidth / 1e9
    print(f"memory bandwidth (read + write, a += b): {bandwidth / 1e9:.1f} GB/s", flush=True)
    compile_workloads = args.compile_workloads.split(",")
    rows: list[dict] = []
    for workload in ("W1", "W2", "W3"):
        if workload in chosen:
            rows += bench_dense(workload, names, warmup, repeats, workload in compile_workloads)
    if "W4" in chosen:
        rows += bench_sparse_adam(warmup, repeats, 100_000 if args.quick else 1_000_000)
    sweep = bench_sweep(args.quick, warmup, repeats) if "sweep" in chosen else []
    info["load_after"] = os.getloadavg()
    print("\nMedian step time (ms); ratios are npoptim / torch (MISS: target missed)\n")
    print(report(rows, args.markdown, bandwidth))
    for row in rows:
        if row.get("torch_compile_error"):
            print(f"torch.compile failed for {row['optimizer']}: {row['torch_compile_error']}")
    if sweep:
        print("\nAdam against total size (one tensor) and tensor count (256 values each), ms\n")
        print(sweep_report(sweep, args.markdown))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({**info, "results": rows, "sweep": sweep}, f, indent=1)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    assert ARGS is not None
    sys.exit(main(ARGS))
