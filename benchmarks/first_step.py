"""First-step cost and the mixed-layout step, each measured in a new process.

    python benchmarks/first_step.py              # every measurement
    python benchmarks/first_step.py --skip-empty # leave out the empty-cache runs

First step: a new Python process imports npoptim and takes one ``Adam.step()`` on a parameter of
1,000,000 float32 values; the time runs from before ``import npoptim`` to the end of the step.
It is taken for the default path (neither flag), ``fused=True`` and ``foreach=True`` (the NumPy
path), with numba's cache folder (``NUMBA_CACHE_DIR``) empty and then warm (filled by the
runs before). Each figure is the median of ``--repeats`` processes; the process's CPU time is
given too (on a shared machine it moves less than the wall-clock time). Every process uses
``--threads`` threads (``npoptim.set_num_threads``).

Mixed layout: Adam on a 2,000 x 2,000 float32 parameter that is Fortran-ordered with a
C-ordered gradient, against one with both C-ordered; the two stepped by turns, ``--steps``
steps each after 3 warm-up steps (median step times, and their ratio), and the most memory
one step allocates (tracemalloc), on the default path (its kernels compiled first, where
``npoptim.compile_kernels`` exists), ``fused=True`` and the for-loop; ``--layout-runs`` new
processes for each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

FIRST_STEP = r"""
import time
t0, c0 = time.perf_counter(), time.process_time()
import numpy as np
import npoptim
npoptim.set_num_threads(THREADS)
w = npoptim.Parameter(np.ones(1_000_000, dtype=np.float32))
w.grad = np.full(1_000_000, 0.5, dtype=np.float32)
opt = npoptim.Adam([w], **FLAGS)
opt.step()
print(time.perf_counter() - t0, time.process_time() - c0)
"""

MIXED = r"""
import json, statistics, time, tracemalloc
import numpy as np
import npoptim
npoptim.set_num_threads(THREADS)
if hasattr(npoptim, "compile_kernels") and FLAGS == {}:
    npoptim.compile_kernels(["Adam"], dtypes=[np.float32])
rng = np.random.default_rng(0)
optimizers = {}
for layout in ["matched", "mixed"]:
    data = rng.standard_normal((2000, 2000)).astype(np.float32)
    w = npoptim.Parameter(np.asfortranarray(data) if layout == "mixed" else data)
    w.grad = np.ascontiguousarray(rng.standard_normal((2000, 2000)).astype(np.float32))
    optimizers[layout] = npoptim.Adam([w], **FLAGS)
    for _ in range(3):
        optimizers[layout].step()
times = {layout: [] for layout in optimizers}
for _ in range(STEPS):  # by turns, so that a change of the machine's pace hits both alike
    for layout, opt in optimizers.items():
        t = time.perf_counter()
        opt.step()
        times[layout].append(time.perf_counter() - t)
out = {}
for layout, opt in optimizers.items():
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    opt.step()
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    out[layout] = {"ms": 1e3 * statistics.median(times[layout]), "allocated_bytes": peak}
out["ratio"] = out["mixed"]["ms"] / out["matched"]["ms"]
print(json.dumps(out))
"""


def _run(
    code: str, flags: dict[str, bool], env: dict[str, str], threads: int, steps: int = 0
) -> str:
    source = code.replace("FLAGS", repr(flags)).replace("THREADS", str(threads))
    source = source.replace("STEPS", str(steps))
    done = subprocess.run(
        [sys.executable, "-c", source], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-empty", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30, help="steps of each mixed-layout run")
    parser.add_argument("--layout-runs", type=int, default=2, help="processes per layout path")
    args = parser.parse_args()
    base = dict(os.environ)
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    base["PYTHONPATH"] = os.pathsep.join([src, base.get("PYTHONPATH", "")])
    results: dict[str, object] = {}
    paths = {"numpy (foreach=True)": {"foreach": True}, "default": {}}
    paths["fused=True"] = {"fused": True}
    for name, flags in paths.items():
        for cache in ["empty", "warm"]:
            if cache == "empty" and args.skip_empty:
                continue
            times, cpu = [], []
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as folder:
                    env = {**base, "NUMBA_CACHE_DIR": os.environ.get("WARM_CACHE", folder)}
                    if cache == "warm":
                        # fills the cache (a no-op if filled)
                        _run(FIRST_STEP, flags, env, args.threads)
                    wall, used = map(float, _run(FIRST_STEP, flags, env, args.threads).split())
                    times.append(wall)
                    cpu.append(used)
            wall, used = statistics.median(times), statistics.median(cpu)
            results[f"{name}, {cache} cache"] = {"s": round(wall, 3), "cpu_s": round(used, 3)}
            print(f"{name:22} {cache:5} cache: {wall:7.3f} s (CPU {used:.3f} s)", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        env = {**base, "NUMBA_CACHE_DIR": folder}
        layouts = {"default": {}, "fused=True": {"fused": True}}
        layouts["foreach=False"] = {"foreach": False}
        for name, flags in layouts.items():
            runs = [
                json.loads(_run(MIXED, flags, env, args.threads, args.steps))
                for _ in range(args.layout_runs)
            ]
            results[f"mixed layout, {name}"] = runs
            for run in runs:
                print(
                    f"layout {name:14} matched {run['matched']['ms']:6.2f} ms, mixed "
                    f"{run['mixed']['ms']:6.2f} ms: {run['ratio']:.2f}x; allocated "
                    f"{run['matched']['allocated_bytes']} / {run['mixed']['allocated_bytes']} B",
                    flush=True,
                )
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
