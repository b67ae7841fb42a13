"""npoptim.distributed in real MPI jobs: ``mpiexec -n K`` subprocesses, K = 1, 2, 3, 4.

Each K is one launch of tests/mpi/checks.py, which runs every check inside the job and
reports JSON; the tests below judge those reports (one launch costs about a second of start-up,
so the checks share them). Every launch has a timeout, so a hang fails instead of stalling CI.
The MPI tests need the ``mpi`` extra (mpi4py and mpich); without it they FAIL. Set
``NPOPTIM_MPI_TESTS=0`` (or ``NPOPTIM_TEST_WITHOUT=mpi``) to skip them on purpose.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import npoptim

HERE = Path(__file__).resolve().parent
CHECKS = HERE / "mpi" / "checks.py"
FAULT = HERE / "mpi" / "fault.py"
sys.path.insert(0, str(HERE / "mpi"))
from model import Problem, digest  # noqa: E402

from mpi.launch import launch  # noqa: E402

pytestmark = pytest.mark.skipif(
    os.environ.get("NPOPTIM_MPI_TESTS", "1") == "0", reason="NPOPTIM_MPI_TESTS=0"
)


class Jobs:
    """The checks' reports, one launch per world size, made on first use. The K = 4 job
    saves the elastic checkpoint that the K = 2 job resumes from; K = 3 sets the threads."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.reports: dict[int, dict[str, Any]] = {}

    def __call__(self, k: int) -> dict[str, Any]:
        if k not in self.reports:
            extra = {
                1: [],
                2: ["--resume", str(self.folder)],
                3: ["--threads", "3"],
                4: ["--memory", "--save", str(self.folder)],
            }[k]
            if k == 2:
                self(4)
            out = self.folder / f"report_{k}.json"
            proc = launch(k, str(CHECKS), str(out), *extra)
            assert proc.returncode == 0, f"mpiexec -n {k} failed:\n{proc.stdout}\n{proc.stderr}"
            self.reports[k] = json.loads(out.read_text())
            assert self.reports[k]["world"] == k
        return self.reports[k]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Jobs:
    return Jobs(tmp_path_factory.mktemp("mpi"))


def result(report: dict[str, Any], check: str) -> Any:
    """A check's result, failing with every rank's traceback if it raised."""
    entry = report[check]
    assert not entry["errors"], "\n".join(entry["errors"])
    return entry["result"]


def test_mpi4py_is_installed() -> None:
    import mpi4py

    assert int(mpi4py.__version__.split(".")[0]) >= 4


def test_import_npoptim_does_not_import_mpi4py() -> None:
    code = "import sys, npoptim, npoptim.distributed; print('mpi4py' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------- equivalence
#: Optimizers whose own trajectory changes at the 1e-2 level when the gradients change at the
#: rounding level, so no data-parallel run (its gradient sums are rounded in another order)
#: can follow one process to 1e-12; the ZeRO and identical-ranks tests still cover them.
#: The optimizers ZeroRedundancyOptimizer refuses (tests/mpi/checks.py runs no ZeRO for them).
NOT_SHARDED = {"LBFGS", "Prodigy"}
SENSITIVE_TO_ROUNDING = {
    # Its first preconditioners are rank-one outer products of the gradient, whose eigenbases
    # are arbitrary in their null spaces: on the checks' model, gradients perturbed by 1e-15
    # (relative) move a single-process run by 4e-2 after 20 steps.
    "SOAP",
}


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_data_parallel_matches_one_process_to_1e12(jobs: Jobs, k: int) -> None:
    """Every optimizer, 20 steps, each rank its share of the batch and all_reduce_grads_:
    the parameters of one process on the whole batch, to 1e-12 relative."""
    report = result(jobs(k), "equivalence")
    names = {key.split("/")[0] for key in report}
    assert names == {
        n
        for n in npoptim.__all__
        if isinstance(getattr(npoptim, n), type)
        and issubclass(getattr(npoptim, n), npoptim.Optimizer)
        and n != "Optimizer"
    }
    for key, entry in report.items():
        assert entry["moved"] > 1e-3, (
            f"{key}: the parameters barely moved, the check proves nothing"
        )
        if key.split("/")[0] in SENSITIVE_TO_ROUNDING:
            continue
        assert entry["deviation"] <= 1e-12, f"{key} {entry['options']}: {entry['deviation']:.3g}"


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_all_ranks_hold_bit_identical_parameters_after_every_step(jobs: Jobs, k: int) -> None:
    for key, entry in result(jobs(k), "equivalence").items():
        assert entry["identical_ranks"], key


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_zero_matches_the_plain_optimizer_bit_for_bit(jobs: Jobs, k: int) -> None:
    """ZeRO over every optimizer but LBFGS and Prodigy (which it refuses), the same
    whole-batch grads on every rank: the parameters of the plain optimizer after every step,
    bit for bit."""
    report = result(jobs(k), "equivalence")
    zero = {key: e for key, e in report.items() if key.split("/")[0] not in NOT_SHARDED}
    assert zero
    for key, entry in zero.items():
        assert entry["zero_bitwise"], key


@pytest.mark.parametrize("k", [1, 2, 4])
def test_zero_consolidated_state_dict_equals_the_single_process_one(jobs: Jobs, k: int) -> None:
    for key, entry in result(jobs(k), "equivalence").items():
        if key.split("/")[0] not in NOT_SHARDED:
            assert entry["state_dict_equal"] is True, key


@pytest.mark.parametrize("k", [2, 4])
def test_zero_shards_the_state(jobs: Jobs, k: int) -> None:
    """Each rank holds the state of its own parameters only (the 4 of the MLP spread over the
    ranks; SGD without momentum has none)."""
    report = result(jobs(k), "equivalence")
    adam = report["Adam/0"]["states_per_rank"]
    assert sum(adam) == 4 and max(adam) <= -(-4 // k) + 1
    assert report["SGD/0"]["states_per_rank"] == [0] * k


def test_zero_state_dict_off_the_target_rank_raises_torch_message(jobs: Jobs) -> None:
    refusals = result(jobs(2), "equivalence")["Adam/0"]["refusals"]
    assert refusals == [
        "Optimizer state has not been consolidated on this rank. Please call "
        "`consolidate_state_dict(to=1)` on all ranks beforehand if you meant to save the "
        "global state."
    ]


@pytest.mark.parametrize("bucket_view", ["per_parameter", "bucket_view"])
@pytest.mark.parametrize("k", [2, 3])
def test_zero_groups_scheduler_add_param_group_and_hooks(
    jobs: Jobs, k: int, bucket_view: str
) -> None:
    """Two named groups, StepLR on the ZeRO object, a group added at step 5, a step hook:
    the plain optimizer's parameters and state_dict, bit for bit."""
    entry = result(jobs(k), "zero_features")[bucket_view]
    assert entry == {
        "bitwise": True,
        "identical_ranks": True,
        "hook_calls": 12,
        "lrs": True,
        "local_lrs": True,
        "state_dict_equal": True,
    }


def test_zero_loads_a_single_process_state_dict(jobs: Jobs) -> None:
    assert result(jobs(3), "zero_resume_in_process") == {"bitwise": True, "identical_ranks": True}


# ------------------------------------------------------------------------------ reduce
@pytest.mark.parametrize("k", [2, 3])
def test_all_reduce_grads_averages_every_dtype_in_any_bucket_size(jobs: Jobs, k: int) -> None:
    report = result(jobs(k), "reduce_dense")
    tolerance = {"float16": 1e-3, "float32": 1e-6, "float64": 1e-12, "complex128": 1e-12}
    for case in ("average=True, cap=25", "average=True, cap=0.0001", "average=False, cap=0.001"):
        entry = report[case]
        for dtype, deviation in entry["deviation"].items():
            assert deviation <= tolerance[dtype], (case, dtype, deviation)
        assert entry["in_place"] and entry["dtypes_kept"] and entry["identical_ranks"], case


@pytest.mark.parametrize("k", [2, 3])
def test_all_reduce_grads_missing_grads_count_as_zeros(jobs: Jobs, k: int) -> None:
    """A grad on rank 0 only: every rank ends with it divided by K; no grad anywhere: None."""
    missing = result(jobs(k), "reduce_dense")["missing"]
    assert missing["a"] == pytest.approx([1 / k, 2 / k, 3 / k], rel=1e-15)
    assert missing["b"] is None
    assert missing["identical_ranks"]


@pytest.mark.parametrize("k", [2, 4])
def test_all_reduce_grads_gathers_sparse_grads_coalesced(jobs: Jobs, k: int) -> None:
    entry = result(jobs(k), "reduce_sparse")
    assert entry["is_sparse"] and entry["coalesced"] and entry["identical_ranks"]
    assert entry["deviation"] <= 1e-15


@pytest.mark.parametrize("k", [2, 3])
def test_broadcast_parameters_and_optimizer_state(jobs: Jobs, k: int) -> None:
    entry = result(jobs(k), "broadcasts")
    assert entry["params"] and entry["state_identical"]
    assert entry["steps"] == [[3.0] * 4] * k


# -------------------------------------------------------------------------- validation
@pytest.mark.parametrize("k", [2, 4])
def test_mismatched_input_raises_the_same_error_on_every_rank(jobs: Jobs, k: int) -> None:
    report = result(jobs(k), "validation")
    last = k - 1
    shape_error = (
        "ValueError: all_reduce_grads_: every rank must pass the same parameters, but rank 0 "
        f"has parameter 1 of shape (4,) and dtype float64 where rank {last} has parameter 1 "
        "of shape (5,) and dtype float64"
    )
    assert report["shapes"] == [shape_error] * k
    assert report["dtypes"] == [report["dtypes"][0]] * k
    assert (
        "dtype float64 where rank" in report["dtypes"][0] and "dtype float32" in report["dtypes"][0]
    )
    assert report["groups"] == [report["groups"][0]] * k
    assert "{'lr': 0.1}" in report["groups"][0] and "{'lr': 0.2}" in report["groups"][0]
    refused = f"RuntimeError: ZeroRedundancyOptimizer: rank {last} refused its input (TypeError: optimizer can only optimize Parameters, but one of the params is numpy.ndarray)"
    assert report["not_a_parameter"] == [refused] * last + [
        "TypeError: optimizer can only optimize Parameters, but one of the params is numpy.ndarray"
    ]
    assert (
        report["dense_and_sparse"]
        == [
            f"ValueError: all_reduce_grads_: parameter 0 has a dense grad on rank 0 and a SparseGrad on rank {last}"
        ]
        * k
    )
    assert all(
        e.startswith("ValueError: add_param_group: every rank must pass")
        for e in report["add_group"]
    )
    assert report["groups_after_refused_add"] == [1]


def test_zero_refuses_lbfgs_with_a_clear_message(jobs: Jobs) -> None:
    errors = result(jobs(2), "validation")["lbfgs"]
    assert len(set(errors)) == 1
    assert errors[0].startswith("ValueError: ZeroRedundancyOptimizer cannot shard LBFGS")
    assert "all_reduce_grads_" in errors[0]


def test_zero_refuses_prodigy_with_a_clear_message(jobs: Jobs) -> None:
    errors = result(jobs(2), "validation")["prodigy"]
    assert len(set(errors)) == 1
    assert errors[0].startswith("ValueError: ZeroRedundancyOptimizer cannot shard Prodigy")
    assert "all_reduce_grads_" in errors[0]


# ----------------------------------------------------------------------------- threads
@pytest.mark.parametrize("k", [1, 2, 4])
def test_threads_default_to_the_node_cores_shared_by_its_ranks(jobs: Jobs, k: int) -> None:
    per_rank = result(jobs(k), "threads")
    for before, threads, node_threads, cpus in per_rank:
        assert before == len(os.sched_getaffinity(0))  # npoptim's own default until then
        assert node_threads == max(1, min(len(os.sched_getaffinity(0)), cpus // k))
        assert threads == node_threads


def test_threads_chosen_by_the_user_are_kept(jobs: Jobs) -> None:
    assert [threads for _, threads, _, _ in result(jobs(3), "threads")] == [3, 3, 3]


# ------------------------------------------------------------------------------ memory
def test_zero_adam_state_per_rank_on_resnet50_shapes(jobs: Jobs) -> None:
    """Adam's state bytes per rank on W1 at K = 1, 2, 4: at most 1/K of the total plus the
    state of the largest parameter."""
    memory = result(jobs(4), "memory")
    total = 2 * memory["total_params_bytes"]  # exp_avg and exp_avg_sq
    largest = 2 * memory["largest_param_bytes"]
    assert memory["1"] == [total]
    for k in (2, 4):
        per_rank = memory[str(k)]
        assert len(per_rank) == k and sum(per_rank) == total
        assert max(per_rank) <= total / k + largest, (k, per_rank)


# ------------------------------------------------------------------------------ elastic
def test_checkpoint_from_4_ranks_resumes_on_2_ranks_bit_identically(jobs: Jobs) -> None:
    assert result(jobs(4), "elastic_save") is True
    assert result(jobs(2), "elastic_resume") is True
    final = npoptim.load(jobs.folder / "final.npz")["params"]
    resumed = npoptim.load(jobs.folder / "resumed_2.npz")["params"]
    assert digest(resumed) == digest(final)


def test_checkpoint_from_4_ranks_resumes_in_a_plain_optimizer_bit_identically(jobs: Jobs) -> None:
    assert result(jobs(4), "elastic_save") is True
    saved = npoptim.load(jobs.folder / "checkpoint.npz")
    problem = Problem("Adam")
    for p, value in zip(problem.all, saved["params"], strict=True):
        p[...] = value
    opt = npoptim.Adam(problem.all, lr=0.05, amsgrad=True, foreach=False)
    opt.load_state_dict(saved["optimizer"])
    for _ in range(10):
        problem.set_grads(slice(None))
        opt.step()
    final = npoptim.load(jobs.folder / "final.npz")["params"]
    assert digest(problem.all) == digest(final)
    assert not np.array_equal(final[0], saved["params"][0])


# ------------------------------------------------------------------------------- faults
def test_a_rank_that_raises_ends_the_job_with_its_error() -> None:
    """Under ``python -m mpi4py``, an uncaught exception on one rank aborts the whole job:
    non-zero exit, the original traceback printed, no rank left waiting in a collective."""
    start = time.monotonic()
    proc = launch(2, "-m", "mpi4py", str(FAULT), timeout=60)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert "RuntimeError: rank 1 failed during its step on purpose" in proc.stderr
    assert elapsed < 60


def test_checkpoint_from_4_ranks_resumes_in_torch(jobs: Jobs) -> None:
    """The consolidated state_dict converted for torch: torch's Adam continues the run and
    reaches the uninterrupted run's parameters (float64, to 1e-12)."""
    torch = pytest.importorskip("torch", reason="the torch extra")
    from npoptim.interop.torch import to_torch_state_dict

    assert result(jobs(4), "elastic_save") is True
    saved = npoptim.load(jobs.folder / "checkpoint.npz")
    problem = Problem("Adam")
    tensors = [torch.tensor(value, dtype=torch.float64) for value in saved["params"]]
    opt = torch.optim.Adam(tensors, lr=0.05, amsgrad=True, foreach=False)
    opt.load_state_dict(to_torch_state_dict(saved["optimizer"]))
    for _ in range(10):
        for p, t in zip(problem.all, tensors, strict=True):
            p[...] = t.numpy()
        problem.set_grads(slice(None))
        for p, t in zip(problem.all, tensors, strict=True):
            t.grad = torch.from_numpy(np.array(p.grad))
        opt.step()
    final = npoptim.load(jobs.folder / "final.npz")["params"]
    for t, want in zip(tensors, final, strict=True):
        np.testing.assert_allclose(t.numpy(), want, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------- train/eval switches
class OneRank:
    """A communicator of one rank, enough for ZeroRedundancyOptimizer without MPI."""

    def Get_rank(self) -> int:  # mpi4py's name
        return 0

    def Get_size(self) -> int:  # mpi4py's name
        return 1

    def allgather(self, value: Any) -> list[Any]:
        return [value]


def one_rank_zero(
    monkeypatch: pytest.MonkeyPatch, cls: type[npoptim.Optimizer], **kwargs: Any
) -> Any:
    from npoptim.distributed import ZeroRedundancyOptimizer, _comm

    # the per-node thread default needs MPI's shared-memory split: not applied here
    monkeypatch.setitem(_comm._thread_default, "applied", True)
    params = [npoptim.Parameter(np.arange(3.0)), npoptim.Parameter(np.ones((2, 2)))]
    return ZeroRedundancyOptimizer(params, cls, comm=OneRank(), **kwargs), params  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["SGD", "Adam", "SOAP"])
def test_zero_has_no_train_or_eval_where_its_local_optimizer_has_none(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    zero, _ = one_rank_zero(monkeypatch, getattr(npoptim, name), lr=0.1)
    assert not hasattr(zero, "train")
    assert not hasattr(zero, "eval")
    with pytest.raises(AttributeError, match=f"its local optimizer {name} has no train"):
        zero.train()


def test_zero_train_and_eval_switch_a_schedule_free_local_optimizer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    zero, params = one_rank_zero(monkeypatch, npoptim.AdamWScheduleFree, lr=0.1)
    plain_params = [npoptim.Parameter(np.array(p)) for p in params]
    plain = npoptim.AdamWScheduleFree(plain_params, lr=0.1)
    assert hasattr(zero, "train") and hasattr(zero, "eval")
    for opt, ps in ((zero, params), (plain, plain_params)):
        opt.train()
        for k in range(3):
            for p in ps:
                p.grad = np.full(p.shape, k + 1.0)
            opt.step()
        opt.eval()  # the parameters move to the averaged point
    for p, q in zip(params, plain_params, strict=True):
        np.testing.assert_array_equal(p, q)
    assert not np.array_equal(plain_params[0], np.arange(3.0))


# ------------------------------------------------------------------ all-or-nothing load
@pytest.mark.parametrize("k", [2, 3])
def test_a_load_refused_on_one_rank_changes_no_rank(jobs: Jobs, k: int) -> None:
    report = result(jobs(k), "refused_load")
    last = k - 1
    # rank i owns parameter i alone, of k + 1 - i values
    assert report["owners"] == [[k + 1 - i] for i in range(k)]
    message = (
        f"ValueError: load_state_dict refused on rank {last}: loaded state for parameter {last} "
        "of param_groups[0] has no 'max_exp_avg_sq', which Adam needs with these options (it "
        "has ['exp_avg', 'exp_avg_sq', 'step'])"
    )
    assert report["consolidated"] == [message] * k
    assert report["consolidated_unchanged"] == [True] * k
    assert report["sharded"] == [message] * k
    assert report["sharded_unchanged"] == [True] * k


def test_agree_with_same_error_raises_the_failing_ranks_type_naming_it() -> None:
    from npoptim.distributed._comm import agree
    from npoptim.serialization import CheckpointError

    def fails() -> tuple[list[str], None]:
        raise CheckpointError("shard file 'x' is damaged")

    def fails_oddly() -> tuple[list[str], None]:
        raise KeyError("step")  # str() quotes it: not remade from the message alone

    with pytest.raises(CheckpointError) as info:
        agree(OneRank(), "load", fails, same_error=True)  # type: ignore[arg-type]
    assert str(info.value) == "load refused on rank 0: shard file 'x' is damaged"
    with pytest.raises(RuntimeError) as odd:
        agree(OneRank(), "load", fails_oddly, same_error=True)  # type: ignore[arg-type]
    assert str(odd.value) == "load refused on rank 0: 'step' (KeyError)"
