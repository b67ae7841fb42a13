"""Parameter averaging (SWA, EMA) specified by its formulas; SWALR's lr sequences are in
tests/test_lr_scheduler.py's case table, its validation here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from npoptim.parameter import Parameter
from npoptim.sgd import SGD
from npoptim.swa_utils import (
    SWALR,
    AveragedParameters,
    get_ema_avg_fn,
    get_ema_multi_avg_fn,
    get_swa_avg_fn,
    get_swa_multi_avg_fn,
)

SHAPES = [(3, 4), (5,), ()]


def stream(n: int = 12, seed: int = 0, dtype: Any = np.float64) -> list[list[np.ndarray]]:
    """``n`` successive values of three parameters, drifting like a training run."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s) for s in SHAPES]
    out = []
    for _ in range(n):
        values = [v + 0.1 * rng.standard_normal(v.shape) for v in values]
        out.append([np.asarray(v, dtype=dtype) for v in values])
    return out


def average(
    make: Callable[[list[Parameter]], AveragedParameters], steps: list[list[np.ndarray]]
) -> AveragedParameters:
    params = [Parameter(v.copy()) for v in steps[0]]
    averaged = make(params)
    for values in steps:
        for p, v in zip(params, values, strict=True):
            p[...] = v
        averaged.update_parameters(params)
    return averaged


def ema_reference(steps: list[list[np.ndarray]], decay: float) -> list[np.ndarray]:
    ema = [v.copy() for v in steps[0]]
    for values in steps[1:]:
        ema = [decay * e + (1 - decay) * v for e, v in zip(ema, values, strict=True)]
    return ema


def assert_close(actual: list[Any], expected: list[np.ndarray], rtol: float = 1e-13) -> None:
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=1e-15)


SWA_VARIANTS: dict[str, Callable[[list[Parameter]], AveragedParameters]] = {
    "default": AveragedParameters,
    "avg_fn": lambda p: AveragedParameters(p, avg_fn=get_swa_avg_fn()),
    "multi_avg_fn": lambda p: AveragedParameters(p, multi_avg_fn=get_swa_multi_avg_fn()),
}


@pytest.mark.parametrize("variant", list(SWA_VARIANTS))
def test_swa_is_the_mean_of_the_values_seen(variant: str) -> None:
    steps = stream()
    averaged = average(SWA_VARIANTS[variant], steps)
    assert averaged.n_averaged == len(steps)
    assert_close(averaged.parameters(), [np.mean([s[j] for s in steps], axis=0) for j in range(3)])


@pytest.mark.parametrize("decay", [0.9, 0.999, 0.0, 1.0])
def test_ema_follows_its_recursion(decay: float) -> None:
    steps = stream()
    expected = ema_reference(steps, decay)
    multi = average(
        lambda p: AveragedParameters(p, multi_avg_fn=get_ema_multi_avg_fn(decay)), steps
    )
    single = average(lambda p: AveragedParameters(p, avg_fn=get_ema_avg_fn(decay)), steps)
    assert_close(multi.parameters(), expected)
    assert_close(single.parameters(), expected)


def test_first_update_copies_the_parameters() -> None:
    params = [Parameter(np.ones(3))]
    averaged = AveragedParameters(params, avg_fn=lambda a, c, n: a * 0 + 100)
    params[0][...] = 7.0
    averaged.update_parameters(params)
    np.testing.assert_array_equal(averaged.parameters()[0], [7.0, 7.0, 7.0])
    params[0][...] = 9.0  # the averages are copies, not views
    np.testing.assert_array_equal(averaged.parameters()[0], [7.0, 7.0, 7.0])


def test_avg_fn_gets_the_number_of_models_averaged() -> None:
    seen: list[int] = []

    def record(averaged: np.ndarray, current: np.ndarray, n: int) -> np.ndarray:
        seen.append(n)
        return averaged

    average(lambda p: AveragedParameters(p[:1], avg_fn=record), [[s[0]] for s in stream(4)])
    assert seen == [1, 2, 3]


def test_float32_and_complex_averages_keep_their_dtype() -> None:
    steps32 = stream(5, dtype=np.float32)
    averaged = average(AveragedParameters, steps32)
    assert all(p.dtype == np.float32 for p in averaged.parameters())
    assert_close(
        averaged.parameters(),
        [np.mean([s[j] for s in steps32], axis=0) for j in range(3)],
        rtol=1e-6,
    )
    values = [[np.array([1 + 2j, 3j])], [np.array([3 - 2j, 1 + 1j])]]
    averaged_c = average(AveragedParameters, values)
    np.testing.assert_allclose(averaged_c.parameters()[0], [2 + 0j, 0.5 + 2j], rtol=1e-15)


def test_only_one_averaging_function() -> None:
    with pytest.raises(
        AssertionError, match="^Only one of avg_fn and multi_avg_fn should be provided$"
    ):
        AveragedParameters(
            [np.zeros(1)], avg_fn=get_swa_avg_fn(), multi_avg_fn=get_swa_multi_avg_fn()
        )


@pytest.mark.parametrize("factory", [get_ema_avg_fn, get_ema_multi_avg_fn])
@pytest.mark.parametrize("decay", [-0.1, 1.5])
def test_decay_outside_unit_interval_is_refused(
    factory: Callable[[float], Any], decay: float
) -> None:
    with pytest.raises(ValueError) as info:
        factory(decay)
    assert (
        str(info.value)
        == f"Invalid decay value {decay} provided. Please provide a value in [0,1] range."
    )


def test_update_needs_the_same_parameters() -> None:
    averaged = AveragedParameters([np.zeros((2, 2)), np.zeros(3)])
    with pytest.raises(ValueError, match="expected 2 parameters, got 1"):
        averaged.update_parameters([np.zeros((2, 2))])
    with pytest.raises(ValueError, match=r"parameter 1 has shape \(4,\)"):
        averaged.update_parameters([np.zeros((2, 2)), np.zeros(4)])
    assert averaged.n_averaged == 0


def test_state_dict_averages_are_read_only_views_that_follow_the_averaging() -> None:
    steps = stream(4)
    source = average(AveragedParameters, steps[:3])
    state = source.state_dict()
    average_before = np.array(source.parameters()[0])
    assert not state["params"][0].flags.writeable
    assert np.shares_memory(state["params"][0], source.parameters()[0])
    with pytest.raises(ValueError, match="read-only"):
        state["params"][0][...] = 0.0
    np.testing.assert_array_equal(source.parameters()[0], average_before)
    source.update_parameters(steps[3])
    np.testing.assert_array_equal(state["params"][0], source.parameters()[0])
    assert not np.array_equal(state["params"][0], average_before)


def test_state_dict_round_trip() -> None:
    steps = stream(6)
    source = average(AveragedParameters, steps[:3])
    state = source.state_dict()
    assert state["n_averaged"] == 3
    target = AveragedParameters([np.zeros(s) for s in SHAPES])
    target.load_state_dict(state)
    for values in steps[3:]:
        source.update_parameters(values)
        target.update_parameters(values)
    assert target.n_averaged == 6
    for a, b in zip(target.parameters(), source.parameters(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_refused_state_dict_changes_nothing() -> None:
    averaged = average(AveragedParameters, stream(2))
    before = [p.copy() for p in averaged.parameters()]
    bad = {"params": [np.zeros((3, 4)), np.zeros(5)], "n_averaged": 7}
    with pytest.raises(ValueError):
        averaged.load_state_dict(bad)
    with pytest.raises(ValueError):
        averaged.load_state_dict({"params": [np.zeros(s) for s in SHAPES], "n_averaged": -1})
    assert averaged.n_averaged == 2
    for a, b in zip(averaged.parameters(), before, strict=True):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------- SWALR
def _sgd() -> SGD:
    return SGD(
        [{"params": [Parameter(np.zeros(1))]}, {"params": [Parameter(np.zeros(1))], "lr": 0.5}],
        lr=0.05,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            dict(swa_lr=1.0, anneal_strategy="exponential"),
            "anneal_strategy must be one of 'cos' or 'linear', instead got exponential",
        ),
        (
            dict(swa_lr=1.0, anneal_epochs=-1),
            "anneal_epochs must be equal or greater than 0, got -1",
        ),
        (
            dict(swa_lr=1.0, anneal_epochs=1.7),
            "anneal_epochs must be equal or greater than 0, got 1.7",
        ),
        (
            dict(swa_lr=[1.0, 0.1, 0.01]),
            "swa_lr must have the same length as optimizer.param_groups. swa_lr has 3 values, param_groups has 2.",
        ),
    ],
)
def test_swalr_refuses_bad_arguments_without_touching_the_groups(
    kwargs: dict[str, Any], message: str
) -> None:
    opt = _sgd()
    with pytest.raises(ValueError) as info:
        SWALR(opt, **kwargs)
    assert str(info.value) == message
    assert all("swa_lr" not in g and g["lr"] in (0.05, 0.5) for g in opt.param_groups)


def test_swalr_stores_swa_lr_in_each_group() -> None:
    opt = _sgd()
    SWALR(opt, swa_lr=[0.01, 0.02])
    assert [g["swa_lr"] for g in opt.param_groups] == [0.01, 0.02]
