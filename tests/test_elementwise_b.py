"""Rprop, NAdam, RAdam, Adafactor and Muon behaviours beyond the trajectories of
test_algorithms.py and test_muon.py."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import muon_reference
from harness import gradient, initial_values
from npoptim import (
    Adafactor,
    Muon,
    NAdam,
    Optimizer,
    Parameter,
    RAdam,
    Rprop,
    SparseGrad,
    functional,
)

CLASSES: dict[str, type[Optimizer]] = {
    "Rprop": Rprop,
    "NAdam": NAdam,
    "RAdam": RAdam,
    "Adafactor": Adafactor,
    "Muon": Muon,
}
ELEMENTWISE = ["Rprop", "NAdam", "RAdam"]
COMPLEX = {"Rprop", "NAdam", "RAdam"}  # Adafactor and Muon refuse complex parameters

# One configuration per optimizer that switches on every option that adds state or a branch.
RICH = [
    ("Rprop", {"lr": 0.05, "etas": (0.4, 1.5), "step_sizes": (1e-3, 0.2)}),
    ("NAdam", {"lr": 0.01, "momentum_decay": 0.01, "weight_decay": 0.1}),
    ("NAdam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("RAdam", {"lr": 0.01, "betas": (0.8, 0.9), "weight_decay": 0.1}),
    ("RAdam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("Adafactor", {"lr": 0.05, "beta2_decay": -0.5, "d": 1.5, "weight_decay": 0.1}),
    ("Adafactor", {"eps": (1e-3, 1e-2)}),
    ("Muon", {"lr": 0.02, "nesterov": False, "adjust_lr_fn": "match_rms_adamw"}),
]

# torch 2.13's validation errors: (optimizer, kwargs, exception type, message).
VALIDATION = [
    ("Rprop", {"lr": -1e-2}, ValueError, "Invalid learning rate: -0.01"),
    ("Rprop", {"lr": 1e-2, "etas": (1.0, 0.5)}, ValueError, "Invalid eta values: 1.0, 0.5"),
    ("Rprop", {"etas": (0.5, 1.0)}, ValueError, "Invalid eta values: 0.5, 1.0"),
    ("Rprop", {"etas": (0.0, 1.2)}, ValueError, "Invalid eta values: 0.0, 1.2"),
    ("NAdam", {"lr": -1}, ValueError, "Invalid learning rate: -1"),
    ("NAdam", {"eps": -1e-8}, ValueError, "Invalid epsilon value: -1e-08"),
    ("NAdam", {"lr": 1e-2, "betas": (1.0, 0.0)}, ValueError,
     "Invalid beta parameter at index 0: 1.0"),
    ("NAdam", {"betas": (0.9, 1.0)}, ValueError, "Invalid beta parameter at index 1: 1.0"),
    ("NAdam", {"weight_decay": -0.1}, ValueError, "Invalid weight_decay value: -0.1"),
    ("NAdam", {"lr": 1e-2, "momentum_decay": -0.2}, ValueError,
     "Invalid momentum_decay value: -0.2"),
    ("RAdam", {"lr": -1e-3}, ValueError, "Invalid learning rate: -0.001"),
    ("RAdam", {"eps": -1.0}, ValueError, "Invalid epsilon value: -1.0"),
    ("RAdam", {"lr": 1e-2, "betas": (1.0, 0.0)}, ValueError,
     "Invalid beta parameter at index 0: 1.0"),
    ("RAdam", {"betas": (0.9, -0.1)}, ValueError, "Invalid beta parameter at index 1: -0.1"),
    ("RAdam", {"lr": 1e-2, "weight_decay": -1}, ValueError, "Invalid weight_decay value: -1"),
    ("Adafactor", {"lr": -1}, ValueError, "Learning rate should be >= 0 but is: -1"),
    ("Adafactor", {"beta2_decay": 0.8}, ValueError, "beta2_decay should be <= 0 but is: 0.8"),
    ("Adafactor", {"eps": (-1e-30, 1e-3)}, ValueError, "epsilon1 should be >= 0 but is: -1e-30"),
    ("Adafactor", {"eps": (None, -1.0)}, ValueError, "epsilon2 should be >= 0 but is: -1.0"),
    ("Adafactor", {"d": 0.0}, ValueError, "Clipping threshold d should be >= 1 but is: 0.0"),
    ("Adafactor", {"weight_decay": -0.5}, ValueError, "weight_decay should be >= 0 but is: -0.5"),
    ("Muon", {"lr": -0.1}, ValueError, "Learning rate should be >= 0 but is: -0.1"),
    ("Muon", {"momentum": -0.9}, ValueError, "momentum should be >= 0 but is: -0.9"),
    ("Muon", {"weight_decay": -0.1}, ValueError, "weight decay should be >= 0 but is: -0.1"),
    ("Muon", {"adjust_lr_fn": "arbitrary"}, ValueError,
     "Adjust learning rate function arbitrary is not supported"),
]  # fmt: skip


def _param(shape: tuple[int, ...] = (2, 3), dtype: Any = np.float64) -> Parameter:
    return Parameter(np.linspace(-1.0, 1.0, int(np.prod(shape))).reshape(shape).astype(dtype))


def _values(name: str, dtype: Any) -> list[np.ndarray]:
    """The starting values of the harness problem; matrices of Muon's own shapes for Muon."""
    if name != "Muon":
        return initial_values(dtype)
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape).astype(dtype) for shape in muon_reference.SHAPES]


def _params(name: str, dtype: Any = np.float64) -> list[Parameter]:
    return [Parameter(v) for v in _values(name, dtype)]


def _run(opt: Optimizer, params: list[Parameter], steps: range) -> None:
    """Steps ``steps`` of the harness problem (noisy quadratics, one missing grad)."""
    for k in steps:
        for j, p in enumerate(params):
            p.grad = gradient(k, j, np.array(p))
        opt.step()


def _torch_run(name: str, kwargs: dict[str, Any], dtype: Any, steps: int) -> Any:
    """torch's optimizer after ``steps`` steps of the same problem."""
    torch = pytest.importorskip("torch")
    params = [torch.nn.Parameter(torch.from_numpy(v)) for v in _values(name, dtype)]
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


def _dtypes(name: str) -> list[Any]:
    return [np.float64, np.float32] + ([np.complex128] if name in COMPLEX else [])


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
        getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(2, 3))], **kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("shape", [(2, 3, 4), (5,), ()])
def test_muon_refuses_parameters_that_are_not_matrices(shape: tuple[int, ...]) -> None:
    # torch prints the shape as torch.Size([...]); npoptim as the NumPy shape.
    with pytest.raises(ValueError) as info:
        Muon([_param((2, 2)), _param(shape)])
    assert str(info.value) == (
        f"Muon only supports 2D parameters whereas we found a parameter with size: {shape}"
    )


@pytest.mark.parametrize("name", ["Adafactor", "Muon"])
def test_complex_parameters_are_refused_at_step_with_torchs_message(name: str) -> None:
    p = _param((2, 3), np.complex128)
    p.grad = np.ones((2, 3), dtype=np.complex128)
    opt = CLASSES[name]([p])
    before = p.copy()
    message = f"{name} does not support complex parameters"
    with pytest.raises(RuntimeError) as info:
        opt.step()
    assert str(info.value) == message
    np.testing.assert_array_equal(p, before)
    torch = pytest.importorskip("torch")
    tp = torch.nn.Parameter(torch.ones(2, 3, dtype=torch.complex128))
    tp.grad = torch.ones_like(tp)
    with pytest.raises(RuntimeError) as tinfo:
        getattr(torch.optim, name)([tp]).step()
    assert str(tinfo.value) == message


@pytest.mark.parametrize("name", list(CLASSES))
def test_sparse_gradients_are_refused_with_torchs_message(name: str) -> None:
    p = _param((4, 2))
    opt = CLASSES[name]([p])
    p.grad = SparseGrad([1], np.ones((1, 2)), (4, 2))
    before = p.copy()
    with pytest.raises(RuntimeError) as info:
        opt.step()
    assert str(info.value) == f"{name} does not support sparse gradients"
    np.testing.assert_array_equal(p, before)


# ------------------------------------------------------------------- torch's public shape
@pytest.mark.parametrize("name", list(CLASSES))
def test_defaults_equal_torchs(name: str) -> None:
    torch = pytest.importorskip("torch")
    opt = CLASSES[name]([_param()])
    topt = getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(2, 3))])
    assert opt.defaults == topt.defaults


@pytest.mark.parametrize("name", list(CLASSES))
def test_repr_equals_torchs(name: str) -> None:
    torch = pytest.importorskip("torch")
    opt = CLASSES[name]([{"params": [_param()]}, {"params": [_param()], "lr": 0.5}])
    topt = getattr(torch.optim, name)(
        [{"params": [torch.nn.Parameter(torch.zeros(2, 3))]},
         {"params": [torch.nn.Parameter(torch.zeros(2, 3))], "lr": 0.5}]
    )  # fmt: skip
    assert repr(opt) == repr(topt)


@pytest.mark.parametrize(("name", "kwargs"), [*RICH, *((name, {}) for name in CLASSES)])
def test_state_equals_torchs_after_a_run(name: str, kwargs: dict[str, Any]) -> None:
    """Same state keys, group keys and values as torch after 21 steps (float64); Muon's
    momentum buffer to bfloat16's precision (its gradients see torch's bfloat16 updates)."""
    params = _params(name)
    opt = CLASSES[name](params, **kwargs)
    _run(opt, params, range(21))
    sd, tsd = opt.state_dict(), _torch_run(name, kwargs, np.float64, 21).state_dict()
    assert sd["param_groups"] == tsd["param_groups"]
    assert sd["state"].keys() == tsd["state"].keys()
    tol = muon_reference.TOLERANCE["float64"] if name == "Muon" else 1e-10
    for i, tstate in tsd["state"].items():
        assert list(sd["state"][i]) == list(tstate)
        for key, tvalue in tstate.items():
            value = sd["state"][i][key]
            if key in ("step", "mu_product"):  # torch: float32 scalar tensors; npoptim: floats
                assert type(value) is float
                assert value == tvalue.item(), key  # mu_product: torch's float32 rounding
            else:
                assert value.shape == tuple(tvalue.shape) and value.dtype == np.float64
                assert _relative_error(value, tvalue.numpy()) <= tol, key


@pytest.mark.parametrize("name", ["Rprop", "NAdam", "RAdam"])
def test_complex_state_equals_torchs_after_a_run(name: str) -> None:
    params = _params(name, np.complex128)
    opt = CLASSES[name](params)
    _run(opt, params, range(21))
    tsd = _torch_run(name, {}, np.complex128, 21).state_dict()
    for i, tstate in tsd["state"].items():
        for key, tvalue in tstate.items():
            value = opt.state_dict()["state"][i][key]
            if isinstance(value, np.ndarray):
                assert value.dtype == np.complex128
                assert _relative_error(value, tvalue.numpy()) <= 1e-10, key


# ------------------------------------------------------------------------- state_dict
RESUME = [
    pytest.param(name, kwargs, dtype, id=f"{name}-{i}-{np.dtype(dtype).name}")
    for i, (name, kwargs) in enumerate(RICH)
    for dtype in _dtypes(name)
]


@pytest.mark.parametrize(("name", "kwargs", "dtype"), RESUME)
def test_resume_from_state_dict_is_bit_identical(
    name: str, kwargs: dict[str, Any], dtype: Any
) -> None:
    straight = _params(name, dtype)
    opt = CLASSES[name](straight, **kwargs)
    _run(opt, straight, range(12))

    first = _params(name, dtype)
    opt_first = CLASSES[name](first, **kwargs)
    _run(opt_first, first, range(6))
    saved = opt_first.state_dict()
    resumed = [Parameter(np.array(p)) for p in first]
    opt_resumed = CLASSES[name](resumed, **kwargs)
    opt_resumed.load_state_dict(saved)
    _run(opt_resumed, resumed, range(6, 12))

    for a, b in zip(resumed, straight, strict=True):
        assert np.array(a).tobytes() == np.array(b).tobytes()


def test_nadam_loaded_mu_product_is_held_at_float32_precision() -> None:
    p = _param()
    opt = NAdam([p])
    p.grad = np.ones((2, 3))
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["mu_product"] = np.float64(0.1)  # e.g. from a file: not a float32 value
    opt.load_state_dict(sd)
    assert type(opt.state[p]["mu_product"]) is float
    assert opt.state[p]["mu_product"] == float(np.float32(0.1))


# ---------------------------------------------------------------------------- behaviours
@pytest.mark.parametrize(("name", "kwargs"), [r for r in RICH if r[0] != "Muon"])
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


@pytest.mark.parametrize("name", ["Rprop", "NAdam", "RAdam", "Adafactor"])
def test_maximize_ascends_a_concave_objective(name: str) -> None:
    # f(w) = -|w - 3|^2 has its maximum at w = 3; from w = 1 its value must go up.
    p = Parameter(np.ones(4))
    opt = CLASSES[name]([p], lr=0.05, maximize=True)
    for _ in range(20):
        p.grad = -2 * (np.array(p) - 3)
        opt.step()
    assert np.all(np.abs(np.array(p) - 3) < 1.9)  # closer to the top (Rprop may pass it)


def test_muon_has_no_maximize_option_as_in_torch() -> None:
    with pytest.raises(TypeError):
        Muon([_param()], maximize=True)  # type: ignore[call-arg]


@pytest.mark.parametrize(("name", "kwargs"), [*RICH, *((name, {}) for name in CLASSES)])
def test_zero_gradients_without_weight_decay_leave_parameters_unchanged(
    name: str, kwargs: dict[str, Any]
) -> None:
    p = _param((2, 3))
    before = p.copy()
    opt = CLASSES[name]([p], **{**kwargs, "weight_decay": 0.0} if name != "Rprop" else kwargs)
    for _ in range(3):
        p.grad = np.zeros((2, 3))
        opt.step()
    np.testing.assert_array_equal(p, before)


@pytest.mark.parametrize(("name", "kwargs"), [r for r in RICH if r[0] in ELEMENTWISE])
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
    for _ in range(3):
        for q in [big, view, *rows]:
            q.grad = np.cos(3 * np.array(q))
        for opt in opts:
            opt.step()
    np.testing.assert_array_equal(big, np.stack(rows))
    np.testing.assert_array_equal(view, np.stack(rows).T)


# ------------------------------------------------------------------------------------ Rprop
def test_rprop_clamps_a_learning_rate_outside_the_step_size_range_like_torch() -> None:
    # torch clamps the step sizes on every step, even where the sign product is zero.
    torch = pytest.importorskip("torch")
    p = _param((2, 3))
    tp = torch.nn.Parameter(torch.from_numpy(np.array(p)))
    kwargs: dict[str, Any] = {"lr": 0.5, "step_sizes": (1e-3, 0.1)}
    opt, topt = Rprop([p], **kwargs), torch.optim.Rprop([tp], **kwargs)
    for k in range(4):
        p.grad = np.cos(k + np.array(p))
        tp.grad = torch.from_numpy(np.array(p.grad))
        opt.step()
        topt.step()
    np.testing.assert_array_equal(p, tp.detach().numpy())
    np.testing.assert_array_equal(opt.state[p]["step_size"], topt.state[tp]["step_size"])


def test_rprop_gives_both_parts_of_a_complex_element_the_learning_rate() -> None:
    p = _param((3,), np.complex128)
    opt = Rprop([p], lr=0.25)
    p.grad = np.full(3, 1 - 1j)
    opt.step()
    np.testing.assert_array_equal(opt.state[p]["step_size"], np.full(3, 0.25 + 0.25j))


# -------------------------------------------------------------------------------- Adafactor
@pytest.mark.parametrize("shape", [(2, 3, 4), (4, 1), (1, 5), (1,)])
def test_adafactor_factors_the_last_two_axes_like_torch(shape: tuple[int, ...]) -> None:
    torch = pytest.importorskip("torch")
    p = _param(shape)
    tp = torch.nn.Parameter(torch.from_numpy(np.array(p)))
    opt, topt = Adafactor([p], lr=0.1), torch.optim.Adafactor([tp], lr=0.1)
    for k in range(5):
        p.grad = np.sin(k + 3 * np.array(p))
        tp.grad = torch.from_numpy(np.array(p.grad))
        opt.step()
        topt.step()
    assert list(opt.state[p]) == list(topt.state[tp])
    for key, tvalue in topt.state[tp].items():
        if key != "step":
            assert opt.state[p][key].shape == tuple(tvalue.shape), key
            assert _relative_error(opt.state[p][key], tvalue.numpy()) <= 1e-12, key
    assert _relative_error(p, tp.detach().numpy()) <= 1e-12


def test_adafactor_default_eps1_comes_from_the_first_parameter_of_the_group_like_torch() -> None:
    # torch fills eps1 = finfo(dtype).eps from the first parameter it updates and keeps that
    # value for the rest of the group: a float32 first parameter sets 1.2e-7 for a float64 one.
    torch = pytest.importorskip("torch")
    small, big = np.full((2, 2), 1e-9, np.float32), np.full((2, 2), 1e-9)
    params = [Parameter(small.copy()), Parameter(big.copy())]
    tparams = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in (small, big)]
    opt, topt = Adafactor(params), torch.optim.Adafactor(tparams)
    for p, tp in zip(params, tparams, strict=True):
        p.grad = np.full(p.shape, 1e-9, p.dtype)
        tp.grad = torch.from_numpy(np.array(p.grad))
    opt.step()
    topt.step()
    for p, tp in zip(params, tparams, strict=True):
        assert _relative_error(p, tp.detach().numpy()) <= 1e-6


# ------------------------------------------------------------------------------------- Muon
def test_muon_kernel_refuses_a_non_matrix_gradient_like_torch() -> None:
    # add_param_group does not check shapes (neither does torch's); the step does.
    opt = Muon([_param((2, 2))])
    q = _param((4,))
    opt.add_param_group({"params": [q]})
    q.grad = np.ones(4)
    with pytest.raises(ValueError, match="^Param gradient must be a 2D matrix$"):
        opt.step()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"ns_steps": 100}, "Number of steps must be less than 100 for computational efficiency"),
     ({"ns_coefficients": (3.0, -4.0)}, "Coefficients must be a tuple of exactly 3 values")],
)  # fmt: skip
def test_muon_newton_schulz_arguments_are_checked_at_step_like_torch(
    kwargs: dict[str, Any], message: str
) -> None:
    p = _param((2, 3))
    p.grad = np.ones((2, 3))
    with pytest.raises(ValueError) as info:
        Muon([p], **kwargs).step()
    assert str(info.value) == message


def test_functional_muon_has_no_foreach_path_like_torch() -> None:
    p = _param((2, 3))
    with pytest.raises(RuntimeError, match="^Foreach is not supported for Muon yet$"):
        functional.muon(
            [p], [np.ones((2, 3))], [np.zeros((2, 3))], lr=0.1, weight_decay=0.0,
            momentum=0.9, nesterov=True, ns_coefficients=(3.4445, -4.775, 2.0315), ns_steps=5,
            eps=1e-7, adjust_lr_fn=None, foreach=True,
        )  # fmt: skip


def test_muon_update_has_singular_values_near_one() -> None:
    # The orthogonalized update of a full-rank gradient: singular values in about [0.5, 1.5]
    # (Keller Jordan's iteration), scaled by lr * sqrt(max(1, A/B)).
    rng = np.random.default_rng(1)
    p = Parameter(np.zeros((8, 4)))
    p.grad = rng.standard_normal((8, 4))
    Muon([p], lr=1.0, weight_decay=0.0, momentum=0.0, nesterov=False).step()
    singular = np.linalg.svd(-np.array(p) / np.sqrt(2.0), compute_uv=False)
    assert np.all((singular > 0.5) & (singular < 1.5))
