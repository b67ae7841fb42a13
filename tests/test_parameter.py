"""Parameter and SparseGrad: the arrays optimizers work on."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from npoptim import Parameter, SparseGrad


def test_parameter_shares_memory_with_its_data() -> None:
    data = np.zeros((2, 3))
    w = Parameter(data)
    data[0, 0] = 5.0
    assert w[0, 0] == 5.0
    assert w.grad is None


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.complex64, np.complex128])
def test_parameter_accepts_floating_and_complex_dtypes(dtype: type) -> None:
    assert Parameter(np.zeros(3, dtype=dtype)).dtype == dtype


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_, np.uint8])
def test_parameter_refuses_non_floating_dtypes(dtype: type) -> None:
    with pytest.raises(TypeError, match="floating point and complex"):
        Parameter(np.zeros(3, dtype=dtype))


def test_hash_is_identity_so_parameters_key_dicts() -> None:
    a, b = Parameter(np.zeros(2)), Parameter(np.zeros(2))
    table = {a: 1, b: 2}
    assert table[a] == 1 and table[b] == 2
    assert hash(a) != hash(b)


def test_arithmetic_and_views_give_plain_ndarrays() -> None:
    w = Parameter(np.ones((2, 3)))
    results = [w + 1, w * w, w @ np.ones(3), np.exp(w), w.sum(), w[0], w[:, 1], w.T,
               w.reshape(6), w.ravel(), w.view(), np.concatenate([w, w]), w.astype(np.float32)]  # fmt: skip
    for r in results:
        assert not isinstance(r, Parameter), type(r)


def test_in_place_operators_keep_the_parameter() -> None:
    w = Parameter(np.ones(3))
    g = np.ones(3)
    w.grad = g
    original = w
    w += 1.0
    w *= 2.0
    assert w is original and isinstance(w, Parameter) and w.grad is g
    np.testing.assert_array_equal(w, [4.0, 4.0, 4.0])


def test_dense_grad_of_matching_shape_and_dtype_is_accepted() -> None:
    w = Parameter(np.zeros((2, 2), dtype=np.float32))
    g = np.ones((2, 2), dtype=np.float32)
    w.grad = g
    assert w.grad is g


def test_grad_of_wrong_shape_is_refused_naming_both_shapes_and_old_grad_kept() -> None:
    w = Parameter(np.zeros((3, 4)))
    old = np.ones((3, 4))
    w.grad = old
    with pytest.raises(RuntimeError, match=r"different size.*\(4, 3\).*\(3, 4\)"):
        w.grad = np.ones((4, 3))
    assert w.grad is old


def test_grad_of_wrong_dtype_is_refused_naming_both_dtypes_and_old_grad_kept() -> None:
    w = Parameter(np.zeros(3, dtype=np.float32))
    w.grad = None
    with pytest.raises(TypeError, match="different type.*float64.*float32"):
        w.grad = np.ones(3, dtype=np.float64)
    assert w.grad is None


@pytest.mark.parametrize("bad", [[1.0, 2.0, 3.0], 1.0, "grad"])
def test_grad_of_another_type_is_refused(bad: object) -> None:
    w = Parameter(np.zeros(3))
    with pytest.raises(TypeError, match="assigned grad expected"):
        w.grad = bad  # type: ignore[assignment]
    assert w.grad is None


def test_sparse_grad_must_match_shape_and_dtype() -> None:
    w = Parameter(np.zeros((5, 2)))
    w.grad = SparseGrad([1], np.ones((1, 2)), (5, 2))
    with pytest.raises(RuntimeError, match="different size"):
        w.grad = SparseGrad([1], np.ones((1, 2)), (6, 2))
    with pytest.raises(TypeError, match="different type"):
        w.grad = SparseGrad([1], np.ones((1, 2), dtype=np.float32), (5, 2))


@pytest.mark.parametrize("make_copy", [copy.copy, copy.deepcopy, lambda w: w.copy(),
                                       lambda w: pickle.loads(pickle.dumps(w))])  # fmt: skip
def test_copies_and_pickles_keep_grad_and_values_but_not_memory(make_copy: object) -> None:
    w = Parameter(np.arange(3.0))
    w.grad = np.full(3, 7.0)
    c = make_copy(w)  # type: ignore[operator]
    assert isinstance(c, Parameter) and c is not w
    np.testing.assert_array_equal(c, w)
    np.testing.assert_array_equal(c.grad, w.grad)
    assert not np.shares_memory(c, w)
    c[0] = 100.0
    assert w[0] == 0.0


def test_deepcopy_of_a_list_keeps_shared_parameters_shared() -> None:
    w = Parameter(np.zeros(2))
    a, b = copy.deepcopy([w, w])
    assert a is b


def test_sparse_grad_coalesce_sums_duplicates_and_sorts() -> None:
    g = SparseGrad([3, 1, 3, 0], np.array([[1.0], [2.0], [4.0], [8.0]]), (5, 1))
    c = g.coalesce()
    np.testing.assert_array_equal(c.indices, [0, 1, 3])
    np.testing.assert_array_equal(c.values, [[8.0], [2.0], [5.0]])
    assert c.is_coalesced()


def test_sparse_grad_to_dense_adds_duplicate_rows() -> None:
    g = SparseGrad([2, 2], np.array([[1.0, 2.0], [3.0, 4.0]]), (3, 2))
    np.testing.assert_array_equal(g.to_dense(), [[0, 0], [0, 0], [4.0, 6.0]])


def test_empty_sparse_grad_is_valid() -> None:
    g = SparseGrad(np.zeros(0, dtype=np.int64), np.zeros((0, 4)), (10, 4))
    assert g.nnz == 0
    np.testing.assert_array_equal(g.to_dense(), np.zeros((10, 4)))
    assert g.coalesce().nnz == 0


@pytest.mark.parametrize(
    ("indices", "values", "shape", "error"),
    [
        ([0, 5], np.ones((2, 3)), (5, 3), IndexError),
        ([-1], np.ones((1, 3)), (5, 3), IndexError),
        ([0, 1], np.ones((2, 4)), (5, 3), ValueError),
        ([[0, 1]], np.ones((2, 3)), (5, 3), ValueError),
        ([0.5], np.ones((1, 3)), (5, 3), ValueError),
        ([0], np.ones((1, 3), dtype=np.int64), (5, 3), TypeError),
    ],
)
def test_sparse_grad_validates_on_construction(
    indices: object, values: np.ndarray, shape: tuple[int, ...], error: type
) -> None:
    with pytest.raises(error):
        SparseGrad(indices, values, shape)  # type: ignore[arg-type]
