"""Train a two-layer MLP on scikit-learn's digits with seven npoptim optimizers.

The model is written out in NumPy, forward pass and backpropagation both; npoptim does the
rest, exactly as torch.optim would: an optimizer, a learning-rate scheduler stepped once per
batch, and gradient clipping before every step. Two optimizers from beyond torch.optim join
in: Lion, and Schedule-Free AdamW, which needs no scheduler but is switched to ``train()``
before training steps and to ``eval()`` before the model is evaluated.

    pip install -e ".[examples]"
    python examples/quickstart.py            # 40 epochs per optimizer, 17 s of CPU time
    python examples/quickstart.py --quick    # 8 epochs per optimizer, a few seconds

It prints a table of test accuracy, test loss and time per optimizer, and writes
``quickstart.png`` (the loss and accuracy curves) and ``quickstart.json`` (every number in the
table and the curves) under ``--out`` (default ``examples/output``).
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
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import npoptim
from npoptim import Parameter
from npoptim.lr_scheduler import (
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    LRScheduler,
    OneCycleLR,
    SequentialLR,
    StepLR,
)

Array = np.ndarray[Any, np.dtype[np.float32]]
DEFAULT_OUT = Path(__file__).resolve().parent / "output"


class MLP:
    """``x -> relu(x W1 + b1) -> W2 + b2 -> softmax``, trained with cross-entropy."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, rng: np.random.Generator) -> None:
        # He initialisation for the ReLU layer, Glorot-like for the output layer.
        self.W1 = Parameter(rng.normal(0, np.sqrt(2 / n_in), (n_in, n_hidden)).astype(np.float32))
        self.b1 = Parameter(np.zeros(n_hidden, dtype=np.float32))
        self.W2 = Parameter(
            rng.normal(0, np.sqrt(1 / n_hidden), (n_hidden, n_out)).astype(np.float32)
        )
        self.b2 = Parameter(np.zeros(n_out, dtype=np.float32))

    def parameters(self) -> list[Parameter]:
        return [self.W1, self.b1, self.W2, self.b2]

    def forward(self, x: Array) -> tuple[Array, Array]:
        """The hidden pre-activations and the class probabilities."""
        h_pre = x @ self.W1 + self.b1  # arithmetic on Parameters gives plain arrays
        logits = np.maximum(h_pre, 0) @ self.W2 + self.b2
        logits -= logits.max(axis=1, keepdims=True)  # a stable softmax
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        return h_pre, probs

    def loss(self, x: Array, y: np.ndarray[Any, Any]) -> tuple[float, float]:
        """Mean cross-entropy and accuracy on ``(x, y)``; no gradients."""
        _, probs = self.forward(x)
        loss = -np.log(probs[np.arange(len(y)), y] + 1e-12).mean()
        return float(loss), float((probs.argmax(axis=1) == y).mean())

    def backward(self, x: Array, y: np.ndarray[Any, Any]) -> float:
        """Set each parameter's ``.grad`` to d(mean cross-entropy)/d(parameter); return the loss."""
        h_pre, probs = self.forward(x)
        n = len(y)
        loss = -np.log(probs[np.arange(n), y] + 1e-12).mean()
        d_logits = probs  # softmax + cross-entropy: dL/dlogits = (p - onehot(y)) / n
        d_logits[np.arange(n), y] -= 1
        d_logits /= n
        h = np.maximum(h_pre, 0)
        self.W2.grad = h.T @ d_logits
        self.b2.grad = d_logits.sum(axis=0)
        d_h = d_logits @ self.W2.T
        d_h[h_pre <= 0] = 0  # ReLU passes gradient only where it was active
        self.W1.grad = x.T @ d_h
        self.b1.grad = d_h.sum(axis=0)
        return float(loss)


# Each recipe builds an optimizer and a scheduler that is stepped once per batch, over
# `total` batches (None for Schedule-Free, whose averaging replaces the schedule). They are
# chosen to show the range of npoptim.lr_scheduler.
Recipe = Callable[[list[Parameter], int], tuple[npoptim.Optimizer, LRScheduler | None]]


def sgd_momentum(params: list[Parameter], total: int) -> tuple[npoptim.Optimizer, LRScheduler]:
    opt = npoptim.SGD(params, lr=0.05, momentum=0.9, nesterov=True)
    return opt, CosineAnnealingLR(opt, T_max=total)


def adam(params: list[Parameter], total: int) -> tuple[npoptim.Optimizer, LRScheduler]:
    opt = npoptim.Adam(params, lr=1e-3)
    return opt, OneCycleLR(opt, max_lr=1e-2, total_steps=total)


def adamw(params: list[Parameter], total: int) -> tuple[npoptim.Optimizer, LRScheduler]:
    opt = npoptim.AdamW(params, lr=3e-3, weight_decay=1e-2)
    warmup = max(1, total // 10)
    return opt, SequentialLR(
        opt,
        [
            LinearLR(opt, start_factor=0.1, total_iters=warmup),
            CosineAnnealingLR(opt, total - warmup),
        ],
        milestones=[warmup],
    )


def rmsprop(params: list[Parameter], total: int) -> tuple[npoptim.Optimizer, LRScheduler]:
    opt = npoptim.RMSprop(params, lr=1e-3)
    return opt, StepLR(opt, step_size=max(1, total // 3), gamma=0.3)


def adagrad(params: list[Parameter], total: int) -> tuple[npoptim.Optimizer, LRScheduler]:
    opt = npoptim.Adagrad(params, lr=0.05)
    return opt, ExponentialLR(opt, gamma=0.1 ** (1 / total))  # lr / 10 by the end


def lion(params: list[Parameter], total: int) -> tuple[npoptim.Optimizer, LRScheduler]:
    opt = npoptim.Lion(params, lr=1e-3, weight_decay=1e-1)  # lr 3x below AdamW's
    return opt, CosineAnnealingLR(opt, T_max=total)


def schedule_free(params: list[Parameter], total: int) -> tuple[npoptim.Optimizer, None]:
    return npoptim.AdamWScheduleFree(params, lr=5e-3, warmup_steps=total // 20), None


RECIPES: dict[str, Recipe] = {
    "SGD+momentum": sgd_momentum,
    "Adam": adam,
    "AdamW": adamw,
    "RMSprop": rmsprop,
    "Adagrad": adagrad,
    "Lion": lion,
    "AdamWScheduleFree": schedule_free,
}


def train(
    name: str,
    recipe: Recipe,
    data: tuple[Array, Array, np.ndarray[Any, Any], np.ndarray[Any, Any]],
    *,
    epochs: int,
    batch_size: int,
    hidden: int,
    seed: int,
    max_grad_norm: float,
) -> dict[str, Any]:
    x_train, x_test, y_train, y_test = data
    rng = np.random.default_rng(seed)  # the same initial weights and batches for every run
    model = MLP(x_train.shape[1], hidden, 10, rng)
    params = model.parameters()
    batches_per_epoch = -(-len(y_train) // batch_size)
    optimizer, scheduler = recipe(params, epochs * batches_per_epoch)
    # Schedule-Free: the parameters hold its training point y for steps, its average x to evaluate
    schedule_free = optimizer if isinstance(optimizer, npoptim.AdamWScheduleFree) else None

    curves: dict[str, list[float]] = {"train_loss": [], "test_loss": [], "test_acc": []}
    start = time.perf_counter()
    # disable=None: a bar on a terminal, nothing when the output is piped (tests, CI logs).
    with tqdm(total=epochs * batches_per_epoch, desc=f"{name:>12}", disable=None) as bar:
        for _ in range(epochs):
            if schedule_free:
                schedule_free.train()
            order = rng.permutation(len(y_train))
            batch_losses = []
            for i in range(0, len(order), batch_size):
                idx = order[i : i + batch_size]
                optimizer.zero_grad()
                batch_losses.append(model.backward(x_train[idx], y_train[idx]))
                npoptim.clip_grad_norm_(params, max_norm=max_grad_norm)
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                bar.update()
            if schedule_free:
                schedule_free.eval()
            test_loss, test_acc = model.loss(x_test, y_test)
            curves["train_loss"].append(float(np.mean(batch_losses)))
            curves["test_loss"].append(test_loss)
            curves["test_acc"].append(test_acc)
            bar.set_postfix(loss=f"{curves['train_loss'][-1]:.3f}", acc=f"{test_acc:.3f}")
    seconds = time.perf_counter() - start
    return {
        "optimizer": name,
        "scheduler": type(scheduler).__name__ if scheduler else "(none needed)",
        "test_acc": curves["test_acc"][-1],
        "test_loss": curves["test_loss"][-1],
        "train_loss": curves["train_loss"][-1],
        "seconds": seconds,
        "curves": curves,
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    fig = Figure(figsize=(10, 4.4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for r in results:
        epochs = np.arange(1, len(r["curves"]["train_loss"]) + 1)
        (line,) = ax_loss.plot(epochs, r["curves"]["train_loss"], label=f"{r['optimizer']} (train)")
        ax_loss.plot(epochs, r["curves"]["test_loss"], "--", color=line.get_color())
        ax_acc.plot(epochs, r["curves"]["test_acc"], color=line.get_color(), label=r["optimizer"])
    ax_loss.set(
        yscale="log",
        xlabel="epoch",
        ylabel="cross-entropy",
        title="Loss: train (solid), test (dashed)",
    )
    ax_acc.set(xlabel="epoch", ylabel="test accuracy", title="Test accuracy (from epoch 1/4 on)")
    # From the lowest accuracy any optimizer has after a quarter of the epochs: the first
    # epochs' climb is cut off, so that the finish (where the optimizers differ) is readable.
    settled = [r["curves"]["test_acc"][len(r["curves"]["test_acc"]) // 4 :] for r in results]
    low, high = min(min(acc) for acc in settled), max(max(acc) for acc in settled)
    margin = 0.15 * max(high - low, 0.01)
    ax_acc.set_ylim(max(0.0, low - margin), min(1.0, high + margin))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.legend(*ax_acc.get_legend_handles_labels(), loc="outside lower center", ncols=4)
    fig.suptitle("Two-layer MLP on digits: npoptim optimizers with a scheduler or Schedule-Free")
    fig.savefig(path, dpi=110)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 epochs instead of 40")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for PNG and JSON")
    parser.add_argument("--epochs", type=int, default=None, help="override the epoch count")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs or (8 if args.quick else 40)

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)  # pixel intensities 0..16 -> 0..1
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, stratify=digits.target, random_state=args.seed
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-3
    data = ((x_train - mean) / std, (x_test - mean) / std, y_train, y_test)
    print(f"digits: {len(y_train)} train / {len(y_test)} test images, {epochs} epochs per run")

    results = [
        train(
            name,
            recipe,
            data,
            epochs=epochs,
            batch_size=32,
            hidden=64,
            seed=args.seed,
            max_grad_norm=5.0,
        )
        for name, recipe in RECIPES.items()
    ]

    print(f"\n{'optimizer':<19}{'scheduler':<19}{'test acc':>9}{'test loss':>11}{'time (s)':>10}")
    for r in results:
        print(
            f"{r['optimizer']:<19}{r['scheduler']:<19}{r['test_acc']:>9.4f}"
            f"{r['test_loss']:>11.4f}{r['seconds']:>10.2f}"
        )

    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.out / "quickstart.png")
    summary = {"epochs": epochs, "quick": args.quick, "results": results}
    (args.out / "quickstart.json").write_text(json.dumps(summary, indent=1))
    print(f"\nwrote {args.out / 'quickstart.png'} and {args.out / 'quickstart.json'}")
    return results


if __name__ == "__main__":
    main()
