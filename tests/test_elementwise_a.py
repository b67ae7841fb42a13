"""RMSprop, Adagrad, Adadelta, Adamax and ASGD behaviours beyond the trajectories of
test_algorithms.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from harness import gradient, initial_values
from npoptim import ASGD, Adadelta, Adagrad, Adamax, Optimizer, Parameter, RMSprop, SparseGrad

CLASSES: dict[str, type[Optimizer]] = {
    "RMSprop": RMSprop,
    "Adagrad": Adagrad,
    "Adadelta": Adadelta,
    "Adamax": Adamax,
    "ASGD": ASGD,
}

# One configuration per optimizer that switches on every option that adds state or a branch.
RICH = [
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5, "weight_decay": 0.1}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.5, "initial_accumulator_value": 0.2, "weight_decay": 0.1}),
    ("Adadelta", {"lr": 0.5, "rho": 0.8, "weight_decay": 0.1}),
    ("Adamax", {"lr": 0.1, "betas": (0.8, 0.9), "weight_decay": 0.1}),
    ("ASGD", {"lr": 0.05, "lambd": 0.01, "t0": 4, "weight_decay": 0.1}),
]  # fmt: skip

# torch 2.13's validation errors: (optimizer, kwargs, exception type, message).
VALIDATION = [
    ("RMSprop", {"lr": -0.1}, ValueError, "Invalid learning rate: -0.1"),
    ("RMSprop", {"eps": -1e-8}, ValueError, "Invalid epsilon value: -1e-08"),
    ("RMSprop", {"lr": 1e-2, "momentum": -1.0}, ValueError, "Invalid momentum value: -1.0"),
    ("RMSprop", {"weight_decay": -0.5}, ValueError, "Invalid weight_decay value: -0.5"),
    ("RMSprop", {"alpha": -0.99}, ValueError, "Invalid alpha value: -0.99"),
    ("Adagrad", {"lr": -1}, ValueError, "Invalid learning rate: -1"),
    ("Adagrad", {"lr": 1e-2, "lr_decay": -0.5}, ValueError, "Invalid lr_decay value: -0.5"),
    ("Adagrad", {"weight_decay": -0.1}, ValueError, "Invalid weight_decay value: -0.1"),
    ("Adagrad", {"initial_accumulator_value": -1.0}, ValueError,
     "Invalid initial_accumulator_value value: -1.0"),
    ("Adagrad", {"eps": -1.0}, ValueError, "Invalid epsilon value: -1.0"),
    ("Adadelta", {"lr": -1.0}, ValueError, "Invalid learning rate: -1.0"),
    ("Adadelta", {"lr": 1e-2, "rho": 1.1}, ValueError, "Invalid rho value: 1.1"),
    ("Adadelta", {"rho": -0.1}, ValueError, "Invalid rho value: -0.1"),
    ("Adadelta", {"eps": -1e-6}, ValueError, "Invalid epsilon value: -1e-06"),
    ("Adadelta", {"weight_decay": -2}, ValueError, "Invalid weight_decay value: -2"),
    ("Adamax", {"lr": -2e-3}, ValueError, "Invalid learning rate: -0.002"),
    ("Adamax", {"eps": -1.0}, ValueError, "Invalid epsilon value: -1.0"),
    ("Adamax", {"betas": (1.0, 0.9)}, ValueError, "Invalid beta parameter at index 0: 1.0"),
    ("Adamax", {"lr": 1e-2, "betas": (0.0, 1.0)}, ValueError,
     "Invalid beta parameter at index 1: 1.0"),
    ("Adamax", {"weight_decay": -0.1}, ValueError, "Invalid weight_decay value: -0.1"),
    ("ASGD", {"lr": -0.01}, ValueError, "Invalid learning rate: -0.01"),
    ("ASGD", {"lr": 1e-2, "weight_decay": -0.5}, ValueError, "Invalid weight_decay value: -0.5"),
]  # fmt: skip


def _param(shape: tuple[int, ...] = (3,), dtype: Any = np.float64) -> Parameter:
    return Parameter(np.linspace(-1.0, 1.0, int(np.prod(shape))).reshape(shape).astype(dtype))


def _params(dtype: Any = np.float64) -> list[Parameter]:
    return [Parameter(v) for v in initial_values(dtype)]


def _run(opt: Optimizer, params: list[Parameter], steps: range) -> None:
    """Steps ``steps`` of the harness problem (noisy quadratics, one missing grad)."""
    for k in steps:
        for j, p in enumerate(params):
            p.grad = gradient(k, j, np.array(p))
        opt.step()


def _torch_run(name: str, kwargs: dict[str, Any], dtype: Any, steps: int) -> Any:
    """torch's optimizer after ``steps`` steps of the harness problem."""
    torch = pytest.importorskip("torch")
    params = [torch.nn.Parameter(torch.from_numpy(v)) for v in initial_values(dtype)]
    opt = getattr(torch.optim, name)(params, **kwargs)
    for k in range(steps):
        for j, p in enumerate(params):
            g = gradient(k, j, p.detach().numpy().copy())
            p.grad = None if g is None else torch.from_numpy(g)
        opt.step()
    return opt


def _relative_error(actual: Any, expected: Any) -> float:
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-30)
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale


# ------------------------------------------------------------------------------ validation
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


@pytest.mark.parametrize("name", ["RMSprop", "Adadelta", "Adamax", "ASGD"])
def test_sparse_gradients_are_refused_with_torchs_message(name: str) -> None:
    p = _param((4, 2))
    opt = CLASSES[name]([p])
    p.grad = SparseGrad([1], np.ones((1, 2)), (4, 2))
    before = p.copy()
    with pytest.raises(RuntimeError, match=f"^{name} does not support sparse gradients$"):
        opt.step()
    np.testing.assert_array_equal(p, before)


# ------------------------------------------------------------------- torch's public shape
@pytest.mark.parametrize("name", list(CLASSES))
def test_defaults_equal_torchs(name: str) -> None:
    torch = pytest.importorskip("torch")
    opt = CLASSES[name]([_param()])
    topt = getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(3))])
    assert opt.defaults == topt.defaults


@pytest.mark.parametrize("name", list(CLASSES))
def test_repr_equals_torchs(name: str) -> None:
    torch = pytest.importorskip("torch")
    opt = CLASSES[name]([{"params": [_param()]}, {"params": [_param()], "lr": 0.5}])
    topt = getattr(torch.optim, name)(
        [{"params": [torch.nn.Parameter(torch.zeros(3))]},
         {"params": [torch.nn.Parameter(torch.zeros(3))], "lr": 0.5}]
    )  # fmt: skip
    assert repr(opt) == repr(topt)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [*RICH, ("RMSprop", {}), ("RMSprop", {"momentum": 0.9}), ("RMSprop", {"centered": True})],
)
def test_state_equals_torchs_after_a_run(name: str, kwargs: dict[str, Any]) -> None:
    """Same state keys, group keys and values as torch after 21 steps (float64)."""
    params = _params()
    opt = CLASSES[name](params, **kwargs)
    _run(opt, params, range(21))
    sd, tsd = opt.state_dict(), _torch_run(name, kwargs, np.float64, 21).state_dict()
    assert sd["param_groups"] == tsd["param_groups"]
    assert sd["state"].keys() == tsd["state"].keys()
    for i, tstate in tsd["state"].items():
        assert sd["state"][i].keys() == tstate.keys()
        for key, tvalue in tstate.items():
            value = sd["state"][i][key]
            if key in ("step", "eta", "mu"):  # torch: float32 scalar tensors; npoptim: floats
                assert type(value) is float
                assert value == tvalue.item(), key
            else:
                assert value.shape == tuple(tvalue.shape) and value.dtype == np.float64
                assert _relative_error(value, tvalue.numpy()) <= 1e-10, key


# ------------------------------------------------------------------------- state_dict
@pytest.mark.parametrize(("name", "kwargs"), RICH)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
def test_resume_from_state_dict_is_bit_identical(
    name: str, kwargs: dict[str, Any], dtype: Any
) -> None:
    straight = _params(dtype)
    opt = CLASSES[name](straight, **kwargs)
    _run(opt, straight, range(12))

    first = _params(dtype)
    opt_first = CLASSES[name](first, **kwargs)
    _run(opt_first, first, range(6))
    saved = opt_first.state_dict()
    resumed = [Parameter(np.array(p)) for p in first]
    opt_resumed = CLASSES[name](resumed, **kwargs)
    opt_resumed.load_state_dict(saved)
    _run(opt_resumed, resumed, range(6, 12))

    for a, b in zip(resumed, straight, strict=True):
        assert np.array(a).tobytes() == np.array(b).tobytes()


# ---------------------------------------------------------------------------- behaviours
@pytest.mark.parametrize(("name", "kwargs"), RICH)
def test_maximize_is_minimizing_the_negated_gradient(name: str, kwargs: dict[str, Any]) -> None:
    up, down = _param((2, 3)), _param((2, 3))
    opt_up = CLASSES[name]([up], maximize=True, **kwargs)
    opt_down = CLASSES[name]([down], **kwargs)
    for _ in range(5):
        up.grad = np.cos(np.array(up))
        down.grad = -np.cos(np.array(down))
        opt_up.step()
        opt_down.step()
    assert np.array(up).tobytes() == np.array(down).tobytes()


@pytest.mark.parametrize("name", list(CLASSES))
def test_maximize_ascends_a_concave_objective(name: str) -> None:
    # f(w) = -|w - 3|^2 has its maximum at w = 3; from w = 1 its value must go up.
    p = Parameter(np.ones(4))
    opt = CLASSES[name]([p], lr=0.05, maximize=True)
    for _ in range(20):
        p.grad = -2 * (np.array(p) - 3)
        opt.step()
    assert np.all(np.array(p) > 1.0) and np.all(np.array(p) < 3.0)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("RMSprop", {}), ("RMSprop", {"centered": True, "momentum": 0.9}), ("Adagrad", {}),
     ("Adagrad", {"initial_accumulator_value": 0.5, "lr_decay": 0.1}), ("Adadelta", {}),
     ("Adamax", {}), ("ASGD", {"lambd": 0.0})],
)  # fmt: skip
def test_zero_gradients_without_weight_decay_leave_parameters_unchanged(
    name: str, kwargs: dict[str, Any]
) -> None:
    p = _param((2, 3))
    before = p.copy()
    opt = CLASSES[name]([p], weight_decay=0.0, **kwargs)
    for _ in range(3):
        p.grad = np.zeros((2, 3))
        opt.step()
    np.testing.assert_array_equal(p, before)


def test_asgd_zero_gradients_still_shrink_parameters_by_its_decay_term() -> None:
    # ASGD's λ acts as a decay even without weight_decay: θ ← (1 - λη) θ.
    p = _param((2, 3))
    before = np.array(p)
    opt = ASGD([p], lr=0.1, lambd=0.5)
    p.grad = np.zeros((2, 3))
    opt.step()
    eta = float(np.float32(0.1))
    np.testing.assert_allclose(p, (1 - 0.5 * eta) * before, rtol=1e-15)


@pytest.mark.parametrize(("name", "kwargs"), RICH)
def test_large_and_non_contiguous_parameters_update_like_small_ones(
    name: str, kwargs: dict[str, Any]
) -> None:
    # One parameter larger than a kernel chunk, its transpose (not contiguous: updated whole)
    # and its rows as separate small parameters must all get the same elementwise update.
    base = np.linspace(-1, 1, 300 * 200).reshape(300, 200)
    big, view = Parameter(base.copy()), Parameter(base.copy().T)
    rows = [Parameter(row.copy()) for row in base]
    opts = [CLASSES[name]([big], **kwargs), CLASSES[name]([view], **kwargs)]
    opts.append(CLASSES[name](rows, **kwargs))
    for _ in range(2):
        for q in [big, view, *rows]:
            q.grad = np.cos(3 * np.array(q))
        for opt in opts:
            opt.step()
    np.testing.assert_array_equal(big, np.stack(rows))
    np.testing.assert_array_equal(view, np.stack(rows).T)


# ---------------------------------------------------------------------------------- Adagrad
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
def test_adagrad_state_exists_right_after_construction(dtype: Any) -> None:
    p, q = _param((2, 3), dtype), _param((4,), dtype)
    opt = Adagrad([{"params": [p]}, {"params": [q], "lr": 0.5}], initial_accumulator_value=0.25)
    for param in (p, q):
        state = opt.state[param]
        assert list(state) == ["step", "sum"]
        assert state["step"] == 0.0 and type(state["step"]) is float
        fill = 0.25 + 0.25j if np.iscomplexobj(param) else 0.25
        assert state["sum"].dtype == dtype and state["sum"].shape == param.shape
        np.testing.assert_array_equal(state["sum"], np.full(param.shape, fill, dtype=dtype))


def test_adagrad_state_after_construction_equals_torchs() -> None:
    torch = pytest.importorskip("torch")
    opt = Adagrad([_param((2, 3))], initial_accumulator_value=0.1)
    topt = torch.optim.Adagrad(
        [torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))], initial_accumulator_value=0.1
    )
    state, tstate = opt.state_dict()["state"], topt.state_dict()["state"]
    assert state.keys() == tstate.keys() and state[0].keys() == tstate[0].keys()
    assert state[0]["step"] == tstate[0]["step"].item()
    np.testing.assert_array_equal(state[0]["sum"], tstate[0]["sum"].numpy())


def test_adagrad_creates_state_of_a_later_group_at_its_first_step() -> None:
    p, q = _param(), _param()
    opt = Adagrad([p], initial_accumulator_value=0.5)
    opt.add_param_group({"params": [q], "initial_accumulator_value": 3.0})
    assert len(opt.state[q]) == 0
    q.grad = np.ones(3)
    opt.step()
    assert opt.state[q]["step"] == 1.0
    # torch fills the accumulator from the optimizer's defaults, not from the group.
    np.testing.assert_array_equal(opt.state[q]["sum"], np.full(3, 1.5))


def _sparse_grad(step: int, dtype: Any = np.float64) -> SparseGrad:
    rng = np.random.default_rng(step)
    rows = rng.integers(0, 6, size=5)  # duplicates and unsorted
    values = rng.standard_normal((5, 3))
    if np.issubdtype(dtype, np.complexfloating):
        values = values + 1j * rng.standard_normal((5, 3))
    return SparseGrad(rows, values.astype(dtype), (6, 3))


SPARSE_CONFIGS = [
    {"lr": 0.1},
    {"lr": 0.1, "maximize": True},
    {"lr": 0.1, "lr_decay": 0.3, "initial_accumulator_value": 0.2},
]


@pytest.mark.parametrize("kwargs", SPARSE_CONFIGS)
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_sparse_adagrad_matches_dense_adagrad_on_the_same_gradient(
    kwargs: dict[str, Any], dtype: Any
) -> None:
    # Rows without gradient keep their value and their sum under both.
    sparse, dense = _param((6, 3), dtype), _param((6, 3), dtype)
    opt_s, opt_d = Adagrad([sparse], **kwargs), Adagrad([dense], **kwargs)
    for step in range(6):
        g = _sparse_grad(step, dtype)
        sparse.grad, dense.grad = g, g.to_dense()
        opt_s.step()
        opt_d.step()
    np.testing.assert_allclose(sparse, dense, rtol=1e-14, atol=0)
    np.testing.assert_allclose(opt_s.state[sparse]["sum"], opt_d.state[dense]["sum"], rtol=1e-14)


@pytest.mark.parametrize("kwargs", SPARSE_CONFIGS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sparse_adagrad_matches_torch_live(kwargs: dict[str, Any], dtype: Any) -> None:
    torch = pytest.importorskip("torch")
    p = _param((6, 3), dtype)
    tp = torch.nn.Parameter(torch.from_numpy(np.array(p)))
    opt, topt = Adagrad([p], **kwargs), torch.optim.Adagrad([tp], **kwargs)
    for step in range(6):
        g = _sparse_grad(step, dtype)
        p.grad = g
        tp.grad = torch.sparse_coo_tensor(
            torch.from_numpy(g.indices)[None], torch.from_numpy(g.values), (6, 3)
        )
        opt.step()
        topt.step()
    tol = 1e-13 if dtype == np.float64 else 1e-6
    assert _relative_error(p, tp.detach().numpy()) <= tol
    assert _relative_error(opt.state[p]["sum"], topt.state[tp]["sum"].numpy()) <= tol


def test_sparse_adagrad_with_weight_decay_raises_torchs_error() -> None:
    p = _param((6, 3))
    p.grad = _sparse_grad(0)
    with pytest.raises(
        RuntimeError, match="^weight_decay option is not compatible with sparse gradients$"
    ):
        Adagrad([p], weight_decay=0.1).step()


# ------------------------------------------------------------------------------------- ASGD
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
@pytest.mark.parametrize(
    "kwargs", [{"t0": 5, "lambd": 0.01, "lr": 0.05}, {"t0": 0, "maximize": True, "alpha": 0.5}]
)
def test_asgd_average_ax_matches_torch_live(kwargs: dict[str, Any], dtype: Any) -> None:
    params = _params(dtype)
    opt = ASGD(params, **kwargs)
    _run(opt, params, range(21))
    topt = _torch_run("ASGD", kwargs, dtype, 21)
    tol = 1e-6 if dtype == np.float32 else 1e-10
    tparams = topt.param_groups[0]["params"]
    for p, tp in zip(params, tparams, strict=True):
        assert _relative_error(opt.state[p]["ax"], topt.state[tp]["ax"].numpy()) <= tol
        assert opt.state[p]["mu"] == topt.state[tp]["mu"].item()
        assert opt.state[p]["eta"] == topt.state[tp]["eta"].item()
    # Relative to the largest parameter value: the 0-d parameter of the first case ends at
    # -0.0095 after passing -0.15, where a float32 rounding (1.5e-8, one ulp there) is
    # 1.6e-6 of its final value.
    ours = np.concatenate([np.ravel(p) for p in params])
    theirs = np.concatenate([tp.detach().numpy().ravel() for tp in tparams])
    assert _relative_error(ours, theirs) <= tol


def test_asgd_average_is_the_mean_of_the_iterates_after_t0() -> None:
    # With λ = 0, ax is the running mean of the iterates θ_t from t = t0 + 2 on (μ_t uses
    # t - t0 and takes effect one step later), as in torch. μ is stored in float32 (1/3 is
    # not exact), hence the tolerance.
    p = Parameter(np.array([2.0, -1.0]))
    opt = ASGD([p], lr=0.1, lambd=0.0, t0=3)
    iterates = []
    for k in range(10):
        p.grad = np.array([np.sin(k), np.cos(k)])
        opt.step()
        iterates.append(np.array(p))
    np.testing.assert_allclose(opt.state[p]["ax"], np.mean(iterates[4:], axis=0), rtol=1e-7)
