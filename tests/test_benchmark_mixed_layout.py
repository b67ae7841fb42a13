"""benchmarks/mixed_layout.py runs as its docstring says: one round in a subprocess, every
measurement printed with the two ratios. Nothing here looks at the times."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba", reason="the benchmark times the compiled path")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "mixed_layout.py"


def test_one_round_prints_every_measurement_and_the_estimate() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--rounds", "1"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in (
        "matched step",
        "mixed step",
        "transposed copy of 16 MB",
        "read of 16 MB in order",
    ):
        assert re.search(rf"^{name} +\d+\.\d\d ms$", proc.stdout, re.MULTILINE), proc.stdout
    assert re.search(r"^mixed / matched: \d+\.\d\d$", proc.stdout, re.MULTILINE)
    assert re.search(r"x the matched step$", proc.stdout, re.MULTILINE)
