"""npoptim.swa_utils against torch.optim.swa_utils 2.13 on the same parameter streams."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.optim import swa_utils as tsu  # noqa: E402

from npoptim import swa_utils as nsu  # noqa: E402
from npoptim.parameter import Parameter  # noqa: E402

RTOL = 1e-12
SHAPES = [(3, 4), (5,), (), (2, 3, 2)]


def stream(n: int = 15, seed: int = 0, dtype: Any = np.float64) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s) for s in SHAPES]
    out = []
    for _ in range(n):
        values = [v + 0.3 * rng.standard_normal(v.shape) for v in values]
        out.append([np.asarray(v, dtype=dtype) for v in values])
    return out


class Model(torch.nn.Module):  # type: ignore[misc]
    def __init__(self, values: list[np.ndarray]) -> None:
        super().__init__()
        self.weights = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
        )


def run_ours(steps: list[list[np.ndarray]], **kwargs: Any) -> list[np.ndarray]:
    params = [Parameter(v.copy()) for v in steps[0]]
    averaged = nsu.AveragedParameters(params, **kwargs)
    for values in steps:
        for p, v in zip(params, values, strict=True):
            p[...] = v
        averaged.update_parameters(params)
    return [np.array(p) for p in averaged.parameters()]


def run_theirs(steps: list[list[np.ndarray]], **kwargs: Any) -> list[np.ndarray]:
    model = Model(steps[0])
    averaged = tsu.AveragedModel(model, **kwargs)
    for values in steps:
        with torch.no_grad():
            for p, v in zip(model.parameters(), values, strict=True):
                p.copy_(torch.from_numpy(v))
        averaged.update_parameters(model)
    assert int(averaged.n_averaged) == len(steps)
    return [p.detach().numpy().copy() for p in averaged.parameters()]


def assert_close(
    ours: list[np.ndarray], theirs: list[np.ndarray], rtol: float = RTOL, atol: float = 1e-15
) -> None:
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


Variant = Callable[[Any], dict[str, Any]]

VARIANTS: dict[str, Variant] = {
    "swa default": lambda m: {},
    "swa avg_fn": lambda m: {"avg_fn": m.get_swa_avg_fn()},
    "ema avg_fn 0.9": lambda m: {"avg_fn": m.get_ema_avg_fn(0.9)},
    "ema multi_avg_fn 0.9": lambda m: {"multi_avg_fn": m.get_ema_multi_avg_fn(0.9)},
    "ema multi_avg_fn 0.999": lambda m: {"multi_avg_fn": m.get_ema_multi_avg_fn()},
    "ema multi_avg_fn 0.3": lambda m: {"multi_avg_fn": m.get_ema_multi_avg_fn(0.3)},
    # (torch passes the count as an int64 tensor: arithmetic on it alone would be float32)
    "custom avg_fn": lambda m: {"avg_fn": lambda a, c, n: a + (c - a) / (2 * n + 2)},
}


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_averaging_matches_torch(name: str, dtype: Any) -> None:
    steps = stream(dtype=dtype)
    ours = run_ours(steps, **VARIANTS[name](nsu))
    theirs = run_theirs(steps, **VARIANTS[name](tsu))
    if dtype == np.float64:
        assert_close(ours, theirs)
    else:  # float32 rounding (torch's lerp uses fused multiply-adds)
        assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_swa_multi_avg_fn_matches_torchs_given_the_same_count() -> None:
    # torch's AveragedModel hands the count to multi_avg_fn as an int64 tensor, so its lerp
    # weight 1 / (n + 1) is rounded to float32; called with an int, as npoptim calls it,
    # torch's function computes what npoptim's does.
    steps = stream()
    ours = [v.copy() for v in steps[0]]
    theirs = [torch.from_numpy(v.copy()) for v in steps[0]]
    for n, values in enumerate(steps[1:], start=1):
        nsu.get_swa_multi_avg_fn()(ours, values, n)
        tsu.get_swa_multi_avg_fn()(theirs, [torch.from_numpy(v) for v in values], n)
    assert_close(ours, [t.numpy() for t in theirs])
    via_model = run_theirs(steps, multi_avg_fn=tsu.get_swa_multi_avg_fn())
    assert_close(
        run_ours(steps, multi_avg_fn=nsu.get_swa_multi_avg_fn()), via_model, rtol=1e-6, atol=1e-7
    )


def test_ema_multi_avg_fn_matches_torchs_lerp_on_large_weights() -> None:
    # weights >= 0.5 take lerp's other branch
    steps = stream(6)
    for decay in (0.5, 0.2, 0.0):
        ours = [v.copy() for v in steps[0]]
        theirs = [torch.from_numpy(v.copy()) for v in steps[0]]
        for values in steps[1:]:
            nsu.get_ema_multi_avg_fn(decay)(ours, values, 0)
            tsu.get_ema_multi_avg_fn(decay)(theirs, [torch.from_numpy(v) for v in values], 0)
        assert_close(ours, [t.numpy() for t in theirs])


@pytest.mark.parametrize("decay", [-0.5, 1.01])
def test_decay_error_matches_torch(decay: float) -> None:
    for factory in ("get_ema_avg_fn", "get_ema_multi_avg_fn"):
        with pytest.raises(ValueError) as ours:
            getattr(nsu, factory)(decay)
        with pytest.raises(ValueError) as theirs:
            getattr(tsu, factory)(decay)
        assert str(ours.value) == str(theirs.value)


def test_both_functions_error_matches_torch() -> None:
    with pytest.raises(AssertionError) as ours:
        nsu.AveragedParameters([np.zeros(1)], nsu.get_swa_avg_fn(), nsu.get_swa_multi_avg_fn())
    with pytest.raises(AssertionError) as theirs:
        tsu.AveragedModel(
            Model([np.zeros(1)]), None, tsu.get_swa_avg_fn(), tsu.get_swa_multi_avg_fn()
        )
    assert str(ours.value) == str(theirs.value)
