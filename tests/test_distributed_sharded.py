"""Sharded checkpoints (``npoptim.distributed.save_sharded`` / ``load_sharded``) in real MPI
jobs: three launches of tests/mpi/sharded.py (K = 4 saves and runs the fault checks, K = 2
resumes from it and saves, K = 3 resumes from K = 2), each with a timeout; the plain-optimizer
loads run in this process, without MPI.

The reference is the uninterrupted run: 20 steps of ZeRO Adam (itself bit-identical to plain
Adam, tests/test_distributed.py); a checkpoint taken after 10 steps and resumed for 10 more
at another world size must reach bit-identical parameters.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="the mpi extra")

import npoptim
from npoptim import CheckpointError
from npoptim.distributed import load_sharded, shard_files

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from mpi.launch import launch  # noqa: E402
from mpi.model import Problem, digest  # noqa: E402

SCRIPT = TESTS / "mpi" / "sharded.py"


class Jobs:
    """The jobs' reports, one launch per world size, made on first use (K = 2 needs K = 4's
    checkpoint, K = 3 needs K = 2's)."""

    ARGS: ClassVar[dict[int, list[str]]] = {
        4: ["--save", "--faults"],
        2: ["--save", "--resume-from", "4"],
        3: ["--resume-from", "2"],
    }

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.reports: dict[int, dict[str, Any]] = {}

    def __call__(self, k: int) -> dict[str, Any]:
        if k not in self.reports:
            if k == 2:
                self(4)
            if k == 3:
                self(2)
            out = self.folder / f"report_{k}.json"
            proc = launch(k, str(SCRIPT), str(out), str(self.folder), *self.ARGS[k])
            assert proc.returncode == 0, f"mpiexec -n {k} failed:\n{proc.stdout}\n{proc.stderr}"
            self.reports[k] = json.loads(out.read_text())
            assert self.reports[k]["world"] == k
        return self.reports[k]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Jobs:
    return Jobs(tmp_path_factory.mktemp("sharded"))


def result(report: dict[str, Any], check: str) -> Any:
    entry = report[check]
    assert not entry["errors"], "\n".join(entry["errors"])
    return entry["result"]


def params(folder: Path, name: str) -> list[Any]:
    loaded: list[Any] = npoptim.load(folder / name)["params"]
    return loaded


def plain_resume(folder: Path, w: int) -> tuple[Problem, npoptim.Adam]:
    """A plain Adam (no MPI) given the parameters and the sharded state saved at W ranks."""
    problem = Problem("Adam")
    for p, value in zip(problem.all, params(folder, f"params_{w}.npz"), strict=True):
        p[...] = value
    opt = npoptim.Adam(problem.all, lr=0.05, amsgrad=True, foreach=False)
    load_sharded(opt, folder / f"ckpt_{w}.npz")
    return problem, opt


# ------------------------------------------------------------------------------ resumes
def test_save_writes_one_shard_per_rank_and_a_manifest_and_replaces_the_last(
    jobs: Jobs,
) -> None:
    saved = result(jobs(4), "sharded_save")
    assert saved["same"] is True
    assert (jobs.folder / "ckpt_4.npz").is_file()
    pattern = r"ckpt_4\.npz\.[0-9a-f]{16}\.rank-{}-of-4\.npz"
    for names in (saved["first"], saved["shards"]):
        assert len(names) == 4
        for r, name in enumerate(names):
            assert re.fullmatch(pattern.replace("{}", str(r)), name), name
    assert set(saved["first"]).isdisjoint(saved["shards"])
    assert saved["files"] == sorted(saved["shards"])  # the first save's shards are gone


@pytest.mark.parametrize(("saved_at", "resumed_at"), [(4, 2), (2, 3)])
def test_sharded_checkpoint_resumes_at_another_world_size_bit_identically(
    jobs: Jobs, saved_at: int, resumed_at: int
) -> None:
    assert result(jobs(resumed_at), "sharded_resume") is True
    final = params(jobs.folder, f"final_{saved_at}.npz")
    resumed = params(jobs.folder, f"resumed_{saved_at}_at_{resumed_at}.npz")
    assert digest(resumed) == digest(final)
    assert not np.array_equal(final[0], params(jobs.folder, f"params_{saved_at}.npz")[0])


@pytest.mark.parametrize("saved_at", [4, 2])
def test_sharded_checkpoint_resumes_in_a_plain_optimizer_bit_identically(
    jobs: Jobs, saved_at: int
) -> None:
    jobs(saved_at)
    problem, opt = plain_resume(jobs.folder, saved_at)
    for _ in range(10):
        problem.set_grads(slice(None))
        opt.step()
    assert digest(problem.all) == digest(params(jobs.folder, f"final_{saved_at}.npz"))


def test_sharded_load_equals_loading_the_consolidated_state_dict(jobs: Jobs) -> None:
    """After 10 steps, the state of a plain Adam run of the same 10 steps (what
    consolidate_state_dict gives, tests/test_distributed.py) equals the sharded load's."""
    jobs(4)
    _, loaded = plain_resume(jobs.folder, 4)
    problem = Problem("Adam")
    direct = npoptim.Adam(problem.all, lr=0.05, amsgrad=True, foreach=False)
    for _ in range(10):
        problem.set_grads(slice(None))
        direct.step()
    a, b = loaded.state_dict(), direct.state_dict()
    assert a["param_groups"] == b["param_groups"]
    assert sorted(a["state"]) == sorted(b["state"]) == [0, 1, 2, 3]
    for i, entry in b["state"].items():
        assert sorted(a["state"][i]) == sorted(entry)
        for key, value in entry.items():
            assert np.array_equal(a["state"][i][key], value), (i, key)
            assert type(a["state"][i][key]) is type(value), (i, key)
            assert np.asarray(a["state"][i][key]).dtype == np.asarray(value).dtype, (i, key)


# ------------------------------------------------------------------------------- faults
SHARD = r"shard file 'ckpt_4\.npz\.[0-9a-f]{16}\.rank-%d-of-4\.npz'"


@pytest.mark.parametrize(
    ("check", "bad_rank", "own"),
    [
        ("damaged_shard", 2, SHARD % 2 + r": invalid checkpoint"),
        ("missing_shard", 1, SHARD % 1 + r" is missing \(expected at '.*missing/ckpt_4"),
        ("stale_shard", 1, SHARD % 1 + r" is not part of this checkpoint: its save_id is"),
    ],
)
def test_a_bad_shard_raises_on_every_rank_naming_the_file(
    jobs: Jobs, check: str, bad_rank: int, own: str
) -> None:
    errors = result(jobs(4), check)
    assert len(errors) == 4
    for rank, message in enumerate(errors):
        if rank == bad_rank:
            assert re.match("CheckpointError: " + own, message), message
        else:
            refused = f"RuntimeError: load_sharded: rank {bad_rank} refused its input "
            assert re.match(re.escape(refused) + r"\(CheckpointError: " + own, message), message


def test_a_save_that_fails_on_one_rank_raises_on_every_rank_and_keeps_the_checkpoint(
    jobs: Jobs,
) -> None:
    failed = result(jobs(4), "failed_save")  # its check also loads the kept checkpoint
    assert failed["manifest_kept"] is True
    assert failed["files_unchanged"] is True
    errors = failed["errors"]
    assert errors[3].startswith("OSError: [Errno 28] No space left on device"), errors[3]
    for message in errors[:3]:
        assert message.startswith(
            "RuntimeError: save_sharded: rank 3 refused its input (OSError"
        ), message


def test_plain_load_refuses_the_manifest_and_names_load_sharded(jobs: Jobs) -> None:
    jobs(4)
    with pytest.raises(CheckpointError, match=r"sharded checkpoint.*load_sharded"):
        npoptim.load(jobs.folder / "ckpt_4.npz")
    with pytest.raises(CheckpointError, match=r"sharded checkpoint.*load_sharded"):
        npoptim.load(jobs.folder / "ckpt_4.npz", mmap=True)


def test_a_shard_is_an_ordinary_checkpoint_keyed_by_global_indices(jobs: Jobs) -> None:
    jobs(4)
    held = [sorted(npoptim.load(f)["state"]) for f in shard_files(jobs.folder / "ckpt_4.npz")]
    assert sorted(i for indices in held for i in indices) == [0, 1, 2, 3]
    assert all(len(indices) == 1 for indices in held)  # 4 parameters on 4 ranks


def test_plain_load_of_a_damaged_shard_names_it_and_changes_nothing(
    jobs: Jobs, tmp_path: Path
) -> None:
    jobs(4)
    for f in jobs.folder.glob("ckpt_4.npz*"):
        shutil.copy(f, tmp_path / f.name)
    shard = Path(shard_files(tmp_path / "ckpt_4.npz")[3])
    data = bytearray(shard.read_bytes())
    shard.write_bytes(bytes(data[: len(data) // 2]))
    problem = Problem("Adam")
    opt = npoptim.Adam(problem.all, lr=0.05, amsgrad=True, foreach=False)
    with pytest.raises(CheckpointError, match=rf"shard file '{re.escape(shard.name)}'"):
        load_sharded(opt, tmp_path / "ckpt_4.npz")
    assert opt.state_dict()["state"] == {}
    shard.unlink()
    with pytest.raises(CheckpointError, match=rf"'{re.escape(shard.name)}' is missing"):
        load_sharded(opt, tmp_path / "ckpt_4.npz")
    with pytest.raises(CheckpointError, match=r"manifest .*nowhere\.npz' does not exist"):
        load_sharded(opt, tmp_path / "nowhere.npz")


def test_load_refuses_other_parameters_naming_the_parameter_and_both_sides(jobs: Jobs) -> None:
    jobs(4)
    problem = Problem("Adam")
    problem.all[2] = npoptim.Parameter(np.zeros((6, 3)))
    opt = npoptim.Adam(problem.all, lr=0.05)
    with pytest.raises(
        ValueError,
        match=r"parameter 2 has shape \(3, 6\) and dtype float64 in the sharded checkpoint .* "
        r"but shape \(6, 3\) and dtype float64 in the optimizer",
    ):
        load_sharded(opt, jobs.folder / "ckpt_4.npz")
    with pytest.raises(ValueError, match="holds 4 parameters, the optimizer has 3"):
        load_sharded(npoptim.Adam(problem.all[:3], lr=0.05), jobs.folder / "ckpt_4.npz")
    assert opt.state_dict()["state"] == {}


def test_save_sharded_refuses_a_plain_optimizer(tmp_path: Path) -> None:
    from npoptim.distributed import save_sharded

    opt = npoptim.Adam(Problem("Adam").all)
    with pytest.raises(TypeError, match="save_sharded needs a ZeroRedundancyOptimizer"):
        save_sharded(opt, tmp_path / "x.npz")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
