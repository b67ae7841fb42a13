"""No silent failures: bad settings and bad checkpoints are refused where they enter, with a
message naming the cause, on every kernel path, and a refused call changes nothing.

Each refusal is checked twice: the exact message, and a deep comparison of the optimizer
(state, param_groups, parameter values and grads), scheduler or average before and after.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import npoptim
from npoptim import Parameter, SparseGrad
from npoptim.lr_scheduler import CosineAnnealingLR, LambdaLR, OneCycleLR, SequentialLR, StepLR
from npoptim.swa_utils import AveragedParameters

# ------------------------------------------------------------------------------ helpers
ELEMENTWISE = ["ASGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Adamax", "NAdam", "RAdam",
               "RMSprop", "Rprop", "SGD"]  # fmt: skip
WITH_BETAS = ["Adam", "AdamW", "Adamax", "NAdam", "RAdam"]
PATHS: dict[str, dict[str, Any]] = {
    "for-loop": {"foreach": False},
    "multi-tensor": {"foreach": True},
    "compiled": {"fused": True},
}
ALL = [*ELEMENTWISE, "Adafactor", "LBFGS", "Muon", "SparseAdam"]
#: Options under which each optimizer keeps every state key it has.
FULL_OPTIONS: dict[str, dict[str, Any]] = {
    "SGD": {"momentum": 0.9},
    "Adam": {"amsgrad": True},
    "AdamW": {"amsgrad": True},
    "RMSprop": {"momentum": 0.5, "centered": True},
}


def _snapshot(value: Any) -> Any:
    """A structural copy that compares by value (arrays as (dtype, shape, bytes))."""
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, np.ascontiguousarray(value).tobytes())
    if isinstance(value, SparseGrad):
        return ("sparse", _snapshot(value.indices), _snapshot(value.values), value.shape)
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_snapshot(v) for v in value])
    return (type(value).__name__, repr(value))


def optimizer_snapshot(opt: npoptim.Optimizer) -> Any:
    params = [p for g in opt.param_groups for p in g["params"]]
    return _snapshot(
        {
            "state": {i: opt.state[p] for i, p in enumerate(params) if p in opt.state},
            "state_keys": [id(k) for k in opt.state],
            "groups": [
                {**{k: v for k, v in g.items() if k != "params"}, "params": [id(p) for p in g["params"]]}
                for g in opt.param_groups
            ],
            "values": [np.array(p) for p in params],
            "grads": [p.grad for p in params],
        }
    )


def refused(
    opt: npoptim.Optimizer, call: Callable[[], Any], error: type[Exception], message: str
) -> None:
    """``call()`` raises ``error`` with exactly ``message``, and ``opt`` is unchanged."""
    before = optimizer_snapshot(opt)
    with pytest.raises(error) as info:
        call()
    assert str(info.value) == message
    assert optimizer_snapshot(opt) == before


def make(name: str, **kwargs: Any) -> tuple[npoptim.Optimizer, list[Parameter]]:
    """An optimizer of a (3, 4) matrix and a (4,) vector (Muon: two matrices) that has
    stepped twice, so that every state array exists."""
    shapes = [(3, 4), (2, 4)] if name == "Muon" else [(3, 4), (4,)]
    rng = np.random.default_rng(0)
    params = [Parameter(rng.standard_normal(s)) for s in shapes]
    opt = getattr(npoptim, name)(params, **{**FULL_OPTIONS.get(name, {}), **kwargs})
    for k in range(2):
        step(opt, params, k)
    return opt, params


def set_grads(params: list[Parameter], k: int, sparse: bool = False) -> None:
    for j, p in enumerate(params):
        g = np.random.default_rng([k, j]).standard_normal(p.shape)
        p.grad = SparseGrad(np.arange(p.shape[0]), g, p.shape) if sparse else g


def step(opt: npoptim.Optimizer, params: list[Parameter], k: int) -> None:
    if isinstance(opt, npoptim.LBFGS):

        def closure() -> float:
            set_grads(params, k)
            return float(sum(np.sum(np.array(p) ** 2) for p in params))

        opt.step(closure)
    else:
        set_grads(params, k, sparse=isinstance(opt, npoptim.SparseAdam))
        opt.step()


# ------------------------------------------------------------- hyperparameters: enter
CONSTRUCTOR_CASES = [
    *[(name, {"lr": "0.01"}, TypeError, "lr must be a real number, but got '0.01' (str)")
      for name in ALL],
    *[(name, {"lr": None}, TypeError, "lr must be a real number, but got None (NoneType)")
      for name in ALL],
    *[(name, {"betas": (0.9,)}, ValueError,
       "betas must be a pair (a tuple of 2), but got (0.9,) of length 1")
      for name in [*WITH_BETAS, "SparseAdam"]],
    *[(name, {"betas": (0.9, "0.999")}, TypeError,
       "betas[1] must be a real number, but got '0.999' (str)")
      for name in [*WITH_BETAS, "SparseAdam"]],
    ("Adam", {"amsgrad": "yes"}, TypeError, "amsgrad must be a bool, but got 'yes' (str)"),
    ("SGD", {"momentum": "0.9"}, TypeError, "momentum must be a real number, but got '0.9' (str)"),
    ("SGD", {"nesterov": None}, TypeError, "nesterov must be a bool, but got None (NoneType)"),
    ("Rprop", {"etas": (0.5,)}, ValueError,
     "etas must be a pair (a tuple of 2), but got (0.5,) of length 1"),
    ("Rprop", {"step_sizes": 1e-6}, TypeError,
     "step_sizes must be a pair (a tuple), but got 1e-06 (float)"),
    ("Adafactor", {"eps": (1e-3,)}, ValueError,
     "eps must be a pair (a tuple of 2), but got (0.001,) of length 1"),
    ("Adafactor", {"eps": (None, None)}, TypeError,
     "eps[1] must be a real number, but got None (NoneType)"),
    ("RMSprop", {"alpha": "0.99"}, TypeError, "alpha must be a real number, but got '0.99' (str)"),
    ("ASGD", {"t0": None}, TypeError, "t0 must be a real number, but got None (NoneType)"),
    ("Adadelta", {"rho": [0.9]}, TypeError, "rho must be a real number, but got [0.9] (list)"),
    ("Adagrad", {"lr_decay": "0"}, TypeError, "lr_decay must be a real number, but got '0' (str)"),
    ("NAdam", {"momentum_decay": None}, TypeError,
     "momentum_decay must be a real number, but got None (NoneType)"),
    ("LBFGS", {"max_iter": "20"}, TypeError, "max_iter must be an integer, but got '20' (str)"),
    ("LBFGS", {"history_size": 10.0}, TypeError,
     "history_size must be an integer, but got 10.0 (float)"),
    ("Muon", {"ns_coefficients": None}, TypeError,
     "ns_coefficients must be a tuple of real numbers, but got None (NoneType)"),
    ("Muon", {"ns_steps": 5.0}, TypeError, "ns_steps must be an integer, but got 5.0 (float)"),
    ("Adam", {"foreach": "no"}, TypeError, "foreach must be a bool, but got 'no' (str)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "kwargs", "error", "message"),
    CONSTRUCTOR_CASES,
    ids=[f"{c[0]}-{next(iter(c[1]))}={next(iter(c[1].values()))!r}" for c in CONSTRUCTOR_CASES],
)
def test_constructor_names_the_bad_hyperparameter(
    name: str, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    shape = (2, 2)
    with pytest.raises(error) as info:
        getattr(npoptim, name)([Parameter(np.zeros(shape))], **kwargs)
    assert str(info.value) == message


def test_torchs_own_range_messages_are_kept() -> None:
    with pytest.raises(ValueError, match=r"^Invalid learning rate: -1$"):
        npoptim.Adam([Parameter(np.zeros(2))], lr=-1)
    with pytest.raises(ValueError, match=r"^Invalid beta parameter at index 1: 1.0$"):
        npoptim.Adam([Parameter(np.zeros(2))], betas=(0.9, 1.0))


@pytest.mark.parametrize(
    ("group", "error", "message"),
    [
        ({"lr": "0.1"}, TypeError,
         "param_groups[1]['lr'] must be a real number, but got '0.1' (str)"),
        ({"betas": (0.9,)}, ValueError,
         "param_groups[1]['betas'] must be a pair (a tuple of 2), but got (0.9,) of length 1"),
        ({"lr": -1.0}, ValueError, "param_groups[1]: Invalid learning rate: -1.0"),
        ({"betas": (0.9, 1.5)}, ValueError,
         "param_groups[1]: Invalid beta parameter at index 1: 1.5"),
    ],
)  # fmt: skip
def test_add_param_group_checks_the_groups_hyperparameters(
    group: dict[str, Any], error: type[Exception], message: str
) -> None:
    opt, _ = make("Adam")
    extra = Parameter(np.zeros(3))
    refused(opt, lambda: opt.add_param_group({"params": [extra], **group}), error, message)


# ------------------------------------------------------------- hyperparameters: step()
STEP_CASES = [
    ("lr", "0.1", TypeError, "param_groups[0]['lr'] must be a real number, but got '0.1' (str)"),
    ("lr", None, TypeError, "param_groups[0]['lr'] must be a real number, but got None (NoneType)"),
    ("maximize", "False", TypeError,
     "param_groups[0]['maximize'] must be a bool, but got 'False' (str)"),
]  # fmt: skip


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize(("key", "value", "error", "message"), STEP_CASES)
def test_a_bad_value_written_into_param_groups_is_refused_alike_on_every_path(
    name: str, path: str, key: str, value: Any, error: type[Exception], message: str
) -> None:
    if path == "compiled":
        pytest.importorskip("numba")
    opt, params = make(name, **PATHS[path])
    set_grads(params, 5)
    opt.param_groups[0][key] = value
    refused(opt, opt.step, error, message)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", WITH_BETAS)
@pytest.mark.parametrize(
    ("betas", "error", "message"),
    [
        ((0.9,), ValueError,
         "param_groups[0]['betas'] must be a pair (a tuple of 2), but got (0.9,) of length 1"),
        ((0.9, None), TypeError,
         "param_groups[0]['betas'][1] must be a real number, but got None (NoneType)"),
    ],
)  # fmt: skip
def test_bad_betas_written_into_param_groups_are_refused_alike_on_every_path(
    name: str, path: str, betas: Any, error: type[Exception], message: str
) -> None:
    if path == "compiled":
        pytest.importorskip("numba")
    opt, params = make(name, **PATHS[path])
    set_grads(params, 5)
    opt.param_groups[0]["betas"] = betas
    refused(opt, opt.step, error, message)


@pytest.mark.parametrize("name", ["Adafactor", "LBFGS", "Muon", "SparseAdam"])
def test_a_non_number_lr_is_refused_at_step_by_the_other_optimizers(name: str) -> None:
    opt, params = make(name)
    set_grads(params, 5, sparse=name == "SparseAdam")
    opt.param_groups[0]["lr"] = "0.1"
    message = "param_groups[0]['lr'] must be a real number, but got '0.1' (str)"
    # (LBFGS: refused before the closure, which would set other grads, is called)
    refused(opt, lambda: step(opt, params, 5) if name == "LBFGS" else opt.step(), TypeError, message)


def test_a_valid_value_written_into_param_groups_still_steps() -> None:
    opt, params = make("Adam")
    opt.param_groups[0]["lr"] = np.float32(0.5)  # NumPy numbers are numbers
    opt.param_groups[0]["betas"] = [0.8, 0.9]  # a list is a pair
    before = np.array(params[0])
    step(opt, params, 5)
    assert not np.array_equal(before, params[0])


# ------------------------------------------------------------------ load_state_dict
def _edited(opt: npoptim.Optimizer, edit: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    sd = copy.deepcopy(opt.state_dict())
    edit(sd)
    return sd


def test_a_transposed_state_is_refused() -> None:
    opt, _ = make("Adam")
    sd = _edited(opt, lambda sd: sd["state"][0].__setitem__("exp_avg", np.zeros((4, 3))))
    refused(opt, lambda: opt.load_state_dict(sd), ValueError,
            "loaded state for parameter 0 of param_groups[0]: 'exp_avg' has shape (4, 3), "
            "but the parameter has shape (3, 4)")  # fmt: skip


def test_a_state_of_another_size_is_refused() -> None:
    opt, _ = make("Adam")
    sd = _edited(opt, lambda sd: sd["state"][0].__setitem__("exp_avg_sq", np.zeros((5, 4))))
    refused(opt, lambda: opt.load_state_dict(sd), ValueError,
            "loaded state for parameter 0 of param_groups[0]: 'exp_avg_sq' has shape (5, 4), "
            "but the parameter has shape (3, 4)")  # fmt: skip


def test_a_state_for_parameters_in_another_order_is_refused() -> None:
    source, _ = make("Adam")
    w, b = Parameter(np.zeros((3, 4))), Parameter(np.zeros(4))
    opt = npoptim.Adam([b, w], amsgrad=True)
    set_grads([b, w], 0)
    opt.step()
    refused(opt, lambda: opt.load_state_dict(source.state_dict()), ValueError,
            "loaded state for parameter 0 of param_groups[0]: 'exp_avg' has shape (3, 4), "
            "but the parameter has shape (4,)")  # fmt: skip


def test_the_message_names_a_named_parameter() -> None:
    params = [("fc.weight", Parameter(np.zeros((3, 4)))), ("fc.bias", Parameter(np.zeros(4)))]
    opt = npoptim.Adam(params)
    set_grads([p for _, p in params], 0)
    opt.step()
    sd = _edited(opt, lambda sd: sd["state"][1].__setitem__("exp_avg", np.zeros(5)))
    refused(opt, lambda: opt.load_state_dict(sd), ValueError,
            "loaded state for parameter 1 ('fc.bias') of param_groups[0]: 'exp_avg' has shape "
            "(5,), but the parameter has shape (4,)")  # fmt: skip


def _array_states(name: str) -> list[Any]:
    opt, _ = make(name)
    cases = []
    for index, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            if isinstance(value, np.ndarray) and value.ndim > 0:
                cases.append(pytest.param(name, index, key, id=f"{name}-{index}-{key}"))
    return cases


@pytest.mark.parametrize(("name", "index", "key"), [c for n in ALL for c in _array_states(n)])
def test_every_state_array_of_the_wrong_shape_is_refused(name: str, index: int, key: str) -> None:
    opt, params = make(name)
    good = opt.state_dict()["state"][index][key]
    bad = np.zeros((*good.shape, 2), good.dtype)
    sd = _edited(opt, lambda sd: sd["state"][index].__setitem__(key, bad))
    before = optimizer_snapshot(opt)
    with pytest.raises(ValueError) as info:
        opt.load_state_dict(sd)
    param_shape = params[index].shape
    if good.shape == param_shape:
        expected = f"but the parameter has shape {param_shape}"
    else:  # factored (Adafactor) or flat (LBFGS) state
        expected = f"but for a parameter of shape {param_shape} it must have shape {good.shape}"
    assert str(info.value) == (
        f"loaded state for parameter {index} of param_groups[0]: {key!r} has shape "
        f"{bad.shape}, {expected}"
    )
    assert optimizer_snapshot(opt) == before
    opt.load_state_dict(opt.state_dict())  # the right shapes load


def test_adam_state_loaded_into_sgd_is_refused() -> None:
    adam, params = make("Adam")
    sgd = npoptim.SGD(params, momentum=0.9)
    set_grads(params, 0)
    sgd.step()
    refused(sgd, lambda: sgd.load_state_dict(adam.state_dict()), ValueError,
            "loaded param_groups[0] has no 'momentum': it is not a param group of SGD (its keys: "
            "['amsgrad', 'betas', 'capturable', 'decoupled_weight_decay', 'differentiable', "
            "'eps', 'foreach', 'fused', 'lr', 'maximize', 'weight_decay']; SGD needs "
            "['dampening', 'lr', 'momentum', 'weight_decay'])")  # fmt: skip


def test_a_state_key_of_another_algorithm_is_refused() -> None:
    opt, _ = make("Adam")
    sd = _edited(opt, lambda sd: sd["state"][0].__setitem__("momentum_buffer", np.zeros((3, 4))))
    refused(opt, lambda: opt.load_state_dict(sd), ValueError,
            "loaded state for parameter 0 of param_groups[0]: 'momentum_buffer' is not a state "
            "of Adam for this parameter (its state keys: ['exp_avg', 'exp_avg_sq', "
            "'max_exp_avg_sq', 'step'])")  # fmt: skip


def test_amsgrad_without_its_state_is_refused() -> None:
    opt, _ = make("Adam", amsgrad=False)
    sd = _edited(opt, lambda sd: sd["param_groups"][0].__setitem__("amsgrad", True))
    refused(opt, lambda: opt.load_state_dict(sd), ValueError,
            "loaded state for parameter 0 of param_groups[0] has no 'max_exp_avg_sq', which "
            "Adam needs with these options (it has ['exp_avg', 'exp_avg_sq', 'step'])")  # fmt: skip


def test_amsgrad_state_without_amsgrad_loads_and_is_kept_as_torch_keeps_it() -> None:
    opt, params = make("Adam", amsgrad=True)
    sd = _edited(opt, lambda sd: sd["param_groups"][0].__setitem__("amsgrad", False))
    opt.load_state_dict(sd)
    assert "max_exp_avg_sq" in opt.state[params[0]]
    step(opt, params, 5)


def test_a_partial_state_is_refused() -> None:
    opt, _ = make("RMSprop")
    sd = _edited(opt, lambda sd: sd["state"][1].pop("grad_avg"))
    refused(opt, lambda: opt.load_state_dict(sd), ValueError,
            "loaded state for parameter 1 of param_groups[0] has no 'grad_avg', which RMSprop "
            "needs with these options (it has ['momentum_buffer', 'square_avg', 'step'])")  # fmt: skip


def test_a_state_that_does_not_cast_to_the_parameters_dtype_is_refused() -> None:
    opt, _ = make("Adam")
    sd = _edited(opt, lambda sd: sd["state"][0].__setitem__("exp_avg", np.zeros((3, 4), complex)))
    refused(opt, lambda: opt.load_state_dict(sd), TypeError,
            "loaded state for parameter 0 of param_groups[0]: 'exp_avg' has dtype complex128, "
            "which does not cast to the parameter's dtype float64")  # fmt: skip
    sd = _edited(opt, lambda sd: sd["state"][0].__setitem__("exp_avg", np.full((3, 4), "x")))
    refused(opt, lambda: opt.load_state_dict(sd), TypeError,
            "loaded state for parameter 0 of param_groups[0]: 'exp_avg' has dtype <U1, which "
            "does not cast to the parameter's dtype float64")  # fmt: skip


def test_a_non_number_step_is_refused() -> None:
    opt, _ = make("Adam")
    sd = _edited(opt, lambda sd: sd["state"][0].__setitem__("step", "2"))
    refused(opt, lambda: opt.load_state_dict(sd), TypeError,
            "loaded state for parameter 0 of param_groups[0]: 'step' must be a real number, but "
            "got str")  # fmt: skip


def test_a_state_for_an_unlisted_parameter_is_refused() -> None:
    opt, _ = make("Adam")
    sd = _edited(opt, lambda sd: sd["state"].__setitem__(7, {}))
    refused(opt, lambda: opt.load_state_dict(sd), ValueError,
            "loaded state dict has a state for parameter 7, which no param group lists (the "
            "groups list [0, 1])")  # fmt: skip


@pytest.mark.parametrize(
    ("key", "value", "error", "message"),
    [
        ("lr", "0.1", TypeError,
         "loaded param_groups[0]['lr'] must be a real number, but got '0.1' (str)"),
        ("betas", [0.9], ValueError,
         "loaded param_groups[0]['betas'] must be a pair (a tuple of 2), but got [0.9] of "
         "length 1"),
        ("amsgrad", None, TypeError,
         "loaded param_groups[0]['amsgrad'] must be a bool, but got None (NoneType)"),
    ],
)  # fmt: skip
def test_a_bad_hyperparameter_in_a_loaded_group_is_refused(
    key: str, value: Any, error: type[Exception], message: str
) -> None:
    opt, _ = make("Adam")
    sd = _edited(opt, lambda sd: sd["param_groups"][0].__setitem__(key, value))
    refused(opt, lambda: opt.load_state_dict(sd), error, message)


def test_a_loaded_group_without_a_hyperparameter_is_refused() -> None:
    opt, _ = make("Adam")
    sd = _edited(opt, lambda sd: sd["param_groups"][0].pop("eps"))
    with pytest.raises(ValueError, match=r"^loaded param_groups\[0\] has no 'eps': "):
        opt.load_state_dict(sd)


def test_a_loaded_group_without_a_flag_added_later_loads_as_in_torch() -> None:
    opt, _ = make("Adam", amsgrad=False)
    sd = _edited(opt, lambda sd: sd["param_groups"][0].pop("decoupled_weight_decay"))
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["decoupled_weight_decay"] is False


def test_a_whole_checkpoint_is_refused_and_the_message_says_where_the_state_dict_is() -> None:
    opt, _ = make("Adam")
    checkpoint = {"optimizer": opt.state_dict(), "epoch": 3}
    refused(opt, lambda: opt.load_state_dict(checkpoint), ValueError,
            "Adam.load_state_dict expects an optimizer state_dict with the keys "
            "['param_groups', 'state'], but got a dict with the keys ['epoch', 'optimizer']; "
            "pass state_dict['optimizer']")  # fmt: skip


def test_a_dict_that_is_no_state_dict_is_refused() -> None:
    opt, _ = make("Adam")
    refused(opt, lambda: opt.load_state_dict({"state": {}}), ValueError,
            "Adam.load_state_dict expects an optimizer state_dict with the keys "
            "['param_groups', 'state'], but got a dict with the keys ['state']")  # fmt: skip
    refused(opt, lambda: opt.load_state_dict([1, 2]), TypeError,  # type: ignore[arg-type]
            "Adam.load_state_dict expects an optimizer state_dict (a dict), but got list")  # fmt: skip


def test_torchs_group_count_and_size_messages_are_kept() -> None:
    opt, _ = make("Adam")
    sd = _edited(opt, lambda sd: sd["param_groups"][0]["params"].pop())
    refused(opt, lambda: opt.load_state_dict(sd), ValueError,
            "loaded state dict contains a parameter group that doesn't match the size of "
            "optimizer's group")  # fmt: skip
    sd = _edited(opt, lambda sd: sd["param_groups"].append({**sd["param_groups"][0], "params": [2]}))
    refused(opt, lambda: opt.load_state_dict(sd), ValueError,
            "loaded state dict has a different number of parameter groups")  # fmt: skip


def test_read_only_arrays_load_each_copied_once_and_never_written() -> None:
    opt, params = make("Adam")
    sd = copy.deepcopy(opt.state_dict())
    arrays = [v for s in sd["state"].values() for v in s.values() if isinstance(v, np.ndarray)]
    for a in arrays:
        a.flags.writeable = False
    saved = [a.copy() for a in arrays]
    opt.load_state_dict(sd)
    step(opt, params, 5)
    for a, s in zip(arrays, saved, strict=True):
        np.testing.assert_array_equal(a, s)
    for p in params:
        for value in opt.state[p].values():
            if isinstance(value, np.ndarray):
                assert value.flags.writeable
                assert not any(np.shares_memory(value, a) for a in arrays)


def test_float64_state_is_cast_to_a_float32_parameter() -> None:
    p = Parameter(np.zeros(3, np.float32))
    opt = npoptim.Adam([p])
    p.grad = np.ones(3, np.float32)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"].astype(np.float64)
    opt.load_state_dict(sd)
    assert opt.state[p]["exp_avg"].dtype == np.float32


def test_sparse_adam_and_sgds_sparse_buffer_load_back() -> None:
    opt, params = make("SparseAdam")
    opt.load_state_dict(opt.state_dict())
    sgd = npoptim.SGD(params, momentum=0.9)
    set_grads(params, 0, sparse=True)
    sgd.step()
    assert isinstance(sgd.state[params[0]]["momentum_buffer"], SparseGrad)
    sgd.load_state_dict(sgd.state_dict())
    bad = _edited(sgd, lambda sd: sd["state"][0].__setitem__(
        "momentum_buffer", SparseGrad(np.array([0]), np.zeros((1, 5)), (3, 5))))  # fmt: skip
    refused(sgd, lambda: sgd.load_state_dict(bad), ValueError,
            "loaded state for parameter 0 of param_groups[0]: 'momentum_buffer' has shape "
            "(3, 5), but the parameter has shape (3, 4)")  # fmt: skip


def test_adafactor_factored_state_has_its_documented_shapes() -> None:
    opt, _ = make("Adafactor")
    sd = _edited(opt, lambda sd: sd["state"][0].__setitem__("variance", np.zeros((3, 4))))
    refused(opt, lambda: opt.load_state_dict(sd), ValueError,
            "loaded state for parameter 0 of param_groups[0]: 'variance' is not a state of "
            "Adafactor for this parameter (its state keys: ['col_var', 'row_var', 'step'])")  # fmt: skip
    sd = _edited(opt, lambda sd: sd["state"][0].__setitem__("row_var", np.zeros((1, 4))))
    refused(opt, lambda: opt.load_state_dict(sd), ValueError,
            "loaded state for parameter 0 of param_groups[0]: 'row_var' has shape (1, 4), but "
            "for a parameter of shape (3, 4) it must have shape (3, 1)")  # fmt: skip


# --------------------------------------------------------------------------- LBFGS
@pytest.mark.parametrize(
    ("loss", "shown"),
    [(None, "None (NoneType)"), ("1.0", "'1.0' (str)"), (1 + 2j, "(1+2j) (complex)"),
     (np.zeros(2), "array([0., 0.]) (ndarray)")],
)  # fmt: skip
def test_an_lbfgs_closure_must_return_a_real_loss(loss: Any, shown: str) -> None:
    x = Parameter(np.array([1.0, 2.0]))
    opt = npoptim.LBFGS([x])

    def closure() -> Any:
        x.grad = 2 * np.array(x)
        return loss

    x.grad = 2 * np.array(x)  # what the closure sets: the snapshot sees only the optimizer
    refused(opt, lambda: opt.step(closure), TypeError,
            f"LBFGS needs a closure that returns the loss as a real number, but it returned "
            f"{shown}")  # fmt: skip


def test_an_lbfgs_closure_may_return_numpy_numbers() -> None:
    x = Parameter(np.array([1.0, 2.0]))
    opt = npoptim.LBFGS([x])

    def closure() -> Any:
        x.grad = 2 * np.array(x)
        return np.array([np.sum(np.array(x) ** 2)])  # a one-element array, as a model gives

    assert opt.step(closure) is not None


def _lbfgs_run(api: Any, make_param: Callable[[], Any], grad: Any, kwargs: dict[str, Any]) -> Any:
    x = make_param()
    opt = api.LBFGS([x], **kwargs)

    def closure() -> float:
        x.grad = grad(x)
        return 1.0

    for _ in range(2):
        opt.step(closure)
    return x, opt.state[x]


@pytest.mark.parametrize(
    "kwargs",
    [{"tolerance_grad": -np.inf}, {"tolerance_grad": -np.inf, "line_search_fn": "strong_wolfe"}],
)
def test_lbfgs_is_silent_where_torch_is_with_the_same_numbers(kwargs: dict[str, Any]) -> None:
    torch = pytest.importorskip("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NumPy RuntimeWarning would raise here
        ours, state = _lbfgs_run(
            npoptim, lambda: Parameter(np.array([1.0, 2.0])), lambda x: np.zeros(2), kwargs
        )
    theirs, tstate = _lbfgs_run(
        torch.optim,
        lambda: torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64)),
        lambda x: torch.zeros(2, dtype=torch.float64),
        kwargs,
    )
    np.testing.assert_array_equal(ours, theirs.detach().numpy())
    for key in ("func_evals", "n_iter", "t", "H_diag", "prev_loss"):
        assert float(state[key]) == float(tstate[key]), key


def test_lbfgs_runs_the_closure_under_the_callers_numpy_error_settings() -> None:
    x = Parameter(np.array([1.0, 2.0]))
    opt = npoptim.LBFGS([x])

    def closure() -> float:
        x.grad = 2 * np.array(x)
        return float(np.float64(1.0) / np.float64(0.0))  # the model's own division by zero

    with np.errstate(divide="raise"), pytest.raises(FloatingPointError):
        opt.step(closure)


# ------------------------------------------------------------------- schedulers
def _sgd() -> npoptim.SGD:
    return npoptim.SGD([Parameter(np.zeros(2))], lr=0.1, momentum=0.9)


def scheduler_snapshot(scheduler: Any) -> Any:
    return _snapshot({k: v for k, v in vars(scheduler).items() if k != "optimizer"})


def sched_refused(scheduler: Any, state: Any, error: type[Exception], message: str) -> None:
    before = scheduler_snapshot(scheduler), optimizer_snapshot(scheduler.optimizer)
    with pytest.raises(error) as info:
        scheduler.load_state_dict(state)
    assert str(info.value) == message
    assert (scheduler_snapshot(scheduler), optimizer_snapshot(scheduler.optimizer)) == before


def test_a_checkpoint_given_to_a_scheduler_is_refused() -> None:
    sched = StepLR(_sgd(), step_size=2)
    checkpoint = {"scheduler": sched.state_dict(), "epoch": 1}
    sched_refused(sched, checkpoint, ValueError,
                  "StepLR.load_state_dict expects a StepLR state_dict with the keys "
                  "['_get_lr_called_within_step', '_is_initial', '_last_lr', '_step_count', "
                  "'base_lrs', 'gamma', 'last_epoch', 'step_size'], but got a dict with the keys "
                  "['epoch', 'scheduler'] (no 'base_lrs'); pass state_dict['scheduler']")  # fmt: skip


def test_another_schedulers_state_is_refused() -> None:
    cosine = CosineAnnealingLR(_sgd(), T_max=10)
    sched_refused(cosine, StepLR(_sgd(), step_size=2).state_dict(), ValueError,
                  "CosineAnnealingLR.load_state_dict expects a CosineAnnealingLR state_dict "
                  "with the keys ['T_max', '_get_lr_called_within_step', '_is_initial', "
                  "'_last_lr', '_step_count', 'base_lrs', 'eta_min', 'last_epoch'], but got a "
                  "dict with the keys ['_get_lr_called_within_step', '_is_initial', '_last_lr', "
                  "'_step_count', 'base_lrs', 'gamma', 'last_epoch', 'step_size'] (no 'T_max')")  # fmt: skip


def test_a_scheduler_state_for_another_group_count_is_refused() -> None:
    sched = StepLR(_sgd(), step_size=2)
    state = sched.state_dict()
    state["base_lrs"] = [0.1, 0.2]
    sched_refused(sched, state, ValueError,
                  "StepLR.load_state_dict: the state has base_lrs [0.1, 0.2], but the optimizer "
                  "has 1 param group")  # fmt: skip
    sched_refused(sched, [1], TypeError,
                  "StepLR.load_state_dict expects a scheduler state_dict (a dict), but got list")  # fmt: skip


def test_lambda_and_composite_schedulers_check_before_changing_anything() -> None:
    opt = _sgd()
    lam = LambdaLR(opt, lambda e: 0.5)
    sched_refused(lam, {"optimizer": lam.state_dict()}, ValueError,
                  "LambdaLR.load_state_dict expects a LambdaLR state_dict with the keys "
                  "['_get_lr_called_within_step', '_is_initial', '_last_lr', '_step_count', "
                  "'base_lrs', 'last_epoch', 'lr_lambdas'], but got a dict with the keys "
                  "['optimizer'] (no 'base_lrs'); pass state_dict['optimizer']")  # fmt: skip
    opt = _sgd()
    seq = SequentialLR(opt, [StepLR(opt, 2), CosineAnnealingLR(opt, 4)], milestones=[3])
    state = seq.state_dict()
    state["_schedulers"][1] = StepLR(_sgd(), 2).state_dict()  # wrong for the second
    state["last_epoch"] = 99
    with pytest.raises(ValueError, match=r"^CosineAnnealingLR.load_state_dict expects"):
        seq.load_state_dict(state)
    assert seq.last_epoch == 0


def test_a_legacy_one_cycle_state_with_anneal_func_loads_as_in_torch() -> None:
    torch = pytest.importorskip("torch")

    def run(api: Any, opt: Any) -> list[float]:
        kwargs = {"max_lr": 1.0, "total_steps": 10}
        first = api.lr_scheduler.OneCycleLR(opt, anneal_strategy="linear", **kwargs)
        for _ in range(3):
            opt.step()
            first.step()
        state = first.state_dict()
        del state["_anneal_func_type"]  # as an older torch saved it
        state["anneal_func"] = first._annealing_linear
        resumed = api.lr_scheduler.OneCycleLR(opt, **kwargs)  # "cos"
        resumed.load_state_dict(state)
        if api is npoptim:  # the function is dropped: the state saves safely again
            assert "anneal_func" not in resumed.state_dict()
        lrs = []
        for _ in range(5):
            opt.step()
            resumed.step()
            lrs.append(float(resumed.get_last_lr()[0]))
        return lrs

    ours = run(npoptim, _sgd())
    tparam = torch.nn.Parameter(torch.zeros(2))
    theirs = run(torch.optim, torch.optim.SGD([tparam], lr=0.1, momentum=0.9))
    assert ours == theirs


def test_an_unpickled_legacy_one_cycle_uses_its_anneal_func_as_torch_does() -> None:
    sched = OneCycleLR(_sgd(), max_lr=1.0, total_steps=10)
    del sched.__dict__["_anneal_func_type"]
    sched.__dict__["anneal_func"] = OneCycleLR._annealing_linear
    assert sched._anneal_func(1.0, 0.0, 0.25) == 0.75


# ----------------------------------------------------------------- AveragedParameters
def _averaged() -> AveragedParameters:
    avg = AveragedParameters([np.zeros((2, 3)), np.zeros(3)])
    avg.update_parameters([np.ones((2, 3)), np.ones(3)])
    return avg


def avg_refused(avg: AveragedParameters, state: Any, error: type[Exception], message: str) -> None:
    before = _snapshot({"values": [np.array(p) for p in avg], "n": avg.n_averaged})
    with pytest.raises(error) as info:
        avg.load_state_dict(state)
    assert str(info.value) == message
    assert _snapshot({"values": [np.array(p) for p in avg], "n": avg.n_averaged}) == before


def test_averaged_parameters_refuse_a_wrapped_state() -> None:
    avg = _averaged()
    avg_refused(avg, {"swa": avg.state_dict()}, ValueError,
                "AveragedParameters.load_state_dict expects a state_dict with the keys "
                "['n_averaged', 'params'], but got dict with the keys ['swa']; pass "
                "state_dict['swa']")  # fmt: skip


def test_averaged_parameters_refuse_a_bad_shape_or_dtype_before_changing_any() -> None:
    avg = _averaged()
    state = {"params": [np.full((2, 3), 5.0), np.zeros(4)], "n_averaged": 3}
    avg_refused(avg, state, ValueError,
                "parameter 1 has shape (4,), but its average has shape (3,)")  # fmt: skip
    state = {"params": [np.full((2, 3), 5.0), np.zeros(3, complex)], "n_averaged": 3}
    avg_refused(avg, state, TypeError,
                "parameter 1 has dtype complex128, which does not cast to its average's dtype "
                "float64")  # fmt: skip


# ------------------------------------------------------------------ SOAP's loaded state
def soap(*shapes: tuple[int, ...], **kwargs: Any) -> tuple[npoptim.Optimizer, list[Parameter]]:
    """SOAP over parameters of ``shapes`` that has stepped three times (the first step builds
    the preconditioners, the next two refresh the eigenbases)."""
    rng = np.random.default_rng(1)
    params = [Parameter(rng.standard_normal(s)) for s in shapes]
    opt = npoptim.SOAP(params, precondition_frequency=1, **kwargs)
    for k in range(3):
        step(opt, params, k)
    return opt, params


def test_soap_state_for_a_parameter_of_another_shape_is_refused() -> None:
    source, _ = soap((3, 4))
    opt, _ = soap((4, 3))
    refused(opt, lambda: opt.load_state_dict(source.state_dict()), ValueError,
            "loaded state for parameter 0 of param_groups[0]: 'exp_avg' has shape (3, 4), "
            "but the parameter has shape (4, 3)")  # fmt: skip


@pytest.mark.parametrize("key", ["GG", "Q"])
def test_soap_preconditioner_of_the_wrong_shape_is_refused(key: str) -> None:
    # A (3, 4) matrix has one preconditioner per axis: (3, 3) and (4, 4).
    opt, _ = soap((3, 4))
    sd = _edited(opt, lambda sd: sd["state"][0][key].__setitem__(1, np.eye(3)))
    refused(opt, lambda: opt.load_state_dict(sd), ValueError,
            f"loaded state for parameter 0 of param_groups[0]: {key!r}[1] has shape (3, 3), "
            "but for a parameter of shape (3, 4) it must have shape (4, 4)")  # fmt: skip


def test_soap_preconditioners_that_do_not_fit_the_loaded_options_are_refused() -> None:
    # With max_precondition_dim 3 the axis of length 4 is not rotated: no (4, 4) matrix.
    opt, _ = soap((3, 4))
    sd = _edited(opt, lambda sd: sd["param_groups"][0].__setitem__("max_precondition_dim", 3))
    refused(opt, lambda: opt.load_state_dict(sd), ValueError,
            "loaded state for parameter 0 of param_groups[0]: 'GG'[1] has shape (4, 4), but for "
            "a parameter of shape (3, 4) it must have shape (0, 0)")  # fmt: skip
    # merge_dims merges the axes 2, 3, 4 of this tensor into one of 24: one preconditioner.
    opt, _ = soap((2, 3, 4))
    sd = _edited(opt, lambda sd: sd["param_groups"][0].__setitem__("merge_dims", True))
    refused(opt, lambda: opt.load_state_dict(sd), ValueError,
            "loaded state for parameter 0 of param_groups[0]: 'GG' holds 3 arrays, but for a "
            "parameter of shape (2, 3, 4) with these options it must hold 1")  # fmt: skip


def test_soap_vector_preconditioner_follows_precondition_1d() -> None:
    opt, _ = soap((3, 4), (5,), precondition_1d=True)
    sd = _edited(opt, lambda sd: sd["param_groups"][0].__setitem__("precondition_1d", False))
    refused(opt, lambda: opt.load_state_dict(sd), ValueError,
            "loaded state for parameter 1 of param_groups[0]: 'GG'[0] has shape (5, 5), but for "
            "a parameter of shape (5,) it must have shape (0, 0)")  # fmt: skip


def test_soap_state_with_a_foreign_or_missing_key_is_refused() -> None:
    opt, _ = soap((3, 4))
    sd = _edited(opt, lambda sd: sd["state"][0].__setitem__("exp_avg_sq_row", np.zeros(3)))
    refused(opt, lambda: opt.load_state_dict(sd), ValueError,
            "loaded state for parameter 0 of param_groups[0]: 'exp_avg_sq_row' is not a state of "
            "SOAP for this parameter (its state keys: ['GG', 'Q', 'exp_avg', 'exp_avg_sq', "
            "'precondition_frequency', 'shampoo_beta'])")  # fmt: skip
    sd = _edited(opt, lambda sd: sd["state"][0].pop("Q"))
    refused(opt, lambda: opt.load_state_dict(sd), ValueError,
            "loaded state for parameter 0 of param_groups[0] has no 'Q', which SOAP needs with "
            "these options (it has ['GG', 'exp_avg', 'exp_avg_sq', 'precondition_frequency', "
            "'shampoo_beta'])")  # fmt: skip


@pytest.mark.parametrize(
    ("shape", "options"),
    [((3, 4), {}), ((5,), {"precondition_1d": True}), ((2, 3, 4), {"merge_dims": True}),
     ((2, 3, 4, 5), {"merge_dims": True, "data_format": "channels_last",
                     "max_precondition_dim": 12}),
     ((3, 20), {"max_precondition_dim": 8}), ((), {"merge_dims": True})],
)  # fmt: skip
def test_soap_state_loads_back_under_every_layout(
    shape: tuple[int, ...], options: dict[str, Any]
) -> None:
    opt, params = soap(shape, **options)
    sd = copy.deepcopy(opt.state_dict())
    opt.load_state_dict(sd)
    step(opt, params, 3)
