"""Matrix factorisation with row-sparse gradients: SparseAdam, sparse Adagrad, and dense Adam.

A synthetic ratings matrix of low rank (users x items, a few percent of the entries
observed, noise 0.1) is fitted by two embedding tables, ``P`` (one row per user) and ``Q``
(one row per item), with ``rating(u, i) = P[u] . Q[i]``. A batch of ratings touches a few
hundred rows of each table, so its gradient is an ``npoptim.SparseGrad``: the row indices
(repeated where a user appears twice) and one gradient row per rating. This is the NumPy form
of the sparse gradient ``torch.nn.Embedding(sparse=True)`` produces.

* ``SparseAdam`` updates only the rows in the batch (and their moments): a step costs
  O(batch), not O(table).
* ``Adagrad`` accepts the same sparse gradients.
* ``Adam`` is shown for comparison on the dense form of the same gradients: it updates every
  row at every step (rows outside the batch still move, on momentum alone), which is slower
  and changes the algorithm.

    python examples/sparse_embeddings.py            # 20,000 x 2,000 matrix, 1,000,000 ratings
    python examples/sparse_embeddings.py --quick    # 1,000 x 400 matrix, 40,000 ratings

Prints test RMSE and time per optimizer (and the RMSE of always predicting the mean) and
writes ``sparse_embeddings.png`` and ``sparse_embeddings.json`` under ``--out`` (default
``examples/output``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # the Figure API draws with Agg and never opens a window
from tqdm import tqdm

import npoptim
from npoptim import Parameter, SparseGrad

IntArray = np.ndarray[Any, np.dtype[np.int64]]
FloatArray = np.ndarray[Any, np.dtype[np.float32]]
DEFAULT_OUT = Path(__file__).resolve().parent / "output"


def make_ratings(
    n_users: int, n_items: int, n_ratings: int, rank: int, rng: np.random.Generator
) -> tuple[IntArray, IntArray, FloatArray]:
    """``n_ratings`` distinct (user, item, rating) triples of a noisy rank-``rank`` matrix."""
    flat = rng.choice(n_users * n_items, size=n_ratings, replace=False)
    users, items = np.divmod(flat, n_items)
    u_true = rng.standard_normal((n_users, rank)) / rank**0.25
    v_true = rng.standard_normal((n_items, rank)) / rank**0.25
    ratings = np.einsum("ij,ij->i", u_true[users], v_true[items])
    ratings += 0.1 * rng.standard_normal(n_ratings)
    return users, items, ratings.astype(np.float32)


class Factorisation:
    """``rating(u, i) = P[u] . Q[i]`` with an L2 penalty on the rows a batch uses."""

    def __init__(self, n_users: int, n_items: int, dim: int, reg: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.P = Parameter((0.1 * rng.standard_normal((n_users, dim))).astype(np.float32))
        self.Q = Parameter((0.1 * rng.standard_normal((n_items, dim))).astype(np.float32))
        self.reg = reg

    def predict(self, users: IntArray, items: IntArray) -> FloatArray:
        ratings: FloatArray = np.einsum("ij,ij->i", self.P[users], self.Q[items])
        return ratings

    def backward(self, users: IntArray, items: IntArray, ratings: FloatArray) -> float:
        """Set ``P.grad`` and ``Q.grad`` to row-sparse gradients; return the batch's MSE."""
        p_rows, q_rows = self.P[users], self.Q[items]
        err = np.einsum("ij,ij->i", p_rows, q_rows) - ratings
        scale = np.float32(2 / len(ratings))
        # d/dP[u] of mean (P[u].Q[i] - r)^2 + reg (|P[u]|^2 + |Q[i]|^2): one row per rating.
        # A user rated twice in the batch appears twice; SparseGrad adds the two rows up.
        self.P.grad = SparseGrad(
            users, scale * (err[:, None] * q_rows + self.reg * p_rows), self.P.shape
        )
        self.Q.grad = SparseGrad(
            items, scale * (err[:, None] * p_rows + self.reg * q_rows), self.Q.shape
        )
        return float(np.mean(err**2))


def densify(params: list[Parameter]) -> None:
    """Replace each sparse grad by its dense form (what a dense optimizer needs)."""
    for p in params:
        if isinstance(p.grad, SparseGrad):
            p.grad = p.grad.to_dense()


OPTIMIZERS: dict[str, tuple[Callable[[list[Parameter]], npoptim.Optimizer], bool]] = {
    # name: (factory, whether the grads must be made dense first)
    "SparseAdam": (lambda ps: npoptim.SparseAdam(ps, lr=0.02), False),
    "Adagrad (sparse)": (lambda ps: npoptim.Adagrad(ps, lr=0.5), False),
    "Adam (dense grads)": (lambda ps: npoptim.Adam(ps, lr=0.02), True),
}


def train(
    name: str,
    data: dict[str, tuple[IntArray, IntArray, FloatArray]],
    shape: tuple[int, int],
    *,
    epochs: int,
    batch_size: int,
    dim: int,
    seed: int,
) -> dict[str, Any]:
    make_optimizer, dense = OPTIMIZERS[name]
    model = Factorisation(*shape, dim=dim, reg=1e-2, seed=seed)
    params = [model.P, model.Q]
    optimizer = make_optimizer(params)
    users, items, ratings = data["train"]
    rng = np.random.default_rng(seed + 1)
    steps_per_epoch = -(-len(ratings) // batch_size)
    test_rmse: list[float] = []
    seconds = 0.0
    with tqdm(total=epochs * steps_per_epoch, desc=f"{name:>18}", disable=None) as bar:
        for _ in range(epochs):
            order = rng.permutation(len(ratings))
            start = time.perf_counter()
            for i in range(0, len(order), batch_size):
                idx = order[i : i + batch_size]
                optimizer.zero_grad()
                model.backward(users[idx], items[idx], ratings[idx])
                if dense:
                    densify(params)
                optimizer.step()
                bar.update()
            seconds += time.perf_counter() - start  # training time, without evaluation
            test_u, test_i, test_r = data["test"]
            test_rmse.append(float(np.sqrt(np.mean((model.predict(test_u, test_i) - test_r) ** 2))))
            bar.set_postfix(test_rmse=f"{test_rmse[-1]:.4f}")
    return {
        "optimizer": name,
        "test_rmse": test_rmse[-1],
        "curve": test_rmse,
        "seconds": seconds,
        "ms_per_step": 1000 * seconds / (epochs * steps_per_epoch),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Matrix factorisation with SparseAdam")
    parser.add_argument("--quick", action="store_true", help="a 1,000 x 400 matrix")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for PNG and JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        n_users, n_items, n_ratings, rank, batch_size = 1_000, 400, 40_000, 4, 256
    else:
        n_users, n_items, n_ratings, rank, batch_size = 20_000, 2_000, 1_000_000, 8, 1024
    epochs, dim = 8, 16

    rng = np.random.default_rng(args.seed)
    users, items, ratings = make_ratings(n_users, n_items, n_ratings, rank=rank, rng=rng)
    n_test = n_ratings // 10
    data = {
        "train": (users[n_test:], items[n_test:], ratings[n_test:]),
        "test": (users[:n_test], items[:n_test], ratings[:n_test]),
    }
    baseline = float(np.sqrt(np.mean((ratings[:n_test] - ratings[n_test:].mean()) ** 2)))
    print(
        f"{n_users} users x {n_items} items, {n_ratings - n_test} training ratings, "
        f"{n_test} test ratings (rank {rank}); tables of {n_users + n_items} rows x {dim}"
    )

    results = [
        train(
            name,
            data,
            (n_users, n_items),
            epochs=epochs,
            batch_size=batch_size,
            dim=dim,
            seed=args.seed,
        )
        for name in OPTIMIZERS
    ]

    print(f"\n{'optimizer':<20}{'test RMSE':>10}{'ms / step':>11}{'train s':>9}")
    print(f"{'(predict the mean)':<20}{baseline:>10.4f}")
    for r in results:
        print(
            f"{r['optimizer']:<20}{r['test_rmse']:>10.4f}{r['ms_per_step']:>11.3f}"
            f"{r['seconds']:>9.2f}"
        )

    args.out.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for r in results:
        ax.plot(np.arange(1, epochs + 1), r["curve"], marker="o", label=r["optimizer"])
    ax.axhline(baseline, color="gray", ls=":", label="predict the mean")
    ax.axhline(0.1, color="gray", ls="--", label="noise level")
    ax.set(
        xlabel="epoch",
        ylabel="test RMSE",
        yscale="log",
        title=f"Matrix factorisation, {n_users} x {n_items}",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="center right")
    fig.savefig(args.out / "sparse_embeddings.png", dpi=110)
    summary = {"quick": args.quick, "baseline_rmse": baseline, "results": results}
    (args.out / "sparse_embeddings.json").write_text(json.dumps(summary, indent=1))
    print(f"\nwrote {args.out / 'sparse_embeddings.png'} and .json")
    return summary


if __name__ == "__main__":
    main()
