"""npoptim's schedulers against live torch 2.13: every case of test_lr_scheduler.CASES, the
resumed-from-checkpoint runs, error messages, warnings and state dict contents."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_lr_scheduler import (  # noqa: E402
    CASES,
    RESUME_CASES,
    Case,
    ResumeCase,
    assert_sequences_equal,
    make_optimizer,
    npoptim_api,
    run_case,
    run_resume_case,
    torch_api,
)

NP = npoptim_api()
TORCH = torch_api()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_lr_sequence_matches_torch(case: Case) -> None:
    ours = run_case(NP, case)
    theirs = run_case(TORCH, case)
    assert_sequences_equal(ours, theirs)
    assert ours["warnings"] == theirs["warnings"]


@pytest.mark.parametrize("case", RESUME_CASES, ids=[c.name for c in RESUME_CASES])
def test_resume_with_last_epoch_matches_torch(case: ResumeCase) -> None:
    ours = run_resume_case(NP, case)["lr"]
    theirs = run_resume_case(TORCH, case)["lr"]
    np.testing.assert_array_equal(ours, theirs, strict=True)


# ------------------------------------------------------------------------ state dicts
def _plain(value: Any) -> Any:
    """torch's state dict values in npoptim's terms: Counter -> dict, tensors -> floats."""
    if isinstance(value, Counter):
        return dict(value)
    if isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _assert_same_state(ours: Any, theirs: Any, path: str = "state") -> None:
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), path
        assert sorted(ours, key=str) == sorted(theirs, key=str), path
        for key in theirs:
            _assert_same_state(ours[key], theirs[key], f"{path}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            _assert_same_state(a, b, f"{path}[{i}]")
    elif isinstance(theirs, float) and math.isfinite(theirs):
        assert ours == theirs, path
    else:
        assert ours == theirs, path


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_state_dict_has_torch_keys_and_values(case: Case) -> None:
    states = []
    for api in (NP, TORCH):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = make_optimizer(api, case)
            schedulers = case.build(api, opt)
            for epoch in range(min(case.epochs, 7)):
                opt.step()
                active = range(len(schedulers)) if case.active is None else case.active(epoch)
                for i in active:
                    s = schedulers[i]
                    if isinstance(s, api.ReduceLROnPlateau):
                        assert case.metrics is not None
                        s.step(case.metrics(epoch))
                    elif case.step_arg is not None:
                        s.step(case.step_arg(epoch))
                    else:
                        s.step()
        states.append([_plain(s.state_dict()) for s in schedulers])
    _assert_same_state(states[0], states[1])


# ------------------------------------------------------------- errors and warnings
def _two_groups(api: Any, kind: str = "sgd") -> Any:
    groups = [{"params": [api.param()]}, {"params": [api.param()], "lr": 0.5}]
    cls = {"sgd": api.SGD, "adam": api.Adam}[kind]
    return cls(groups, lr=0.05)


def _rprop(api: Any) -> Any:
    if api is TORCH:
        return torch.optim.Rprop([api.param()])
    from npoptim.optimizer import Optimizer

    class NoMomentum(Optimizer):
        def __init__(self, params: Any) -> None:
            super().__init__(params, {"lr": 0.01, "etas": (0.5, 1.2)})

    return NoMomentum([api.param()])


Invalid = Callable[[Any, Any], Any]

INVALID: list[tuple[str, Invalid]] = [
    ("not an optimizer", lambda api, opt: api.StepLR("sgd", step_size=1)),
    (
        "not an optimizer (lambda)",
        lambda api, opt: api.LambdaLR(SimpleNamespace(param_groups=[{}]), lambda e: 1.0),
    ),
    ("not an optimizer (plateau)", lambda api, opt: api.ReduceLROnPlateau(None)),
    ("not an optimizer (cyclic)", lambda api, opt: api.CyclicLR([1], 0.1, 1.0)),
    ("not an optimizer (one cycle)", lambda api, opt: api.OneCycleLR(3, 0.1, 10)),
    ("resume without initial_lr", lambda api, opt: api.StepLR(opt, 3, last_epoch=1)),
    ("lambda count", lambda api, opt: api.LambdaLR(opt, [lambda e: 1.0])),
    ("lambda not callable", lambda api, opt: api.LambdaLR(opt, 0.95)),
    ("multiplicative count", lambda api, opt: api.MultiplicativeLR(opt, [lambda e: 1.0] * 3)),
    ("multiplicative float", lambda api, opt: api.MultiplicativeLR(opt, 0.95)),
    ("multiplicative floats", lambda api, opt: api.MultiplicativeLR(opt, [0.95, 0.95])),
    ("constant factor > 1", lambda api, opt: api.ConstantLR(opt, factor=1.5)),
    ("constant factor < 0", lambda api, opt: api.ConstantLR(opt, factor=-0.1)),
    ("linear start 0", lambda api, opt: api.LinearLR(opt, start_factor=0.0, total_iters=4)),
    ("linear start 1.1", lambda api, opt: api.LinearLR(opt, start_factor=1.1, total_iters=4)),
    ("linear end 1.1", lambda api, opt: api.LinearLR(opt, end_factor=1.1)),
    ("linear end < 0", lambda api, opt: api.LinearLR(opt, end_factor=-1.0)),
    ("sequential empty", lambda api, opt: api.SequentialLR(opt, [], [])),
    (
        "sequential milestones",
        lambda api, opt: api.SequentialLR(opt, [api.StepLR(opt, 2), api.StepLR(opt, 3)], [1, 2]),
    ),
    (
        "sequential plateau",
        lambda api, opt: api.SequentialLR(opt, [api.ReduceLROnPlateau(opt)], []),
    ),
    (
        "sequential no optimizer",
        lambda api, opt: api.SequentialLR(opt, [api.StepLR(opt, 2), object()], [2]),
    ),
    (
        "sequential other optimizer",
        lambda api, opt: api.SequentialLR(
            opt, [api.StepLR(opt, 2), api.StepLR(_two_groups(api), 2)], [2]
        ),
    ),
    ("chained empty", lambda api, opt: api.ChainedScheduler([])),
    ("chained plateau", lambda api, opt: api.ChainedScheduler([api.ReduceLROnPlateau(opt)])),
    (
        "chained other optimizer",
        lambda api, opt: api.ChainedScheduler(
            [api.StepLR(opt, 2), api.ExponentialLR(_two_groups(api), 0.9)]
        ),
    ),
    ("plateau factor", lambda api, opt: api.ReduceLROnPlateau(opt, factor=1.0)),
    ("plateau mode", lambda api, opt: api.ReduceLROnPlateau(opt, mode="middle")),
    ("plateau threshold mode", lambda api, opt: api.ReduceLROnPlateau(opt, threshold_mode="x")),
    ("plateau min_lrs", lambda api, opt: api.ReduceLROnPlateau(opt, min_lr=[0.1])),
    ("cyclic mode", lambda api, opt: api.CyclicLR(opt, base_lr=0, max_lr=0, mode="CATS")),
    ("cyclic base_lr count", lambda api, opt: api.CyclicLR(opt, base_lr=[0.1], max_lr=1.0)),
    ("cyclic max_lr count", lambda api, opt: api.CyclicLR(opt, base_lr=0.1, max_lr=(1, 2, 3))),
    (
        "cyclic base_momentum count",
        lambda api, opt: api.CyclicLR(opt, 0.1, 1.0, base_momentum=[0.8]),
    ),
    (
        "cyclic max_momentum count",
        lambda api, opt: api.CyclicLR(opt, 0.1, 1.0, max_momentum=[0.9, 0.9, 0.9]),
    ),
    ("cyclic no momentum", lambda api, opt: api.CyclicLR(_rprop(api), base_lr=1, max_lr=5)),
    ("one cycle no steps", lambda api, opt: api.OneCycleLR(opt, max_lr=1e-3)),
    ("one cycle total_steps 0", lambda api, opt: api.OneCycleLR(opt, 0.1, total_steps=0)),
    ("one cycle total_steps float", lambda api, opt: api.OneCycleLR(opt, 0.1, total_steps=1.5)),
    ("one cycle epochs", lambda api, opt: api.OneCycleLR(opt, 0.1, epochs=0, steps_per_epoch=3)),
    (
        "one cycle steps_per_epoch",
        lambda api, opt: api.OneCycleLR(opt, 0.1, epochs=3, steps_per_epoch=-1),
    ),
    ("one cycle pct_start", lambda api, opt: api.OneCycleLR(opt, 1e-3, 10, pct_start=1.1)),
    ("one cycle pct_start int", lambda api, opt: api.OneCycleLR(opt, 1e-3, 10, pct_start=0)),
    (
        "one cycle anneal",
        lambda api, opt: api.OneCycleLR(opt, 1e-3, total_steps=10, anneal_strategy="CATS"),
    ),
    ("one cycle max_lr count", lambda api, opt: api.OneCycleLR(opt, [0.1], total_steps=10)),
    ("one cycle no momentum", lambda api, opt: api.OneCycleLR(_rprop(api), 0.1, 10)),
    ("warm restarts T_0", lambda api, opt: api.CosineAnnealingWarmRestarts(opt, T_0=0)),
    ("warm restarts T_0 float", lambda api, opt: api.CosineAnnealingWarmRestarts(opt, 2.5)),
    ("warm restarts T_mult", lambda api, opt: api.CosineAnnealingWarmRestarts(opt, 5, 0)),
    ("warm restarts T_mult float", lambda api, opt: api.CosineAnnealingWarmRestarts(opt, 5, 1.5)),
    (
        "warm restarts eta_min",
        lambda api, opt: api.CosineAnnealingWarmRestarts(opt, 5, eta_min="0"),
    ),
    (
        "warm restarts negative epoch",
        lambda api, opt: api.CosineAnnealingWarmRestarts(opt, 5).step(-1),
    ),
    ("swa anneal_strategy", lambda api, opt: api.SWALR(opt, anneal_strategy="exp", swa_lr=1.0)),
    ("swa anneal_epochs", lambda api, opt: api.SWALR(opt, anneal_epochs=-1, swa_lr=1.0)),
    ("swa anneal_epochs float", lambda api, opt: api.SWALR(opt, anneal_epochs=1.7, swa_lr=1.0)),
    ("swa_lr count", lambda api, opt: api.SWALR(opt, swa_lr=[1.0, 0.1, 0.01])),
    ("base get_lr", lambda api, opt: api.LRScheduler(opt)),
]


def _raised(api: Any, make: Invalid) -> BaseException:
    opt = _two_groups(api)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as info:
            make(api, opt)
    return info.value


@pytest.mark.parametrize("make", [m for _, m in INVALID], ids=[n for n, _ in INVALID])
def test_invalid_arguments_raise_torchs_error(make: Invalid) -> None:
    ours, theirs = _raised(NP, make), _raised(TORCH, make)
    assert type(ours) is type(theirs)
    assert str(ours) == str(theirs)


def _warnings_of(run: Callable[[], Any]) -> list[tuple[type, str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    return [(w.category, str(w.message)) for w in caught]


def _scenario_scheduler_first(api: Any) -> None:
    opt = _two_groups(api)
    sched = api.StepLR(opt, gamma=0.1, step_size=3)
    for _ in range(3):
        sched.step()
        opt.step()


def _scenario_step_overridden(api: Any) -> None:
    import types

    opt = _two_groups(api)
    sched = api.StepLR(opt, gamma=0.1, step_size=3)
    old_step = opt.step
    opt.step = types.MethodType(lambda self, *a, **k: old_step(*a, **k), opt)
    for _ in range(3):
        opt.step()
        sched.step()


def _scenario_get_lr_outside_step(api: Any) -> None:
    opt = _two_groups(api)
    api.ExponentialLR(opt, 0.9).get_lr()
    api.SWALR(opt, swa_lr=0.1).get_lr()
    api.CyclicLR(opt, 0.1, 1.0).get_lr()


def _scenario_epoch_argument(api: Any) -> None:
    opt = _two_groups(api)
    sched = api.ReduceLROnPlateau(opt)
    opt.step()
    sched.step(1.0, epoch=3)


def _scenario_resume_scheduler_first(api: Any) -> None:
    opt = _two_groups(api)
    for group in opt.param_groups:
        group["initial_lr"] = 0.01
    sched = api.StepLR(opt, gamma=0.1, step_size=3, last_epoch=10)
    for _ in range(3):
        sched.step()
        opt.step()


SCENARIOS = [
    _scenario_scheduler_first,
    _scenario_step_overridden,
    _scenario_get_lr_outside_step,
    _scenario_epoch_argument,
    _scenario_resume_scheduler_first,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.__name__ for s in SCENARIOS])
def test_warnings_match_torch(scenario: Callable[[Any], None]) -> None:
    ours = _warnings_of(lambda: scenario(NP))
    theirs = _warnings_of(lambda: scenario(TORCH))
    assert ours and ours == theirs


def test_one_cycle_stepping_past_total_steps_raises_torchs_error() -> None:
    errors = []
    for api in (NP, TORCH):
        opt = _two_groups(api)
        sched = api.OneCycleLR(opt, max_lr=0.1, total_steps=5)
        for _ in range(5):
            opt.step()
            sched.step()
        with pytest.raises(ValueError) as info:
            sched.step()
        errors.append(str(info.value))
    assert errors[0] == errors[1]


def test_plateau_with_added_param_group_raises_torchs_error() -> None:
    errors = []
    for api in (NP, TORCH):
        opt = _two_groups(api)
        sched = api.ReduceLROnPlateau(opt, patience=0, min_lr=[1e-5, 1e-4])
        opt.add_param_group({"params": [api.param()], "lr": 0.05})
        sched.step(1)
        with pytest.raises(RuntimeError) as info:
            sched.step(1.3)
        errors.append(str(info.value))
    assert errors[0] == errors[1]
