"""benchmarks/sharded_checkpoint.py runs as its docstring says: a tiny run (the first 1,000
values of W1, one round) at 4, 2 and 1 ranks in a subprocess. Nothing here looks at the
times; the bytes written are checked against the state's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mpi4py", reason="the mpi extra")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sharded_checkpoint.py"


def test_tiny_run_measures_every_world_size_and_the_bytes(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [
            *(sys.executable, str(SCRIPT), "--values", "1000", "--rounds", "1"),
            *("--dir", str(tmp_path), "--json", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| 4 | sharded save |" in proc.stdout
    assert "| 1 | plain Adam loads the 4-rank sharded checkpoint |" in proc.stdout
    jobs = json.loads(out.read_text())["jobs"]
    assert [j["ranks"] for j in jobs] == [4, 2, 1]
    for j in jobs:
        assert sum(j["state_bytes_per_rank"]) == j["state_bytes"] > 0
        # every value once: beyond the single consolidated file, only headers (a few kB per
        # extra file), far less than the smallest state array (2 x 9,408 float32 values)
        assert j["state_bytes"] < j["sharded_bytes_written"]
        assert j["sharded_bytes_written"] - j["consolidated_bytes_written"] < 4096 * j["ranks"]
        assert all(len(s) == 1 for s in j["samples_s"].values())
