"""Record torch 2.13's trajectories on the test problem as golden files under tests/golden/.

For each optimizer named on the command line (default: every optimizer of npoptim's registry,
``src/npoptim/_kernels/registry.py``, but LBFGS, SparseAdam and Muon, which have tools of
their own),
each CPU configuration of torch's own tests (tests/configs.py) and each dtype the optimizer
supports, run torch.optim on the problem of tests/harness.py and store the parameters after
every step in ``tests/golden/<Optimizer>.npz``. Tests compare npoptim with these files
without needing torch.

Run: ``python tools/make_golden.py [Adam SGD ...]`` (needs torch==2.13.0).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from configs import CONFIGS, FLAGS
from harness import DTYPES, Trajectory, run_torch, save_golden
from npoptim._kernels import registry

OWN_TOOLS = {"LBFGS", "SparseAdam", "Muon"}  # make_golden_lbfgs_sparse.py, make_golden_muon.py
# the optimizers torch.optim lacks (Lion, ...) have no torch configs: make_golden_beyond.py
DEFAULT = [n for n in registry.optimizer_names() if n in CONFIGS and n not in OWN_TOOLS]


def dtype_names(name: str) -> list[str]:
    names = ["float64", "float32"]
    if FLAGS[name]["supports_complex"]:
        names.append("complex128")
    return names


def main(names: list[str]) -> None:
    for name in names:
        runs: dict[tuple[str, str], Trajectory] = {}
        for desc, kwargs in CONFIGS[name]:
            for dtype_name in dtype_names(name):
                runs[(desc, dtype_name)] = run_torch(name, kwargs, DTYPES[dtype_name])
        save_golden(name, runs)
        print(f"{name}: {len(runs)} trajectories")


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
