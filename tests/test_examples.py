"""Every script in examples/ runs in quick mode, writes its files, and reaches its floor.

Each example runs as the README says, ``python examples/NAME.py --quick --out DIR``, in a
subprocess; its JSON summary is then checked. The examples need the ``examples`` extra
(scikit-learn, matplotlib, tqdm, autograd, scipy); without it this module is skipped.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

for _module in ("sklearn", "matplotlib", "tqdm", "autograd", "scipy"):
    pytest.importorskip(_module, reason="the examples need the 'examples' extra")

import npoptim  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_example(name: str, out: Path) -> tuple[str, dict[str, Any]]:
    """Run ``examples/<name>.py --quick --out <out>``; return its stdout and JSON summary."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    png = out / f"{name}.png"
    assert png.read_bytes().startswith(PNG_SIGNATURE), f"{png} is not a PNG"
    summary: dict[str, Any] = json.loads((out / f"{name}.json").read_text())
    assert summary["quick"] is True
    return proc.stdout, summary


def test_quickstart_trains_every_optimizer_above_85_percent(tmp_path: Path) -> None:
    stdout, summary = run_example("quickstart", tmp_path)
    results = {r["optimizer"]: r for r in summary["results"]}
    assert set(results) == {
        "SGD+momentum",
        "Adam",
        "AdamW",
        "RMSprop",
        "Adagrad",
        "Lion",
        "AdamWScheduleFree",
    }
    for name, r in results.items():
        assert r["test_acc"] > 0.85, f"{name}: test accuracy {r['test_acc']}"
        assert len(r["curves"]["train_loss"]) == summary["epochs"]
        assert r["curves"]["train_loss"][-1] < r["curves"]["train_loss"][0]
        assert name in stdout


def test_lbfgs_reaches_scipys_minimum(tmp_path: Path) -> None:
    _, summary = run_example("lbfgs_logistic_regression", tmp_path)
    runs = {r["method"]: r for r in summary["runs"]}
    wolfe = runs["npoptim strong_wolfe"]
    assert wolfe["rel_diff_vs_scipy"] <= 1e-6
    assert wolfe["max_abs_param_diff_vs_scipy"] < 1e-4
    assert wolfe["test_acc"] > 0.9


def test_sparse_embeddings_fit_far_below_the_mean_predictor(tmp_path: Path) -> None:
    _, summary = run_example("sparse_embeddings", tmp_path)
    results = {r["optimizer"]: r for r in summary["results"]}
    baseline = summary["baseline_rmse"]
    assert results["SparseAdam"]["test_rmse"] < 0.3 * baseline
    assert results["Adagrad (sparse)"]["test_rmse"] < 0.3 * baseline


def test_resumed_run_continues_the_loss_curve_exactly(tmp_path: Path) -> None:
    stdout, summary = run_example("resume_from_checkpoint", tmp_path)
    assert summary["curves_equal"] is True
    assert summary["params_equal"] is True
    assert summary["max_abs_loss_diff"] == 0.0
    assert summary["resumed"] == summary["straight"]
    with np.load(tmp_path / "checkpoint.npz", allow_pickle=False) as archive:  # no pickle
        assert "__manifest__" in archive.files
    assert "losses identical: True" in stdout


def test_autograd_mlp_fits_the_target(tmp_path: Path) -> None:
    _, summary = run_example("autograd_mlp", tmp_path)
    assert len(summary["fits"]) == 2
    for name, fit in summary["fits"].items():
        assert fit["rmse_vs_f"] < 0.1, f"{name}: RMSE {fit['rmse_vs_f']}"


def test_rosenbrock_race_runs_every_optimizer(tmp_path: Path) -> None:
    _, summary = run_example("rosenbrock_race", tmp_path)
    results = {r["optimizer"]: r for r in summary["results"]}
    raced = {name.split()[0] for name in results}
    exported = {
        name
        for name in npoptim.__all__
        if inspect.isclass(obj := getattr(npoptim, name))
        and issubclass(obj, npoptim.Optimizer)
        and obj is not npoptim.Optimizer
    }
    assert exported <= raced, f"not in the race: {sorted(exported - raced)}"
    start_f = 12.5  # f(-1.5, 2)
    for name, r in results.items():
        assert r["final_f"] is not None and math.isfinite(r["final_f"]), name
        assert r["final_f"] < start_f, f"{name} ended above its start: {r['final_f']}"
        assert len(r["path"]) == summary["steps"] + 1
    assert results["LBFGS strong_wolfe"]["final_f"] < 1e-8


@pytest.mark.skipif(os.environ.get("NPOPTIM_MPI_TESTS", "1") == "0", reason="NPOPTIM_MPI_TESTS=0")
def test_data_parallel_loss_curve_equals_the_single_process_one(tmp_path: Path) -> None:
    """``mpiexec -n 2 python -m mpi4py examples/data_parallel.py --quick``: ZeRO Adam with a
    scheduler on two ranks follows the one-process run to float32 rounding."""
    from mpi.launch import launch

    script = EXAMPLES / "data_parallel.py"
    proc = launch(2, "-m", "mpi4py", str(script), "--quick", "--out", str(tmp_path), timeout=300)
    assert proc.returncode == 0, f"data_parallel failed:\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "data_parallel.png").read_bytes().startswith(PNG_SIGNATURE)
    summary = json.loads((tmp_path / "data_parallel.json").read_text())
    assert summary["ranks"] == 2 and summary["quick"] is True
    assert summary["max_curve_diff"] < 1e-5 * max(summary["curve_one_process"])
    assert summary["curve"][-1] < 0.1 * summary["curve"][0]
    per_rank = summary["state_bytes_per_rank"]
    assert sum(per_rank) == summary["state_bytes_one_process"] and min(per_rank) > 0
    assert "Adam state (bytes)" in proc.stdout
