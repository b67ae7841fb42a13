"""The elementwise newcomers (Lion) against their oracles (golden and live), their
papers' references, and npoptim's conventions (resume from disk, maximize, validation).

The problem is ``tests/beyond_harness.py``'s; the configurations are the oracles' own tests'
(``tests/beyond_cases.py``). That every path (for-loop, multi-tensor, compiled) gives the same
bits is ``tests/test_paths.py``'s, which takes them from the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import npoptim
from beyond_cases import LION
from beyond_harness import (
    DTYPE_NAMES,
    DTYPES,
    TOLERANCE,
    Case,
    assert_identical,
    golden_path,
    load_golden,
    max_relative_error,
    resumed_run,
    run_npoptim,
    run_oracle,
    run_reference,
)
from npoptim import Parameter, SparseGrad
from references.beyond import lion

CASES = [LION]


def _params(cases: list[Case]) -> list[Any]:
    return [
        pytest.param(case, kwargs, desc, dtype_name, id=f"{case.name}-{desc}-{dtype_name}")
        for case in cases
        for desc, kwargs in case.configs
        for dtype_name in DTYPE_NAMES
    ]


@pytest.mark.parametrize(("case", "kwargs", "desc", "dtype_name"), _params(CASES))
def test_matches_oracle_golden(
    case: Case, kwargs: dict[str, Any], desc: str, dtype_name: str
) -> None:
    assert golden_path(case).exists(), "run tools/make_golden_beyond.py"
    actual, _ = run_npoptim(case, kwargs, DTYPES[dtype_name])
    expected = load_golden(case, desc, dtype_name)
    assert max_relative_error(actual, expected) <= TOLERANCE[dtype_name]


@pytest.mark.parametrize(("case", "kwargs", "desc", "dtype_name"), _params(CASES))
def test_matches_oracle_live(
    case: Case, kwargs: dict[str, Any], desc: str, dtype_name: str
) -> None:
    pytest.importorskip(case.oracle_module)
    actual, _ = run_npoptim(case, kwargs, DTYPES[dtype_name])
    expected = run_oracle(case, kwargs, DTYPES[dtype_name])
    assert max_relative_error(actual, expected) <= TOLERANCE[dtype_name]


@pytest.mark.parametrize(("case", "kwargs", "desc", "dtype_name"), _params(CASES))
def test_resumed_from_disk_continues_bit_for_bit(
    case: Case, kwargs: dict[str, Any], desc: str, dtype_name: str, tmp_path: Path
) -> None:
    dtype = DTYPES[dtype_name]
    straight, straight_opt = run_npoptim(case, kwargs, dtype)
    params, opt = resumed_run(case, kwargs, dtype, tmp_path / "ckpt.npz")
    assert_identical(params, straight[-1])
    assert_identical(opt.state_dict(), straight_opt.state_dict())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_maximize_is_minimize_on_the_negated_gradient_and_leaves_the_grad_alone(case: Case) -> None:
    rng = np.random.default_rng(3)
    start, grads = rng.standard_normal((2, 4)), rng.standard_normal((3, 2, 4))
    up, down = Parameter(start.copy()), Parameter(start.copy())
    opt_up = case.build_npoptim([up], {"lr": 0.1, "weight_decay": 0.01, "maximize": True})
    opt_down = case.build_npoptim([down], {"lr": 0.1, "weight_decay": 0.01})
    for g in grads:
        up.grad, down.grad = g.copy(), -g
        opt_up.step()
        opt_down.step()
        assert np.array_equal(up.grad, g)
    assert np.array_equal(up, down)


# ---------------------------------------------------------------------------- Lion
@pytest.mark.parametrize(("case", "kwargs", "desc", "dtype_name"), _params([LION]))
def test_lion_matches_paper_reference(
    case: Case, kwargs: dict[str, Any], desc: str, dtype_name: str
) -> None:
    actual, _ = run_npoptim(case, kwargs, DTYPES[dtype_name])
    expected = run_reference(lion.reference, case, kwargs, DTYPES[dtype_name])
    assert max_relative_error(actual, expected) <= {"float64": 1e-10, "float32": 1e-5}[dtype_name]


def test_lion_first_step_is_a_signed_step_after_decay() -> None:
    # With zero momentum the first update is sign(g): θ(1 - ηλ) - η sign(g).
    w = Parameter(np.array([1.0, -2.0, 0.5]))
    opt = npoptim.Lion([w], lr=0.1, weight_decay=0.5)
    w.grad = np.array([0.3, -0.1, 0.0])
    opt.step()
    np.testing.assert_allclose(w, [0.95 - 0.1, -1.9 + 0.1, 0.475], rtol=1e-15)
    np.testing.assert_allclose(opt.state[w]["exp_avg"], [0.003, -0.001, 0.0], rtol=1e-14)


def test_lion_decoupled_decay_uses_the_constructor_lr() -> None:
    # lion-pytorch: λ / η0, with η0 the constructor's lr, also for a group with its own lr.
    w, v = Parameter(np.array([2.0])), Parameter(np.array([2.0]))
    opt = npoptim.Lion(
        [{"params": [w]}, {"params": [v], "lr": 0.01}],
        lr=0.1, weight_decay=0.2, decoupled_weight_decay=True,
    )  # fmt: skip
    w.grad, v.grad = np.zeros(1), np.zeros(1)
    opt.step()
    np.testing.assert_allclose(w, [2.0 * (1 - 0.1 * 0.2 / 0.1)], rtol=1e-15)
    np.testing.assert_allclose(v, [2.0 * (1 - 0.01 * 0.2 / 0.1)], rtol=1e-15)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0.0}, "Invalid learning rate: 0.0"),
        ({"betas": (1.5, 0.9)}, r"Invalid beta parameter at index 0: 1.5"),
        ({"betas": (0.9, -0.1)}, r"Invalid beta parameter at index 1: -0.1"),
        ({"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
    ],
)
def test_lion_invalid_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        npoptim.Lion([Parameter(np.zeros(2))], **kwargs)


def test_lion_sparse_grad_is_refused_before_any_change() -> None:
    w = Parameter(np.ones((3, 2)))
    opt = npoptim.Lion([w])
    w.grad = SparseGrad(np.array([0]), np.ones((1, 2)), (3, 2))
    with pytest.raises(RuntimeError, match="Lion does not support sparse gradients"):
        opt.step()
    assert len(opt.state) == 0 and np.array_equal(w, np.ones((3, 2)))


@pytest.mark.parametrize("name", [case.name for case in CASES])
def test_is_exported_with_its_functional_kernel(name: str) -> None:
    module = getattr(npoptim, name).__module__
    kernel = module.rsplit(".", 1)[1]
    assert getattr(npoptim.functional, kernel) is getattr(
        __import__(module, fromlist=[kernel]), kernel
    )
