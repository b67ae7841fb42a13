"""Record torch 2.13's Muon trajectories as the golden file tests/golden/Muon.npz.

Muon takes 2-D parameters only, so it runs the problem of tests/harness.py on the matrix
shapes of tests/muon_reference.py instead of the shared ones, for each CPU configuration of
torch's own tests (tests/configs.py) plus the options they leave out, in float64 and float32.
tests/test_muon.py compares npoptim with this file without needing torch.

Run: ``python tools/make_golden_muon.py`` (needs torch==2.13.0).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import harness
from configs import CONFIGS
from muon_reference import EXTRA_CONFIGS, SHAPES

DTYPE_NAMES = ["float64", "float32"]  # torch's Muon refuses complex parameters


def main() -> None:
    harness.SHAPES = SHAPES
    runs: dict[tuple[str, str], harness.Trajectory] = {}
    for desc, kwargs in CONFIGS["Muon"] + EXTRA_CONFIGS:
        for dtype_name in DTYPE_NAMES:
            runs[(desc, dtype_name)] = harness.run_torch("Muon", kwargs, harness.DTYPES[dtype_name])
    harness.save_golden("Muon", runs)
    print(f"Muon: {len(runs)} trajectories")


if __name__ == "__main__":
    main()
