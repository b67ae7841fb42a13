"""SGD, Adam and AdamW behaviours beyond the trajectories of test_algorithms.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from npoptim import SGD, Adam, AdamW, Optimizer, Parameter, SparseGrad

CLASSES = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}

# torch 2.13's validation errors: (optimizer, kwargs, exception type, message).
VALIDATION = [
    ("SGD", {"lr": -0.1}, ValueError, "Invalid learning rate: -0.1"),
    ("SGD", {"lr": 1e-2, "momentum": -0.5}, ValueError, "Invalid momentum value: -0.5"),
    ("SGD", {"weight_decay": -1.0}, ValueError, "Invalid weight_decay value: -1.0"),
    ("SGD", {"nesterov": True}, ValueError, "Nesterov momentum requires a momentum and zero dampening"),
    ("SGD", {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, ValueError,
     "Nesterov momentum requires a momentum and zero dampening"),
    ("Adam", {"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
    ("Adam", {"eps": -1.0}, ValueError, "Invalid epsilon value: -1.0"),
    ("Adam", {"lr": 1e-2, "betas": (1.0, 0.0)}, ValueError, "Invalid beta parameter at index 0: 1.0"),
    ("Adam", {"betas": (0.9, -0.1)}, ValueError, "Invalid beta parameter at index 1: -0.1"),
    ("Adam", {"lr": 1e-2, "weight_decay": -1}, ValueError, "Invalid weight_decay value: -1"),
    ("Adam", {"betas": (0, 0.9)}, ValueError, "betas must be either both floats or both Tensors"),
    ("AdamW", {"betas": (0.9, 1.5)}, ValueError, "Invalid beta parameter at index 1: 1.5"),
    ("AdamW", {"weight_decay": -0.5}, ValueError, "Invalid weight_decay value: -0.5"),
]  # fmt: skip


def _param(shape: tuple[int, ...] = (3,), dtype: Any = np.float64) -> Parameter:
    return Parameter(np.linspace(-1.0, 1.0, int(np.prod(shape))).reshape(shape).astype(dtype))


@pytest.mark.parametrize(("name", "kwargs", "error", "message"), VALIDATION)
def test_invalid_hyperparameters_raise_torchs_error(
    name: str, kwargs: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error) as info:
        CLASSES[name]([_param()], **kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize(("name", "kwargs", "error", "message"), VALIDATION)
def test_validation_messages_equal_torchs_live(
    name: str, kwargs: dict[str, Any], error: type, message: str
) -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(error) as info:
        getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(3))], **kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_refuses_sparse_gradients_with_torchs_message(name: str) -> None:
    p = _param((4, 2))
    opt = CLASSES[name]([p])
    p.grad = SparseGrad([1], np.ones((1, 2)), (4, 2))
    before = p.copy()
    with pytest.raises(
        RuntimeError,
        match="^Adam does not support sparse gradients, please consider SparseAdam instead$",
    ):
        opt.step()
    np.testing.assert_array_equal(p, before)


def _sparse_grads(step: int) -> SparseGrad:
    rng = np.random.default_rng(step)
    rows = rng.integers(0, 6, size=5)  # duplicates and unsorted
    return SparseGrad(rows, rng.standard_normal((5, 3)), (6, 3))


@pytest.mark.parametrize(
    "kwargs",
    [{"lr": 0.1}, {"lr": 0.1, "momentum": 0.9}, {"lr": 0.1, "maximize": True},
     {"lr": 0.1, "momentum": 0.9, "nesterov": True}, {"lr": 0.1, "momentum": 0.5, "dampening": 0.3}],
)  # fmt: skip
def test_sparse_sgd_matches_dense_sgd_on_the_same_gradient(kwargs: dict[str, Any]) -> None:
    sparse, dense = _param((6, 3)), _param((6, 3))
    opt_s, opt_d = SGD([sparse], **kwargs), SGD([dense], **kwargs)
    for step in range(6):
        g = _sparse_grads(step)
        sparse.grad, dense.grad = g, g.to_dense()
        opt_s.step()
        opt_d.step()
    np.testing.assert_allclose(sparse, dense, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("kwargs", [{"lr": 0.1}, {"lr": 0.1, "momentum": 0.9, "nesterov": True}])
def test_sparse_sgd_matches_torch_live(kwargs: dict[str, Any]) -> None:
    torch = pytest.importorskip("torch")
    p = _param((6, 3))
    tp = torch.nn.Parameter(torch.from_numpy(np.array(p)))
    opt, topt = SGD([p], **kwargs), torch.optim.SGD([tp], **kwargs)
    for step in range(6):
        g = _sparse_grads(step)
        p.grad = g
        tp.grad = torch.sparse_coo_tensor(
            torch.from_numpy(g.indices)[None], torch.from_numpy(g.values), (6, 3)
        )
        opt.step()
        topt.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-13, atol=1e-15)


def test_sparse_sgd_with_weight_decay_raises_torchs_error() -> None:
    p = _param((6, 3))
    p.grad = _sparse_grads(0)
    with pytest.raises(RuntimeError, match=r"add\(sparse, dense\) is not supported"):
        SGD([p], lr=0.1, weight_decay=0.1).step()


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_maximize_ascends_a_concave_objective(name: str) -> None:
    # f(w) = -|w|^2 has its maximum at 0; from w = 1 its value must go up.
    p = Parameter(np.ones(4))
    opt = CLASSES[name]([p], lr=0.05, maximize=True)
    for _ in range(20):
        p.grad = -2 * np.array(p)
        opt.step()
    assert -np.sum(np.array(p) ** 2) > -4.0


@pytest.mark.parametrize(
    ("name", "extra"),
    [("SGD", {}), ("SGD", {"momentum": 0.9}), ("Adam", {}), ("Adam", {"amsgrad": True}),
     ("AdamW", {})],
)  # fmt: skip
def test_zero_gradients_without_weight_decay_leave_parameters_unchanged(
    name: str, extra: dict[str, Any]
) -> None:
    p = _param((2, 3))
    before = p.copy()
    opt = CLASSES[name]([p], lr=0.1, weight_decay=0.0, **extra)
    for _ in range(3):
        p.grad = np.zeros((2, 3))
        opt.step()
    np.testing.assert_array_equal(p, before)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("SGD", {"momentum": 0.9}), ("SGD", {}), ("Adam", {}), ("Adam", {"amsgrad": True}),
     ("AdamW", {"amsgrad": True})],
)  # fmt: skip
def test_state_keys_and_group_keys_equal_torchs(name: str, kwargs: dict[str, Any]) -> None:
    torch = pytest.importorskip("torch")
    p = _param()
    p.grad = np.ones(3)
    tp = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    tp.grad = torch.ones(3, dtype=torch.float64)
    opt, topt = CLASSES[name]([p], **kwargs), getattr(torch.optim, name)([tp], **kwargs)
    opt.step()
    topt.step()
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert sd["state"].keys() == tsd["state"].keys()
    for k in tsd["state"]:
        assert sd["state"][k].keys() == tsd["state"][k].keys()
    assert sd["param_groups"][0].keys() == tsd["param_groups"][0].keys()
    for key, value in tsd["param_groups"][0].items():
        assert sd["param_groups"][0][key] == value, key


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_repr_equals_torchs(name: str) -> None:
    torch = pytest.importorskip("torch")
    opt = CLASSES[name]([{"params": [_param()]}, {"params": [_param()], "lr": 0.5}])
    topt = getattr(torch.optim, name)(
        [{"params": [torch.nn.Parameter(torch.zeros(3))]},
         {"params": [torch.nn.Parameter(torch.zeros(3))], "lr": 0.5}]
    )  # fmt: skip
    assert repr(opt) == repr(topt)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_defaults_equal_torchs(name: str) -> None:
    torch = pytest.importorskip("torch")
    opt: Optimizer = CLASSES[name]([_param()])
    topt = getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(3))])
    assert opt.defaults == topt.defaults


def test_non_contiguous_parameters_are_updated_in_place() -> None:
    base = np.arange(12.0).reshape(3, 4)
    p = Parameter(base.T)  # a transposed view: not C-contiguous
    q = Parameter(np.ascontiguousarray(base.T))
    for opt_p, opt_q in [(Adam([p], lr=0.1), Adam([q], lr=0.1))]:
        for _ in range(3):
            p.grad = np.cos(np.array(p))
            q.grad = np.cos(np.array(q))
            opt_p.step()
            opt_q.step()
    np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(base.T, q)


def test_large_parameters_are_updated_the_same_in_chunks() -> None:
    # Larger than one chunk of the kernels: the chunked update must equal the formula.
    n = 200_003
    p = Parameter(np.linspace(-1, 1, n))
    g = np.sin(np.arange(n, dtype=np.float64))
    p.grad = g
    Adam([p], lr=0.01).step()
    expected = np.linspace(-1, 1, n) - 0.01 * np.sign(g) * (np.abs(g) / (np.abs(g) + 1e-8))
    np.testing.assert_allclose(p, expected, rtol=1e-12, atol=1e-12)
