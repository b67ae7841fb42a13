"""Print the deviation table of the beyond-torch.optim optimizers from their oracles.

For every case of tests/beyond_cases.py that npoptim implements (or the names given), every
configuration and float64/float32: the largest relative deviation of npoptim's trajectory
from the oracle's (live, in the parameters' dtype throughout), and from the oracle as
shipped where the case declares a deliberate precision cut (SOAP's float32 QR).

Run: ``python tools/beyond_deviation_report.py [NAME ...]`` (needs the ``beyond`` extra).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import beyond_harness as bh
import npoptim
from beyond_cases import CASES


def main(names: list[str]) -> None:
    print("| optimizer | configuration | float64 | float32 | float64, oracle as shipped |")
    print("|---|---|---|---|---|")
    for name in names or sorted(CASES):
        case = CASES[name]
        if not hasattr(npoptim, name):
            continue  # a reference and goldens only, so far
        for desc, kwargs in case.configs:
            row = []
            for dtype_name in bh.DTYPE_NAMES:
                dtype = bh.DTYPES[dtype_name]
                actual, _ = bh.run_npoptim(case, kwargs, dtype)
                row.append(bh.max_relative_error(actual, bh.run_oracle(case, kwargs, dtype)))
            shipped = "same"
            if case.exact_oracle is not None:
                actual, _ = bh.run_npoptim(case, kwargs, bh.DTYPES["float64"])
                expected = bh.run_oracle(case, kwargs, bh.DTYPES["float64"], exact=False)
                shipped = f"{bh.max_relative_error(actual, expected):.1e}"
            print(f"| {name} | {desc} | {row[0]:.1e} | {row[1]:.1e} | {shipped} |")


if __name__ == "__main__":
    main(sys.argv[1:])
