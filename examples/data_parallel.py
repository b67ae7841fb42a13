"""Train the quickstart MLP data-parallel on several processes: ZeRO Adam and a scheduler.

Every rank holds the whole model; each global batch of 32 digits is split across the ranks,
each rank backpropagates its share, ``all_reduce_grads_`` sums the shares' gradients so every
rank holds the gradient of the whole batch, and ``ZeroRedundancyOptimizer(Adam)`` updates the
parameters, each rank keeping Adam's state for its own share of them only. A ``OneCycleLR``
scheduler drives the ZeRO optimizer as it would a plain one. Rank 0 then trains the same model
in one process (plain Adam, whole batches) and compares the loss curves.

    pip install -e ".[examples,mpi]"
    mpiexec -n 2 python -m mpi4py examples/data_parallel.py            # 40 epochs
    mpiexec -n 2 python -m mpi4py examples/data_parallel.py --quick    # 8 epochs

It prints each rank's optimizer-state memory and the largest difference between the two loss
curves, and writes ``data_parallel.png`` (the curves, and the state bytes per rank) and
``data_parallel.json`` under ``--out`` (default ``examples/output``). Any number of ranks
works (``-n 3`` too: each rank's gradient is weighted by its share of the batch).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from mpi4py import MPI
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import npoptim
from npoptim.distributed import ZeroRedundancyOptimizer, all_reduce_grads_

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quickstart import MLP  # the quickstart's model, backpropagation included

DEFAULT_OUT = Path(__file__).resolve().parent / "output"
COMM = MPI.COMM_WORLD
RANK, WORLD = COMM.Get_rank(), COMM.Get_size()


def state_bytes(optimizer: npoptim.Optimizer) -> int:
    """The bytes of the arrays an optimizer keeps as state."""
    return sum(
        v.nbytes for s in optimizer.state.values() for v in s.values() if isinstance(v, np.ndarray)
    )


def train(
    data: tuple[Any, ...], *, epochs: int, batch_size: int, seed: int, distributed: bool
) -> dict[str, Any]:
    """Adam with OneCycleLR on the MLP: ZeRO across the ranks, or plain in one process."""
    x_train, x_test, y_train, y_test = data
    rng = np.random.default_rng(seed)  # the same weights and batch order on every rank
    model = MLP(x_train.shape[1], 64, 10, rng)
    params = model.parameters()
    if distributed:
        optimizer: npoptim.Optimizer = ZeroRedundancyOptimizer(params, npoptim.Adam, lr=1e-3)
    else:
        optimizer = npoptim.Adam(params, lr=1e-3)
    steps = epochs * -(-len(y_train) // batch_size)
    scheduler = npoptim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=steps)
    curve: list[float] = []
    for _ in range(epochs):
        order = rng.permutation(len(y_train))
        losses = []
        for i in range(0, len(order), batch_size):
            batch = order[i : i + batch_size]
            optimizer.zero_grad()
            if distributed:
                mine = np.array_split(batch, WORLD)[RANK]  # this rank's share of the batch
                loss = model.backward(x_train[mine], y_train[mine]) if len(mine) else 0.0
                for p in params:  # weight the share's mean gradient by the share's size...
                    if p.grad is not None:
                        p.grad *= np.float32(len(mine) / len(batch))
                all_reduce_grads_(params, average=False)  # ...and sum: the batch's gradient
                loss = COMM.allreduce(loss * len(mine)) / len(batch)
            else:
                loss = model.backward(x_train[batch], y_train[batch])
            optimizer.step()
            scheduler.step()
            losses.append(loss)
        curve.append(float(np.mean(losses)))
    test_loss, test_acc = model.loss(x_test, y_test)
    local = optimizer.optim if isinstance(optimizer, ZeroRedundancyOptimizer) else optimizer
    return {
        "curve": curve,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "state_bytes": state_bytes(local),
        "params": [np.asarray(p) for p in params],
    }


def plot(dp: dict[str, Any], single: dict[str, Any], per_rank: list[int], path: Path) -> None:
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_mem = fig.subplots(1, 2)
    epochs = np.arange(1, len(dp["curve"]) + 1)
    ax_loss.plot(epochs, single["curve"], lw=4, alpha=0.4, label="one process")
    ax_loss.plot(epochs, dp["curve"], "k--", label=f"{WORLD} ranks, ZeRO Adam")
    ax_loss.set(yscale="log", xlabel="epoch", ylabel="training cross-entropy",
                title="Loss per epoch")  # fmt: skip
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_mem.bar([f"rank {r}" for r in range(WORLD)], [b / 1024 for b in per_rank], label="ZeRO")
    ax_mem.axhline(single["state_bytes"] / 1024, color="C1", label="one process")
    ax_mem.set(ylabel="Adam state (KiB)", title="Optimizer state per process")
    ax_mem.legend()
    fig.suptitle("Data-parallel training with ZeroRedundancyOptimizer(Adam) and OneCycleLR")
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 epochs instead of 40")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for PNG and JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = 8 if args.quick else 40

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, stratify=digits.target, random_state=args.seed
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-3
    data = ((x_train - mean) / std, (x_test - mean) / std, y_train, y_test)

    start = time.perf_counter()
    dp = train(data, epochs=epochs, batch_size=32, seed=args.seed, distributed=True)
    seconds = time.perf_counter() - start
    per_rank = COMM.gather(dp["state_bytes"], root=0)
    if RANK != 0:
        return {}
    single = train(data, epochs=epochs, batch_size=32, seed=args.seed, distributed=False)
    curve_diff = float(np.max(np.abs(np.subtract(dp["curve"], single["curve"]))))
    param_diff = max(
        float(np.max(np.abs(a - b))) for a, b in zip(dp["params"], single["params"], strict=True)
    )
    print(f"{WORLD} ranks, {epochs} epochs, {seconds:.1f} s")
    print(f"\n{'process':<14}{'Adam state (bytes)':>20}")
    for rank, nbytes in enumerate(per_rank):
        print(f"{'rank ' + str(rank):<14}{nbytes:>20,}")
    print(f"{'one process':<14}{single['state_bytes']:>20,}")
    print(
        f"\ntest accuracy: {dp['test_acc']:.4f} data-parallel, {single['test_acc']:.4f} one process"
    )
    print(f"largest difference of the loss curves: {curve_diff:.2e}")
    print(f"largest difference of the parameters: {param_diff:.2e}")

    args.out.mkdir(parents=True, exist_ok=True)
    plot(dp, single, per_rank, args.out / "data_parallel.png")
    summary = {
        "ranks": WORLD,
        "epochs": epochs,
        "quick": args.quick,
        "seconds": seconds,
        "state_bytes_per_rank": per_rank,
        "state_bytes_one_process": single["state_bytes"],
        "curve": dp["curve"],
        "curve_one_process": single["curve"],
        "max_curve_diff": curve_diff,
        "max_param_diff": param_diff,
        "test_acc": dp["test_acc"],
        "test_acc_one_process": single["test_acc"],
    }
    (args.out / "data_parallel.json").write_text(json.dumps(summary, indent=1))
    print(f"\nwrote {args.out / 'data_parallel.png'} and {args.out / 'data_parallel.json'}")
    return summary


if __name__ == "__main__":
    main()
