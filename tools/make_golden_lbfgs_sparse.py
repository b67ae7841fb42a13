"""Record torch 2.13's LBFGS and SparseAdam runs as golden files under tests/golden/.

* ``tests/golden/LBFGS.npz``: for every case of ``tests/test_lbfgs.py`` (problem,
  configuration, number of steps) the parameters after each step, stacked per parameter
  (``<case>|<j>``), and the final ``func_evals`` and ``n_iter`` (``<case>|counters``);
  for every line search of ``LINE_SEARCHES`` there, the accepted step, the loss there and
  the number of evaluations (``line_search|<search>``).
* ``tests/golden/SparseAdam.npz``: for every case of ``tests/test_sparse_adam.py`` the
  tables after each step (``<case>|<j>``).

The tests compare npoptim with these files without needing torch.

Run: ``python tools/make_golden_lbfgs_sparse.py`` (needs torch==2.13.0).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_lbfgs
import test_sparse_adam
from harness import GOLDEN_DIR


def record_lbfgs() -> int:
    arrays: dict[str, np.ndarray] = {}
    for problem, config, steps in test_lbfgs.CASES:
        fun, init = test_lbfgs.PROBLEMS[problem]
        run = test_lbfgs.run_torch(fun, init, test_lbfgs.CONFIGS[config], steps)
        key = test_lbfgs.case_id(problem, config, steps)
        for j in range(len(init)):
            arrays[f"{key}|{j}"] = np.stack([step[j] for step in run.trajectory])
        arrays[f"{key}|counters"] = np.array([run.func_evals, run.n_iter])
    for search in test_lbfgs.LINE_SEARCHES:
        key = f"line_search|{test_lbfgs.line_search_id(*search)}"
        arrays[key] = np.array(test_lbfgs.line_search_torch(*search))
    np.savez_compressed(GOLDEN_DIR / "LBFGS.npz", **arrays)  # type: ignore[arg-type]
    return len(test_lbfgs.CASES) + len(test_lbfgs.LINE_SEARCHES)


def record_sparse_adam() -> int:
    arrays: dict[str, np.ndarray] = {}
    for desc, kwargs, dtype_name in test_sparse_adam.GOLDEN_CASES:
        trajectory = test_sparse_adam.run_torch(kwargs, test_sparse_adam.DTYPES[dtype_name])
        for j in range(len(trajectory[0])):
            key = test_sparse_adam.golden_key(desc, dtype_name, j)
            arrays[key] = np.stack([step[j] for step in trajectory])
    np.savez_compressed(GOLDEN_DIR / "SparseAdam.npz", **arrays)  # type: ignore[arg-type]
    return len(test_sparse_adam.GOLDEN_CASES)


def main() -> None:
    GOLDEN_DIR.mkdir(exist_ok=True)
    print(f"LBFGS: {record_lbfgs()} runs")
    print(f"SparseAdam: {record_sparse_adam()} runs")


if __name__ == "__main__":
    main()
