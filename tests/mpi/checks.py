"""Checks of npoptim.distributed run inside one MPI job; tests/test_distributed.py starts it.

    mpiexec -n K python tests/mpi/checks.py OUT.json [--threads N] [--memory]
                                                      [--save DIR] [--resume DIR]

Every rank runs every check; rank 0 writes one JSON object of results to OUT.json, which the
test then judges (so one launch covers many checks). A check that raises records its
traceback instead of stopping the others.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import inspect
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: configs.py
sys.path.insert(0, str(HERE))  # model.py

ARGS = argparse.ArgumentParser()
ARGS.add_argument("out")
ARGS.add_argument("--threads", type=int, default=0)
ARGS.add_argument("--memory", action="store_true")
ARGS.add_argument("--save", default="")
ARGS.add_argument("--resume", default="")
OPTS = ARGS.parse_args()

import npoptim  # noqa: E402

if OPTS.threads:  # the user's choice, before any distributed call
    npoptim.set_num_threads(OPTS.threads)

from model import Problem, digest, problem_and_zero, shard, steps  # noqa: E402
from mpi4py import MPI  # noqa: E402

from configs import CONFIGS  # noqa: E402
from npoptim import Parameter, SparseGrad  # noqa: E402
from npoptim.distributed import (  # noqa: E402
    ZeroRedundancyOptimizer,
    all_reduce_grads_,
    broadcast_optimizer_state_,
    broadcast_parameters_,
    node_threads,
)

COMM = MPI.COMM_WORLD
RANK, K = COMM.Get_rank(), COMM.Get_size()
STEPS = 20
RESULTS: dict[str, Any] = {"world": K}
#: The optimizers ZeroRedundancyOptimizer refuses (their steps need all the parameters).
NOT_SHARDED = {"LBFGS", "Prodigy"}

# every optimizer of the package, from its __all__
OPTIMIZERS = sorted(
    name
    for name in npoptim.__all__
    if isinstance(getattr(npoptim, name), type)
    and issubclass(getattr(npoptim, name), npoptim.Optimizer)
    and name != "Optimizer"
)


def check(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``fn`` on every rank; record its result (rank 0's) or every rank's traceback."""
    start = time.perf_counter()
    try:
        result: Any = fn()
        error = None
    except Exception:
        result, error = None, traceback.format_exc()
    errors = COMM.allgather(error)
    seconds = round(time.perf_counter() - start, 2)
    RESULTS[fn.__name__] = {
        "result": result,
        "errors": [e for e in errors if e],
        "seconds": seconds,
    }
    return fn


def same_everywhere(arrays: list[Any]) -> bool:
    """Whether every rank holds bit-identical arrays (a gathered hash)."""
    return len(set(COMM.allgather(digest(arrays)))) == 1


def options(name: str) -> list[dict[str, Any]]:
    """The optimizer's default options and, at two ranks, torch's last (most combined)
    configuration too, on the for-loop path (the paths are compared with each other elsewhere).

    LBFGS makes one iteration per step (``max_iter=1``): with its default 20, 20 steps are 400
    iterations, it converges until its gradient is at rounding level, and its stopping rules
    (``tolerance_change``, the curvature check) then decide differently on differences of
    rounding size, so data-parallel and single-process runs part (by 0.2 on this model)."""
    configs = [kw for _, kw in CONFIGS.get(name, [("default", {})])]
    chosen = [configs[0], configs[-1]] if K == 2 and len(configs) > 1 else configs[:1]
    signature = inspect.signature(getattr(npoptim, name))
    out = []
    for kw in chosen:
        kw = dict(kw)
        if "foreach" in signature.parameters:
            kw["foreach"] = False
        if name == "LBFGS":
            kw["max_iter"] = 1
        out.append(kw)
    return out


def wraps_an_optimizer(cls: type[npoptim.Optimizer]) -> bool:
    """Whether ``cls`` wraps another optimizer (Lookahead) rather than taking parameters."""
    return next(iter(inspect.signature(cls).parameters)) == "optimizer"


def build(
    cls: type[npoptim.Optimizer],
    params: list[Parameter],
    kwargs: dict[str, Any],
    zero: bool = False,
) -> npoptim.Optimizer:
    """``cls`` over ``params`` (with ``zero``, sharded by ZeroRedundancyOptimizer). A wrapper
    of another optimizer wraps SGD with momentum, and goes outside ZeRO: it keeps its own
    per-parameter state while the ZeRO optimizer it wraps shards SGD's."""
    if wraps_an_optimizer(cls):
        inner_kwargs = {"lr": 0.01, "momentum": 0.9, "foreach": False}
        if zero:
            return cls(ZeroRedundancyOptimizer(params, npoptim.SGD, **inner_kwargs), **kwargs)
        return cls(npoptim.SGD(params, **inner_kwargs), **kwargs)
    if zero:
        return _train(ZeroRedundancyOptimizer(params, cls, **kwargs))
    return _train(cls(params, **kwargs))


def _train(opt: npoptim.Optimizer) -> npoptim.Optimizer:
    """``opt`` in train mode where it has a train/eval switch (Schedule-Free starts in eval
    mode and refuses to step there; before the first step the switch moves no parameter)."""
    if hasattr(opt, "train"):  # a ZeRO optimizer has the switch where its local one has it
        opt.train()
    return opt


def sharding(opt: npoptim.Optimizer) -> ZeroRedundancyOptimizer:
    """The ZeroRedundancyOptimizer ``build`` made: ``opt`` or the optimizer it wraps."""
    found = opt if isinstance(opt, ZeroRedundancyOptimizer) else opt.optimizer  # type: ignore[attr-defined]
    assert isinstance(found, ZeroRedundancyOptimizer)
    return found


def relative_deviation(a: list[Any], b: list[Any]) -> float:
    return max(
        float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) / max(float(np.max(np.abs(y))), 1e-300)
        for x, y in zip(a, b, strict=True)
    )


def tree_equal(a: Any, b: Any) -> bool:
    """Exact equality of two state_dicts: same keys and types, arrays equal bit for bit."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and a.tobytes() == b.tobytes()
        )
    if isinstance(a, dict):
        return (
            isinstance(b, dict) and a.keys() == b.keys() and all(tree_equal(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(tree_equal, a, b))
    return type(a) is type(b) and a == b


# --------------------------------------------------------------------------- checks
@check
def threads() -> list[Any]:
    """Each rank's kernel threads after the first collective call, and the node split."""
    before = npoptim.get_num_threads()
    all_reduce_grads_([])  # the first call of npoptim.distributed
    return COMM.allgather([before, npoptim.get_num_threads(), node_threads(COMM), os.cpu_count()])


@check
def equivalence() -> dict[str, Any]:
    """Every optimizer, 20 steps: data-parallel (each rank its share, all_reduce_grads_)
    against one process on the whole batch; ZeRO with whole-batch grads against the plain
    optimizer, bit for bit; the consolidated state_dict against the plain one."""
    report: dict[str, Any] = {}
    for name in OPTIMIZERS:
        cls = getattr(npoptim, name)
        for c, kwargs in enumerate(options(name)):
            ref, dp, zero = Problem(name), Problem(name), Problem(name)
            ref_opt = build(cls, ref.optimized, kwargs)
            dp_opt = build(cls, dp.optimized, kwargs)
            zero_opt = (
                None if name in NOT_SHARDED else build(cls, zero.optimized, kwargs, zero=True)
            )
            identical_ranks = zero_bitwise = True
            for _ in range(STEPS):
                if name == "LBFGS":

                    def ref_closure(problem: Problem = ref) -> float:
                        return problem.set_grads(slice(None))

                    def dp_closure(problem: Problem = dp) -> float:
                        loss = problem.set_grads(shard(RANK, K))
                        all_reduce_grads_(problem.optimized)
                        return float(COMM.allreduce(loss)) / K

                    ref_opt.step(ref_closure)
                    dp_opt.step(dp_closure)
                else:
                    ref.set_grads(slice(None))
                    ref_opt.step()
                    dp.set_grads(shard(RANK, K))
                    all_reduce_grads_(dp.optimized)
                    dp_opt.step()
                    if zero_opt is not None:
                        zero.set_grads(slice(None))
                        zero_opt.step()
                        zero_bitwise &= digest(zero.optimized) == digest(ref.optimized)
                # one gathered hash per step covers both distributed runs
                identical_ranks &= same_everywhere(dp.optimized + zero.optimized)
            entry = {
                "options": repr(kwargs),
                "deviation": relative_deviation(dp.optimized, ref.optimized),
                "moved": relative_deviation(ref.optimized, Problem(name).optimized),
                "identical_ranks": identical_ranks,
            }
            if zero_opt is not None:
                sharded = sharding(zero_opt)
                entry["zero_bitwise"] = zero_bitwise
                entry["states_per_rank"] = COMM.allgather(len(sharded.optim.state))
                sharded.consolidate_state_dict(to=0)
                equal, refusal = None, ""
                if RANK == 0:
                    equal = tree_equal(zero_opt.state_dict(), ref_opt.state_dict())
                else:
                    try:
                        zero_opt.state_dict()
                    except RuntimeError as exc:
                        refusal = str(exc)
                entry["state_dict_equal"] = equal
                entry["refusals"] = COMM.allgather(refusal)[1:]
            report[f"{name}/{c}"] = entry
    return report


@check
def zero_features() -> dict[str, Any]:
    """ZeRO's param_groups: two groups, a scheduler on the ZeRO object, add_param_group
    midway, named parameters, bucket views, step hooks; against the plain optimizer."""
    out: dict[str, Any] = {}
    for bucket_view in (False, True):
        ref, zero = Problem("Adam"), Problem("Adam")
        extra_ref = Parameter(np.linspace(-1, 1, 40).reshape(8, 5))
        extra_zero = Parameter(extra_ref.copy())

        def groups(p: Problem) -> list[dict[str, Any]]:
            named = list(zip(["W", "b", "V", "c"], p.all, strict=True))
            return [{"params": named[:2], "lr": 0.05}, {"params": named[2:], "lr": 0.01}]

        ref_opt = npoptim.Adam(groups(ref), lr=0.02, foreach=False)
        zero_opt = ZeroRedundancyOptimizer(
            groups(zero),
            npoptim.Adam,
            parameters_as_bucket_view=bucket_view,
            lr=0.02,
            foreach=False,
        )
        calls: list[int] = []
        zero_opt.register_step_post_hook(lambda opt, args, kwargs, calls=calls: calls.append(1))
        ref_sched = npoptim.lr_scheduler.StepLR(ref_opt, step_size=3, gamma=0.5)
        zero_sched = npoptim.lr_scheduler.StepLR(zero_opt, step_size=3, gamma=0.5)
        bitwise = True
        for step in range(12):
            if step == 5:
                ref_opt.add_param_group({"params": [("E", extra_ref)], "lr": 0.03})
                zero_opt.add_param_group({"params": [("E", extra_zero)], "lr": 0.03})
            for problem, extra in ((ref, extra_ref), (zero, extra_zero)):
                problem.set_grads(slice(None))
                extra.grad = np.cos(np.asarray(extra)) * 0.1
            ref_opt.step()
            zero_opt.step()
            ref_sched.step()
            zero_sched.step()
            bitwise &= digest([*zero.all, extra_zero]) == digest([*ref.all, extra_ref])
        zero_opt.consolidate_state_dict(to=K - 1)
        key = "bucket_view" if bucket_view else "per_parameter"
        out[key] = {
            "bitwise": bitwise,
            "identical_ranks": same_everywhere([*zero.all, extra_zero]),
            "hook_calls": len(calls),
            "lrs": [g["lr"] for g in zero_opt.param_groups]
            == [g["lr"] for g in ref_opt.param_groups],
            "local_lrs": [g["lr"] for g in zero_opt.optim.param_groups]
            == [g["lr"] for g in ref_opt.param_groups],
        }
        equal = tree_equal(zero_opt.state_dict(), ref_opt.state_dict()) if RANK == K - 1 else None
        out[key]["state_dict_equal"] = COMM.bcast(equal, root=K - 1)
    return out


@check
def zero_resume_in_process() -> dict[str, Any]:
    """load_state_dict of a single-process state_dict on every rank, then 10 steps: the same
    parameters as the single-process optimizer continuing."""
    ref, zero = Problem("AdamW"), Problem("AdamW")
    ref_opt = npoptim.AdamW(ref.all, lr=0.03, amsgrad=True, foreach=False)
    for _ in range(5):
        ref.set_grads(slice(None))
        ref_opt.step()
    for z, r in zip(zero.all, ref.all, strict=True):
        z[...] = r
    zero_opt = ZeroRedundancyOptimizer(zero.all, npoptim.AdamW, lr=0.5, amsgrad=True, foreach=False)
    zero_opt.load_state_dict(ref_opt.state_dict())
    bitwise = zero_opt.param_groups[0]["lr"] == 0.03
    for _ in range(10):
        for p in (ref, zero):
            p.set_grads(slice(None))
        ref_opt.step()
        zero_opt.step()
        bitwise &= digest(zero.all) == digest(ref.all)
    return {"bitwise": bitwise, "identical_ranks": same_everywhere(zero.all)}


def _grads_of(rank: int) -> list[Any]:
    """Rank ``rank``'s grads for the reduction checks (any rank can make any rank's)."""
    rng = np.random.default_rng(100 + rank)
    return [
        rng.standard_normal((5, 3)).astype(np.float32),
        rng.standard_normal(7),
        rng.standard_normal((2, 2)) + 1j * rng.standard_normal((2, 2)),
        rng.standard_normal((300,)),
        rng.standard_normal((4, 3)).astype(np.float16),
    ]


@check
def reduce_dense() -> dict[str, Any]:
    """Dense grads of several dtypes (complex too) in tiny buckets: the average (or sum) of
    every rank's, identical on every rank; missing grads as zeros; no grad anywhere stays None."""
    out = {}
    for average, cap in ((True, 25), (True, 1e-4), (False, 1e-3)):
        params = [Parameter(np.zeros_like(g)) for g in _grads_of(0)]
        for p, g in zip(params, _grads_of(RANK), strict=True):
            p.grad = g.copy()
        held = [p.grad for p in params]
        all_reduce_grads_(params, average=average, bucket_cap_mb=cap)
        expected = [
            sum(gs[i].astype(np.complex128) for gs in map(_grads_of, range(K))) for i in range(5)
        ]
        if average:
            expected = [e / K for e in expected]
        out[f"average={average}, cap={cap}"] = {
            "deviation": {
                str(p.dtype): float(np.max(np.abs(p.grad - e)) / np.max(np.abs(e)))
                for p, e in zip(params, expected, strict=True)
            },
            "in_place": all(p.grad is h for p, h in zip(params, held, strict=True)),
            "dtypes_kept": all(p.grad.dtype == p.dtype for p in params),
            "identical_ranks": same_everywhere([p.grad for p in params]),
        }
    # missing grads: a has one on rank 0 only, b on no rank
    a, b = Parameter(np.zeros(3)), Parameter(np.zeros(2))
    if RANK == 0:
        a.grad = np.array([1.0, 2.0, 3.0])
    all_reduce_grads_([a, b])
    out["missing"] = {
        "a": None if a.grad is None else a.grad.tolist(),
        "b": None if b.grad is None else b.grad.tolist(),
        "identical_ranks": same_everywhere([a.grad]),
    }
    return out


@check
def reduce_sparse() -> dict[str, Any]:
    """Row-sparse grads are gathered and coalesced: the dense average, on every rank; a rank
    without a grad adds no rows."""
    table = Parameter(np.zeros((10, 3)))

    def sparse_of(rank: int) -> SparseGrad | None:
        if rank == 1:
            return None
        rng = np.random.default_rng(7 + rank)
        idx = rng.integers(0, 10, 5)
        return SparseGrad(idx, rng.standard_normal((5, 3)), (10, 3))

    table.grad = sparse_of(RANK)
    all_reduce_grads_([table])
    expected = sum(g.to_dense() for g in map(sparse_of, range(K)) if g is not None) / K
    g = table.grad
    return {
        "is_sparse": isinstance(g, SparseGrad),
        "coalesced": isinstance(g, SparseGrad)
        and g.is_coalesced()
        and bool(np.all(np.diff(g.indices) > 0)),
        "deviation": float(np.max(np.abs(g.to_dense() - expected)) / np.max(np.abs(expected))),
        "identical_ranks": same_everywhere([g.indices, g.values]),
    }


@check
def broadcasts() -> dict[str, Any]:
    """broadcast_parameters_ from the last rank; broadcast_optimizer_state_ from rank 0."""
    root = K - 1

    def values_of(rank: int) -> list[Any]:
        rng = np.random.default_rng(50 + rank)
        return [rng.standard_normal((4, 3)), rng.standard_normal(5).astype(np.float32)]

    params = [Parameter(v) for v in values_of(RANK)]
    params.append(Parameter(np.asfortranarray(values_of(RANK)[0])))  # not C-contiguous
    broadcast_parameters_(params, root=root)
    want = [*values_of(root), values_of(root)[0]]
    params_ok = all(np.array_equal(p, w) for p, w in zip(params, want, strict=True))

    problem = Problem("Adam")
    opt = npoptim.Adam(problem.all, lr=0.1, foreach=False)
    if RANK == 0:
        for _ in range(3):
            problem.set_grads(slice(None))
            opt.step()
    broadcast_optimizer_state_(opt, root=0)
    states = [v for s in opt.state.values() for v in s.values() if isinstance(v, np.ndarray)]
    return {
        "params": params_ok,
        "state_identical": same_everywhere(states) and len(states) == 8,
        "steps": COMM.allgather([s["step"] for s in opt.state.values()]),
    }


def _errors_of(call: Callable[[], Any]) -> list[str]:
    """Every rank's error from ``call`` (type: message), then a collective that shows the
    ranks are still in step (no rank left behind in a collective)."""
    try:
        call()
        error = "no error"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    assert COMM.allreduce(1) == K
    return COMM.allgather(error)


@check
def validation() -> dict[str, Any]:
    """Mismatched input raises the same clear error on every rank, never a hang."""
    out = {}
    last = K - 1

    def shapes() -> None:
        p = Parameter(np.zeros(5 if RANK == last else 4))
        p.grad = np.ones_like(p)
        all_reduce_grads_([Parameter(np.zeros(2)), p])

    def dtypes() -> None:
        dtype = np.float32 if RANK == last else np.float64
        ZeroRedundancyOptimizer([Parameter(np.zeros((3, 2), dtype=dtype))], npoptim.SGD, lr=0.1)

    def groups() -> None:
        ps = [Parameter(np.zeros(2)), Parameter(np.zeros(2))]
        lr = 0.2 if RANK == last else 0.1
        ZeroRedundancyOptimizer([{"params": ps, "lr": lr}], npoptim.SGD)

    def not_a_parameter() -> None:
        p = np.zeros(2) if RANK == last else Parameter(np.zeros(2))
        ZeroRedundancyOptimizer([p], npoptim.SGD, lr=0.1)

    def dense_and_sparse() -> None:
        p = Parameter(np.zeros((3, 2)))
        p.grad = SparseGrad([1], np.ones((1, 2)), (3, 2)) if RANK == last else np.ones((3, 2))
        all_reduce_grads_([p])

    def lbfgs() -> None:
        ZeroRedundancyOptimizer([Parameter(np.zeros(2))], npoptim.LBFGS)

    def prodigy() -> None:
        ZeroRedundancyOptimizer([Parameter(np.zeros(2))], npoptim.Prodigy)

    def add_group() -> None:
        zero = ZeroRedundancyOptimizer([Parameter(np.zeros(2))], npoptim.SGD, lr=0.1)
        try:
            zero.add_param_group({"params": [Parameter(np.zeros(3 if RANK == last else 2))]})
        finally:
            out.setdefault("groups_after_refused_add", []).append(len(zero.param_groups))

    for fn in (
        shapes, dtypes, groups, not_a_parameter, dense_and_sparse, lbfgs, prodigy, add_group
    ):
        out[fn.__name__] = _errors_of(fn)
    return out


@check
def refused_load() -> dict[str, Any]:
    """A state whose part on the last rank is refused, loaded consolidated and from a sharded
    checkpoint: every rank raises the same error naming that rank, and no rank changes its
    state or its groups. Parameter i (of K + 1 - i values) is owned by rank i; only the
    last rank's has a state, saved without the ``max_exp_avg_sq`` its group's ``amsgrad``
    needs, and the saved ``lr`` differs from the optimizer's."""
    from npoptim.distributed import load_sharded, save_sharded

    if K == 1:
        return {}
    sizes = range(K + 1, 1, -1)
    last = K - 1

    def zero_adam() -> tuple[list[Parameter], ZeroRedundancyOptimizer]:
        params = [Parameter(np.linspace(-1.0, 1.0, n)) for n in sizes]
        return params, ZeroRedundancyOptimizer(params, npoptim.Adam, lr=0.1, foreach=False)

    source_params = [Parameter(np.linspace(-1.0, 1.0, n)) for n in sizes]
    source = npoptim.Adam(source_params, lr=0.1, foreach=False)
    source_params[last].grad = np.ones_like(source_params[last])
    source.step()
    bad = copy.deepcopy(source.state_dict())
    bad["param_groups"][0].update(amsgrad=True, lr=0.5)

    params, zero = zero_adam()  # the target: every rank has a state to keep
    for p in params:
        p.grad = np.full_like(p, 0.5)
    zero.step()
    before = copy.deepcopy((zero.optim.state_dict(), zero.param_groups))
    out: dict[str, Any] = {
        "owners": COMM.allgather([p.size for p in zero.optim.param_groups[0]["params"]])
    }
    out["consolidated"] = _errors_of(lambda: zero.load_state_dict(bad))
    out["consolidated_unchanged"] = COMM.allgather(
        tree_equal(before, copy.deepcopy((zero.optim.state_dict(), zero.param_groups)))
    )

    folder = COMM.bcast(tempfile.mkdtemp() if RANK == 0 else None)
    _, saving = zero_adam()
    saving.load_state_dict(source.state_dict())
    saving.param_groups[0].update(amsgrad=True, lr=0.5)
    save_sharded(saving, os.path.join(folder, "ckpt.npz"))
    out["sharded"] = _errors_of(lambda: load_sharded(zero, os.path.join(folder, "ckpt.npz")))
    out["sharded_unchanged"] = COMM.allgather(
        tree_equal(before, copy.deepcopy((zero.optim.state_dict(), zero.param_groups)))
    )
    COMM.barrier()
    if RANK == 0:
        shutil.rmtree(folder)
    return out


def resnet50_shapes() -> list[tuple[int, ...]]:
    """The step-time benchmark's W1 shapes, from benchmarks/workloads.py (NumPy only)."""
    path = HERE.parent.parent / "benchmarks" / "workloads.py"
    spec = importlib.util.spec_from_file_location("workloads", path)
    assert spec is not None and spec.loader is not None
    workloads = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(workloads)
    shapes: list[tuple[int, ...]] = workloads.resnet50_shapes()
    return shapes


def adam_state_bytes(opt: npoptim.Optimizer) -> int:
    return sum(
        v.nbytes for s in opt.state.values() for v in s.values() if isinstance(v, np.ndarray)
    )


if OPTS.memory:

    @check
    def memory() -> dict[str, Any]:
        """Adam's state bytes per rank on ResNet-50's shapes (the step-time benchmark's W1), with
        ZeRO over the first 1, 2 and 4 ranks."""
        shapes = resnet50_shapes()
        out = {}
        for world in (1, 2, 4):
            sub = COMM.Split(0 if RANK < world else MPI.UNDEFINED, RANK)
            per_rank = None
            if sub != MPI.COMM_NULL:
                params = [Parameter(np.zeros(s, dtype=np.float32)) for s in shapes]
                for p in params:
                    p.grad = np.full(p.shape, 1e-3, dtype=np.float32)
                zero = ZeroRedundancyOptimizer(params, npoptim.Adam, comm=sub, foreach=False)
                zero.step()
                per_rank = sub.allgather(adam_state_bytes(zero.optim))
                sub.Free()
                del params, zero
            out[world] = COMM.bcast(per_rank, root=0)
        out["total_params_bytes"] = 4 * sum(int(np.prod(s)) for s in shapes)
        out["largest_param_bytes"] = 4 * max(int(np.prod(s)) for s in shapes)
        return out


if OPTS.save:

    @check
    def elastic_save() -> bool:
        """10 steps, a consolidated checkpoint (with the parameters), then 10 more steps."""
        problem, zero = problem_and_zero()
        steps(problem, zero, 10)
        zero.consolidate_state_dict(to=0)
        if RANK == 0:
            npoptim.save(
                {"optimizer": zero.state_dict(), "params": [np.asarray(p) for p in problem.all]},
                os.path.join(OPTS.save, "checkpoint.npz"),
            )
        steps(problem, zero, 10)
        if RANK == 0:
            npoptim.save(
                {"params": [np.asarray(p) for p in problem.all]},
                os.path.join(OPTS.save, "final.npz"),
            )
        return same_everywhere(problem.all)


if OPTS.resume:

    @check
    def elastic_resume() -> bool:
        """The checkpoint loaded at this world size: 10 steps, saved for the test to compare."""
        saved = npoptim.load(os.path.join(OPTS.resume, "checkpoint.npz"))
        problem, zero = problem_and_zero()
        for p, value in zip(problem.all, saved["params"], strict=True):
            p[...] = value
        zero.load_state_dict(saved["optimizer"])
        steps(problem, zero, 10)
        if RANK == 0:
            npoptim.save(
                {"params": [np.asarray(p) for p in problem.all]},
                os.path.join(OPTS.resume, f"resumed_{K}.npz"),
            )
        return same_everywhere(problem.all)


if RANK == 0:
    Path(OPTS.out).write_text(json.dumps(RESULTS, indent=1, default=str))
