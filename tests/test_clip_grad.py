"""Gradient clipping and parameter vectors, specified by their formulas (torch.nn.utils'
behaviour); tests/test_clip_grad_torch.py compares with torch itself."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from npoptim.clip_grad import (
    clip_grad_norm_,
    clip_grad_value_,
    clip_grads_with_norm_,
    get_total_norm,
    parameters_to_vector,
    vector_to_parameters,
)
from npoptim.parameter import Parameter, SparseGrad

NORMS = [1.0, 2.0, math.inf, 0.5, 3.0, 0.0, -1.0, -math.inf]


def make_params(seed: int = 0, dtype: type = np.float64, scale: float = 1.0) -> list[Parameter]:
    """Three parameters with random gradients (a matrix, a vector, a scalar) and one without."""
    rng = np.random.default_rng(seed)
    params = [Parameter(np.zeros(shape, dtype=dtype)) for shape in [(4, 3), (5,), (), (2,)]]
    for p in params[:3]:
        p.grad = np.asarray(scale * rng.standard_normal(p.shape), dtype=dtype)
    return params


def reference_norm(arrays: list[np.ndarray], p: float) -> float:
    """The p-norm of the arrays concatenated, straight from its definition."""
    x = np.abs(np.concatenate([np.ravel(a) for a in arrays]).astype(np.complex128))
    if p == math.inf:
        return float(x.max())
    if p == -math.inf:
        return float(x.min())
    if p == 0:
        return float(np.count_nonzero(x))
    with np.errstate(divide="ignore"):
        return float(np.sum(x**p) ** (1 / p))


@pytest.mark.parametrize("norm_type", [p for p in NORMS if p != 0])
def test_total_norm_is_the_norm_of_the_concatenated_grads(norm_type: float) -> None:
    params = make_params()
    grads = [p.grad for p in params[:3]]
    expected = reference_norm(grads, norm_type)
    assert get_total_norm(grads, norm_type) == pytest.approx(expected, rel=1e-13)


def test_total_norm_of_order_zero_counts_the_non_zero_grads() -> None:
    # The norm of the per-gradient norms (torch's definition), which for order 0 is not the
    # count of non-zero entries of the concatenation.
    grads = [np.array([1.0, 0.0, 2.0]), np.zeros(4), np.array([0.0, -3.0])]
    assert get_total_norm(grads, 0) == 2.0


@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf, 0.5])
def test_clip_grad_norm_scales_grads_to_max_norm(norm_type: float) -> None:
    params = make_params(scale=10.0)
    before = [p.grad.copy() for p in params[:3]]
    total = reference_norm(before, norm_type)
    returned = clip_grad_norm_(params, max_norm=1.0, norm_type=norm_type)
    assert returned == pytest.approx(total, rel=1e-13)
    coef = 1.0 / (total + 1e-6)
    for p, g in zip(params, before, strict=False):
        np.testing.assert_allclose(p.grad, g * coef, rtol=1e-14)
    assert params[3].grad is None
    assert reference_norm([p.grad for p in params[:3]], norm_type) == pytest.approx(1.0, rel=1e-5)


def test_clip_grad_norm_never_scales_up() -> None:
    params = make_params(scale=1e-3)
    before = [p.grad.copy() for p in params[:3]]
    clip_grad_norm_(params, max_norm=10.0)
    for p, g in zip(params, before, strict=False):
        np.testing.assert_array_equal(p.grad, g)


def test_clip_grad_norm_accepts_a_single_parameter() -> None:
    p = Parameter(np.zeros(2))
    p.grad = np.array([3.0, 4.0])
    assert clip_grad_norm_(p, max_norm=1.0) == 5.0
    np.testing.assert_allclose(p.grad, [3 / (5 + 1e-6), 4 / (5 + 1e-6)], rtol=1e-15)


def test_clip_grad_norm_warns_about_an_empty_generator() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        total = clip_grad_norm_((p for p in []), max_norm=1.0)
    assert total == 0.0
    assert [str(w.message) for w in caught] == [
        "`parameters` is an empty generator, no gradient clipping will occur."
    ]


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_norm_raises_when_asked(bad: float) -> None:
    params = make_params()
    params[1].grad[2] = bad
    before = [p.grad.copy() for p in params[:3]]
    with pytest.raises(RuntimeError) as info:
        clip_grad_norm_(params, max_norm=1.0, error_if_nonfinite=True)
    assert str(info.value) == (
        "The total norm of order 2.0 for gradients from `parameters` is non-finite, so it "
        "cannot be clipped. To disable this error and scale the gradients by the non-finite "
        "norm anyway, set `error_if_nonfinite=False`"
    )
    for p, g in zip(params, before, strict=False):
        np.testing.assert_array_equal(p.grad, g)


def test_nan_norm_makes_every_grad_nan_by_default() -> None:
    params = make_params()
    params[0].grad[0, 0] = math.nan
    assert math.isnan(clip_grad_norm_(params, max_norm=1.0))
    assert all(np.isnan(p.grad).all() for p in params[:3])


def test_inf_norm_zeroes_finite_grads_by_default() -> None:
    params = make_params()
    params[0].grad[0, 0] = math.inf
    assert clip_grad_norm_(params, max_norm=1.0) == math.inf
    assert np.isnan(params[0].grad[0, 0])  # inf * 0
    np.testing.assert_array_equal(params[1].grad, 0.0)


def test_float32_grads_keep_their_dtype() -> None:
    params = make_params(dtype=np.float32, scale=10.0)
    total = clip_grad_norm_(params, max_norm=1.0)
    assert total.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in params[:3])


def test_complex_grads_are_measured_by_modulus() -> None:
    p = Parameter(np.zeros(2, dtype=np.complex128))
    p.grad = np.array([3 + 4j, 0j])
    total = clip_grad_norm_([p], max_norm=1.0)
    assert total == 5.0 and total.dtype == np.float64
    np.testing.assert_allclose(p.grad, [(3 + 4j) / (5 + 1e-6), 0], rtol=1e-15)


def sparse_and_dense(seed: int = 1) -> tuple[Parameter, Parameter]:
    rng = np.random.default_rng(seed)
    indices = np.array([4, 0, 4, 2])  # a repeated row, row 1 and 3 missing
    values = rng.standard_normal((4, 3)) * 5
    sparse, dense = Parameter(np.zeros((5, 3))), Parameter(np.zeros((5, 3)))
    sparse.grad = SparseGrad(indices, values, (5, 3))
    dense.grad = sparse.grad.to_dense()
    return sparse, dense


@pytest.mark.parametrize("norm_type", NORMS)
def test_sparse_grad_norm_is_that_of_its_dense_array(norm_type: float) -> None:
    sparse, dense = sparse_and_dense()
    assert get_total_norm([sparse.grad], norm_type) == pytest.approx(
        get_total_norm([dense.grad], norm_type), rel=1e-14
    )


def test_clip_grad_norm_scales_sparse_grads_like_dense_ones() -> None:
    sparse, dense = sparse_and_dense()
    assert clip_grad_norm_([sparse], 1.0) == pytest.approx(clip_grad_norm_([dense], 1.0), rel=1e-14)
    assert isinstance(sparse.grad, SparseGrad)
    np.testing.assert_allclose(sparse.grad.to_dense(), dense.grad, rtol=1e-14)


def test_clip_grads_with_norm_uses_the_given_norm() -> None:
    params = make_params()
    before = [p.grad.copy() for p in params[:3]]
    clip_grads_with_norm_(params, max_norm=2.0, total_norm=8.0)
    for p, g in zip(params, before, strict=False):
        np.testing.assert_allclose(p.grad, g * (2.0 / (8.0 + 1e-6)), rtol=1e-15)


def test_total_norm_of_nothing_is_zero() -> None:
    assert get_total_norm([]) == 0.0
    clip_grad_norm_([Parameter(np.zeros(2))], 1.0)  # no grads: nothing to do


def test_inf_norm_of_an_empty_grad_is_refused() -> None:
    with pytest.raises(RuntimeError, match="cannot compute the infinity norm on an empty tensor"):
        get_total_norm([np.zeros(0)], math.inf)


def test_clip_grad_value_clamps_and_keeps_nan() -> None:
    p = Parameter(np.zeros(5))
    p.grad = np.array([-3.0, -0.5, 0.2, 7.0, math.nan])
    clip_grad_value_([p], 1.0)
    np.testing.assert_array_equal(p.grad, [-1.0, -0.5, 0.2, 1.0, math.nan])


def test_clip_grad_value_with_negative_value_sets_every_entry_to_it() -> None:
    p = Parameter(np.zeros(3))
    p.grad = np.array([-3.0, 0.0, 3.0])
    clip_grad_value_(p, -1.0)
    np.testing.assert_array_equal(p.grad, [-1.0, -1.0, -1.0])


def test_clip_grad_value_clamps_the_summed_rows_of_a_sparse_grad() -> None:
    sparse, dense = sparse_and_dense()
    grad = sparse.grad
    clip_grad_value_([sparse, dense], 2.0)
    assert sparse.grad is grad and grad.indices.tolist() == [0, 2, 4]  # coalesced in place
    np.testing.assert_array_equal(sparse.grad.to_dense(), dense.grad)
    assert np.abs(dense.grad).max() <= 2.0
    with pytest.raises(ValueError, match="clip_value must be non-negative"):
        clip_grad_value_([sparse], -1.0)


def test_clip_grad_value_refuses_complex_grads() -> None:
    p = Parameter(np.zeros(2, dtype=np.complex64))
    p.grad = np.ones(2, dtype=np.complex64)
    with pytest.raises(NotImplementedError, match="^clamp is not supported for complex types$"):
        clip_grad_value_([p], 1.0)


def test_parameters_to_vector_and_back() -> None:
    params = make_params()
    vec = parameters_to_vector(params)
    assert vec.shape == (12 + 5 + 1 + 2,) and type(vec) is np.ndarray
    new = np.arange(vec.size, dtype=np.float64)
    targets = list(params)
    vector_to_parameters(new, targets)
    assert targets[0] is params[0]  # written in place
    np.testing.assert_array_equal(params[0], new[:12].reshape(4, 3))
    np.testing.assert_array_equal(params[2], new[17])
    np.testing.assert_array_equal(parameters_to_vector(params), new)


def test_vector_to_parameters_needs_an_array_of_the_right_length() -> None:
    with pytest.raises(TypeError, match="^expected numpy.ndarray, but got: list$"):
        vector_to_parameters([1.0, 2.0], [Parameter(np.zeros(2))])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="too few"):
        vector_to_parameters(np.zeros(3), [Parameter(np.zeros(2)), Parameter(np.zeros(2))])
