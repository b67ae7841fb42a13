"""npoptim.clip_grad against torch.nn.utils 2.13 on the same gradients."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.nn import utils as tu  # noqa: E402

from npoptim import clip_grad as cg  # noqa: E402
from npoptim.parameter import Parameter, SparseGrad  # noqa: E402

SHAPES = [(4, 3), (5,), (), (2, 2, 2)]
NORMS = [1.0, 2.0, math.inf, 0.5, 3.0, 0.0, -1.0, -math.inf, "inf"]
RTOL = 1e-12


def grads(
    seed: int, dtype: Any = np.float64, scale: float = 3.0, bad: float | None = None
) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = [np.asarray(scale * rng.standard_normal(shape), dtype=dtype) for shape in SHAPES]
    if bad is not None:
        out[1][3] = bad
    return out


def ours(values: list[np.ndarray | None]) -> list[Parameter]:
    params = []
    for v in values:
        p = Parameter(
            np.zeros((1,) if v is None else v.shape, dtype=np.float64 if v is None else v.dtype)
        )
        p.grad = None if v is None else v.copy()
        params.append(p)
    return params


def theirs(values: list[np.ndarray | None]) -> list[Any]:
    params = []
    for v in values:
        dtype = torch.float64 if v is None else torch.from_numpy(v).dtype
        p = torch.nn.Parameter(torch.zeros(() if v is None else v.shape, dtype=dtype))
        p.grad = None if v is None else torch.from_numpy(v.copy())
        params.append(p)
    return params


def assert_same(our_params: list[Parameter], their_params: list[Any], rtol: float = RTOL) -> None:
    for a, b in zip(our_params, their_params, strict=True):
        if b.grad is None:
            assert a.grad is None
            continue
        expected = b.grad.numpy()
        np.testing.assert_allclose(a.grad, expected, rtol=rtol, atol=0)
        assert a.grad.dtype == expected.dtype


def assert_same_norm(a: np.floating[Any], b: Any, rtol: float = RTOL) -> None:
    assert a.dtype == b.numpy().dtype
    np.testing.assert_allclose(a, b.item(), rtol=rtol, atol=0)


@pytest.mark.parametrize("norm_type", NORMS)
@pytest.mark.parametrize("bad", [None, math.nan, math.inf], ids=["finite", "nan", "inf"])
def test_clip_grad_norm_matches_torch(norm_type: Any, bad: float | None) -> None:
    values: list[np.ndarray | None] = [*grads(0, bad=bad), None]
    mine, yours = ours(values), theirs(values)
    total = cg.clip_grad_norm_(mine, max_norm=1.5, norm_type=norm_type)
    expected = tu.clip_grad_norm_(yours, max_norm=1.5, norm_type=norm_type)
    assert_same_norm(total, expected)
    assert_same(mine, yours)


@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf, 0.5])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_error_if_nonfinite_matches_torch(norm_type: float, bad: float) -> None:
    values: list[np.ndarray | None] = list(grads(1, bad=bad))
    mine, yours = ours(values), theirs(values)
    with pytest.raises(RuntimeError) as our_error:
        cg.clip_grad_norm_(mine, 1.0, norm_type, error_if_nonfinite=True)
    with pytest.raises(RuntimeError) as their_error:
        tu.clip_grad_norm_(yours, 1.0, norm_type, error_if_nonfinite=True)
    assert str(our_error.value) == str(their_error.value)
    assert_same(mine, yours)


@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf, 0.5])
def test_float32_clip_grad_norm_matches_torch(norm_type: float) -> None:
    values: list[np.ndarray | None] = list(grads(2, dtype=np.float32))
    mine, yours = ours(values), theirs(values)
    total = cg.clip_grad_norm_(mine, 1.0, norm_type)
    expected = tu.clip_grad_norm_(yours, 1.0, norm_type)
    assert_same_norm(total, expected, rtol=1e-6)
    assert_same(mine, yours, rtol=1e-6)


def test_complex_clip_grad_norm_matches_torch() -> None:
    rng = np.random.default_rng(3)
    values: list[np.ndarray | None] = [
        rng.standard_normal(s) + 1j * rng.standard_normal(s) for s in [(3, 2), (4,)]
    ]
    mine, yours = ours(values), theirs(values)
    assert_same_norm(cg.clip_grad_norm_(mine, 1.0), tu.clip_grad_norm_(yours, 1.0))
    assert_same(mine, yours)


@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf, 0.5])
def test_get_total_norm_and_clip_grads_with_norm_match_torch(norm_type: float) -> None:
    values: list[np.ndarray | None] = list(grads(4))
    mine, yours = ours(values), theirs(values)
    total = cg.get_total_norm([p.grad for p in mine], norm_type)
    expected = tu.get_total_norm([p.grad for p in yours], norm_type)
    assert_same_norm(total, expected)
    cg.clip_grads_with_norm_(mine, 2.0, total)
    tu.clip_grads_with_norm_(yours, 2.0, expected)
    assert_same(mine, yours)


@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf, 0.5])
def test_sparse_grads_are_clipped_as_torch_clips_their_dense_arrays(norm_type: float) -> None:
    rng = np.random.default_rng(5)
    indices, values = np.array([3, 0, 3, 5]), rng.standard_normal((4, 2)) * 4
    p = Parameter(np.zeros((6, 2)))
    p.grad = SparseGrad(indices, values.copy(), (6, 2))
    (q,) = theirs([p.grad.to_dense()])
    assert_same_norm(
        cg.clip_grad_norm_([p], 1.0, norm_type), tu.clip_grad_norm_([q], 1.0, norm_type)
    )
    np.testing.assert_allclose(p.grad.to_dense(), q.grad.numpy(), rtol=RTOL, atol=0)

    p.grad = SparseGrad(indices, values.copy(), (6, 2))
    (q,) = theirs([p.grad.to_dense()])
    cg.clip_grad_value_([p], 1.5)
    tu.clip_grad_value_([q], 1.5)
    np.testing.assert_array_equal(p.grad.to_dense(), q.grad.numpy())


@pytest.mark.parametrize("clip_value", [0.5, 2.0, -1.0])
@pytest.mark.parametrize("bad", [None, math.nan, math.inf], ids=["finite", "nan", "inf"])
def test_clip_grad_value_matches_torch(clip_value: float, bad: float | None) -> None:
    values: list[np.ndarray | None] = [*grads(6, bad=bad), None]
    mine, yours = ours(values), theirs(values)
    cg.clip_grad_value_(mine, clip_value)
    tu.clip_grad_value_(yours, clip_value)
    for a, b in zip(mine, yours, strict=True):
        if b.grad is not None:
            np.testing.assert_array_equal(a.grad, b.grad.numpy())


def _error(run: Callable[[], Any]) -> tuple[type, str]:
    with pytest.raises(Exception) as info:
        run()
    return type(info.value), str(info.value)


def test_clamping_complex_grads_fails_as_in_torch() -> None:
    values: list[np.ndarray | None] = [np.ones(2, dtype=np.complex128)]
    assert _error(lambda: cg.clip_grad_value_(ours(values), 1.0)) == _error(
        lambda: tu.clip_grad_value_(theirs(values), 1.0)
    )


def test_inf_norm_of_an_empty_grad_fails_as_in_torch() -> None:
    values: list[np.ndarray | None] = [np.zeros(0)]
    assert _error(lambda: cg.clip_grad_norm_(ours(values), 1.0, math.inf)) == _error(
        lambda: tu.clip_grad_norm_(theirs(values), 1.0, math.inf)
    )


def test_parameters_to_vector_matches_torch() -> None:
    values = grads(7)
    mine = [Parameter(v.copy()) for v in values]
    yours = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    vec = cg.parameters_to_vector(mine)
    np.testing.assert_array_equal(vec, tu.parameters_to_vector(yours).detach().numpy())
    new = np.linspace(-1, 1, vec.size)
    cg.vector_to_parameters(new, mine)
    tu.vector_to_parameters(torch.from_numpy(new), yours)
    for a, b in zip(mine, yours, strict=True):
        np.testing.assert_array_equal(a, b.detach().numpy())
