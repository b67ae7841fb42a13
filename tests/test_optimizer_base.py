"""The Optimizer base class: param groups, zero_grad, step, state_dict, hooks, pickling."""

from __future__ import annotations

import copy
import pickle
import warnings
from typing import Any

import numpy as np
import pytest

import npoptim
from npoptim import SGD, Adam, AdamW, Optimizer, Parameter, SparseGrad, required


def params(n: int = 2, dtype: Any = np.float64) -> list[Parameter]:
    return [Parameter(np.arange(3.0, dtype=dtype) + i) for i in range(n)]


def with_grads(ps: list[Parameter]) -> list[Parameter]:
    for p in ps:
        p.grad = np.ones(p.shape, dtype=p.dtype)
    return ps


def snapshot(opt: Optimizer) -> Any:
    """Everything observable about an optimizer, deep-copied."""
    return copy.deepcopy((opt.param_groups, dict(opt.state)))


def assert_same_snapshot(a: Any, b: Any) -> None:
    groups_a, state_a = a
    groups_b, state_b = b
    assert len(groups_a) == len(groups_b)
    for ga, gb in zip(groups_a, groups_b, strict=True):
        assert ga.keys() == gb.keys()
        for k in ga:
            if k == "params":
                assert len(ga[k]) == len(gb[k])
                for pa, pb in zip(ga[k], gb[k], strict=True):
                    np.testing.assert_array_equal(pa, pb)
            else:
                assert ga[k] == gb[k]
    assert len(state_a) == len(state_b)


# ------------------------------------------------------------------------ param groups
def test_a_list_of_parameters_makes_one_group_with_the_defaults() -> None:
    ps = params()
    opt = SGD(ps, lr=0.5)
    assert len(opt.param_groups) == 1
    group = opt.param_groups[0]
    assert group["params"][0] is ps[0] and group["params"][1] is ps[1]
    assert group["lr"] == 0.5 and group["momentum"] == 0
    assert "param_names" not in group


def test_named_parameters_give_param_names() -> None:
    a, b = params()
    opt = SGD([("w", a), ("b", b)], lr=0.1)
    assert opt.param_groups[0]["param_names"] == ["w", "b"]
    assert opt.param_groups[0]["params"][0] is a
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["w", "b"]


def test_dict_groups_override_defaults_per_group() -> None:
    a, b = params()
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1, momentum=0.9)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert [g["momentum"] for g in opt.param_groups] == [0.9, 0.9]


def test_a_bare_parameter_in_a_group_dict_is_wrapped_in_a_list() -> None:
    a, b = params()
    opt = SGD([{"params": a}], lr=0.1)
    opt.add_param_group({"params": b})
    assert opt.param_groups[0]["params"][0] is a and opt.param_groups[1]["params"][0] is b


def test_the_group_dict_given_is_the_group_kept() -> None:
    a, b = params()
    opt = SGD([a], lr=0.1)
    group = {"params": [b], "lr": 0.3}
    opt.add_param_group(group)
    assert opt.param_groups[1] is group and group["momentum"] == 0


class _NeedsLr(Optimizer):
    def __init__(self, ps: Any, lr: Any = required) -> None:
        super().__init__(ps, {"lr": lr})


def test_required_hyperparameter_must_be_given_by_each_group() -> None:
    a, b = params()
    opt = _NeedsLr([{"params": [a], "lr": 1.0}])
    with pytest.raises(
        ValueError,
        match="parameter group didn't specify a value of required optimization parameter lr",
    ):
        opt.add_param_group({"params": [b]})
    assert repr(required) == "<required parameter>"


def test_a_bare_parameter_as_params_is_refused() -> None:
    with pytest.raises(
        TypeError, match="params argument given to the optimizer should be an iterable"
    ):
        SGD(params()[0], lr=0.1)


def test_an_empty_parameter_list_is_refused() -> None:
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        SGD([], lr=0.1)


def test_a_set_of_parameters_is_refused() -> None:
    with pytest.raises(TypeError, match="organized in ordered collections"):
        SGD([{"params": set(params())}], lr=0.1)


@pytest.mark.parametrize("bad", [np.zeros(3), [1.0, 2.0], 3.0])
def test_a_non_parameter_is_refused(bad: Any) -> None:
    with pytest.raises(TypeError, match="optimizer can only optimize Parameters"):
        SGD([params()[0], bad], lr=0.1)


def test_a_read_only_parameter_is_refused() -> None:
    data = np.zeros(3)
    data.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        SGD([Parameter(data)], lr=0.1)


def test_duplicate_parameters_in_a_group_warn() -> None:
    a = params()[0]
    with pytest.warns(UserWarning, match="a parameter group with duplicate parameters"):
        SGD([a, a], lr=0.1)


def test_a_parameter_in_two_groups_is_refused() -> None:
    a = params()[0]
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        SGD([{"params": [a]}, {"params": [a]}], lr=0.1)


def test_named_and_unnamed_params_in_one_group_are_refused() -> None:
    a, b = params()
    with pytest.raises(ValueError, match="Some param names are missing"):
        SGD([("w", a), b], lr=0.1)


def test_named_and_unnamed_groups_are_refused() -> None:
    a, b = params()
    with pytest.raises(ValueError, match="cannot add param group with names to the optimizer"):
        SGD([{"params": [a], "lr": 1e-2}, {"params": [("w", b)]}], lr=0.1)


@pytest.mark.parametrize(
    "bad_group",
    [
        lambda a, b: {"params": [a]},  # already in the optimizer
        lambda a, b: {"params": [("x", b)]},  # names mixed with an unnamed group
        lambda a, b: {"params": [b, np.zeros(2)]},  # not a Parameter
        lambda a, b: {"params": {b}},  # a set
    ],
)
def test_a_refused_add_param_group_changes_nothing(bad_group: Any) -> None:
    a, b = params()
    opt = SGD([a], lr=0.1)
    before = snapshot(opt)
    group = bad_group(a, b)
    group_before = dict(group)
    with pytest.raises((ValueError, TypeError)):
        opt.add_param_group(group)
    assert_same_snapshot(before, snapshot(opt))
    assert group == group_before or group.keys() == group_before.keys()
    assert "lr" not in group


def test_add_param_group_refuses_a_non_dict() -> None:
    opt = SGD(params(1), lr=0.1)
    with pytest.raises(TypeError, match="param_group must be a dict"):
        opt.add_param_group([params(1)[0]])  # type: ignore[arg-type]


# -------------------------------------------------------------------- zero_grad / step
def test_zero_grad_sets_grads_to_none_by_default() -> None:
    ps = with_grads(params())
    SGD(ps, lr=0.1).zero_grad()
    assert all(p.grad is None for p in ps)


def test_zero_grad_without_set_to_none_fills_zeros_in_place() -> None:
    ps = with_grads(params())
    grads = [p.grad for p in ps]
    ps[0].grad = SparseGrad([0], np.ones((1,)), (3,))
    SGD(ps, lr=0.1).zero_grad(set_to_none=False)
    assert ps[1].grad is grads[1]
    np.testing.assert_array_equal(ps[1].grad, 0.0)
    assert isinstance(ps[0].grad, SparseGrad) and ps[0].grad.nnz == 0


def test_step_returns_the_closure_loss_and_calls_it_once() -> None:
    ps = with_grads(params())
    calls = []

    def closure() -> float:
        calls.append(1)
        return 3.5

    assert SGD(ps, lr=0.1).step(closure) == 3.5
    assert calls == [1]
    assert SGD(ps, lr=0.1).step() is None


def test_parameters_without_grad_are_skipped() -> None:
    a, b = params()
    a.grad = np.ones(3)
    b_before = b.copy()
    opt = Adam([a, b], lr=0.1)
    opt.step()
    np.testing.assert_array_equal(b, b_before)
    assert b not in opt.state or len(opt.state[b]) == 0


def test_step_updates_parameters_in_place() -> None:
    (a,) = with_grads(params(1))
    held = a
    data = a.view(np.ndarray)
    SGD([a], lr=0.5).step()
    assert held is a
    np.testing.assert_array_equal(data, [-0.5, 0.5, 1.5])


# ------------------------------------------------------------------------- state dict
def test_state_dict_packs_params_by_order_of_first_appearance() -> None:
    a, b, c = params(3)
    opt = SGD([{"params": [a, b]}, {"params": [c], "lr": 0.5}], lr=0.1, momentum=0.9)
    with_grads([a, b, c])
    opt.step()
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert set(sd["state"]) == {0, 1, 2}
    np.testing.assert_array_equal(sd["state"][2]["momentum_buffer"], np.ones(3))
    assert sd["param_groups"][1]["lr"] == 0.5


def test_state_dict_arrays_are_read_only_views_of_the_live_state() -> None:
    (a,) = with_grads(params(1))
    opt = Adam([a], lr=0.1)
    opt.step()
    sd = opt.state_dict()
    exp_avg = sd["state"][0]["exp_avg"]
    assert type(exp_avg) is np.ndarray and not exp_avg.flags.writeable
    assert np.shares_memory(exp_avg, opt.state[a]["exp_avg"])
    before = opt.state[a]["exp_avg"].copy()
    with pytest.raises(ValueError, match="read-only"):
        exp_avg[:] = 99.0
    np.testing.assert_array_equal(opt.state[a]["exp_avg"], before)
    assert opt.state[a]["exp_avg"].flags.writeable  # the optimizer's own array is untouched


def test_state_dict_arrays_follow_training_like_torch_tensors() -> None:
    (a,) = with_grads(params(1))
    opt = Adam([a], lr=0.1)
    opt.step()
    sd = opt.state_dict()
    first = sd["state"][0]["exp_avg_sq"].copy()
    opt.step()
    assert not np.array_equal(sd["state"][0]["exp_avg_sq"], first)
    np.testing.assert_array_equal(sd["state"][0]["exp_avg_sq"], opt.state[a]["exp_avg_sq"])


def test_deepcopy_of_a_state_dict_is_a_writeable_snapshot() -> None:
    (a,) = with_grads(params(1))
    opt = Adam([a], lr=0.1)
    opt.step()
    snapshot = copy.deepcopy(opt.state_dict())
    saved = opt.state[a]["exp_avg"].copy()
    opt.step()
    np.testing.assert_array_equal(snapshot["state"][0]["exp_avg"], saved)
    snapshot["state"][0]["exp_avg"][:] = 99.0
    assert not np.any(opt.state[a]["exp_avg"] == 99.0)


def test_state_dict_groups_and_scalars_are_copies() -> None:
    (a,) = with_grads(params(1))
    opt = Adam([a], lr=0.1)
    opt.step()
    sd = opt.state_dict()
    sd["param_groups"][0]["betas"] = (0.0, 0.0)
    sd["param_groups"][0]["params"].append(7)
    sd["state"][0]["step"] = 100.0
    del sd["state"][0]["exp_avg"]
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    assert opt.param_groups[0]["params"] == [a]
    assert opt.state[a]["step"] == 1.0 and "exp_avg" in opt.state[a]


def test_state_dict_allocates_no_array_memory() -> None:
    tracemalloc = pytest.importorskip("tracemalloc")
    a = Parameter(np.zeros(1_000_000))  # 8 MB per state array; NumPy reports to tracemalloc
    a.grad = np.ones(1_000_000)
    opt = Adam([a], lr=0.1)
    opt.step()
    tracemalloc.start()
    try:
        sd = opt.state_dict()
        allocated = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert sd["state"][0]["exp_avg"].shape == (1_000_000,)
    assert allocated < 100_000  # a few dicts and views, no copy of the 16 MB of state


def test_step_is_a_python_number_in_the_state_dict() -> None:
    (a,) = with_grads(params(1))
    opt = Adam([a], lr=0.1)
    opt.step()
    opt.step()
    step = opt.state_dict()["state"][0]["step"]
    assert type(step) is float and step == 2.0


def test_load_state_dict_casts_floating_state_to_the_parameter_dtype() -> None:
    (a64,) = with_grads(params(1))
    src = Adam([a64], lr=0.1)
    src.step()
    (a32,) = with_grads(params(1, np.float32))
    dst = Adam([a32], lr=0.1)
    dst.load_state_dict(src.state_dict())
    assert dst.state[a32]["exp_avg"].dtype == np.float32
    assert dst.state[a32]["step"] == 1.0


def test_load_state_dict_keeps_the_dtype_of_complex_parameters_state() -> None:
    a = Parameter(np.ones(2, dtype=np.complex64))
    opt = Adam([a], lr=0.1)
    sd = {"state": {0: {"step": 1.0, "exp_avg": np.ones(2, dtype=np.complex128),
                        "exp_avg_sq": np.ones(2, dtype=np.complex128)}},
          "param_groups": opt.state_dict()["param_groups"]}  # fmt: skip
    opt.load_state_dict(sd)
    assert opt.state[a]["exp_avg"].dtype == np.complex128


def test_loaded_state_is_not_aliased_to_the_given_dict() -> None:
    (a,) = with_grads(params(1))
    opt = Adam([a], lr=0.1)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    opt.load_state_dict(sd)
    sd["state"][0]["exp_avg"][:] = 42.0
    sd["param_groups"][0]["lr"] = 42.0
    assert not np.any(opt.state[a]["exp_avg"] == 42.0)
    assert opt.param_groups[0]["lr"] == 0.1


def test_load_state_dict_restores_hyperparameters_and_keeps_params() -> None:
    a, b = params()
    opt = SGD([a, b], lr=0.1)
    sd = opt.state_dict()
    sd["param_groups"][0]["lr"] = 0.7
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["lr"] == 0.7
    assert opt.param_groups[0]["params"][0] is a


def test_loaded_param_names_replace_the_optimizers_and_missing_ones_keep_them() -> None:
    a, b = params()
    opt = SGD([("x", a), ("y", b)], lr=0.1)
    sd = opt.state_dict()
    sd["param_groups"][0]["param_names"] = ["p", "q"]
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["param_names"] == ["p", "q"]
    del sd["param_groups"][0]["param_names"]
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["param_names"] == ["p", "q"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd["param_groups"].append({"params": [9]}), "different number of parameter"),
        (lambda sd: sd["param_groups"][0]["params"].pop(), "doesn't match the size"),
        (lambda sd: sd.pop("param_groups"), "param_groups"),
        (lambda sd: sd.pop("state"), "state"),
    ],
)
def test_a_refused_load_state_dict_changes_nothing(edit: Any, message: str) -> None:
    ps = with_grads(params())
    opt = Adam(ps, lr=0.1)
    opt.step()
    sd = opt.state_dict()
    edit(sd)
    before = snapshot(opt)
    state_before = {k: copy.deepcopy(v) for k, v in opt.state.items()}
    with pytest.raises((ValueError, KeyError), match=message):
        opt.load_state_dict(sd)
    assert_same_snapshot(before, snapshot(opt))
    for p in ps:
        for key, value in state_before[p].items():
            np.testing.assert_array_equal(opt.state[p][key], value)


def _train(opt: Optimizer, ps: list[Parameter], steps: range) -> None:
    for k in steps:
        for j, p in enumerate(ps):
            p.grad = np.cos(np.asarray(p) * (k + 1) + j).astype(p.dtype)
        opt.step()


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
        (Adam, {"lr": 0.1, "amsgrad": True, "weight_decay": 0.1}),
        (AdamW, {"lr": 0.1, "maximize": True}),
    ],
)
def test_resume_from_a_state_dict_is_bit_identical_to_never_stopping(
    cls: type[Optimizer], kwargs: dict[str, Any]
) -> None:
    straight = params()
    opt = cls(straight, **kwargs)
    _train(opt, straight, range(10))

    first = params()
    opt1 = cls(first, **kwargs)
    _train(opt1, first, range(5))
    sd = pickle.loads(pickle.dumps(opt1.state_dict()))
    second = [Parameter(np.array(p)) for p in first]
    opt2 = cls(second, **kwargs)
    opt2.load_state_dict(sd)
    _train(opt2, second, range(5, 10))
    for a, b in zip(straight, second, strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------ hooks
def test_step_hooks_run_in_torch_order_and_handles_remove_them() -> None:
    (a,) = with_grads(params(1))
    opt = SGD([a], lr=0.1)
    calls: list[str] = []
    handles = [
        npoptim.register_optimizer_step_pre_hook(lambda o, args, kw: calls.append("global pre")),
        npoptim.register_optimizer_step_post_hook(lambda o, args, kw: calls.append("global post")),
        opt.register_step_pre_hook(lambda o, args, kw: calls.append("pre")),
        opt.register_step_post_hook(lambda o, args, kw: calls.append("post")),
    ]
    try:
        opt.step()
        assert calls == ["global pre", "pre", "post", "global post"]
    finally:
        for h in handles:
            h.remove()
    calls.clear()
    opt.step()
    assert calls == []


def test_a_step_pre_hook_can_replace_the_arguments() -> None:
    (a,) = with_grads(params(1))
    opt = SGD([a], lr=0.1)
    opt.register_step_pre_hook(lambda o, args, kw: (args, {"closure": lambda: 7.0}))
    assert opt.step() == 7.0


def test_a_step_pre_hook_returning_something_else_raises() -> None:
    (a,) = with_grads(params(1))
    opt = SGD([a], lr=0.1)
    opt.register_step_pre_hook(lambda o, args, kw: "nonsense")  # type: ignore[arg-type,return-value]
    with pytest.raises(
        RuntimeError, match=r"must return None or a tuple of \(new_args, new_kwargs\)"
    ):
        opt.step()


def test_state_dict_hooks_run_with_prepend_and_can_replace_the_result() -> None:
    opt = SGD(params(1), lr=0.1)
    calls: list[str] = []
    opt.register_state_dict_pre_hook(lambda o: calls.append("pre 1"))
    opt.register_state_dict_pre_hook(lambda o: calls.append("pre 0"), prepend=True)
    opt.register_state_dict_post_hook(lambda o, sd: {**sd, "extra": 1})
    sd = opt.state_dict()
    assert calls == ["pre 0", "pre 1"]
    assert sd["extra"] == 1


def test_load_state_dict_hooks_can_replace_the_dict_and_run_after() -> None:
    opt = SGD(params(1), lr=0.1)
    sd = opt.state_dict()
    replaced = copy.deepcopy(sd)
    replaced["param_groups"][0]["lr"] = 0.9
    calls: list[str] = []
    opt.register_load_state_dict_pre_hook(lambda o, d: replaced)
    opt.register_load_state_dict_post_hook(lambda o: calls.append("post 1"))
    handle = opt.register_load_state_dict_post_hook(lambda o: calls.append("post 0"), prepend=True)
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["lr"] == 0.9
    assert calls == ["post 0", "post 1"]
    with handle:
        pass
    calls.clear()
    opt.load_state_dict(sd)
    assert calls == ["post 1"]


# ---------------------------------------------------------------- repr and pickling
def test_repr_lists_each_group_with_sorted_keys() -> None:
    opt = SGD([{"params": params(1)}, {"params": params(1), "lr": 0.5}], lr=0.1)
    text = repr(opt)
    assert text.startswith("SGD (\nParameter Group 0\n    dampening: 0\n")
    assert "Parameter Group 1\n" in text and "    lr: 0.5\n" in text and text.endswith(")")


def test_setstate_fills_flags_missing_from_older_state() -> None:
    (a,) = with_grads(params(1))
    opt = Adam([a], lr=0.1)
    opt.step()
    state = opt.__getstate__()
    for key in ("amsgrad", "maximize", "foreach", "decoupled_weight_decay"):
        del state["param_groups"][0][key]
    restored = Adam.__new__(Adam)
    restored.__setstate__(state)
    group = restored.param_groups[0]
    assert group["amsgrad"] is False and group["maximize"] is False
    assert group["foreach"] is None and group["decoupled_weight_decay"] is False
    restored.step()  # hooks were restored too


def test_deepcopy_copies_parameters_and_state_together() -> None:
    (a,) = with_grads(params(1))
    opt = Adam([a], lr=0.1)
    opt.step()
    clone = copy.deepcopy(opt)
    (a2,) = clone.param_groups[0]["params"]
    assert a2 is not a and a2 in clone.state
    np.testing.assert_array_equal(clone.state[a2]["exp_avg"], opt.state[a]["exp_avg"])
    clone.step()
    assert not np.array_equal(a2, a)


def test_pickle_round_trip_keeps_the_optimizer_working() -> None:
    (a,) = with_grads(params(1))
    opt = SGD([a], lr=0.1, momentum=0.9)
    opt.step()
    clone = pickle.loads(pickle.dumps(opt))
    (a2,) = clone.param_groups[0]["params"]
    clone.step()
    opt.step()
    np.testing.assert_array_equal(a2, a)


# ----------------------------------------------------------- implementation flags
@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_fused_and_foreach_together_raise_torchs_error(cls: type[Optimizer]) -> None:
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together."):
        cls(params(1), fused=True, foreach=True)  # type: ignore[call-arg]


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW])
def test_foreach_gives_the_same_result_as_the_for_loop(cls: type[Optimizer]) -> None:
    a, b = params(), params()
    _train(cls(a, foreach=True), a, range(4))  # type: ignore[call-arg]
    _train(cls(b, foreach=False), b, range(4))  # type: ignore[call-arg]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_no_warning_on_a_plain_construction() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Adam(params(), lr=0.1)
