"""Muon against its reference, torch's golden trajectories and live torch.

Muon takes matrices only, so it runs the problem of ``tests/harness.py`` on the 2-D shapes of
``tests/muon_reference.py`` (a wide, a tall and a square matrix) rather than on the shared
matrix/vector/scalar problem of ``tests/test_algorithms.py``. torch iterates Newton–Schulz
in bfloat16 and npoptim in the parameter's dtype, hence the wider tolerance against torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import harness
import muon_reference
from configs import CONFIGS
from harness import (
    DTYPES,
    golden_path,
    load_golden,
    max_relative_error,
    run_npoptim,
    run_reference,
    run_torch,
)
from references import DEFAULT_TOLERANCE

ALL_CONFIGS = CONFIGS["Muon"] + muon_reference.EXTRA_CONFIGS
CASES = [
    pytest.param(kwargs, desc, dtype_name, id=f"Muon-{desc}-{dtype_name}")
    for desc, kwargs in ALL_CONFIGS
    for dtype_name in ["float64", "float32"]
]


@pytest.fixture(autouse=True)
def _matrix_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "SHAPES", muon_reference.SHAPES)


@pytest.mark.parametrize(("kwargs", "desc", "dtype_name"), CASES)
def test_matches_reference(kwargs: dict[str, Any], desc: str, dtype_name: str) -> None:
    dtype = DTYPES[dtype_name]
    actual, _ = run_npoptim("Muon", kwargs, dtype)
    expected = run_reference(muon_reference.reference, kwargs, dtype)
    assert max_relative_error(actual, expected) <= DEFAULT_TOLERANCE[dtype_name]


@pytest.mark.parametrize(("kwargs", "desc", "dtype_name"), CASES)
def test_matches_torch_golden(kwargs: dict[str, Any], desc: str, dtype_name: str) -> None:
    if not golden_path("Muon").exists():
        pytest.fail("no golden file for Muon: run tools/make_golden_muon.py")
    actual, _ = run_npoptim("Muon", kwargs, DTYPES[dtype_name])
    expected = load_golden("Muon", desc, dtype_name)
    assert max_relative_error(actual, expected) <= muon_reference.TOLERANCE[dtype_name]


@pytest.mark.parametrize(("kwargs", "desc", "dtype_name"), CASES)
def test_matches_torch_live(kwargs: dict[str, Any], desc: str, dtype_name: str) -> None:
    pytest.importorskip("torch")
    dtype = DTYPES[dtype_name]
    actual, _ = run_npoptim("Muon", kwargs, dtype)
    expected = run_torch("Muon", kwargs, dtype)
    assert max_relative_error(actual, expected) <= muon_reference.TOLERANCE[dtype_name]


def test_matches_torch_to_rounding_when_torch_skips_bfloat16(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The whole deviation from torch is its bfloat16 Newton–Schulz: without the cast, torch
    # computes npoptim's float64 trajectory to rounding.
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.Tensor, "bfloat16", lambda self: self.clone())
    for desc, kwargs in ALL_CONFIGS:
        actual, _ = run_npoptim("Muon", kwargs, np.float64)
        expected = run_torch("Muon", kwargs, np.float64)
        assert max_relative_error(actual, expected) <= 1e-13, desc
