"""Record the oracles' trajectories of the beyond-torch.optim optimizers as golden files.

For every case of tests/beyond_cases.py (or the names given), every configuration and both
float64 and float32, run the oracle (the ``beyond`` extra: pytorch_optimizer, ...) on the
problem of tests/beyond_harness.py and store its parameters after every step in
tests/golden/beyond/<name>.npz. Where a case declares it, the oracle runs with its
deliberate precision cut removed (SOAP: its QR in the parameters' dtype, not float32).
The runs are deterministic: rerunning with the same oracle versions rewrites the same bits
(``--check`` compares against the stored files instead of writing them).

Run: ``python tools/make_golden_beyond.py [--check] [NAME ...]``
(needs ``pip install -e ".[torch,beyond]"``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import beyond_harness as bh
from beyond_cases import CASES


def record(case: bh.Case) -> dict[tuple[str, str], bh.Trajectory]:
    return {
        (desc, dtype_name): bh.run_oracle(case, kwargs, bh.DTYPES[dtype_name])
        for desc, kwargs in case.configs
        for dtype_name in bh.DTYPE_NAMES
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"cases (default: all of {sorted(CASES)})")
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; known: {sorted(CASES)}")
    failed = 0
    for name in args.names or sorted(CASES):
        case = CASES[name]
        runs = record(case)
        if not args.check:
            bh.save_golden(case, runs)
            print(f"{name}: {len(runs)} trajectories -> {bh.golden_path(case)}")
            continue
        for (desc, dtype_name), trajectory in runs.items():
            stored = bh.load_golden(case, desc, dtype_name)
            same = all(
                np.array_equal(a, b)
                for sa, sb in zip(trajectory, stored, strict=True)
                for a, b in zip(sa, sb, strict=True)
            )
            if not same:
                failed += 1
                print(f"{name} [{desc}, {dtype_name}]: differs from the stored golden")
        print(f"{name}: checked {len(runs)} trajectories")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
