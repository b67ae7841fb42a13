"""The elementwise newcomers (Lion, LAMB, AdEMAMix, AdamWScheduleFree, SGDScheduleFree,
LARS) against their oracles (golden and live), their papers' references, and npoptim's
conventions (resume from disk, maximize, validation).

The problem is ``tests/beyond_harness.py``'s; the configurations are the oracles' own tests'
(``tests/beyond_cases.py``). That every path (for-loop, multi-tensor, compiled) gives the same
bits is ``tests/test_paths.py``'s, which takes them from the registry.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import npoptim
from beyond_cases import ADAMW_SCHEDULEFREE, ADEMAMIX, LAMB, LARS, LION, SGD_SCHEDULEFREE
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
from references.beyond import ademamix, lamb, lars, lion, schedulefree, sgd_schedulefree

CASES = [LION, LAMB, ADEMAMIX, ADAMW_SCHEDULEFREE, SGD_SCHEDULEFREE, LARS]
RECTIFY = "recipe: rectify, degenerated_to_sgd"
PRE_NORM = "recipe: pre_norm, eps 1e-8"
LR_1_T_ALPHA = "recipe: lr 1, t_alpha_beta3 5"
#: Where the oracle's own rounding, or float32's cancellation, sets the limit (measured, against
#: how far the oracle's own float32 run is from its float64 one there):
#: - LAMB's rectify recipe (lr 0.5) ends its first step by a cancellation in float32: oracle
#:   1.1e-4 from float64, npoptim 3.4e-6 from the oracle (float64 agrees to 3e-14);
#: - LAMB's pre_norm: the oracle adds the squared norms in float32 whatever the dtype, in an
#:   order that depends on the CPU's vector width (torch's reduction kernels): npoptim (NumPy's
#:   order) agrees to 1e-15 in float64 on one x86-64 CPU and differs by one float32 rounding
#:   of the scale (5.4e-8) on another;
#: - AdEMAMix at lr 1 moves the parameters by about their own size each step, so float32's
#:   roundings grow: torch's float32 kernels differ by CPU, and npoptim is 1.0e-6 to 1.3e-6
#:   from the oracle on one CPU (the oracle's float32 run is 8.3e-7 from its float64 one).
LOOSER = {
    ("LAMB", RECTIFY, "float32"): 1e-5,
    ("LAMB", PRE_NORM, "float64"): 2e-7,
    ("AdEMAMix", LR_1_T_ALPHA, "float32"): 3e-6,
}


def tolerance(case: Case, desc: str, dtype_name: str) -> float:
    return LOOSER.get((case.name, desc, dtype_name), TOLERANCE[dtype_name])


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
    assert max_relative_error(actual, expected) <= tolerance(case, desc, dtype_name)


@pytest.mark.parametrize(("case", "kwargs", "desc", "dtype_name"), _params(CASES))
def test_matches_oracle_live(
    case: Case, kwargs: dict[str, Any], desc: str, dtype_name: str
) -> None:
    pytest.importorskip(case.oracle_module)
    actual, _ = run_npoptim(case, kwargs, DTYPES[dtype_name])
    expected = run_oracle(case, kwargs, DTYPES[dtype_name])
    assert max_relative_error(actual, expected) <= tolerance(case, desc, dtype_name)


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
    module = importlib.import_module(getattr(npoptim, name).__module__)
    kernel = module.ALGORITHM.name  # the functional kernel's name
    assert getattr(npoptim.functional, kernel) is getattr(module, kernel)


# ---------------------------------------------------------------------------- LAMB
#: The configurations lamb.reference covers (not the global norm of pre_norm, not rectify).
LAMB_REFERENCE = [c for c in LAMB.configs if c[0] not in (RECTIFY, "recipe: pre_norm, eps 1e-8")]


@pytest.mark.parametrize(
    ("case", "kwargs", "desc", "dtype_name"),
    _params([dataclasses.replace(LAMB, configs=LAMB_REFERENCE)]),
)
def test_lamb_matches_paper_reference_with_the_oracle_departures(
    case: Case, kwargs: dict[str, Any], desc: str, dtype_name: str
) -> None:
    # Every parameter has a grad at every step: the group's step count is each parameter's.
    actual, _ = run_npoptim(case, kwargs, DTYPES[dtype_name], missing=None)
    expected = run_reference(
        lamb.reference, case, {**kwargs, **lamb.ORACLE_VARIANT}, DTYPES[dtype_name], missing=None
    )
    assert max_relative_error(actual, expected) <= {"float64": 1e-10, "float32": 1e-5}[dtype_name]


def test_lamb_first_step_is_scaled_by_the_trust_ratio() -> None:
    # From the formula: m_1 = 0.1 g, v_1 = 0.001 g², r_1 = m_1 / (sqrt(v_1) + ε), trust
    # ratio ‖θ‖ / (‖r_1‖ + ε), step size lr / (1 - β1).
    w = Parameter(np.array([3.0, -4.0]))
    opt = npoptim.LAMB([w], lr=0.1)
    g = np.array([1.0, 0.0])
    w.grad = g.copy()
    opt.step()
    r = 0.1 * g / (np.sqrt(0.001 * g**2) + 1e-6)
    trust = 5.0 / (np.linalg.norm(r) + 1e-6)
    np.testing.assert_allclose(w, np.array([3.0, -4.0]) - (0.1 / 0.1) * trust * r, rtol=1e-14)
    state = opt.state[w]
    assert state["trust_ratio"] == pytest.approx(trust, rel=1e-14)
    assert state["weight_norm"] == 5.0 and opt.param_groups[0]["step"] == 1


def test_lamb_weight_norm_is_bounded_by_ten() -> None:
    w = Parameter(np.array([30.0, -40.0]))
    opt = npoptim.LAMB([w], lr=0.1)
    w.grad = np.array([1.0, 1.0])
    opt.step()
    assert opt.state[w]["weight_norm"] == 10.0


def test_lamb_rectify_takes_no_step_before_the_rectification_is_defined() -> None:
    w = Parameter(np.array([1.0, 2.0]))
    opt = npoptim.LAMB([w], rectify=True)
    w.grad = np.array([0.5, -0.5])
    opt.step()
    assert np.array_equal(w, [1.0, 2.0])
    np.testing.assert_allclose(opt.state[w]["exp_avg"], [0.05, -0.05], rtol=1e-15)
    assert "trust_ratio" not in opt.state[w]


def test_lamb_pre_norm_scales_by_the_global_norm_and_leaves_the_grads_alone() -> None:
    # Gradients of global norm 10 with max_grad_norm 1 are scaled by 1 / 10: with adam=True
    # and eps ≈ 0 the first step is then the unscaled one (sign-like), and v_1 shows 1/100.
    w, v = Parameter(np.array([1.0, 1.0])), Parameter(np.array([1.0]))
    opt = npoptim.LAMB([w, v], pre_norm=True, eps=1e-30)
    w.grad, v.grad = np.array([6.0, 0.0]), np.array([8.0])
    opt.step()
    np.testing.assert_allclose(opt.state[w]["exp_avg_sq"], [0.001 * 0.36, 0.0], rtol=1e-6)
    np.testing.assert_allclose(opt.state[v]["exp_avg_sq"], [0.001 * 0.64], rtol=1e-6)
    assert np.array_equal(w.grad, [6.0, 0.0]) and np.array_equal(v.grad, [8.0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, "Invalid learning rate: -1.0"),
        ({"betas": (1.0, 0.9)}, r"Invalid beta parameter at index 0: 1.0"),
        ({"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
        ({"max_grad_norm": -1.0}, "Invalid max_grad_norm value: -1.0"),
        ({"eps": -1e-8}, "Invalid epsilon value: -1e-08"),
    ],
)
def test_lamb_invalid_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        npoptim.LAMB([Parameter(np.zeros(2))], **kwargs)


def test_lamb_pre_norm_measures_float16_gradients_in_float32() -> None:
    # pytorch_optimizer takes a float16 gradient's norm in float32: here 300·√6 ≈ 735, whose
    # square (540,000) float16 cannot hold.
    from npoptim.lamb import gradient_scale

    scale = gradient_scale([np.full(6, 300.0, dtype=np.float16)], max_grad_norm=1.0, eps=1e-6)
    np.testing.assert_allclose(scale, 1.0 / (300.0 * np.sqrt(6.0)), rtol=1e-6)


def test_lamb_float16_step_gives_nan_silently_like_its_oracle() -> None:
    # In float16, eps = 1e-8 rounds to 0 and a small v_t underflows to 0: r_t = m_t / 0 is
    # infinite, the trust ratio ‖θ‖ / ∞ = 0 and the step 0 · ∞ NaN, as pytorch_optimizer's
    # (checked against it); the NumPy paths give it without a warning, as torch does.
    w = Parameter(np.array([1.0, 2.0], dtype=np.float16))
    opt = npoptim.LAMB([w], eps=1e-8, foreach=False)
    w.grad = np.array([1e-5, 1.0], dtype=np.float16)  # (1 - β2) g² = 1e-13 underflows
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()
    np.testing.assert_array_equal(w, np.array([np.nan, 2.0], dtype=np.float16))
    assert opt.state[w]["trust_ratio"] == 0.0


def test_lamb_sparse_grad_is_refused_before_any_change() -> None:
    w, v = Parameter(np.ones(2)), Parameter(np.ones((3, 2)))
    opt = npoptim.LAMB([w, v], pre_norm=True)
    w.grad = np.ones(2)
    v.grad = SparseGrad(np.array([0]), np.ones((1, 2)), (3, 2))
    with pytest.raises(RuntimeError, match="LAMB does not support sparse gradients"):
        opt.step()
    assert len(opt.state) == 0 and np.array_equal(w, np.ones(2))


# ------------------------------------------------------------------------- AdEMAMix
@pytest.mark.parametrize(
    ("case", "kwargs", "desc", "dtype_name"),
    [p for p in _params([ADEMAMIX]) if p.values[3] == "float64"],
)
def test_ademamix_matches_paper_reference(
    case: Case, kwargs: dict[str, Any], desc: str, dtype_name: str
) -> None:
    # float64 only: a float32 run against the float64 reference measures float32's rounding
    # (up to 5e-5 for the oracle's own float32 run); float32 is held to the oracle above.
    # Every parameter has a grad at every step: the group's step count is each parameter's.
    actual, _ = run_npoptim(case, kwargs, np.float64, missing=None)
    expected = run_reference(ademamix.reference, case, kwargs, np.float64, missing=None)
    assert max_relative_error(actual, expected) <= 1e-10


def test_ademamix_without_slow_momentum_is_adam() -> None:
    # α = 0 leaves Adam's update (torch's Adam, its documented formula, as the reference).
    rng = np.random.default_rng(5)
    w, v = Parameter(rng.standard_normal(6)), Parameter(np.zeros(6))
    v[...] = w
    ours = npoptim.AdEMAMix([w], lr=0.05, alpha=0.0)
    adam = npoptim.Adam([v], lr=0.05)
    for _ in range(5):
        g = rng.standard_normal(6)
        w.grad, v.grad = g.copy(), g.copy()
        ours.step()
        adam.step()
    np.testing.assert_allclose(w, v, rtol=1e-13)


def test_ademamix_schedules_warm_up_alpha_and_beta3() -> None:
    # The paper's schedulers: α_t linear up to α at T; β3_t = β1 at t = 0 and β3 at t = T.
    alpha_t, beta3_t = npoptim.ademamix.schedules(5, 8.0, 0.9, 0.9999, 10.0)
    assert alpha_t == 4.0
    assert npoptim.ademamix.schedules(10, 8.0, 0.9, 0.9999, 10.0) == pytest.approx((8.0, 0.9999))
    assert npoptim.ademamix.schedules(0, 8.0, 0.9, 0.9999, 10.0)[1] == pytest.approx(0.9)
    assert 0.9 < beta3_t < 0.9999


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, "Invalid learning rate: -1.0"),
        ({"betas": (0.9, 0.999, 1.0)}, r"Invalid beta parameter at index 2: 1.0"),
        ({"alpha": -1.0}, "Invalid alpha value: -1.0"),
        ({"t_alpha_beta3": -1.0}, "Invalid t_alpha_beta3 value: -1.0"),
        ({"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
        ({"eps": -1e-8}, "Invalid epsilon value: -1e-08"),
    ],
)
def test_ademamix_invalid_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        npoptim.AdEMAMix([Parameter(np.zeros(2))], **kwargs)


@pytest.mark.parametrize("foreach", [False, True, None])
def test_ademamix_two_betas_written_into_a_group_are_refused_at_step(foreach: bool | None) -> None:
    w = Parameter(np.ones(3))
    opt = npoptim.AdEMAMix([w], foreach=foreach)
    opt.param_groups[0]["betas"] = (0.9, 0.999)
    w.grad = np.ones(3)
    with pytest.raises(
        ValueError, match=r"param_groups\[0\]\['betas'\] must be a triple \(a tuple of 3\)"
    ):
        opt.step()
    np.testing.assert_array_equal(w, np.ones(3))
    assert not opt.state[w]


# ------------------------------------------------- AdamWScheduleFree, SGDScheduleFree
#: Each Schedule-Free case with its reference (the paper's x/z/y form).
SCHEDULE_FREE = [(ADAMW_SCHEDULEFREE, schedulefree), (SGD_SCHEDULEFREE, sgd_schedulefree)]
REFERENCE_OF = {case.name: module for case, module in SCHEDULE_FREE}


def _schedule_free_kwargs(case: Case, **kwargs: Any) -> dict[str, Any]:
    """``kwargs`` with the case's learning rate for a short, well-behaved run."""
    return {"lr": 0.05 if case is ADAMW_SCHEDULEFREE else 0.2, **kwargs}


@pytest.mark.parametrize(
    ("case", "kwargs", "desc", "dtype_name"), _params([case for case, _ in SCHEDULE_FREE])
)
def test_schedulefree_matches_paper_reference(
    case: Case, kwargs: dict[str, Any], desc: str, dtype_name: str
) -> None:
    # The paper's x/z/y form against the oracle's in-place y update.
    reference = REFERENCE_OF[case.name].reference
    actual, _ = run_npoptim(case, kwargs, DTYPES[dtype_name], missing=None)
    expected = run_reference(reference, case, kwargs, DTYPES[dtype_name], missing=None)
    assert max_relative_error(actual, expected) <= {"float64": 1e-10, "float32": 1e-5}[dtype_name]


@pytest.mark.parametrize("case", [c for c, _ in SCHEDULE_FREE], ids=lambda c: c.name)
def test_schedulefree_eval_gives_the_average_x_of_the_paper(case: Case) -> None:
    # eval() moves the parameters from y to the paper's x; train() moves them back.
    kwargs = _schedule_free_kwargs(case, warmup_steps=3)
    _, opt = run_npoptim(case, kwargs, np.float64, missing=None, steps=6)
    states: list[dict[str, Any]] = [{} for _ in case.shapes(kwargs)]
    _reference_states(case, kwargs, states, steps=6)
    params = opt.param_groups[0]["params"]
    at_y = [np.array(p) for p in params]
    opt.eval()
    for p, state in zip(params, states, strict=True):
        np.testing.assert_allclose(p, state["x"], rtol=1e-12, atol=1e-14)
    opt.train()
    for p, y in zip(params, at_y, strict=True):
        np.testing.assert_allclose(p, y, rtol=1e-13, atol=1e-15)


def _reference_states(
    case: Case, kwargs: dict[str, Any], states: list[dict[str, Any]], steps: int
) -> list[Any]:
    """The reference's run, keeping each parameter's state in ``states``."""
    import beyond_harness

    reference = REFERENCE_OF[case.name].reference
    values = [
        v.astype(np.float64) for v in beyond_harness.initial_values(case.shapes(kwargs), np.float64)
    ]
    for k in range(steps):
        for j, p in enumerate(values):
            g = beyond_harness.gradient(k, j, p, None)
            assert g is not None
            values[j] = reference(p.copy(), g, states[j], k + 1, **kwargs)
    return values


@pytest.mark.parametrize("case", [c for c, _ in SCHEDULE_FREE], ids=lambda c: c.name)
def test_schedulefree_mode_round_trips_through_a_checkpoint(case: Case, tmp_path: Path) -> None:
    # Saved in eval mode (parameters at x), loaded into a new optimizer, back to train: the
    # run continues as one that switched to eval and back without saving.
    kwargs = _schedule_free_kwargs(case, warmup_steps=3, weight_decay=0.01)
    import beyond_harness

    def start() -> tuple[list[Parameter], npoptim.Optimizer]:
        params = [
            Parameter(v) for v in beyond_harness.initial_values(case.shapes(kwargs), np.float64)
        ]
        return params, case.build_npoptim(params, kwargs)

    params, opt = start()
    beyond_harness.train(params, opt, range(8), None)
    opt.eval()
    npoptim.save(
        {"params": [np.array(p) for p in params], "optimizer": opt.state_dict()}, tmp_path / "c.npz"
    )
    assert opt.state_dict()["param_groups"][0]["train_mode"] is False
    opt.train()
    straight = beyond_harness.train(params, opt, range(8, 16), None)

    checkpoint = npoptim.load(tmp_path / "c.npz")
    loaded = [Parameter(v) for v in checkpoint["params"]]
    resumed = getattr(npoptim, case.name)(loaded, **kwargs)
    resumed.load_state_dict(checkpoint["optimizer"])
    with pytest.raises(RuntimeError, match="not in train mode"):
        resumed.step()
    resumed.train()
    again = beyond_harness.train(loaded, resumed, range(8, 16), None)
    assert_identical(again, straight)
    assert_identical(resumed.state_dict(), opt.state_dict())


@pytest.mark.parametrize("case", [c for c, _ in SCHEDULE_FREE], ids=lambda c: c.name)
def test_schedulefree_step_before_train_is_refused_before_any_change(case: Case) -> None:
    w = Parameter(np.ones(2))
    opt = getattr(npoptim, case.name)([w])
    w.grad = np.ones(2)
    with pytest.raises(RuntimeError, match="Optimizer was not in train mode when step is called"):
        opt.step()
    assert len(opt.state) == 0 and opt.param_groups[0]["k"] == 0
    assert np.array_equal(w, np.ones(2))


def test_sgd_schedulefree_with_uniform_weights_evaluates_at_the_mean_of_the_iterates() -> None:
    # r = 0 and weight_lr_power = 0 weigh every z equally (c_{t+1} = 1/t): x_{t+1} is the
    # plain mean of z_2, ..., z_{t+1}, the iterates after each step (paper, Section 2).
    w = Parameter(np.array([1.0, -2.0, 0.5]))
    opt = npoptim.SGDScheduleFree([w], lr=0.1, momentum=0.7, weight_lr_power=0.0)
    rng = np.random.default_rng(7)
    zs = []
    for _ in range(5):
        opt.train()
        w.grad = rng.standard_normal(3)
        opt.step()
        zs.append(opt.state[w]["z"].copy())
        opt.eval()
        np.testing.assert_allclose(w, np.mean(zs, axis=0), rtol=1e-13, atol=1e-15)


def test_sgd_schedulefree_first_step_is_sgd() -> None:
    # c_2 = 1 at the first step: x_2 = z_2 = θ - γ(g + λθ), and y_2 = z_2.
    w = Parameter(np.array([1.0, -2.0]))
    opt = npoptim.SGDScheduleFree([w], lr=0.1, weight_decay=0.5)
    opt.train()
    w.grad = np.array([0.4, 0.2])
    opt.step()
    expected = np.array([1.0, -2.0]) - 0.1 * (np.array([0.4, 0.2]) + 0.5 * np.array([1.0, -2.0]))
    np.testing.assert_allclose(w, expected, rtol=1e-15)
    np.testing.assert_allclose(opt.state[w]["z"], expected, rtol=1e-15)
    assert np.array_equal(w.grad, [0.4, 0.2])  # the grad is left alone


# ---------------------------------------------------------------------------- LARS
@pytest.mark.parametrize(("case", "kwargs", "desc", "dtype_name"), _params([LARS]))
def test_lars_matches_paper_reference_with_the_oracle_departures(
    case: Case, kwargs: dict[str, Any], desc: str, dtype_name: str
) -> None:
    # Every parameter has a grad at every step (the reference keeps no group state anyway).
    actual, _ = run_npoptim(case, kwargs, DTYPES[dtype_name], missing=None)
    variant = {**kwargs, **lars.ORACLE_VARIANT}
    expected = run_reference(lars.reference, case, variant, DTYPES[dtype_name], missing=None)
    assert max_relative_error(actual, expected) <= {"float64": 1e-10, "float32": 1e-5}[dtype_name]


def test_lars_first_step_is_the_trust_ratio_times_the_decayed_gradient() -> None:
    # ‖θ‖ = 5, ‖g‖ = 1, β = 0.2: λ = 0.1 · 5 / (1 + 0.2 · 5) = 0.25; b_1 = λ(g + βθ).
    w = Parameter(np.array([[3.0, 4.0]]))
    opt = npoptim.LARS([w], lr=0.5, weight_decay=0.2, trust_coefficient=0.1)
    w.grad = np.array([[0.0, 1.0]])
    opt.step()
    step = 0.25 * np.array([[0.6, 1.8]])
    np.testing.assert_allclose(opt.state[w]["momentum_buffer"], step, rtol=1e-15)
    np.testing.assert_allclose(w, np.array([[3.0, 4.0]]) - 0.5 * step, rtol=1e-15)


def test_lars_vectors_take_a_plain_sgd_step_without_decay() -> None:
    b = Parameter(np.array([1.0, -2.0]))
    opt = npoptim.LARS([b], lr=0.5, weight_decay=0.3, momentum=0.0)
    b.grad = np.array([0.5, 0.25])
    opt.step()
    assert np.array_equal(b, [0.75, -2.125]) and "momentum_buffer" not in opt.state[b]


@pytest.mark.parametrize(
    ("weight", "grad", "weight_decay"),
    [(np.zeros((2, 2)), np.ones((2, 2)), 0.1), (np.ones((2, 2)), np.zeros((2, 2)), 0.0)],
    ids=["zero weight", "zero denominator"],
)
def test_lars_trust_ratio_is_one_where_the_paper_leaves_it_undefined(
    weight: np.ndarray, grad: np.ndarray, weight_decay: float
) -> None:
    w = Parameter(weight.copy())
    opt = npoptim.LARS([w], lr=0.5, weight_decay=weight_decay, momentum=0.0)
    w.grad = grad
    opt.step()
    np.testing.assert_allclose(w, weight - 0.5 * (grad + weight_decay * weight), rtol=1e-15)


def test_lars_learning_rate_multiplies_the_step_after_the_momentum_buffer() -> None:
    # The oracle's form (lr outside b_t) and the paper's (lr inside) part when lr changes.
    w = Parameter(np.array([[3.0, 4.0]]))
    opt = npoptim.LARS([w], lr=0.5, momentum=0.5, trust_coefficient=0.1)
    start = np.array(w)
    paper: dict[str, Any] = {}
    oracle: dict[str, Any] = {}
    expected_paper, expected_oracle = start.copy(), start.copy()
    for lr in (0.5, 0.1):
        opt.param_groups[0]["lr"] = lr
        w.grad = np.array([[0.0, 1.0]])
        options = {"lr": lr, "momentum": 0.5, "trust_coefficient": 0.1}
        expected_paper = lars.reference(expected_paper, w.grad, paper, 1, **options)
        expected_oracle = lars.reference(
            expected_oracle, w.grad, oracle, 1, **options, **lars.ORACLE_VARIANT
        )
        opt.step()
    np.testing.assert_allclose(w, expected_oracle, rtol=1e-15)
    assert np.max(np.abs(expected_paper - expected_oracle)) > 1e-3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, "Invalid learning rate: -1.0"),
        ({"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
        ({"momentum": 0.0}, "Momentum must be between 0 and 1 exclusive: 0.0"),
        ({"momentum": 1.0}, "Momentum must be between 0 and 1 exclusive: 1.0"),
        ({"warmup_steps": -1}, "Invalid warmup_steps value: -1"),
    ],
)
def test_sgd_schedulefree_invalid_arguments_are_refused(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        npoptim.SGDScheduleFree([Parameter(np.zeros(2))], **kwargs)


def test_sgd_schedulefree_bad_group_is_refused_and_changes_nothing() -> None:
    w, v = Parameter(np.ones(2)), Parameter(np.ones(3))
    opt = npoptim.SGDScheduleFree([w])
    with pytest.raises(ValueError, match="Momentum must be between 0 and 1 exclusive: 1.5"):
        opt.add_param_group({"params": [v], "momentum": 1.5})
    assert len(opt.param_groups) == 1
    opt.param_groups[0]["momentum"] = "0.9"
    opt.train()
    w.grad = np.ones(2)
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['momentum'\]"):
        opt.step()
    assert len(opt.state) == 0 and opt.param_groups[0]["k"] == 0
    assert np.array_equal(w, np.ones(2))


def test_sgd_schedulefree_sparse_grad_is_refused_before_any_change() -> None:
    w, v = Parameter(np.ones(2)), Parameter(np.ones((3, 2)))
    opt = npoptim.SGDScheduleFree([w, v])
    opt.train()
    w.grad = np.ones(2)
    v.grad = SparseGrad(np.array([0]), np.ones((1, 2)), (3, 2))
    with pytest.raises(RuntimeError, match="SGDScheduleFree does not support sparse gradients"):
        opt.step()
    assert len(opt.state) == 0 and opt.param_groups[0]["k"] == 0
    assert opt.param_groups[0]["weight_sum"] == 0.0 and np.array_equal(w, np.ones(2))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1.0}, "Invalid learning rate: -1.0"),
        ({"weight_decay": -0.1}, "Invalid weight_decay value: -0.1"),
        ({"momentum": 1.0}, "Invalid momentum value: 1.0"),
        ({"momentum": -0.1}, "Invalid momentum value: -0.1"),
        ({"dampening": 1.0}, "Invalid dampening value: 1.0"),
        ({"trust_coefficient": -1e-3}, "Invalid trust_coefficient value: -0.001"),
    ],
)
def test_lars_invalid_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        npoptim.LARS([Parameter(np.zeros(2))], **kwargs)


def test_lars_sparse_grad_is_refused_before_any_change() -> None:
    w, v = Parameter(np.ones((2, 2))), Parameter(np.ones((3, 2)))
    opt = npoptim.LARS([w, v])
    w.grad = np.ones((2, 2))
    v.grad = SparseGrad(np.array([0]), np.ones((1, 2)), (3, 2))
    with pytest.raises(RuntimeError, match="LARS does not support sparse gradients"):
        opt.step()
    assert len(opt.state) == 0 and np.array_equal(w, np.ones((2, 2)))
    assert "step" not in opt.param_groups[0]


def test_lars_momentum_buffer_of_the_wrong_shape_is_refused_on_load() -> None:
    w = Parameter(np.ones((2, 2)))
    opt = npoptim.LARS([w])
    w.grad = np.ones((2, 2))
    opt.step()
    saved = opt.state_dict()
    before = np.array(opt.state[w]["momentum_buffer"])
    bad = {**saved, "state": {0: {"momentum_buffer": np.zeros(3)}}}
    with pytest.raises(ValueError, match="momentum_buffer"):
        opt.load_state_dict(bad)
    assert np.array_equal(opt.state[w]["momentum_buffer"], before)
