"""benchmarks/checkpoint.py runs as its docstring says and writes the JSON it promises.

A tiny run (the 'big' workload at 1,000 values, one round and no warm-up round, no cache
dropping) in a subprocess, as a user would start it. Nothing here looks at the times.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the benchmark compares with torch")
pytest.importorskip("safetensors", reason="the benchmark compares with safetensors")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "checkpoint.py"


def test_tiny_run_measures_every_library_and_the_bounds(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [
            *(sys.executable, str(SCRIPT), "--values", "1000", "--workloads", "big"),
            *("--rounds", "1", "--warmup", "0", "--no-drop-caches"),
            *("--dir", str(tmp_path), "--json", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    big = result["workloads"]["big"]
    assert big["bytes"] == 2 * 1000 * 4  # Adam's two float32 moments
    table = big["median_s"]
    assert set(table["raw"]) == {"write+fsync", "read"}
    assert {"state_dict", "state_dict MB", "save", "save peak MB", "load", "load mmap",
            "load_state_dict", "load_state_dict mmap"} <= set(table["npoptim"])  # fmt: skip
    assert {"state_dict", "save", "fsync", "load", "load mmap"} <= set(table["torch"])
    assert {"save", "fsync", "load", "load mmap"} <= set(table["safetensors"])
    for library in ("npoptim", "torch", "safetensors"):
        assert all(v > 0 for k, v in table[library].items() if not k.endswith("MB")), library
    assert "| npoptim |" in proc.stdout and "| safetensors |" in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # its files are removed
