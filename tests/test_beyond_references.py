"""The references of Lion, LAMB and LARS (tests/references/beyond) against their oracles.

This file checks that the references and the oracles' golden trajectories agree, so that
the class tests (``tests/test_beyond_elementwise.py``) can use either. LAMB's oracle departs from its paper in three
ways its reference names (``lamb.ORACLE_VARIANT``); the reference runs with them here, and
without them (the paper) it is shown to differ; so is LARS's trust ratio of vectors
(``lars.ORACLE_VARIANT``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

import beyond_harness
from beyond_cases import LAMB, LARS, LION
from beyond_harness import (
    DTYPE_NAMES,
    DTYPES,
    Case,
    golden_path,
    load_golden,
    max_relative_error,
    run_oracle,
    run_reference,
)
from references.beyond import lamb, lars, lion

#: Each case with its reference, the options that make the reference the oracle's variant,
#: and the configurations the reference does not cover (with why).
REFERENCES: list[tuple[Case, Any, dict[str, Any], dict[str, str]]] = [
    (LION, lion.reference, {}, {}),
    (
        LAMB,
        lamb.reference,
        lamb.ORACLE_VARIANT,
        {
            "recipe: pre_norm, eps 1e-8": "scales by the global gradient norm",
            "recipe: rectify, degenerated_to_sgd": "RAdam's rectification",
        },
    ),
    (LARS, lars.reference, lars.ORACLE_VARIANT, {}),
]
#: float32 runs against the float64 reference: the oracle's float32 rounding, accumulated.
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}


def _cases() -> list[Any]:
    return [
        pytest.param(
            case, ref, variant, kwargs, desc, dtype_name, id=f"{case.name}-{desc}-{dtype_name}"
        )
        for case, ref, variant, skipped in REFERENCES
        for desc, kwargs in case.configs
        if desc not in skipped
        for dtype_name in DTYPE_NAMES
    ]


@pytest.mark.parametrize(("case", "ref", "variant", "kwargs", "desc", "dtype_name"), _cases())
def test_reference_matches_oracle_live(
    case: Case,
    ref: Any,
    variant: dict[str, Any],
    kwargs: dict[str, Any],
    desc: str,
    dtype_name: str,
) -> None:
    # Every parameter has a grad at every step: the oracle counts LAMB's steps per group,
    # the reference per parameter, and the two agree only then.
    pytest.importorskip(case.oracle_module)
    dtype = DTYPES[dtype_name]
    expected = run_oracle(case, kwargs, dtype, missing=None)
    actual = run_reference(ref, case, {**kwargs, **variant}, dtype, missing=None)
    assert max_relative_error(actual, expected) <= TOLERANCE[dtype_name]


@pytest.mark.parametrize(("case", "ref", "variant", "kwargs", "desc", "dtype_name"), _cases())
def test_reference_matches_oracle_golden(
    case: Case,
    ref: Any,
    variant: dict[str, Any],
    kwargs: dict[str, Any],
    desc: str,
    dtype_name: str,
) -> None:
    # The golden problem has one missed grad; LAMB's step count is the group's, so the
    # parameter that missed it is left out there (Lion keeps no count).
    assert golden_path(case).exists(), "run tools/make_golden_beyond.py"
    dtype = DTYPES[dtype_name]
    expected = load_golden(case, desc, dtype_name)
    actual = run_reference(ref, case, {**kwargs, **variant}, dtype)
    kept = [j for j in range(len(expected[0])) if case is not LAMB or j != case.missing[1]]  # type: ignore[index]
    assert (
        max_relative_error(
            [[s[j] for j in kept] for s in actual], [[s[j] for j in kept] for s in expected]
        )
        <= TOLERANCE[dtype_name]
    )


@pytest.mark.parametrize(
    ("departure", "kwargs", "scale"),
    [
        ("bias_correction", {"lr": 1e-1, "weight_decay": 1e-3}, 1.0),
        ("trust_eps", {"lr": 1e-1, "eps": 0.5}, 1.0),
        ("trust_clamp", {"lr": 1e-1}, 20.0),  # parameters whose norm exceeds the bound 10
    ],
)
def test_lamb_oracle_departs_from_the_paper(
    departure: str, kwargs: dict[str, Any], scale: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each of the three named departures changes the trajectory on its own: without it the
    # reference no longer follows the oracle.
    pytest.importorskip(LAMB.oracle_module)
    case = dataclasses.replace(LAMB, shapes=lambda kw: [(3, 4)])
    original = beyond_harness.initial_values

    def scaled(shapes: Any, dtype: Any, seed: int = 0) -> list[np.ndarray]:
        return [np.asarray(scale * v, dtype=dtype) for v in original(shapes, dtype, seed)]

    monkeypatch.setattr(beyond_harness, "initial_values", scaled)
    expected = run_oracle(case, kwargs, np.float64, missing=None)
    oracle_variant = {**kwargs, **lamb.ORACLE_VARIANT}
    with_all = run_reference(lamb.reference, case, oracle_variant, np.float64, missing=None)
    del oracle_variant[departure]  # the paper's choice for this one
    without = run_reference(lamb.reference, case, oracle_variant, np.float64, missing=None)
    assert max_relative_error(with_all, expected) <= 1e-10
    assert max_relative_error(without, expected) > 1e-6


def test_lion_update_is_a_signed_step() -> None:
    # From the paper: with zero momentum the first step is lr times the sign of the gradient.
    p, g = np.array([1.0, -2.0, 0.5]), np.array([0.3, -0.1, 0.0])
    assert np.array_equal(lion.reference(p, g, {}, 1, lr=0.1), [0.9, -1.9, 0.5])


@pytest.mark.parametrize("kwargs", [{"lr": 5e-1, "weight_decay": 1e-3}, {"lr": 1e-1}])
def test_lars_oracle_skips_the_trust_ratio_of_vectors_unlike_the_paper(
    kwargs: dict[str, Any],
) -> None:
    # With the paper's trust ratio on every parameter, the vector no longer follows the
    # oracle; its matrices still do.
    pytest.importorskip(LARS.oracle_module)
    expected = run_oracle(LARS, kwargs, np.float64, missing=None)
    paper = {**kwargs, **lars.ORACLE_VARIANT, "only_matrices": False}
    actual = run_reference(lars.reference, LARS, paper, np.float64, missing=None)
    vector = [j for j, shape in enumerate(LARS.shapes(kwargs)) if len(shape) < 2]
    matrices = [j for j, shape in enumerate(LARS.shapes(kwargs)) if len(shape) >= 2]

    def pick(run: list[Any], js: list[int]) -> list[Any]:
        return [[step[j] for j in js] for step in run]

    assert max_relative_error(pick(actual, matrices), pick(expected, matrices)) <= 1e-10
    assert max_relative_error(pick(actual, vector), pick(expected, vector)) > 1e-3
