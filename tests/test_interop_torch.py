"""npoptim.interop.torch: a run moves between npoptim and torch.optim and continues exactly.

For every optimizer npoptim has (``configs.CONFIGS``, found at run time) and every torch config,
in float64 and (where torch supports it) complex128:

* npoptim ``N`` steps, torch ``N``, npoptim ``N``; and torch, npoptim, torch: each switch builds
  fresh parameters and a fresh optimizer in the other library and loads the converted
  state_dict. Both agree with torch run straight through to ``RTOL`` relative.
* A state_dict that goes to torch and comes back is identical to the original, bit for bit
  and type for type; so is a torch state_dict that visits npoptim.
* The converted dicts have exactly the types of the other library's own (tensor dtypes
  included): torch's after it loads ours equals an uninterrupted torch run's.

The same for every scheduler npoptim has, saved and switched together with its optimizer.
The problems (dense, 2-D, sparse and closure) are those of ``test_checkpoint_resume.py``.

Muon is held to ``MUON_RTOL`` against torch, not ``RTOL``: torch rounds its Newton–Schulz
iterate to bfloat16 whatever the parameter dtype, npoptim does not, so the two differ by ~1e-4
with or without a switch (the state round trip itself is exact, as for every optimizer).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from harness import gradient as dense_gradient
from harness import max_relative_error
from test_checkpoint_resume import (
    NP_SCHEDULERS,
    SCHEDULER_OPTIMIZER_KWARGS,
    Case,
    SchedulerCase,
    assert_identical,
    initial_values,
    npoptim_step,
    optimizer_cases,
    optimizer_class,
    quartic,
    scheduler_cases,
    scheduler_step,
    sparse_gradient,
)

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")

import npoptim  # noqa: E402
from npoptim import Parameter, SparseGrad  # noqa: E402
from npoptim.interop.torch import from_torch_state_dict, to_torch_state_dict  # noqa: E402

N = 5  # steps per phase
RTOL = 1e-10
MUON_RTOL = 2e-3
TORCH_SCHEDULERS = SimpleNamespace(
    **vars(torch.optim.lr_scheduler), SWALR=torch.optim.swa_utils.SWALR
)
# State that the conversion hands to torch as a Python float, not torch's 0-d tensor (see the
# module docstring of npoptim.interop.torch): torch turns it into its own tensor on load.
FLOAT_FOR_TORCH = {"eta", "mu", "mu_product"}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Any:
    """torch's thread pool only slows down operations this small (by 100x for Muon's
    bfloat16 matmuls on a busy machine); restore it for the other test modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------- sessions
def torch_step(opt: Any, params: list[Any], problem: str, k: int) -> None:
    """``npoptim_step`` for torch: the same gradients, as tensors."""
    if problem == "closure":

        def closure() -> float:
            loss, grads = quartic([p.detach().numpy().copy() for p in params])
            for p, g in zip(params, grads, strict=True):
                p.grad = torch.from_numpy(g)
            return loss

        opt.step(closure)
        return
    for j, p in enumerate(params):
        value = p.detach().numpy().copy()
        if problem == "sparse":
            rows_values = sparse_gradient(k, j, value)
            p.grad = (
                None
                if rows_values is None
                else torch.sparse_coo_tensor(
                    torch.from_numpy(rows_values[0][None, :]),
                    torch.from_numpy(rows_values[1]),
                    p.shape,
                    check_invariants=True,
                )
            )
        else:
            g = dense_gradient(k, j, value)
            p.grad = None if g is None else torch.from_numpy(g)
    opt.step()


class Session:
    """One training run (optimizer, and scheduler if any) that can move between libraries.

    ``switch`` builds fresh parameters, optimizer and scheduler in the other library from the
    current values and the converted state_dicts, as a user resuming there would.
    """

    def __init__(
        self,
        lib: str,
        problem: str,
        dtype: Any,
        optimizer: str,
        kwargs: dict[str, Any],
        scheduler: SchedulerCase | None = None,
    ) -> None:
        self.problem = problem
        self.optimizer = optimizer
        self.kwargs = kwargs
        self.scheduler_case = scheduler
        self.k = 0
        self._build(lib, initial_values(problem, np.dtype(dtype)))

    def _build(self, lib: str, values: list[np.ndarray]) -> None:
        self.lib = lib
        if lib == "npoptim":
            self.params: list[Any] = [Parameter(v.copy()) for v in values]
            self.opt = optimizer_class(self.optimizer)(self.params, **self.kwargs)
            classes = NP_SCHEDULERS
        else:
            self.params = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
            self.opt = getattr(torch.optim, self.optimizer)(self.params, **self.kwargs)
            classes = TORCH_SCHEDULERS
        case = self.scheduler_case
        self.scheduler = None if case is None else case.make(classes, self.opt)

    def values(self) -> list[np.ndarray]:
        if self.lib == "npoptim":
            return [np.array(p) for p in self.params]
        return [p.detach().numpy().copy() for p in self.params]

    def lrs(self) -> list[float]:
        return [float(g["lr"]) for g in self.opt.param_groups]

    def switch(self, lib: str) -> None:
        convert = to_torch_state_dict if lib == "torch" else from_torch_state_dict
        opt_state = convert(self.opt.state_dict())
        sched_state = None if self.scheduler is None else convert(self.scheduler.state_dict())
        self._build(lib, self.values())
        self.opt.load_state_dict(opt_state)
        if self.scheduler is not None:
            self.scheduler.load_state_dict(sched_state)

    def train(self, steps: int) -> tuple[list[list[np.ndarray]], list[list[float]]]:
        """Take ``steps`` steps; the parameter values and learning rates after each."""
        trajectory, lrs = [], []
        for _ in range(steps):
            step = npoptim_step if self.lib == "npoptim" else torch_step
            step(self.opt, self.params, self.problem, self.k)
            if self.scheduler is not None:
                scheduler_step(self.scheduler_case, self.scheduler, self.k)
            self.k += 1
            trajectory.append(self.values())
            lrs.append(self.lrs())
        return trajectory, lrs


def optimizer_session(lib: str, case: Case) -> Session:
    return Session(lib, case.problem, case.dtype, case.name, case.kwargs)


def scheduler_session(lib: str, case: SchedulerCase) -> Session:
    kwargs = SCHEDULER_OPTIMIZER_KWARGS[case.optimizer]
    return Session(lib, "dense", "float64", case.optimizer, kwargs, case)


def run_switching(session: Session, libs: list[str]) -> tuple[list[Any], list[Any]]:
    """Train ``N`` steps in each library of ``libs`` in turn, switching in between."""
    trajectory, lrs = [], []
    for i, lib in enumerate(libs):
        if i > 0:
            session.switch(lib)
        more, more_lrs = session.train(N)
        trajectory += more
        lrs += more_lrs
    return trajectory, lrs


def tolerance(case: Case) -> float:
    return MUON_RTOL if case.name == "Muon" else RTOL


def relative_lr_error(actual: list[list[float]], expected: list[list[float]]) -> float:
    a, e = np.array(actual), np.array(expected)
    return float(np.max(np.abs(a - e) / np.maximum(np.abs(e), 1e-300)))


# ------------------------------------------------------------------------ optimizer cases
SWITCH_CASES = [c.param() for c in optimizer_cases(("float64", "complex128"))]
ALL_CASES = [c.param() for c in optimizer_cases(("float64", "float32", "complex128"))]
ROUTES = {
    "npoptim-torch-npoptim": ["npoptim", "torch", "npoptim"],
    "torch-npoptim-torch": ["torch", "npoptim", "torch"],
}


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("case", SWITCH_CASES)
def test_run_switching_libraries_matches_torch_throughout(case: Case, route: str) -> None:
    libs = ROUTES[route]
    switching, _ = run_switching(optimizer_session(libs[0], case), libs)
    straight, _ = optimizer_session("torch", case).train(len(libs) * N)
    assert max_relative_error(switching, straight) <= tolerance(case)


@pytest.mark.parametrize("case", ALL_CASES)
def test_npoptim_state_dict_survives_a_visit_to_torch(case: Case) -> None:
    session = optimizer_session("npoptim", case)
    session.train(N)
    original = copy.deepcopy(session.opt.state_dict())  # a snapshot, not live views
    session.switch("torch")
    session.switch("npoptim")
    assert_identical(session.opt.state_dict(), original)


@pytest.mark.parametrize("case", ALL_CASES)
def test_torch_state_dict_survives_a_visit_to_npoptim(case: Case) -> None:
    session = optimizer_session("torch", case)
    session.train(N)
    original = session.opt.state_dict()
    session.switch("npoptim")
    session.switch("torch")
    assert_same_torch(session.opt.state_dict(), original)


@pytest.mark.parametrize("case", SWITCH_CASES)
def test_converted_state_dicts_have_the_other_librarys_types(case: Case) -> None:
    ours = optimizer_session("npoptim", case)
    theirs = optimizer_session("torch", case)
    ours.train(N)
    theirs.train(N)
    rtol = 100 * tolerance(case)
    assert_like(from_torch_state_dict(theirs.opt.state_dict()), ours.opt.state_dict(), rtol)
    assert_like(
        to_torch_state_dict(ours.opt.state_dict()),
        theirs.opt.state_dict(),
        rtol,
        float_for_tensor=FLOAT_FOR_TORCH,
    )
    # once loaded, torch holds exactly the types of an uninterrupted torch run
    ours.switch("torch")
    assert_like(ours.opt.state_dict(), theirs.opt.state_dict(), rtol)


# ------------------------------------------------------------------------ scheduler cases
SCHEDULER_CASES = [
    c
    for c in scheduler_cases(NP_SCHEDULERS)
    if all(hasattr(TORCH_SCHEDULERS, n) for n in c.values[0].needs)
]


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("case", SCHEDULER_CASES)
def test_scheduled_run_switching_libraries_matches_torch_throughout(
    case: SchedulerCase, route: str
) -> None:
    libs = ROUTES[route]
    switching, switching_lrs = run_switching(scheduler_session(libs[0], case), libs)
    straight, straight_lrs = scheduler_session("torch", case).train(len(libs) * N)
    assert relative_lr_error(switching_lrs, straight_lrs) <= RTOL
    assert max_relative_error(switching, straight) <= RTOL


@pytest.mark.parametrize("case", SCHEDULER_CASES)
def test_scheduler_state_dicts_convert_to_the_other_librarys_types(case: SchedulerCase) -> None:
    ours = scheduler_session("npoptim", case)
    theirs = scheduler_session("torch", case)
    ours.train(N)
    theirs.train(N)
    assert_like(
        from_torch_state_dict(theirs.scheduler.state_dict()), ours.scheduler.state_dict(), RTOL
    )
    assert_like(
        to_torch_state_dict(ours.scheduler.state_dict()), theirs.scheduler.state_dict(), RTOL
    )
    original = ours.scheduler.state_dict()
    assert_identical(from_torch_state_dict(to_torch_state_dict(original)), original)


# -------------------------------------------------------------------------------- details
def test_without_torch_the_functions_raise_import_error_with_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    for convert in (to_torch_state_dict, from_torch_state_dict):
        with pytest.raises(ImportError, match=r"pip install torch"):
            convert({"state": {}, "param_groups": []})


def test_importing_the_module_does_not_import_torch() -> None:
    code = "import sys, npoptim.interop.torch; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_converted_state_dicts_share_no_memory_with_their_source() -> None:
    w = Parameter(np.array([1.0, -2.0]))
    opt = npoptim.Adam([w], lr=0.1)
    w.grad = np.array([0.5, -0.5])
    opt.step()
    sd = opt.state_dict()
    before = copy.deepcopy(sd)  # sd's arrays are live views of the optimizer's state
    converted = to_torch_state_dict(sd)
    converted["state"][0]["exp_avg"].add_(1.0)
    converted["param_groups"][0]["params"].append(7)
    assert_identical(before, opt.state_dict())
    back = from_torch_state_dict(converted)
    back["state"][0]["exp_avg"] += 1.0
    assert converted["state"][0]["exp_avg"][0].item() == sd["state"][0]["exp_avg"][0] + 1.0


@pytest.mark.filterwarnings("error")  # torch warns when handed a read-only array
@pytest.mark.parametrize("source", ["state_dict", "mmap"])
def test_read_only_and_memory_mapped_state_converts_to_writeable_tensors(
    tmp_path: Any, source: str
) -> None:
    w = Parameter(np.array([1.0, -2.0, 0.5]))
    opt = npoptim.Adam([w], lr=0.1)
    w.grad = np.array([0.5, -0.5, 1.0])
    opt.step()
    sd = opt.state_dict()
    if source == "mmap":
        npoptim.save(sd, tmp_path / "ckpt.npz")
        sd = npoptim.load(tmp_path / "ckpt.npz", mmap=True)
    assert not sd["state"][0]["exp_avg"].flags.writeable
    converted = to_torch_state_dict(sd)
    tw = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    topt = torch.optim.Adam([tw], lr=0.1)
    topt.load_state_dict(converted)
    tw.grad = torch.tensor([0.5, -0.5, 1.0], dtype=torch.float64)
    topt.step()  # torch updates its state in place: the tensors must be writeable copies
    g = np.array([0.5, -0.5, 1.0])
    m1 = (1 - 0.9) * g  # Adam's first moment after npoptim's step, then torch's
    np.testing.assert_allclose(topt.state[tw]["exp_avg"].numpy(), 0.9 * m1 + (1 - 0.9) * g)
    assert not sd["state"][0]["exp_avg"].flags.writeable  # the source is untouched
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], m1)


@pytest.mark.parametrize("coalesced", [False, True])
def test_sparse_grads_become_sparse_coo_tensors_and_back(coalesced: bool) -> None:
    grad = SparseGrad(np.array([3, 0, 3]), np.arange(6.0).reshape(3, 2), (4, 2))
    if coalesced:
        grad = grad.coalesce()
    tensor = to_torch_state_dict({"g": grad})["g"]
    assert tensor.is_sparse and tensor.sparse_dim() == 1 and tensor.is_coalesced() == coalesced
    np.testing.assert_array_equal(tensor.to_dense().numpy(), grad.to_dense())
    back = from_torch_state_dict({"g": tensor})["g"]
    assert isinstance(back, SparseGrad) and back.is_coalesced() == coalesced
    assert_identical(back, grad)


def test_tensors_without_a_numpy_form_are_refused() -> None:
    with pytest.raises(TypeError, match="bfloat16"):
        from_torch_state_dict({"x": torch.zeros(2, dtype=torch.bfloat16)})
    two_sparse_dims = torch.eye(3, dtype=torch.float64).to_sparse()
    with pytest.raises(TypeError, match="one sparse dimension"):
        from_torch_state_dict({"x": two_sparse_dims})


def test_torch_tensor_learning_rates_become_python_floats() -> None:
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = torch.optim.Adam([p], lr=torch.tensor(0.01))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    group = from_torch_state_dict(opt.state_dict())["param_groups"][0]
    assert type(group["lr"]) is float and group["lr"] == pytest.approx(0.01)
    base_lrs = from_torch_state_dict(sched.state_dict())["base_lrs"]
    assert [type(x) for x in base_lrs] == [float]


@pytest.mark.parametrize("name", [n for n in ["SparseAdam"] if optimizer_class(n) is not None])
def test_sparse_adam_step_is_an_int_in_torch_also_with_named_parameters(name: str) -> None:
    w = Parameter(np.zeros((4, 2)))
    opt = optimizer_class(name)([("table", w)], lr=0.1)
    w.grad = SparseGrad(np.array([3, 1, 3]), np.ones((3, 2)), (4, 2))
    opt.step()
    converted = to_torch_state_dict(opt.state_dict())
    assert converted["param_groups"][0]["param_names"] == ["table"]
    assert type(converted["state"][0]["step"]) is int and converted["state"][0]["step"] == 1


def test_multistep_milestones_are_a_counter_in_torch_and_a_dict_in_npoptim() -> None:
    sd = {"milestones": {2: 1, 5: 2}, "last_epoch": 3}
    converted = to_torch_state_dict(sd)
    assert type(converted["milestones"]) is Counter
    assert_identical(from_torch_state_dict(converted), sd)


# ----------------------------------------------------------------------------- comparison
def assert_same_torch(actual: Any, expected: Any, path: str = "") -> None:
    """Equal torch state_dicts: same types, tensors of the same dtype, layout and values."""
    if path.endswith("['t']") and type(expected) is int:
        expected = float(expected)  # L-BFGS's t is torch's lr, an int when lr is; npoptim: float
    assert type(actual) is type(expected), f"{path}: {type(actual)} != {type(expected)}"
    if isinstance(expected, torch.Tensor):
        assert (actual.dtype, actual.layout, actual.shape) == (
            expected.dtype,
            expected.layout,
            expected.shape,
        ), path
        if expected.is_sparse:
            actual, expected = actual.to_dense(), expected.to_dense()
        assert torch.equal(actual, expected), path
    elif isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for key in expected:
            assert_same_torch(actual[key], expected[key], f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same_torch(a, e, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def _as_numbers(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.to_dense() if value.is_sparse else value
        return value.detach().numpy()
    if isinstance(value, SparseGrad):
        return value.to_dense()
    return np.asarray(value)


def assert_like(
    actual: Any,
    expected: Any,
    rtol: float,
    float_for_tensor: set[str] | frozenset[str] = frozenset(),
    path: str = "",
    key: Any = None,
) -> None:
    """The same structure and types (tensor and array dtypes and shapes included) and values
    within ``rtol`` of the largest magnitude; under a key of ``float_for_tensor`` a float
    stands for a 0-d tensor."""
    if key == "t" and type(expected) is int:
        expected = float(expected)  # L-BFGS's t is torch's lr, an int when lr is; npoptim: float
    if key in float_for_tensor and isinstance(expected, torch.Tensor):
        assert type(actual) is float, path
    else:
        assert type(actual) is type(expected), f"{path}: {type(actual)} != {type(expected)}"
    if isinstance(expected, dict):
        assert list(actual) == list(expected), f"{path}: keys {list(actual)} != {list(expected)}"
        for k in expected:
            assert_like(actual[k], expected[k], rtol, float_for_tensor, f"{path}[{k!r}]", k)
        return
    if isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_like(a, e, rtol, float_for_tensor, f"{path}[{i}]", key)
        return
    if isinstance(expected, torch.Tensor) and isinstance(actual, torch.Tensor):
        assert (actual.dtype, actual.layout, actual.shape) == (
            expected.dtype,
            expected.layout,
            expected.shape,
        ), path
    if isinstance(expected, np.ndarray):
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape), path
    if isinstance(expected, (torch.Tensor, np.ndarray, SparseGrad, float)) and not isinstance(
        expected, bool
    ):
        a, e = _as_numbers(actual), _as_numbers(expected)
        if np.array_equal(a, e):
            return
        scale = max(float(np.max(np.abs(e), initial=0.0)), 1e-300)
        assert float(np.max(np.abs(a - e), initial=0.0)) <= rtol * scale, path
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
