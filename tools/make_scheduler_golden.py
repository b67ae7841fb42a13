"""Record torch 2.13's learning-rate sequences as golden files under tests/golden/schedulers/.

Runs every case of ``CASES`` and ``RESUME_CASES`` (tests/test_lr_scheduler.py) with torch's
schedulers and optimizers and stores, per case, the lrs, momenta and ``get_last_lr()`` of
each epoch in ``sequences.npz`` (keys ``"<case>|lr"`` etc., float64 arrays of shape
``(epochs, 2)``; momenta only where the groups have one, ``last_lr`` only where it differs
from the groups' lrs) and the warnings torch raised in ``warnings.json``. Tests compare npoptim
with these files without needing torch.

Run: ``PYTHONPATH=src python tools/make_scheduler_golden.py`` (needs torch==2.13.0).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_lr_scheduler import (
    CASES,
    RESUME_CASES,
    SEQUENCES,
    WARNINGS,
    run_case,
    run_resume_case,
    torch_api,
)


def main() -> None:
    import torch

    api = torch_api()
    arrays: dict[str, np.ndarray] = {}
    warned: dict[str, dict[str, int]] = {}
    for case in CASES:
        result = run_case(api, case)
        arrays[f"{case.name}|lr"] = result["lr"]
        if not np.isnan(result["momentum"]).all():
            arrays[f"{case.name}|momentum"] = result["momentum"]
        if not np.array_equal(result["last_lr"], result["lr"]):
            arrays[f"{case.name}|last_lr"] = result["last_lr"]
        warned[case.name] = result["warnings"]
    for resume_case in RESUME_CASES:
        arrays[f"{resume_case.name}|lr"] = run_resume_case(api, resume_case)["lr"]

    SEQUENCES.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(SEQUENCES, **arrays)  # type: ignore[arg-type]
    meta = {"torch": torch.__version__, "warnings": warned}
    WARNINGS.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    print(f"{len(CASES)} cases, {len(RESUME_CASES)} resume cases -> {SEQUENCES.parent}")


if __name__ == "__main__":
    main()
