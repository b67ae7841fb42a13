"""Print the worst relative deviation from torch 2.13 of every scheduler's learning rates and
momenta, over every case of tests/test_lr_scheduler.py (two param groups, 100 epochs).

Run: ``python tools/scheduler_deviation_report.py`` (needs torch==2.13.0).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_lr_scheduler import CASES, npoptim_api, run_case, torch_api


def relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    """The largest |ours - theirs| / |theirs| (absolute where torch's value is 0)."""
    ours, theirs = np.asarray(ours, float), np.asarray(theirs, float)
    scale = np.where(theirs == 0, 1.0, np.abs(theirs))
    both_nan = np.isnan(ours) & np.isnan(theirs)
    gap = np.where(both_nan, 0.0, np.abs(ours - theirs) / scale)
    return float(np.max(gap, initial=0.0))


def main() -> None:
    worst: dict[str, tuple[float, int]] = {}
    ours_api, torch_api_ = npoptim_api(), torch_api()
    for case in CASES:
        ours, theirs = run_case(ours_api, case), run_case(torch_api_, case)
        dev = max(relative(ours[k], theirs[k]) for k in ("lr", "momentum", "last_lr"))
        name = case.name.split("/")[0]
        old, count = worst.get(name, (0.0, 0))
        worst[name] = (max(old, dev), count + 1)
    print(f"{'scheduler':<28} {'cases':>5} {'worst rel. deviation':>22}")
    for name, (dev, count) in sorted(worst.items()):
        print(f"{name:<28} {count:>5} {dev:>22.3g}")


if __name__ == "__main__":
    main()
