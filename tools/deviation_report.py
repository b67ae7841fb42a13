"""Print the worst relative deviation from torch 2.13, per optimizer and dtype.

Runs every optimizer with a reference module in tests/references over every CPU
configuration of torch's tests (tests/configs.py) on the problem of tests/harness.py, in
npoptim and in torch, and reports ``harness.max_relative_error`` at its worst.

Run: ``python tools/deviation_report.py [Adam SGD ...]`` (needs torch==2.13.0).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from configs import CONFIGS, FLAGS
from harness import DTYPES, max_relative_error, run_npoptim, run_torch
from references import load_all


def main(names: list[str]) -> None:
    print(f"{'optimizer':<12} {'dtype':<11} {'worst rel. deviation':>22}  config")
    for name in names or list(load_all()):
        for dtype_name, dtype in DTYPES.items():
            if dtype_name.startswith("complex") and not FLAGS[name]["supports_complex"]:
                continue
            worst, where = 0.0, ""
            for desc, kwargs in CONFIGS[name]:
                actual, _ = run_npoptim(name, kwargs, dtype)
                error = max_relative_error(actual, run_torch(name, kwargs, dtype))
                if error >= worst:
                    worst, where = error, desc
            print(f"{name:<12} {dtype_name:<11} {worst:>22.3e}  {where}")


if __name__ == "__main__":
    main(sys.argv[1:])
