"""The benchmark script runs as its docstring says and writes the JSON it promises.

A small run (W2 and W4 only, two optimizers, the quick settings) in a subprocess, as a user
would start it. Nothing here looks at the times: timings are the benchmark's business, not
the tests' (a test that asserted one would fail on a busy machine, not on slow code).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the benchmark compares with torch")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "step_time.py"


def test_quick_run_writes_every_variant_and_a_ratio_table(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [
            *(sys.executable, str(SCRIPT), "--quick", "--threads", "1"),
            *("--workloads", "W2,W4", "--optimizers", "SGD,Rprop"),
            *("--json", str(out), "--markdown"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["threads"] == 1 and result["quick"] is True
    rows = {(r["workload"], r["optimizer"]): r for r in result["results"]}
    assert set(rows) == {("W2", "SGD"), ("W2", "Rprop"), ("W4", "SparseAdam")}
    npoptim_paths = {"npoptim for-loop", "npoptim foreach", "npoptim default"}
    if result["machine"].get("numba"):
        npoptim_paths.add("npoptim fused")
    # torch has a fused SGD but no fused Rprop
    assert set(rows["W2", "SGD"]["times_ms"]) == npoptim_paths | {
        "torch for-loop", "torch foreach", "torch fused"}  # fmt: skip
    assert set(rows["W2", "Rprop"]["times_ms"]) == npoptim_paths | {
        "torch for-loop", "torch foreach"}  # fmt: skip
    assert set(rows["W4", "SparseAdam"]["times_ms"]) == {"torch for-loop", "npoptim default"}
    for row in rows.values():
        for key, samples in row["samples_ms"].items():
            assert len(samples) >= 5 and all(s > 0 for s in samples), key
    assert "| W2 | SGD |" in proc.stdout  # the markdown table
