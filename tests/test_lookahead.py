"""Lookahead against pytorch_optimizer's (golden and live), the paper's reference, and
npoptim's conventions: state_dict round trip and resume, param_groups shared with the wrapped
optimizer (schedulers), hooks, validation.

The problem is ``tests/beyond_harness.py``'s on a matrix, a vector and a scalar; the vector
misses its grad at the tenth step, a synchronization step for ``k = 5``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import npoptim
from beyond_cases import LOOKAHEAD as CASE
from beyond_harness import (
    DTYPES,
    TOLERANCE,
    assert_identical,
    cases_for,
    golden_path,
    initial_values,
    load_golden,
    max_relative_error,
    resumed_run,
    run_npoptim,
    run_oracle,
    run_reference,
    train,
)
from npoptim import Lookahead, Parameter
from references.beyond import lookahead as reference

CASES = cases_for(CASE)


@pytest.mark.parametrize(("kwargs", "desc", "dtype_name"), CASES)
def test_matches_oracle_golden(kwargs: dict[str, Any], desc: str, dtype_name: str) -> None:
    assert golden_path(CASE).exists(), "run tools/make_golden_beyond.py"
    actual, _ = run_npoptim(CASE, kwargs, DTYPES[dtype_name])
    expected = load_golden(CASE, desc, dtype_name)
    assert max_relative_error(actual, expected) <= TOLERANCE[dtype_name]


@pytest.mark.parametrize(("kwargs", "desc", "dtype_name"), CASES)
def test_matches_oracle_live(kwargs: dict[str, Any], desc: str, dtype_name: str) -> None:
    pytest.importorskip(CASE.oracle_module)
    actual, _ = run_npoptim(CASE, kwargs, DTYPES[dtype_name])
    expected = run_oracle(CASE, kwargs, DTYPES[dtype_name])
    assert max_relative_error(actual, expected) <= TOLERANCE[dtype_name]


@pytest.mark.parametrize(("kwargs", "desc", "dtype_name"), CASES)
def test_matches_paper_reference(kwargs: dict[str, Any], desc: str, dtype_name: str) -> None:
    actual, _ = run_npoptim(CASE, kwargs, DTYPES[dtype_name], missing=None)
    expected = run_reference(reference.reference, CASE, kwargs, DTYPES[dtype_name], missing=None)
    assert max_relative_error(actual, expected) <= {"float64": 1e-10, "float32": 1e-5}[dtype_name]


def test_parameter_without_grad_at_a_synchronization_is_not_pulled_back() -> None:
    # As pytorch_optimizer: the counter is the group's, and only parameters with a grad are
    # synchronized; the vector keeps its fast value and its slow copy until the next one.
    kwargs = {"optimizer": ("SGD", {"lr": 0.1})}
    trajectory, opt = run_npoptim(CASE, kwargs, np.float64, steps=10)
    vector = opt.param_groups[0]["params"][1]
    assert np.array_equal(trajectory[9][1], trajectory[8][1])  # no grad, no step, no pull
    assert not np.array_equal(opt.state[vector]["slow_params"], trajectory[9][1])
    matrix = opt.param_groups[0]["params"][0]
    assert np.array_equal(opt.state[matrix]["slow_params"], trajectory[9][0])  # pulled back
    assert opt.param_groups[0]["counter"] == 0


@pytest.mark.parametrize(("kwargs", "desc", "dtype_name"), CASES)
def test_resumed_from_disk_continues_bit_for_bit(
    kwargs: dict[str, Any], desc: str, dtype_name: str, tmp_path: Path
) -> None:
    dtype = DTYPES[dtype_name]
    straight, straight_opt = run_npoptim(CASE, kwargs, dtype)
    for stop in (5, 7):  # just after a synchronization, and between two
        params, opt = resumed_run(CASE, kwargs, dtype, tmp_path / "ckpt.npz", stop=stop)
        assert_identical(params, straight[-1])
        assert_identical(opt.state_dict(), straight_opt.state_dict())


def test_state_dict_layout() -> None:
    _, opt = run_npoptim(
        CASE, {"optimizer": ("SGD", {"lr": 0.1, "momentum": 0.9})}, np.float64, steps=3
    )
    sd = opt.state_dict()
    assert list(sd) == ["lookahead_state", "base_optimizer"]
    assert list(sd["lookahead_state"]) == [0, 1, 2]
    assert list(sd["lookahead_state"][0]) == ["slow_params"]
    assert_identical(sd["base_optimizer"], opt.optimizer.state_dict())
    assert sd["base_optimizer"]["param_groups"][0]["counter"] == 3


def test_loads_the_oracles_group_position_keys() -> None:
    torch = pytest.importorskip("torch")
    oracle_lookahead = pytest.importorskip("pytorch_optimizer").Lookahead
    kwargs = {"optimizer": ("SGD", {"lr": 0.05, "momentum": 0.9}), "pullback_momentum": "pullback"}
    values = initial_values(CASE.shapes(kwargs), np.float64)
    tensors = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    oracle = oracle_lookahead(
        torch.optim.SGD(tensors, lr=0.05, momentum=0.9), pullback_momentum="pullback"
    )
    params = [Parameter(v.copy()) for v in values]
    opt = CASE.build_npoptim(params, kwargs)
    for k in range(7):
        for t, p in zip(tensors, params, strict=True):
            p.grad = np.random.default_rng([1, k]).standard_normal(p.shape)
            t.grad = torch.from_numpy(p.grad.copy())
        oracle.step()
    sd = oracle.state_dict()

    def to_numpy(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: to_numpy(v) for k, v in value.items()}
        if isinstance(value, list):
            return [to_numpy(v) for v in value]
        return value.numpy().copy() if isinstance(value, torch.Tensor) else value

    converted = to_numpy(sd)
    assert list(converted["lookahead_state"]) == [(0, 0), (0, 1), (0, 2)]
    for p, t in zip(params, tensors, strict=True):
        p[...] = t.detach().numpy()
    opt.load_state_dict(converted)
    for j, p in enumerate(params):
        np.testing.assert_array_equal(
            opt.state[p]["slow_momentum"], converted["lookahead_state"][(0, j)]["slow_momentum"]
        )
    for k in range(7, 12):
        for t, p in zip(tensors, params, strict=True):
            p.grad = np.random.default_rng([1, k]).standard_normal(p.shape)
            t.grad = torch.from_numpy(p.grad.copy())
        oracle.step()
        opt.step()
        for t, p in zip(tensors, params, strict=True):
            np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-12, atol=1e-15)


def test_refused_load_changes_nothing() -> None:
    _, opt = run_npoptim(CASE, {"optimizer": ("SGD", {"lr": 0.1})}, np.float64, steps=6)
    before = copy.deepcopy(opt.state_dict())
    bad = copy.deepcopy(before)
    del bad["lookahead_state"][2]
    with pytest.raises(
        ValueError, match="lookahead state holds 2 parameters but the optimizer has 3"
    ):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(before)
    bad["lookahead_state"][7] = bad["lookahead_state"].pop(2)
    with pytest.raises(ValueError, match="key 7 that names no parameter"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(before)
    bad["base_optimizer"]["param_groups"].append(bad["base_optimizer"]["param_groups"][0])
    with pytest.raises(ValueError, match="different number of parameter groups|already listed"):
        opt.load_state_dict(bad)
    assert_identical(opt.state_dict(), before)


def test_param_groups_are_the_wrapped_optimizers_and_schedulers_drive_them() -> None:
    w = Parameter(np.ones(3))
    inner = npoptim.SGD([w], lr=0.4)
    opt = Lookahead(inner, k=2)
    assert opt.param_groups is inner.param_groups
    sched = npoptim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        w.grad = np.ones(3)
        opt.step()
        sched.step()
    assert inner.param_groups[0]["lr"] == 0.05
    assert sched.get_last_lr() == [0.05]


def test_add_param_group_gives_slow_weights_and_a_counter() -> None:
    opt = Lookahead(npoptim.SGD([Parameter(np.ones(2))], lr=0.1), pullback_momentum="pullback")
    v = Parameter(np.array([3.0, 4.0]))
    opt.add_param_group({"params": [v], "lr": 0.2})
    assert opt.param_groups[1]["counter"] == 0 and opt.param_groups[1]["lr"] == 0.2
    assert np.array_equal(opt.state[v]["slow_params"], [3.0, 4.0])
    assert not np.shares_memory(opt.state[v]["slow_params"], v)
    assert np.array_equal(opt.state[v]["slow_momentum"], [0.0, 0.0])


def test_step_hooks_run_once_around_the_whole_step() -> None:
    w = Parameter(np.ones(2))
    opt = Lookahead(npoptim.SGD([w], lr=0.1), k=1)
    calls: list[str] = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    handle = opt.register_step_post_hook(
        lambda o, a, k: calls.append(f"post {o.state[w]['slow_params'][0]:.2f}")
    )
    w.grad = np.ones(2)
    opt.step()
    handle.remove()
    opt.step()
    assert calls == ["pre", "post 0.95", "pre"]  # the post hook sees the synchronized state


def test_state_dict_hooks() -> None:
    opt = Lookahead(npoptim.SGD([Parameter(np.ones(2))], lr=0.1))
    opt.register_state_dict_post_hook(lambda o, sd: {**sd, "extra": 1})
    seen: list[Any] = []
    opt.register_load_state_dict_pre_hook(
        lambda o, sd: {k: v for k, v in sd.items() if k != "extra"}
    )
    opt.register_load_state_dict_post_hook(lambda o: seen.append(o))
    sd = opt.state_dict()
    assert sd["extra"] == 1
    opt.load_state_dict(sd)
    assert seen == [opt]


def test_built_from_a_class_and_params_as_the_oracle_allows() -> None:
    w = Parameter(np.ones(2))
    opt = Lookahead(npoptim.AdamW, params=[w], lr=0.01, k=3)
    assert isinstance(opt.optimizer, npoptim.AdamW) and opt.param_groups[0]["lr"] == 0.01
    assert opt.defaults["lookahead_k"] == 3 and opt.defaults["lr"] == 0.01
    with pytest.raises(ValueError, match="need to pass `params`"):
        Lookahead(npoptim.AdamW)
    with pytest.raises(TypeError, match="wraps an npoptim Optimizer"):
        Lookahead([w])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "Invalid k value: 0"),
        ({"alpha": 1.0}, "Invalid alpha value: 1.0"),
        ({"alpha": -0.1}, "Invalid alpha value: -0.1"),
        ({"pullback_momentum": "pull"}, "Invalid pullback_momentum value: 'pull'"),
    ],
)
def test_invalid_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Lookahead(npoptim.SGD([Parameter(np.zeros(2))], lr=0.1), **kwargs)


def test_slow_weights_can_be_evaluated_and_put_back() -> None:
    w = Parameter(np.array([1.0, 2.0]))
    opt = Lookahead(npoptim.SGD([w], lr=0.5), k=10)
    w.grad = np.array([1.0, 1.0])
    opt.step()
    fast = np.array(w)
    opt.backup_and_load_cache()
    assert np.array_equal(w, [1.0, 2.0])
    opt.clear_and_load_backup()
    assert np.array_equal(w, fast) and "backup_params" not in opt.state[w]


def test_deepcopy_is_independent() -> None:
    params = [Parameter(v) for v in initial_values([(2,)], np.float64)]
    opt = Lookahead(npoptim.SGD(params, lr=0.1), k=2)
    train(params, opt, range(3), None)
    clone = copy.deepcopy(opt)
    before = copy.deepcopy(opt.state_dict())
    train(params, opt, range(3, 6), None)
    assert_identical(clone.state_dict(), before)
    assert clone.optimizer is not opt.optimizer


def test_functional_kernel_is_the_papers_interpolation() -> None:
    fast, slow = np.array([1.0, 3.0]), np.array([0.0, 1.0])
    npoptim.functional.lookahead([fast], [slow], alpha=0.25)
    assert np.array_equal(slow, [0.25, 1.5]) and np.array_equal(fast, [0.25, 1.5])


def test_load_refuses_slow_state_that_does_not_fit_its_parameter() -> None:
    w = Parameter(np.ones(3))
    opt = Lookahead(npoptim.SGD([w], lr=0.1, momentum=0.9), pullback_momentum="pullback")
    w.grad = np.ones(3)
    opt.step()
    before = copy.deepcopy(opt.state_dict())
    bad = copy.deepcopy(before)
    bad["lookahead_state"][0]["slow_params"] = np.ones(7)
    with pytest.raises(ValueError, match=r"'slow_params' has shape \(7,\), but the parameter has shape \(3,\)"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(before)
    del bad["lookahead_state"][0]["slow_momentum"]
    with pytest.raises(ValueError, match="has no 'slow_momentum'"):
        opt.load_state_dict(bad)
    bad = copy.deepcopy(before)
    bad["lookahead_state"][0]["exp_avg"] = np.ones(3)
    with pytest.raises(ValueError, match="'exp_avg' is not a state of Lookahead"):
        opt.load_state_dict(bad)
    assert_identical(opt.state_dict(), before)
