"""Learning-rate schedulers: every configuration of torch 2.13's test_lrscheduler.py, run for
up to 100 epochs on two param groups, against torch's recorded sequences; plus the behaviour
torch specifies (warnings, validation, state dicts, composition).

The case table ``CASES`` is shared: tests/test_lr_scheduler_torch.py runs it against live
torch and tools/make_scheduler_golden.py records torch's sequences from it into
tests/golden/schedulers/.
"""

from __future__ import annotations

import copy
import gc
import io
import json
import math
import pathlib
import warnings
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import npoptim.lr_scheduler as lrs
from npoptim import serialization
from npoptim.adam import Adam
from npoptim.adamw import AdamW
from npoptim.parameter import Parameter
from npoptim.sgd import SGD
from npoptim.swa_utils import SWALR

GOLDEN_DIR = pathlib.Path(__file__).parent / "golden" / "schedulers"
SEQUENCES = GOLDEN_DIR / "sequences.npz"
WARNINGS = GOLDEN_DIR / "warnings.json"


# --------------------------------------------------------------------------- libraries
def npoptim_api() -> SimpleNamespace:
    """npoptim's schedulers, optimizers and parameter type under torch's names."""
    names = {name: getattr(lrs, name) for name in lrs.__all__}
    return SimpleNamespace(
        **names,
        SWALR=SWALR,
        SGD=SGD,
        Adam=Adam,
        AdamW=AdamW,
        param=lambda: Parameter(np.zeros(2)),
        roundtrip=_save_and_load,
    )


def torch_api() -> SimpleNamespace:
    """torch's schedulers, optimizers and parameter type (imports torch)."""
    import torch
    from torch.optim import lr_scheduler as tls
    from torch.optim.swa_utils import SWALR as TorchSWALR

    names = {name: getattr(tls, name) for name in lrs.__all__}
    return SimpleNamespace(
        **names,
        SWALR=TorchSWALR,
        SGD=torch.optim.SGD,
        Adam=torch.optim.Adam,
        AdamW=torch.optim.AdamW,
        param=lambda: torch.nn.Parameter(torch.zeros(2, dtype=torch.float64)),
        roundtrip=copy.deepcopy,
    )


def _save_and_load(obj: Any) -> Any:
    """Pass a state dict through npoptim's checkpoint format."""
    buf = io.BytesIO()
    serialization.save(obj, buf)
    buf.seek(0)
    return serialization.load(buf)


# ------------------------------------------------------------------------------ cases
class LambdaLRTestObject:
    """A callable object: its attributes are saved in LambdaLR's state_dict."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, epoch: int) -> float:
        return self.value * epoch


class HalfScale:
    """A callable scale_fn object for CyclicLR."""

    def __init__(self) -> None:
        self.x = 0.5

    def __call__(self, _: float) -> float:
        return self.x


Build = Callable[[Any, Any], list[Any]]


@dataclass(frozen=True)
class Case:
    """One scheduler run: ``build(api, optimizer)`` returns the schedulers stepped together
    each epoch (ReduceLROnPlateau gets ``metrics(epoch)``; with ``step_arg`` the others get
    ``step(step_arg(epoch))``; ``active(epoch)`` picks which of them step)."""

    name: str
    build: Build
    optimizer: str = "sgd"
    lrs: tuple[float, float] = (0.05, 0.5)
    epochs: int = 100
    step_arg: Callable[[int], Any] | None = None
    metrics: Callable[[int], float] | None = None
    active: Callable[[int], Sequence[int]] | None = None


def one(cls: str, **kwargs: Any) -> Build:
    return lambda api, opt: [getattr(api, cls)(opt, **kwargs)]


def several(*specs: tuple[str, dict[str, Any]]) -> Build:
    return lambda api, opt: [getattr(api, cls)(opt, **kw) for cls, kw in specs]


def chained(*specs: tuple[str, dict[str, Any]]) -> Build:
    return lambda api, opt: [
        api.ChainedScheduler([getattr(api, cls)(opt, **kw) for cls, kw in specs])
    ]


def sequential(milestones: list[int], *specs: tuple[str, dict[str, Any]]) -> Build:
    return lambda api, opt: [
        api.SequentialLR(
            opt, [getattr(api, cls)(opt, **kw) for cls, kw in specs], milestones=milestones
        )
    ]


def sequential_of_chained(api: Any, opt: Any) -> list[Any]:
    """torch's test_sequentiallr5: a ChainedScheduler inside a SequentialLR."""
    const = api.ConstantLR(optimizer=opt, factor=0.1, total_iters=5)
    lin = api.LinearLR(optimizer=opt, start_factor=0.1, total_iters=5)
    chain = api.ChainedScheduler([lin, const])
    const2 = api.ConstantLR(optimizer=opt, factor=0.5, total_iters=5)
    return [api.SequentialLR(opt, schedulers=[chain, const2], milestones=[5])]


def plateau_metrics(kind: str) -> Callable[[int], float]:
    """torch's metric sequences, continued to 100 epochs."""
    table: dict[str, Callable[[int], float]] = {
        "down_0167": lambda i: 10 - i * 0.0167,
        "down_0165": lambda i: 10 - i * 0.0165,
        "step_up": lambda i: -0.8 if i < 2 else -0.234,
        "up_1025": lambda i: 1.5 * 1.025**i,
        "up_1005": lambda i: 1.5 * 1.005**i,
        "down_085": lambda i: 1.5 * 0.85**i,
        "drop": lambda i: 1.0 if i < 7 else (0.6 if i == 7 else 0.5),
        "bumpy": lambda i: (
            [1.0, 2.0, 3.0, 4.0, 3.0, 4.0, 5.0, 3.0, 2.0, 1.0][i % 10] / (1 + i // 10)
        ),
    }
    return table[kind]


def swa_after(swa_start: int) -> Callable[[int], Sequence[int]]:
    """torch's _test_swalr: scheduler 0 before ``swa_start``, SWALR (last) from it on."""
    return lambda epoch: [1] if epoch >= swa_start else [0]


def _describe(cls: str, kwargs: dict[str, Any]) -> str:
    """``StepLR(gamma=0.1,step_size=3)``; callables are named ``fn``."""
    args = ",".join(f"{k}={'fn' if callable(v) else repr(v)}" for k, v in kwargs.items())
    return f"{cls}({args})"


def _closed(cls: str, **kwargs: Any) -> Case:
    """``step(epoch)`` with the epoch counting up: the closed form where there is one."""
    return Case(f"closed_form/{_describe(cls, kwargs)}", one(cls, **kwargs), step_arg=lambda e: e)


def _constant_epoch(cls: str, **kwargs: Any) -> Case:
    """``step(2)`` every time: torch's test that the lr then stays constant."""
    return Case(
        f"constant_epoch/{_describe(cls, kwargs)}", one(cls, **kwargs), step_arg=lambda e: 2
    )


PLATEAU_CONFIGS: list[tuple[str, dict[str, Any], str]] = [
    (
        "1",
        dict(threshold_mode="abs", mode="min", threshold=0.01, patience=5, cooldown=5),
        "down_0167",
    ),
    (
        "2",
        dict(patience=5, cooldown=0, threshold_mode="abs", mode="min", threshold=0.1),
        "down_0165",
    ),
    ("3", dict(mode="max", patience=5, cooldown=5, threshold_mode="abs"), "step_up"),
    ("4", dict(mode="max", patience=3, threshold_mode="rel", threshold=0.1), "up_1025"),
    (
        "5",
        dict(mode="max", threshold_mode="rel", threshold=0.1, patience=5, cooldown=5),
        "up_1005",
    ),
    ("6", dict(mode="min", threshold_mode="rel", threshold=0.1), "down_085"),
    (
        "7",
        dict(mode="min", threshold_mode="rel", threshold=0.1, patience=5, cooldown=5),
        "drop",
    ),
    (
        "8",
        dict(
            mode="max",
            threshold_mode="rel",
            min_lr=[0.4, 0.3],
            threshold=0.1,
            patience=5,
            cooldown=5,
        ),
        "up_1005",
    ),
    ("state_dict", dict(mode="min", factor=0.1, patience=2), "bumpy"),
    ("patience0", dict(mode="min", patience=0), "bumpy"),
    ("defaults", {}, "bumpy"),
]

CYCLIC_CONFIGS: list[tuple[str, dict[str, Any]]] = [
    (
        "triangular",
        dict(base_lr=1, max_lr=5, step_size_up=4, base_momentum=1, max_momentum=5),
    ),
    ("triangular_no_momentum", dict(base_lr=1, max_lr=5, step_size_up=4, cycle_momentum=False)),
    (
        "triangular2",
        dict(
            base_lr=1,
            max_lr=5,
            step_size_up=4,
            base_momentum=1,
            max_momentum=5,
            mode="triangular2",
        ),
    ),
    (
        "exp_range",
        dict(
            base_lr=1,
            max_lr=5,
            step_size_up=4,
            base_momentum=1,
            max_momentum=5,
            mode="exp_range",
            gamma=0.9,
        ),
    ),
    (
        "triangular_lists",
        dict(
            base_lr=[1, 2],
            max_lr=[5, 6],
            step_size_up=4,
            base_momentum=[1, 2],
            max_momentum=[5, 6],
        ),
    ),
    (
        "triangular2_lists",
        dict(
            base_lr=[1, 3],
            max_lr=[5, 7],
            step_size_up=4,
            base_momentum=[1, 3],
            max_momentum=[5, 7],
            mode="triangular2",
        ),
    ),
    (
        "exp_range_lists",
        dict(
            base_lr=[1, 5],
            max_lr=[5, 12],
            step_size_up=4,
            base_momentum=[1, 5],
            max_momentum=[5, 12],
            mode="exp_range",
            gamma=0.9,
        ),
    ),
    (
        "triangular_up_down",
        dict(
            base_lr=1,
            max_lr=5,
            step_size_up=4,
            step_size_down=6,
            base_momentum=1,
            max_momentum=5,
        ),
    ),
    (
        "triangular2_up_down",
        dict(
            base_lr=[1, 3],
            max_lr=[5, 7],
            step_size_up=2,
            step_size_down=6,
            base_momentum=[1, 3],
            max_momentum=[5, 7],
            mode="triangular2",
        ),
    ),
    (
        "exp_range_up_down",
        dict(
            base_lr=1,
            max_lr=5,
            step_size_up=2,
            step_size_down=6,
            base_momentum=1,
            max_momentum=5,
            mode="exp_range",
            gamma=0.9,
        ),
    ),
    ("defaults", dict(base_lr=0.01, max_lr=0.1)),
    ("short_defaults", dict(base_lr=0.01, max_lr=0.1, step_size_up=7)),
    (
        "scale_fn_cycle",
        dict(base_lr=0.1, max_lr=1.0, step_size_up=3, scale_fn=lambda c: 1 / c),
    ),
    (
        "scale_fn_iterations",
        dict(
            base_lr=0.1,
            max_lr=1.0,
            step_size_up=3,
            scale_fn=lambda t: 0.99**t,
            scale_mode="iterations",
        ),
    ),
    (
        "scale_fn_object",
        dict(base_lr=1, max_lr=5, step_size_up=4, cycle_momentum=False, scale_fn=HalfScale()),
    ),
]

ONE_CYCLE_CONFIGS: list[tuple[str, dict[str, Any], int]] = [
    (
        "linear",
        dict(
            max_lr=25,
            final_div_factor=2,
            base_momentum=1,
            max_momentum=22,
            total_steps=10,
            anneal_strategy="linear",
        ),
        10,
    ),
    (
        "linear_three_phases",
        dict(
            max_lr=25,
            div_factor=25,
            base_momentum=1,
            max_momentum=22,
            total_steps=10,
            anneal_strategy="linear",
            pct_start=0.4,
            final_div_factor=4,
            three_phase=True,
        ),
        10,
    ),
    (
        "cos",
        dict(max_lr=25, final_div_factor=2, base_momentum=1, max_momentum=22, total_steps=10),
        10,
    ),
    ("small_linear", dict(max_lr=0.01, total_steps=10, anneal_strategy="linear"), 10),
    ("small_cos", dict(max_lr=0.01, total_steps=10), 10),
    ("cos_100", dict(max_lr=[0.1, 1.0], total_steps=100), 100),
    ("cos_three_phase_100", dict(max_lr=0.1, total_steps=100, three_phase=True), 100),
    (
        "linear_epochs",
        dict(max_lr=0.1, epochs=10, steps_per_epoch=10, anneal_strategy="linear"),
        100,
    ),
    ("no_momentum", dict(max_lr=0.1, total_steps=100, cycle_momentum=False, pct_start=0.25), 100),
]

CASES: list[Case] = [
    # ---- chainable schedulers on their own
    Case("StepLR/3", one("StepLR", gamma=0.1, step_size=3)),
    Case("StepLR/30", one("StepLR", step_size=30)),
    Case("StepLR/state_dict", one("StepLR", gamma=0.01 / 2, step_size=1)),
    Case("MultiStepLR/2-5-9", one("MultiStepLR", gamma=0.1, milestones=[2, 5, 9])),
    Case("MultiStepLR/30-80", one("MultiStepLR", milestones=[30, 80])),
    Case("MultiStepLR/state_dict", one("MultiStepLR", gamma=0.01, milestones=[1, 4, 6])),
    Case("MultiStepLR/repeated", one("MultiStepLR", gamma=0.5, milestones=[6, 3, 3, 40])),
    Case("ConstantLR/half", one("ConstantLR", factor=1.0 / 2, total_iters=5)),
    Case("ConstantLR/third", one("ConstantLR", factor=1.0 / 3, total_iters=4)),
    Case("ConstantLR/defaults", one("ConstantLR")),
    Case("LinearLR/half", one("LinearLR", start_factor=1.0 / 2, total_iters=4)),
    Case(
        "LinearLR/quarter-to-3/5",
        one("LinearLR", start_factor=1.0 / 4, end_factor=3.0 / 5, total_iters=4),
    ),
    Case(
        "LinearLR/third-to-0.7",
        one("LinearLR", start_factor=1.0 / 3, end_factor=0.7, total_iters=4),
    ),
    Case("LinearLR/defaults", one("LinearLR")),
    Case("LinearLR/decay", one("LinearLR", start_factor=0.5, end_factor=0.1, total_iters=5)),
    Case("ExponentialLR/0.9", one("ExponentialLR", gamma=0.9)),
    Case("ExponentialLR/0.1", one("ExponentialLR", gamma=0.1)),
    Case("ExponentialLR/0.999", one("ExponentialLR", gamma=0.999)),
    Case("ExponentialLR/0.01", one("ExponentialLR", gamma=0.01)),
    Case("PolynomialLR/0.9-5", one("PolynomialLR", power=0.9, total_iters=5)),
    Case("PolynomialLR/0.9", one("PolynomialLR", power=0.9)),
    Case("PolynomialLR/defaults", one("PolynomialLR")),
    Case("PolynomialLR/2-60", one("PolynomialLR", power=2.0, total_iters=60)),
    Case("CosineAnnealingLR/10", one("CosineAnnealingLR", T_max=10, eta_min=1e-10)),
    Case("CosineAnnealingLR/5", one("CosineAnnealingLR", T_max=5, eta_min=1e-10)),
    Case("CosineAnnealingLR/5-0.1", one("CosineAnnealingLR", T_max=5, eta_min=0.1)),
    Case("CosineAnnealingLR/defaults", one("CosineAnnealingLR", T_max=10)),
    Case("CosineAnnealingLR/100", one("CosineAnnealingLR", T_max=100)),
    Case(
        "LambdaLR/two",
        one("LambdaLR", lr_lambda=[lambda x1: 0.9**x1, lambda x2: 0.8**x2]),
        lrs=(0.05, 0.4),
    ),
    Case("LambdaLR/floor10", one("LambdaLR", lr_lambda=lambda e: e // 10)),
    Case("LambdaLR/floor30", one("LambdaLR", lr_lambda=lambda epoch: epoch // 30)),
    Case("LambdaLR/object", one("LambdaLR", lr_lambda=LambdaLRTestObject(10))),
    Case(
        "MultiplicativeLR/two",
        one("MultiplicativeLR", lr_lambda=[lambda x1: 0.9, lambda x2: 0.8]),
        lrs=(0.05, 0.4),
    ),
    Case("MultiplicativeLR/0.95", one("MultiplicativeLR", lr_lambda=lambda epoch: 0.95)),
    Case(
        "MultiplicativeLR/epoch",
        one("MultiplicativeLR", lr_lambda=lambda epoch: 1 - 0.5 / (epoch + 1)),
    ),
    *[
        Case(
            f"CosineAnnealingWarmRestarts/T_mult={m}",
            one("CosineAnnealingWarmRestarts", T_0=10, T_mult=m, eta_min=1e-10),
        )
        for m in (1, 2, 4)
    ],
    Case("CosineAnnealingWarmRestarts/20", one("CosineAnnealingWarmRestarts", T_0=20)),
    Case("CosineAnnealingWarmRestarts/100", one("CosineAnnealingWarmRestarts", T_0=100)),
    Case("CosineAnnealingWarmRestarts/4", one("CosineAnnealingWarmRestarts", T_0=4)),
    *[
        Case(
            f"CosineAnnealingWarmRestarts/fractional/T_mult={m}",
            one("CosineAnnealingWarmRestarts", T_0=10, T_mult=m, eta_min=1e-10),
            epochs=300,
            step_arg=lambda k: round(k * 0.1, 1),
        )
        for m in (1, 2, 4)
    ],
    *[
        Case(
            f"CosineAnnealingWarmRestarts/interleaved/T_mult={m}",
            one("CosineAnnealingWarmRestarts", T_0=10, T_mult=m, eta_min=1e-10),
            epochs=len(epochs),
            step_arg=epochs.__getitem__,
        )
        for m, epochs in (
            (1, [0, 1, 2, 3, 4, 5, 12, 27, 3, 4, 5, 6, 13]),
            (2, [0, 1, 2, 3, 4, 5, 25, 32, 33, 34, 80, 81, 3]),
            (3, [0, 0.1, 0.2, 0.3, 1.3, 2.3, 17.5, 18.5, 19.5, 29.5, 30.5, 31.5, 50]),
        )
    ],
    # ---- ReduceLROnPlateau, alone and with chainable schedulers
    *[
        Case(
            f"ReduceLROnPlateau/{name}",
            one("ReduceLROnPlateau", **kwargs),
            lrs=(0.5, 0.5),
            metrics=plateau_metrics(metrics),
        )
        for name, kwargs, metrics in PLATEAU_CONFIGS
    ],
    Case(
        "compound/plateau+StepLR",
        several(
            ("ReduceLROnPlateau", PLATEAU_CONFIGS[0][1]), ("StepLR", dict(gamma=0.1, step_size=3))
        ),
        lrs=(0.5, 0.5),
        metrics=plateau_metrics("down_0167"),
    ),
    Case(
        "compound/plateau+MultiStepLR",
        several(
            ("ReduceLROnPlateau", PLATEAU_CONFIGS[1][1]),
            ("MultiStepLR", dict(gamma=0.1, milestones=[3, 8, 12])),
        ),
        lrs=(0.5, 0.5),
        metrics=plateau_metrics("down_0165"),
    ),
    Case(
        "compound/plateau+ExponentialLR",
        several(("ReduceLROnPlateau", PLATEAU_CONFIGS[2][1]), ("ExponentialLR", dict(gamma=0.1))),
        lrs=(0.5, 0.5),
        metrics=plateau_metrics("step_up"),
    ),
    Case(
        "compound/plateau+CosineAnnealingLR",
        several(
            ("ReduceLROnPlateau", PLATEAU_CONFIGS[3][1]),
            ("CosineAnnealingLR", dict(T_max=10, eta_min=1e-10)),
        ),
        lrs=(0.05, 0.05),
        metrics=plateau_metrics("up_1025"),
    ),
    Case(
        "compound/plateau+LinearLR",
        several(
            ("ReduceLROnPlateau", PLATEAU_CONFIGS[1][1]),
            ("LinearLR", dict(start_factor=0.4, total_iters=4)),
        ),
        lrs=(0.5, 0.5),
        metrics=plateau_metrics("down_0165"),
    ),
    # ---- several chainable schedulers stepped together
    Case(
        "compound/StepLR+MultiStepLR",
        several(
            ("StepLR", dict(gamma=0.1, step_size=3)),
            ("MultiStepLR", dict(gamma=0.1, milestones=[2, 5, 9])),
        ),
    ),
    Case(
        "compound/StepLR+ExponentialLR",
        several(("StepLR", dict(gamma=0.1, step_size=3)), ("ExponentialLR", dict(gamma=0.9))),
    ),
    Case(
        "compound/MultiStepLR+ExponentialLR",
        several(
            ("MultiStepLR", dict(gamma=0.1, milestones=[2, 5, 9])),
            ("ExponentialLR", dict(gamma=0.9)),
        ),
    ),
    Case(
        "compound/LinearLR+ExponentialLR",
        several(
            ("LinearLR", dict(start_factor=0.4, end_factor=0.9, total_iters=4)),
            ("ExponentialLR", dict(gamma=0.9)),
        ),
    ),
    Case(
        "compound/StepLR+ConstantLR",
        several(
            ("StepLR", dict(gamma=0.1, step_size=3)),
            ("ConstantLR", dict(factor=0.4, total_iters=4)),
        ),
    ),
    Case(
        "compound/MultiStepLR+LinearLR",
        several(
            ("MultiStepLR", dict(gamma=0.1, milestones=[2, 5, 9])),
            ("LinearLR", dict(start_factor=0.4, total_iters=4)),
        ),
    ),
    Case(
        "compound/CosineAnnealingLR+StepLR",
        several(
            ("CosineAnnealingLR", dict(T_max=10, eta_min=1e-10)),
            ("StepLR", dict(gamma=0.1, step_size=3)),
        ),
    ),
    Case(
        "compound/CosineAnnealingLR+MultiStepLR",
        several(
            ("CosineAnnealingLR", dict(T_max=10, eta_min=1e-10)),
            ("MultiStepLR", dict(gamma=0.1, milestones=[2, 5, 9])),
        ),
    ),
    Case(
        "compound/LinearLR+CosineAnnealingLR",
        several(
            ("LinearLR", dict(start_factor=0.4, total_iters=4)),
            ("CosineAnnealingLR", dict(T_max=10, eta_min=1e-10)),
        ),
    ),
    Case(
        "compound/CosineAnnealingLR+ExponentialLR",
        several(
            ("CosineAnnealingLR", dict(T_max=10, eta_min=1e-10)), ("ExponentialLR", dict(gamma=0.1))
        ),
        epochs=30,
    ),
    Case(
        "compound/CosineAnnealingLR-then-CyclicLR",
        several(
            ("CosineAnnealingLR", dict(T_max=20, eta_min=0.1)),
            ("CyclicLR", dict(base_lr=0.1, max_lr=0.3, step_size_up=1, step_size_down=3)),
        ),
        lrs=(0.5, 0.5),
        active=lambda i: [0] if i <= 20 else [1],
    ),
    # ---- ChainedScheduler
    Case("ChainedScheduler/1", chained(("StepLR", dict(gamma=0.1, step_size=3)))),
    Case("ChainedScheduler/2", chained(("LinearLR", dict(start_factor=0.4, total_iters=3)))),
    Case(
        "ChainedScheduler/3",
        chained(
            ("LinearLR", dict(start_factor=0.4, total_iters=3)),
            ("MultiStepLR", dict(milestones=[4, 8, 10], gamma=0.1)),
        ),
    ),
    Case(
        "ChainedScheduler/4",
        chained(
            ("ExponentialLR", dict(gamma=0.9)),
            ("ConstantLR", dict(factor=0.2, total_iters=4)),
            ("StepLR", dict(gamma=0.1, step_size=3)),
        ),
    ),
    Case(
        "ChainedScheduler/5",
        chained(("PolynomialLR", dict(power=0.9, total_iters=5)), ("ConstantLR", dict(factor=0.1))),
    ),
    Case("ChainedScheduler/constants", chained(("ConstantLR", {}), ("ConstantLR", {}))),
    Case(
        "ChainedScheduler/docs",
        chained(
            ("ConstantLR", dict(factor=0.1, total_iters=20)), ("ExponentialLR", dict(gamma=0.9))
        ),
    ),
    # ---- SequentialLR
    Case(
        "SequentialLR/1",
        sequential(
            [3], ("ExponentialLR", dict(gamma=0.8)), ("StepLR", dict(gamma=0.1, step_size=4))
        ),
    ),
    Case(
        "SequentialLR/2",
        sequential(
            [3], ("ConstantLR", dict(factor=0.1, total_iters=3)), ("ExponentialLR", dict(gamma=0.9))
        ),
    ),
    Case(
        "SequentialLR/3",
        sequential(
            [3, 6],
            ("ConstantLR", dict(factor=0.1, total_iters=3)),
            ("ExponentialLR", dict(gamma=0.8)),
            ("StepLR", dict(gamma=0.1, step_size=2)),
        ),
    ),
    Case(
        "SequentialLR/4",
        sequential([10], ("ConstantLR", dict(factor=1)), ("ConstantLR", dict(factor=0.1))),
    ),
    Case("SequentialLR/5", sequential_of_chained),
    Case(
        "SequentialLR/linear-up-down",
        sequential(
            [4],
            ("LinearLR", dict(start_factor=0.1, end_factor=0.8, total_iters=4)),
            ("LinearLR", dict(start_factor=0.8, end_factor=0.1, total_iters=4)),
        ),
        lrs=(2.0, 0.5),
    ),
    Case(
        "SequentialLR/no_warnings",
        sequential(
            [5],
            ("LinearLR", dict(start_factor=0.5, end_factor=0.1, total_iters=5)),
            ("ExponentialLR", dict(gamma=0.9)),
        ),
    ),
    Case(
        "SequentialLR/constants",
        sequential([2], ("ConstantLR", {}), ("ConstantLR", {})),
    ),
    Case(
        "SequentialLR/warmup-cosine",
        sequential(
            [10],
            ("LinearLR", dict(start_factor=0.01, total_iters=10)),
            ("CosineAnnealingLR", dict(T_max=90, eta_min=1e-4)),
        ),
    ),
    Case(
        "SequentialLR/warmup-polynomial",
        sequential(
            [5, 40],
            ("LinearLR", dict(start_factor=0.1, total_iters=5)),
            ("PolynomialLR", dict(total_iters=35, power=2.0)),
            ("MultiStepLR", dict(milestones=[10, 30])),
        ),
    ),
    # ---- CyclicLR and OneCycleLR
    *[Case(f"CyclicLR/{name}", one("CyclicLR", **kwargs)) for name, kwargs in CYCLIC_CONFIGS],
    Case(
        "CyclicLR/adam_no_momentum",
        one("CyclicLR", base_lr=1, max_lr=5, step_size_up=4, cycle_momentum=False),
        optimizer="adam",
    ),
    Case("CyclicLR/adam_beta1", one("CyclicLR", base_lr=1, max_lr=5), optimizer="adam"),
    Case(
        "CyclicLR/adam_beta1_short",
        one("CyclicLR", base_lr=0.1, max_lr=0.5, step_size_up=5, mode="triangular2"),
        optimizer="adam",
    ),
    *[
        Case(f"OneCycleLR/{name}", one("OneCycleLR", **kwargs), epochs=epochs)
        for name, kwargs, epochs in ONE_CYCLE_CONFIGS
    ],
    Case(
        "OneCycleLR/adam_linear",
        one(
            "OneCycleLR",
            max_lr=25,
            final_div_factor=2,
            base_momentum=1,
            max_momentum=22,
            total_steps=10,
            anneal_strategy="linear",
        ),
        optimizer="adam",
        epochs=10,
    ),
    Case(
        "OneCycleLR/adam_cos_100", one("OneCycleLR", max_lr=0.01, total_steps=100), optimizer="adam"
    ),
    # ---- SWALR (npoptim.swa_utils), alone and after another scheduler
    Case(
        "SWALR/no_anneal",
        lambda api, opt: [api.SWALR(opt, anneal_epochs=1, swa_lr=0.01)],
        active=lambda e: [0] if e >= 5 else [],
    ),
    Case(
        "SWALR/cos_after_multiplicative",
        lambda api, opt: [
            api.MultiplicativeLR(opt, lr_lambda=lambda epoch: 0.9),
            api.SWALR(opt, anneal_epochs=5, swa_lr=0.01),
        ],
        active=swa_after(5),
    ),
    Case(
        "SWALR/linear_after_multiplicative",
        lambda api, opt: [
            api.MultiplicativeLR(opt, lr_lambda=lambda epoch: 0.9),
            api.SWALR(opt, anneal_epochs=4, anneal_strategy="linear", swa_lr=[0.01, 0.02]),
        ],
        active=swa_after(5),
    ),
    Case("SWALR/cos_3", lambda api, opt: [api.SWALR(opt, anneal_epochs=3, swa_lr=0.5)]),
    Case(
        "SWALR/linear_10",
        lambda api, opt: [api.SWALR(opt, anneal_epochs=10, anneal_strategy="linear", swa_lr=5.0)],
    ),
    Case("SWALR/defaults", lambda api, opt: [api.SWALR(opt, swa_lr=0.01)]),
    Case("SWALR/anneal_0", lambda api, opt: [api.SWALR(opt, swa_lr=0.01, anneal_epochs=0)]),
    Case(
        "SWALR/after_cosine",
        lambda api, opt: [
            api.CosineAnnealingLR(opt, T_max=60),
            api.SWALR(opt, swa_lr=0.02, anneal_epochs=20),
        ],
        active=swa_after(60),
    ),
    # ---- step(epoch): the closed forms, and a constant epoch
    _closed("StepLR", gamma=0.1, step_size=3),
    _closed("LinearLR", start_factor=1.0 / 3, end_factor=0.7, total_iters=4),
    _closed("LinearLR", start_factor=1.0 / 2, total_iters=4),
    _closed("ConstantLR", factor=1.0 / 3, total_iters=4),
    _closed("ConstantLR", factor=1.0 / 2, total_iters=5),
    _closed("MultiStepLR", gamma=0.1, milestones=[2, 5, 9]),
    _closed("ExponentialLR", gamma=0.9),
    _closed("PolynomialLR", power=0.9),
    _closed("CosineAnnealingLR", T_max=5, eta_min=1e-10),
    _closed("LambdaLR", lr_lambda=lambda e: 0.5 ** (e // 7)),
    _closed("MultiplicativeLR", lr_lambda=lambda e: 0.97),
    _closed("CyclicLR", base_lr=0.1, max_lr=0.2),
    _closed("OneCycleLR", max_lr=0.1, total_steps=100),
    _constant_epoch("StepLR", step_size=2),
    _constant_epoch("ExponentialLR", gamma=0.9),
    _constant_epoch("ConstantLR"),
    _constant_epoch("LinearLR"),
    _constant_epoch("PolynomialLR", power=0.9),
]


@dataclass(frozen=True)
class ResumeCase:
    """torch's checkpoint test: ``make(api, optimizer, last_epoch)`` builds the scheduler."""

    name: str
    make: Callable[[Any, Any, int], Any]
    epochs: int = 20


def resumable(cls: str, **kwargs: Any) -> Callable[[Any, Any, int], Any]:
    return lambda api, opt, last_epoch: getattr(api, cls)(opt, last_epoch=last_epoch, **kwargs)


RESUME_CASES: list[ResumeCase] = [
    ResumeCase("resume/ExponentialLR", resumable("ExponentialLR", gamma=0.999)),
    ResumeCase("resume/LambdaLR", resumable("LambdaLR", lr_lambda=lambda epoch: epoch // 30)),
    ResumeCase(
        "resume/MultiplicativeLR", resumable("MultiplicativeLR", lr_lambda=lambda epoch: 0.95)
    ),
    ResumeCase("resume/StepLR", resumable("StepLR", step_size=30)),
    ResumeCase("resume/MultiStepLR", resumable("MultiStepLR", milestones=[30, 80])),
    ResumeCase("resume/ConstantLR", resumable("ConstantLR")),
    ResumeCase("resume/LinearLR", resumable("LinearLR")),
    ResumeCase("resume/PolynomialLR", resumable("PolynomialLR")),
    ResumeCase("resume/CosineAnnealingLR", resumable("CosineAnnealingLR", T_max=10)),
    ResumeCase(
        "resume/CosineAnnealingLR-eta_min", resumable("CosineAnnealingLR", T_max=5, eta_min=0.1)
    ),
    ResumeCase(
        "resume/CosineAnnealingWarmRestarts", resumable("CosineAnnealingWarmRestarts", T_0=20)
    ),
    ResumeCase("resume/CyclicLR", resumable("CyclicLR", base_lr=0.01, max_lr=0.1)),
    ResumeCase("resume/OneCycleLR", resumable("OneCycleLR", max_lr=0.01, total_steps=10), 10),
    ResumeCase("resume/SWALR", resumable("SWALR", swa_lr=0.01)),
]


# ---------------------------------------------------------------------------- running
def make_optimizer(api: Any, case: Case) -> Any:
    groups = [{"params": [api.param()]}, {"params": [api.param()], "lr": case.lrs[1]}]
    if case.optimizer == "adam":
        return api.Adam(groups, lr=case.lrs[0])
    return api.SGD(groups, lr=case.lrs[0])


def _momenta(opt: Any) -> list[float]:
    out = []
    for group in opt.param_groups:
        if "momentum" in group:
            out.append(float(group["momentum"]))
        elif "betas" in group:
            out.append(float(group["betas"][0]))
        else:
            out.append(math.nan)
    return out


def _step(case: Case, scheduler: Any, epoch: int, plateau: type) -> None:
    if isinstance(scheduler, plateau):
        assert case.metrics is not None
        scheduler.step(case.metrics(epoch))
    elif case.step_arg is not None:
        scheduler.step(case.step_arg(epoch))
    else:
        scheduler.step()


def run_case(api: Any, case: Case, split_at: int | None = None) -> dict[str, Any]:
    """Run a case; return per-epoch ``lr``, ``momentum`` and ``last_lr`` arrays (epochs, 2),
    recorded before each step, and a count of the warnings raised.

    With ``split_at``, the optimizer and schedulers are rebuilt at that epoch from their
    state dicts (passed through ``api.roundtrip``), as when resuming from a checkpoint.
    """
    rows: dict[str, list[list[float]]] = {"lr": [], "momentum": [], "last_lr": []}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt = make_optimizer(api, case)
        schedulers = case.build(api, opt)
        for epoch in range(case.epochs):
            if epoch == split_at:
                saved = api.roundtrip(
                    {
                        "optimizer": opt.state_dict(),
                        "schedulers": [s.state_dict() for s in schedulers],
                    }
                )
                opt = make_optimizer(api, case)
                schedulers = case.build(api, opt)
                opt.load_state_dict(saved["optimizer"])
                for scheduler, state in zip(schedulers, saved["schedulers"], strict=True):
                    scheduler.load_state_dict(state)
            rows["lr"].append([float(g["lr"]) for g in opt.param_groups])
            rows["momentum"].append(_momenta(opt))
            rows["last_lr"].append([float(x) for x in schedulers[-1].get_last_lr()])
            opt.step()
            active = range(len(schedulers)) if case.active is None else case.active(epoch)
            for i in active:
                _step(case, schedulers[i], epoch, api.ReduceLROnPlateau)
    counts = Counter(f"{w.category.__name__}: {w.message}" for w in caught)
    return {key: np.array(value, dtype=np.float64) for key, value in rows.items()} | {
        "warnings": dict(counts)
    }


def run_resume_case(api: Any, case: ResumeCase, resume_at: int = 1) -> dict[str, Any]:
    """torch's checkpoint test, continued: step ``resume_at`` times, load the optimizer's
    state into a new AdamW, build the scheduler there with ``last_epoch=resume_at - 1`` and
    keep stepping; lrs recorded before each step."""

    def adamw() -> Any:
        return api.AdamW([{"params": [api.param()]}, {"params": [api.param()], "lr": 0.5}])

    opt = adamw()
    scheduler = case.make(api, opt, -1)
    lrs: list[list[float]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(case.epochs):
            if epoch == resume_at:
                state = api.roundtrip(opt.state_dict())
                opt = adamw()
                opt.load_state_dict(state)
                scheduler = case.make(api, opt, resume_at - 1)
            lrs.append([float(g["lr"]) for g in opt.param_groups])
            opt.step()
            scheduler.step()
    return {"lr": np.array(lrs)}


# ----------------------------------------------------------------------- golden files
def load_golden() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(SEQUENCES, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    meta = json.loads(WARNINGS.read_text())
    return arrays, meta


@pytest.fixture(scope="module")
def golden() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    return load_golden()


def golden_arrays(arrays: dict[str, np.ndarray], name: str) -> dict[str, np.ndarray]:
    """A case's recorded sequences; ``momentum`` is absent (all NaN) where the optimizer's
    groups have none and ``last_lr`` where it equals ``lr``."""
    lr = arrays[f"{name}|lr"]
    return {
        "lr": lr,
        "momentum": arrays.get(f"{name}|momentum", np.full_like(lr, np.nan)),
        "last_lr": arrays.get(f"{name}|last_lr", lr),
    }


def assert_sequences_equal(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Learning rates and momenta equal torch's exactly (NaN where a group has none)."""
    for key in ("lr", "momentum", "last_lr"):
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key, strict=True)


def test_golden_covers_every_case(golden: tuple[dict[str, np.ndarray], dict[str, Any]]) -> None:
    arrays, meta = golden
    names = {key.rsplit("|", 1)[0] for key in arrays}
    assert names == {case.name for case in CASES + RESUME_CASES}
    assert meta["torch"].startswith("2.13")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_matches_torch_golden(
    case: Case, golden: tuple[dict[str, np.ndarray], dict[str, Any]]
) -> None:
    arrays, meta = golden
    actual = run_case(npoptim_api(), case)
    assert_sequences_equal(actual, golden_arrays(arrays, case.name))
    assert actual["warnings"] == meta["warnings"][case.name]


@pytest.mark.parametrize("case", RESUME_CASES, ids=[c.name for c in RESUME_CASES])
def test_resume_with_last_epoch_matches_torch_golden(
    case: Case, golden: tuple[dict[str, np.ndarray], dict[str, Any]]
) -> None:
    arrays, _ = golden
    actual = run_resume_case(npoptim_api(), case)
    np.testing.assert_array_equal(actual["lr"], arrays[f"{case.name}|lr"], strict=True)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_state_dict_round_trip_halfway_equals_never_stopping(case: Case) -> None:
    api = npoptim_api()
    straight = run_case(api, case)
    resumed = run_case(api, case, split_at=case.epochs // 2)
    for key in ("lr", "momentum", "last_lr"):
        np.testing.assert_array_equal(resumed[key], straight[key], err_msg=key)


# ------------------------------------------------------------------- the formulas
def _two_groups(lrs: tuple[float, float] = (0.05, 0.5), kind: str = "sgd") -> Any:
    return make_optimizer(npoptim_api(), Case("", one("StepLR"), optimizer=kind, lrs=lrs))


def _lr_sequence(opt: Any, sched: Any, epochs: int = 100) -> np.ndarray:
    """The lrs of both groups before each of ``epochs`` steps."""
    out = []
    for _ in range(epochs):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return np.array(out)


def _sgdr(t: int, t0: int, mult: int) -> tuple[int, int]:
    """(T_cur, T_i) after t epochs of SGDR: periods t0, t0*mult, t0*mult**2, ..."""
    period = t0
    while t >= period:
        t -= period
        period *= mult
    return t, period


def _triangle(t: int, up: int, down: int) -> tuple[int, float]:
    """(cycle number from 1, height in [0, 1]) of batch t in a cycle of up + down batches."""
    cycle, pos = divmod(t, up + down)
    return cycle + 1, (pos / up if pos <= up else (up + down - pos) / down)


def _one_cycle_cos(t: int, total: int, peak: float, pct: float = 0.3) -> float:
    initial, final = peak / 25, peak / 25 / 1e4
    warmup = pct * total - 1
    if t <= warmup:
        a, b, p = initial, peak, t / warmup
    else:
        a, b, p = peak, final, (t - warmup) / (total - 1 - warmup)
    return b + (a - b) * (1 + math.cos(math.pi * p)) / 2


# (scheduler factory, reference lr at epoch t for a group with initial lr eta0)
FORMULAS: dict[str, tuple[Callable[[Any], Any], Callable[[int, float], float]]] = {
    "StepLR": (lambda o: lrs.StepLR(o, step_size=7, gamma=0.5), lambda t, e: e * 0.5 ** (t // 7)),
    "MultiStepLR": (
        lambda o: lrs.MultiStepLR(o, milestones=[30, 10, 30, 80], gamma=0.1),
        lambda t, e: e * 0.1 ** sum(m <= t for m in [10, 30, 30, 80]),
    ),
    "ConstantLR": (
        lambda o: lrs.ConstantLR(o, factor=0.25, total_iters=12),
        lambda t, e: e * (0.25 if t < 12 else 1.0),
    ),
    "LinearLR": (
        lambda o: lrs.LinearLR(o, start_factor=0.2, end_factor=0.9, total_iters=30),
        lambda t, e: e * (0.2 + 0.7 * min(t, 30) / 30),
    ),
    "ExponentialLR": (lambda o: lrs.ExponentialLR(o, gamma=0.95), lambda t, e: e * 0.95**t),
    "PolynomialLR": (
        lambda o: lrs.PolynomialLR(o, total_iters=40, power=1.5),
        lambda t, e: e * (1 - min(t, 40) / 40) ** 1.5,
    ),
    "CosineAnnealingLR": (
        lambda o: lrs.CosineAnnealingLR(o, T_max=12, eta_min=1e-3),
        lambda t, e: 1e-3 + (e - 1e-3) * (1 + math.cos(math.pi * t / 12)) / 2,
    ),
    "LambdaLR": (
        lambda o: lrs.LambdaLR(o, lr_lambda=lambda t: 1 / (1 + t)),
        lambda t, e: e / (1 + t),
    ),
    "MultiplicativeLR": (
        lambda o: lrs.MultiplicativeLR(o, lr_lambda=lambda t: 1 - 1 / (t + 2)),
        lambda t, e: e * math.prod(1 - 1 / (k + 2) for k in range(1, t + 1)),
    ),
    "CosineAnnealingWarmRestarts": (
        lambda o: lrs.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=1e-4),
        lambda t, e: (
            1e-4 + (e - 1e-4) * (1 + math.cos(math.pi * _sgdr(t, 5, 2)[0] / _sgdr(t, 5, 2)[1])) / 2
        ),
    ),
    "CyclicLR/triangular2": (
        lambda o: lrs.CyclicLR(
            o, base_lr=0.01, max_lr=0.1, step_size_up=3, step_size_down=5, mode="triangular2"
        ),
        lambda t, e: 0.01 + 0.09 * _triangle(t, 3, 5)[1] / 2 ** (_triangle(t, 3, 5)[0] - 1),
    ),
    "CyclicLR/exp_range": (
        lambda o: lrs.CyclicLR(
            o, base_lr=0.01, max_lr=0.1, step_size_up=4, mode="exp_range", gamma=0.99
        ),
        lambda t, e: 0.01 + 0.09 * _triangle(t, 4, 4)[1] * 0.99**t,
    ),
    "OneCycleLR": (
        lambda o: lrs.OneCycleLR(o, max_lr=0.1, total_steps=100),
        lambda t, e: _one_cycle_cos(t, 100, 0.1),
    ),
    "SWALR": (
        lambda o: SWALR(o, swa_lr=0.01, anneal_epochs=20),
        lambda t, e: (
            (alpha := (1 - math.cos(math.pi * min(t, 20) / 20)) / 2) * 0.01 + (1 - alpha) * e
        ),
    ),
}


@pytest.mark.parametrize("name", list(FORMULAS))
def test_lr_follows_the_published_formula(name: str) -> None:
    make, formula = FORMULAS[name]
    opt = _two_groups()
    got = _lr_sequence(opt, make(opt))
    expected = np.array([[formula(t, eta0) for eta0 in (0.05, 0.5)] for t in range(100)])
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-15)


def test_cyclic_lr_triangular_example_of_torchs_tests() -> None:
    opt = _two_groups()
    sched = lrs.CyclicLR(opt, base_lr=1, max_lr=5, step_size_up=4, base_momentum=1, max_momentum=5)
    lr, momentum = [], []
    for _ in range(11):
        lr.append(opt.param_groups[0]["lr"])
        momentum.append(opt.param_groups[1]["momentum"])
        opt.step()
        sched.step()
    assert lr == [1, 2, 3, 4, 5, 4, 3, 2, 1, 2, 3]
    assert momentum == [5, 4, 3, 2, 1, 2, 3, 4, 5, 4, 3]


def test_cyclic_lr_cycles_adams_beta1_and_keeps_beta2() -> None:
    opt = _two_groups(kind="adam")
    sched = lrs.CyclicLR(
        opt, base_lr=1, max_lr=5, step_size_up=2, base_momentum=0.5, max_momentum=0.9
    )
    betas = []
    for _ in range(5):
        betas.append(opt.param_groups[0]["betas"])
        opt.step()
        sched.step()
    assert [b[1] for b in betas] == [0.999] * 5
    np.testing.assert_allclose([b[0] for b in betas], [0.9, 0.7, 0.5, 0.7, 0.9], rtol=1e-15)


def test_one_cycle_linear_example_of_torchs_tests() -> None:
    opt = _two_groups()
    sched = lrs.OneCycleLR(
        opt,
        max_lr=25,
        final_div_factor=2,
        base_momentum=1,
        max_momentum=22,
        total_steps=10,
        anneal_strategy="linear",
    )
    got = _lr_sequence(opt, sched, epochs=10)
    expected = [1, 13, 25, 21.5, 18, 14.5, 11, 7.5, 4, 0.5]
    np.testing.assert_allclose(got, np.array([expected, expected]).T, rtol=1e-12)
    with pytest.raises(ValueError, match="Tried to step 11 times"):
        sched.step()


def test_reduce_lr_on_plateau_example_of_torchs_tests() -> None:
    opt = _two_groups(lrs=(0.5, 0.5))
    sched = lrs.ReduceLROnPlateau(
        opt, patience=5, cooldown=0, threshold_mode="abs", mode="min", threshold=0.1
    )
    got = []
    for epoch in range(22):
        opt.step()
        sched.step(10 - epoch * 0.0165)
        got.append(opt.param_groups[0]["lr"])
    expected = [0.5] * 6 + [0.05] * 7 + [0.005] * 7 + [0.0005] * 2
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert sched.get_last_lr() == [opt.param_groups[0]["lr"]] * 2


def test_reduce_lr_on_plateau_respects_min_lr_per_group() -> None:
    opt = _two_groups(lrs=(0.5, 0.5))
    sched = lrs.ReduceLROnPlateau(opt, mode="max", patience=0, min_lr=[0.4, 0.3])
    for _ in range(5):
        opt.step()
        sched.step(1.0)
    assert [g["lr"] for g in opt.param_groups] == [0.4, 0.3]


def test_plateau_with_scalar_min_lr_accepts_an_added_group() -> None:
    opt = _two_groups(lrs=(0.5, 0.5))
    sched = lrs.ReduceLROnPlateau(opt, patience=0)
    opt.add_param_group({"params": [Parameter(np.zeros(1))], "lr": 0.05})
    sched.step(1.0)
    sched.step(2.0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.05, 0.005], rel=1e-15)


def test_plateau_with_min_lr_list_refuses_an_added_group() -> None:
    opt = _two_groups()
    sched = lrs.ReduceLROnPlateau(opt, patience=0, min_lr=[1e-5, 1e-4])
    opt.add_param_group({"params": [Parameter(np.zeros(1))], "lr": 0.05})
    sched.step(1.0)
    with pytest.raises(RuntimeError, match=r"The number of param groups in the `optimizer` \(3\)"):
        sched.step(1.3)


def test_warm_restarts_wraps_t_cur_at_the_period() -> None:
    sched = lrs.CosineAnnealingWarmRestarts(_two_groups(), T_0=4)
    for epoch in [7, 8, 9]:
        sched.T_cur = epoch
        sched.step()
        assert sched.T_cur == (epoch + 1) % 4


# ------------------------------------------------------------------ base behaviour
def test_construction_records_initial_lr_and_base_lrs() -> None:
    opt = _two_groups()
    sched = lrs.ExponentialLR(opt, gamma=0.5)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.05, 0.5]
    assert sched.base_lrs == [0.05, 0.5]
    assert sched.last_epoch == 0
    assert sched.get_last_lr() == [0.05, 0.5]
    opt.step()
    sched.step()
    lrs.StepLR(opt, step_size=2)  # a second scheduler keeps the first initial_lr
    assert [g["initial_lr"] for g in opt.param_groups] == [0.05, 0.5]
    assert sched.last_epoch == 1 and sched.get_last_lr() == [0.025, 0.25]


def test_resuming_without_initial_lr_raises_key_error() -> None:
    with pytest.raises(KeyError, match=r"param 'initial_lr' is not specified in param_groups\[0\]"):
        lrs.StepLR(_two_groups(), step_size=3, last_epoch=1)


def test_non_optimizer_is_refused() -> None:
    with pytest.raises(TypeError, match="^list is not an Optimizer$"):
        lrs.StepLR([], step_size=3)  # type: ignore[arg-type]


def _caught(run: Callable[[], Any]) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    return [str(w.message) for w in caught]


def test_scheduler_stepped_before_optimizer_warns_once() -> None:
    opt = _two_groups()
    sched = lrs.StepLR(opt, step_size=3)

    def wrong_order() -> None:
        for _ in range(5):
            sched.step()
            opt.step()

    messages = _caught(wrong_order)
    assert len(messages) == 1
    assert messages[0].startswith(
        "Detected call of `lr_scheduler.step()` before `optimizer.step()`."
    )


def test_correct_order_does_not_warn() -> None:
    def right_order() -> None:
        opt = _two_groups()
        sched = lrs.StepLR(opt, step_size=3)
        second = lrs.ExponentialLR(opt, gamma=0.9)  # optimizer.step is wrapped only once
        for _ in range(5):
            opt.step()
            sched.step()
            second.step()

    assert _caught(right_order) == []


def test_optimizer_step_overridden_after_construction_warns() -> None:
    opt = _two_groups()
    sched = lrs.StepLR(opt, step_size=3)
    original = opt.step
    opt.step = lambda *a, **k: original(*a, **k)  # type: ignore[method-assign]

    def run() -> None:
        opt.step()
        sched.step()

    (message,) = _caught(run)
    assert message.startswith("Seems like `optimizer.step()` has been overridden")


def test_wrapped_optimizer_step_still_runs_hooks_and_returns_loss() -> None:
    opt = _two_groups()
    calls = []
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append(o))
    lrs.StepLR(opt, step_size=3)
    assert opt.step(lambda: 1.5) == 1.5
    assert calls == [opt]


def test_get_lr_outside_step_warns() -> None:
    sched = lrs.StepLR(_two_groups(), step_size=3)
    assert _caught(sched.get_lr) == [
        "To get the last learning rate computed by the scheduler, please use `get_last_lr()`."
    ]


def test_epoch_argument_is_deprecated_and_uses_the_closed_form() -> None:
    opt = _two_groups()
    sched = lrs.StepLR(opt, step_size=3, gamma=0.1)
    opt.step()
    messages = _caught(lambda: sched.step(7))
    assert messages == [lrs.EPOCH_DEPRECATION_WARNING]
    assert sched.last_epoch == 7
    assert sched.get_last_lr() == pytest.approx([0.05 * 0.01, 0.5 * 0.01], rel=1e-15)


def test_scheduler_leaves_no_reference_cycle() -> None:
    opt = _two_groups()
    sched = lrs.CyclicLR(opt, base_lr=0.1, max_lr=1.0, mode="exp_range", gamma=0.9)
    opt.step()
    sched.step()
    ref = weakref.ref(sched)
    gc.disable()
    try:
        del sched
        assert ref() is None
    finally:
        gc.enable()
    opt_ref = weakref.ref(opt)
    del opt
    assert opt_ref() is None


# ------------------------------------------------------------------- state dicts
def test_state_dict_is_every_attribute_but_the_optimizer() -> None:
    sched = lrs.StepLR(_two_groups(), step_size=3)
    state = sched.state_dict()
    assert "optimizer" not in state
    assert set(state) == set(vars(sched)) - {"optimizer"}


def test_state_dict_is_a_copy() -> None:
    opt = _two_groups()
    sched = lrs.MultiStepLR(opt, milestones=[2, 4])
    state = sched.state_dict()
    state["base_lrs"].append(1.0)
    state["milestones"][3] = 1
    assert sched.base_lrs == [0.05, 0.5] and sched.milestones == Counter([2, 4])


def test_state_dict_gives_arrays_as_read_only_views() -> None:
    sched = lrs.StepLR(_two_groups(), step_size=3)
    sched.weights = np.arange(3.0)  # an array attribute, as a subclass might keep
    state = sched.state_dict()
    assert not state["weights"].flags.writeable
    assert np.shares_memory(state["weights"], sched.weights)
    with pytest.raises(ValueError, match="read-only"):
        state["weights"][0] = 9.0
    assert sched.weights.tolist() == [0.0, 1.0, 2.0]


def test_load_state_dict_resumes_the_schedule() -> None:
    opt = _two_groups()
    sched = lrs.CosineAnnealingLR(opt, T_max=10)
    for _ in range(4):
        opt.step()
        sched.step()
    other_opt = _two_groups()
    other = lrs.CosineAnnealingLR(other_opt, T_max=3, eta_min=0.1)
    other_opt.load_state_dict(opt.state_dict())
    other.load_state_dict(sched.state_dict())
    assert (other.T_max, other.eta_min, other.last_epoch) == (10, 0.0, 4)
    assert _lr_sequence(other_opt, other, 8).tolist() == _lr_sequence(opt, sched, 8).tolist()


def test_lambdas_are_not_saved_but_callable_objects_are() -> None:
    opt = _two_groups()
    sched = lrs.LambdaLR(opt, lr_lambda=[lambda e: 1.0, LambdaLRTestObject(10)])
    state = sched.state_dict()
    assert state["lr_lambdas"] == [None, {"value": 10}]
    target = LambdaLRTestObject(-1)
    other = lrs.LambdaLR(_two_groups(), lr_lambda=[lambda e: 2.0, target])
    other.load_state_dict(state)
    assert target.value == 10
    assert state["lr_lambdas"] == [None, {"value": 10}]  # the argument is left as it was


def test_cyclic_scale_fn_is_saved_as_torch_saves_it() -> None:
    opt = _two_groups()
    assert lrs.CyclicLR(opt, 1, 5, cycle_momentum=False).state_dict()["_scale_fn_custom"] is None
    fn_state = lrs.CyclicLR(opt, 1, 5, cycle_momentum=False, scale_fn=lambda x: 0.5).state_dict()
    assert fn_state["_scale_fn_custom"] is None and "_scale_fn_ref" not in fn_state
    scale = HalfScale()
    scale.x = 0.25
    state = lrs.CyclicLR(opt, 1, 5, cycle_momentum=False, scale_fn=scale).state_dict()
    assert state["_scale_fn_custom"] == {"x": 0.25}
    target = HalfScale()
    restored = lrs.CyclicLR(opt, 1, 5, cycle_momentum=False, scale_fn=target)
    restored.load_state_dict(state)
    assert target.x == 0.25 and restored.scale_fn(3) == 0.25


def test_cyclic_mode_is_restored_from_state_dict() -> None:
    opt = _two_groups()
    source = lrs.CyclicLR(opt, base_lr=1, max_lr=5, cycle_momentum=False, mode="triangular2")
    restored = lrs.CyclicLR(opt, base_lr=1, max_lr=5, cycle_momentum=False)
    restored.load_state_dict(source.state_dict())
    assert restored.mode == "triangular2" and restored.scale_fn(3) == 0.25


def test_swalr_state_dict_leaves_out_the_anneal_function() -> None:
    opt = _two_groups()
    state = SWALR(opt, swa_lr=0.1, anneal_strategy="linear").state_dict()
    assert "anneal_func" not in state and state["_anneal_strategy"] == "linear"
    restored = SWALR(opt, swa_lr=0.1)
    restored.load_state_dict(state)
    assert restored.anneal_func(0.25) == 0.25


# ---------------------------------------------------------------------- composition
def test_sequential_lr_keeps_the_initial_lr() -> None:
    opt = _two_groups()
    first, second = lrs.ConstantLR(opt, factor=1), lrs.ConstantLR(opt, factor=0.1)
    lrs.SequentialLR(opt, [first, second], milestones=[10])
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.5]


def test_sequential_lr_switches_at_the_milestone() -> None:
    opt = _two_groups()
    warmup = lrs.ConstantLR(opt, factor=0.1, total_iters=3)
    decay = lrs.ExponentialLR(opt, gamma=0.9)
    sched = lrs.SequentialLR(opt, [warmup, decay], milestones=[3])
    got = _lr_sequence(opt, sched, 13)[:, 0]
    np.testing.assert_allclose(got, [0.005] * 3 + [0.05 * 0.9**k for k in range(10)], rtol=1e-12)
    assert sched.get_last_lr() == decay.get_last_lr()


def test_chained_scheduler_multiplies_the_effects() -> None:
    opt = _two_groups()
    constant = lrs.ConstantLR(opt, factor=0.2, total_iters=4)
    exponential = lrs.ExponentialLR(opt, gamma=0.9)
    sched = lrs.ChainedScheduler([constant, exponential])
    assert sched.get_last_lr() == exponential.get_last_lr()
    got = _lr_sequence(opt, sched, 9)[:, 1]
    expected = [0.5 * 0.9**t * (0.2 if t < 4 else 1.0) for t in range(9)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert sched.get_last_lr() == exponential.get_last_lr()


def test_composite_state_dict_nests_member_states() -> None:
    opt = _two_groups()
    members = [lrs.StepLR(opt, 2), lrs.ExponentialLR(opt, 0.5)]
    state = lrs.ChainedScheduler(members).state_dict()
    assert state["_schedulers"] == [m.state_dict() for m in members]
