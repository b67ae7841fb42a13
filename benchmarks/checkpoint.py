"""Time checkpointing an Adam state with npoptim, torch 2.13 and safetensors, side by side.

    python benchmarks/checkpoint.py                  # W1 and a 200 MB state, 5 rounds
    python benchmarks/checkpoint.py --values 1000 --workloads big --rounds 1   # a smoke run

Workloads (float32 parameters, Adam after one step, so the state is ``exp_avg`` and
``exp_avg_sq``, 8 bytes per parameter value):

* W1: the parameter shapes of ResNet-50 (161 tensors, 25,557,032 values, a 204 MB state), the
  shapes of ``benchmarks/step_time.py``;
* big: one tensor of ``--values`` values (25,000,000 by default: a 200 MB state).

For each library the table gives, in seconds (the median of ``--rounds`` rounds, the libraries
taking turns within a round so that a disturbance of the machine falls on all of them alike,
after ``--warmup`` untimed rounds). Right before each timed call, twice the state's bytes are
allocated, touched and freed (untimed; ``--no-warm-memory`` skips it): a virtual machine that
hands free memory back to its host (this one's balloon reports free pages after a few
seconds) makes the first touch of memory the process has not used lately cost several times a
copy, the host backing each page again, and that cost would fall on whichever step happens to
need the most new memory rather than on the library:

* ``state_dict``: ``optimizer.state_dict()``, and the memory it adds while the returned dict is
  alive (npoptim: what NumPy and Python report to ``tracemalloc``; torch, whose buffers
  tracemalloc does not see: the growth of the resident set, from ``/proc/self/statm``);
* ``save``: writing the file; npoptim's includes its ``fsync`` (of the file and its folder);
  ``save peak MB``: the most memory npoptim's save had allocated at once (tracemalloc);
  ``torch.save`` and safetensors' ``save_file`` do not fsync, so their ``fsync`` column is the
  time of an ``os.fsync`` run on their file right after, and ``save+fsync`` adds the two;
* ``load``: reading the file back, from the page cache (the file was just written or read);
  npoptim's checks every CRC-32 (in a second thread, as it reads); ``load verify=False``:
  npoptim's without the CRC-32s, which is what torch and safetensors check (nothing);
  ``load cold``: the same after dropping the page cache (``/proc/sys/vm/drop_caches``, which
  needs root; the column is empty where that is refused);
* ``load mmap``: ``npoptim.load(mmap=True)`` / ``torch.load(mmap=True)`` /
  safetensors' ``safe_open`` reading every tensor as a memory map;
* ``load_state_dict``: ``optimizer.load_state_dict`` of the plainly loaded dict (torch's does
  not copy a tensor of the right dtype; npoptim's copies every array) and of the mmap one.

The bounds are this machine's: ``write+fsync``, writing as many bytes as the state has to a
new file with one ``write`` and one ``fsync`` in plain Python, and ``read``, reading them back
with one ``readinto`` into a new buffer (page cache, and cold where the cache can be dropped).
The JSON (``--json``) holds every sample.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import safetensors
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

import npoptim
from workloads import resnet50_shapes

Shape = tuple[int, ...]
LIBRARIES = ("npoptim", "torch", "safetensors")
NPOPTIM_MMAP = "mmap" in inspect.signature(npoptim.load).parameters
NPOPTIM_VERIFY = "verify" in inspect.signature(npoptim.load).parameters


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="W1,big", help="comma-separated: W1, big")
    parser.add_argument("--values", type=int, default=25_000_000, help="size of 'big'")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument(
        "--no-warm-memory", action="store_true", help="no memory touched before each call"
    )
    parser.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    parser.add_argument("--no-drop-caches", action="store_true", help="skip the cold loads")
    parser.add_argument(
        "--json", default=os.path.join(os.path.dirname(__file__), "results", "checkpoint.json")
    )
    return parser.parse_args(argv)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_caches() -> bool:
    """Drop the page cache (needs root); False where that is refused."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


WARM_BYTES = [0]  # set per workload: the memory touched and freed before each timed call


def _timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    if WARM_BYTES[0]:
        np.ones(WARM_BYTES[0], dtype=np.uint8)  # touched, then freed: see the docstring
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


# ---------------------------------------------------------------------------- the states
def _values(shapes: list[Shape]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal(s, dtype=np.float32) for s in shapes]


def npoptim_optimizer(values: list[np.ndarray]) -> npoptim.Adam:
    params = [npoptim.Parameter(v.copy()) for v in values]
    for p, v in zip(params, values, strict=True):
        p.grad = v * np.float32(0.5)
    opt = npoptim.Adam(params, lr=1e-3)
    opt.step()
    return opt


def torch_optimizer(values: list[np.ndarray]) -> torch.optim.Adam:
    params = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    for p, v in zip(params, values, strict=True):
        p.grad = torch.from_numpy(v * np.float32(0.5))
    opt = torch.optim.Adam(params, lr=1e-3, foreach=False)
    opt.step()
    return opt


def flat_arrays(state_dict: dict[str, Any]) -> dict[str, np.ndarray]:
    """safetensors stores flat name -> array maps: the state's arrays, named by their path."""
    return {
        f"state.{i}.{key}": np.ascontiguousarray(value)
        for i, entries in state_dict["state"].items()
        for key, value in entries.items()
        if isinstance(value, np.ndarray) and value.ndim > 0
    }


# ---------------------------------------------------------------------------- one round
def measure_raw(folder: str, nbytes: int, cold: bool) -> dict[str, float]:
    """The bounds: one write + fsync of nbytes, and one readinto of them."""
    data = np.random.default_rng(1).integers(0, 255, nbytes, dtype=np.uint8)
    path = os.path.join(folder, "raw.bin")
    start = time.perf_counter()
    with open(path, "wb") as f:
        f.write(memoryview(data))
        f.flush()
        os.fsync(f.fileno())
    out = {"write+fsync": time.perf_counter() - start}
    del data

    def read() -> None:
        buffer = np.empty(nbytes, dtype=np.uint8)
        with open(path, "rb", buffering=0) as f:
            view, done = memoryview(buffer), 0
            while done < nbytes:
                done += f.readinto(view[done:])

    out["read"] = _timed(read)[0]
    if cold and drop_caches():
        out["read cold"] = _timed(read)[0]
    os.unlink(path)
    return out


def _traced(fn: Callable[..., Any], *args: Any) -> tuple[float, float]:
    """MB that ``fn(*args)`` leaves allocated and its peak, as NumPy and Python report them
    to tracemalloc (a run of its own: tracing slows allocations down)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = fn(*args)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return (current - before) / 1e6, (peak - before) / 1e6


def measure_npoptim(folder: str, values: list[np.ndarray], cold: bool) -> dict[str, float]:
    opt = npoptim_optimizer(values)
    path = os.path.join(folder, "npoptim.npz")
    out = {"state_dict MB": _traced(opt.state_dict)[0]}
    out["save peak MB"] = _traced(lambda: npoptim.save({"optimizer": opt.state_dict()}, path))[1]
    gc.collect()
    out["state_dict"], sd = _timed(opt.state_dict)
    out["save"] = _timed(npoptim.save, {"optimizer": sd}, path)[0]
    del sd
    gc.collect()
    out["load"], loaded = _timed(lambda: npoptim.load(path))
    out["load_state_dict"] = _timed(opt.load_state_dict, loaded["optimizer"])[0]
    del loaded
    if NPOPTIM_VERIFY:
        out["load verify=False"] = _timed(lambda: npoptim.load(path, verify=False))[0]
    if cold and drop_caches():
        out["load cold"] = _timed(lambda: npoptim.load(path))[0]
    if NPOPTIM_MMAP:
        out["load mmap"], mapped = _timed(lambda: npoptim.load(path, mmap=True))
        out["load_state_dict mmap"] = _timed(opt.load_state_dict, mapped["optimizer"])[0]
        del mapped
    os.unlink(path)
    return out


def measure_torch(folder: str, values: list[np.ndarray], cold: bool) -> dict[str, float]:
    opt = torch_optimizer(values)
    gc.collect()
    rss = _rss()
    t, sd = _timed(opt.state_dict)
    out = {"state_dict": t, "state_dict MB": (_rss() - rss) / 1e6}
    path = os.path.join(folder, "torch.pt")
    out["save"] = _timed(torch.save, {"optimizer": sd}, path)[0]
    out["fsync"] = _timed(lambda: _fsync(path))[0]
    del sd
    gc.collect()
    out["load"], loaded = _timed(lambda: torch.load(path, weights_only=True))
    out["load_state_dict"] = _timed(opt.load_state_dict, loaded["optimizer"])[0]
    del loaded
    if cold and drop_caches():
        out["load cold"] = _timed(lambda: torch.load(path, weights_only=True))[0]
    out["load mmap"], mapped = _timed(lambda: torch.load(path, weights_only=True, mmap=True))
    out["load_state_dict mmap"] = _timed(opt.load_state_dict, mapped["optimizer"])[0]
    del mapped
    os.unlink(path)
    return out


def measure_safetensors(folder: str, values: list[np.ndarray], cold: bool) -> dict[str, float]:
    opt = npoptim_optimizer(values)  # the arrays safetensors saves: npoptim's state
    arrays = flat_arrays(opt.state_dict())
    path = os.path.join(folder, "state.safetensors")
    out = {"save": _timed(save_file, arrays, path)[0]}
    out["fsync"] = _timed(lambda: _fsync(path))[0]
    del arrays
    gc.collect()
    out["load"] = _timed(lambda: load_file(path))[0]
    if cold and drop_caches():
        out["load cold"] = _timed(lambda: load_file(path))[0]

    def mapped() -> dict[str, np.ndarray]:
        with safe_open(path, framework="np") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118

    out["load mmap"] = _timed(mapped)[0]
    os.unlink(path)
    return out


def with_ratios(out: dict[str, float], raw: dict[str, float]) -> dict[str, float]:
    """Adds the round's ratios to the bounds measured just before: the share of the
    write+fsync bound that save (with fsync) reaches, and load's time over the read's."""
    out["share of write+fsync"] = raw["write+fsync"] / (out["save"] + out.get("fsync", 0.0))
    out["load / read"] = out["load"] / raw["read"]
    if "load cold" in out and "read cold" in raw:
        out["load cold / read cold"] = out["load cold"] / raw["read cold"]
    return out


MEASURE = {"npoptim": measure_npoptim, "torch": measure_torch, "safetensors": measure_safetensors}


# ---------------------------------------------------------------------------- report
COLUMNS = ["state_dict", "state_dict MB", "save", "save peak MB", "fsync", "save+fsync", "load",
           "load verify=False", "load cold", "load mmap", "load_state_dict",
           "load_state_dict mmap"]  # fmt: skip


def _median(samples: list[dict[str, float]], key: str) -> float | None:
    values = [s[key] for s in samples if key in s]
    return statistics.median(values) if values else None


def summarize(samples: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for library, rounds in samples.items():
        keys = {k for r in rounds for k in r}
        row = {k: m for k in sorted(keys) if (m := _median(rounds, k)) is not None}
        if library in ("torch", "safetensors"):
            row["save+fsync"] = row["save"] + row["fsync"]
        elif library == "npoptim":
            row["save+fsync"] = row["save"]
        table[library] = row
    return table


def markdown(workload: str, nbytes: int, table: dict[str, dict[str, float]]) -> str:
    raw = table["raw"]
    lines = [
        f"**{workload}**: {nbytes / 1e6:.0f} MB of state. Bounds: write+fsync "
        f"{raw['write+fsync']:.3f} s ({nbytes / raw['write+fsync'] / 1e9:.2f} GB/s), read "
        f"{raw['read']:.3f} s ({nbytes / raw['read'] / 1e9:.2f} GB/s)"
        + (f", read cold {raw['read cold']:.3f} s" if "read cold" in raw else ""),
        "",
        "| library | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for library in LIBRARIES:
        row = table[library]
        cells = [
            "—" if k not in row else f"{row[k]:+.1f}" if k.endswith("MB") else f"{row[k]:.4f}"
            for k in COLUMNS
        ]
        lines.append(f"| {library} | " + " | ".join(cells) + " |")
    ratios = ["share of write+fsync", "load / read", "load cold / read cold"]
    lines += [
        "",
        "Against the bounds measured just before each library in the same round (median of "
        "the rounds' ratios); save includes fsync (torch's and safetensors' added):",
        "",
        "| library | " + " | ".join(ratios) + " | load / torch.load |",
        "|---" * (len(ratios) + 2) + "|",
    ]
    for library in LIBRARIES:
        row = table[library]
        cells = [f"{row[k]:.2f}" if k in row else "—" for k in ratios]
        cells.append(f"{row['load'] / table['torch']['load']:.2f}")
        lines.append(f"| {library} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
        "npoptim": npoptim.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    torch.set_num_threads(1)
    workloads: dict[str, list[Shape]] = {"W1": resnet50_shapes(), "big": [(args.values,)]}
    chosen = [w for w in args.workloads.split(",") if w]
    cold = not args.no_drop_caches
    info: dict[str, Any] = {"machine": machine(), "rounds": args.rounds,
                            "load_before": os.getloadavg(), "workloads": {}}  # fmt: skip
    folder = tempfile.mkdtemp(prefix="npoptim-ckpt-bench-", dir=args.dir)
    reports = []
    try:
        for workload in chosen:
            values = _values(workloads[workload])
            nbytes = 2 * sum(v.nbytes for v in values)  # exp_avg and exp_avg_sq
            WARM_BYTES[0] = 0 if args.no_warm_memory else 2 * nbytes
            samples: dict[str, list[dict[str, float]]] = {k: [] for k in ("raw", *LIBRARIES)}
            for r in range(-args.warmup, args.rounds):
                order = list(LIBRARIES)[r % 3 :] + list(LIBRARIES)[: r % 3]
                for library in order:  # the bounds right before each library: same conditions
                    raw = measure_raw(folder, nbytes, cold and r >= 0)
                    out = MEASURE[library](folder, values, cold and r >= 0)
                    if r >= 0:
                        samples["raw"].append(raw)
                        samples[library].append(with_ratios(out, raw))
                    gc.collect()
                print(f"{workload}: round {r + 1}/{args.rounds} done", flush=True)
            table = summarize(samples)
            info["workloads"][workload] = {"bytes": nbytes, "median_s": table,
                                           "samples": samples}  # fmt: skip
            reports.append(markdown(workload, nbytes, table))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    info["load_after"] = os.getloadavg()
    print("\nSeconds (median of the rounds); MB: memory added, as the docstring says\n")
    print("\n\n".join(reports))
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(info, f, indent=1)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
