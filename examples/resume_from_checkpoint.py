"""Stop a training run, save it with ``npoptim.save``, resume it from the file: same curve.

A run is resumable when everything that decides its future is in the checkpoint: the model's
parameters, the optimizer's state (``optimizer.state_dict()``: Adam's moments and step
counts, and the per-group ``lr`` and ``betas`` that the scheduler edits), the scheduler's
state (``scheduler.state_dict()``), the random generator that draws the batches, and the
step counter. ``npoptim.save`` writes all of it to one ``.npz`` file without pickle;
``npoptim.load`` reads it back.

The example trains a small MLP with AdamW and a OneCycleLR schedule three times:

1. straight through, for ``--steps`` steps;
2. for half of them, then ``npoptim.save`` to ``checkpoint.npz``;
3. from nothing: a fresh model, optimizer, scheduler and generator, which
   ``npoptim.load`` fills from the file before the run carries on to the end;

and checks that 2 + 3 gives bit-for-bit the losses and final parameters of 1. For contrast,
a fourth run restores only the model's parameters from the file (a fresh optimizer, schedule
and generator, the usual mistake): its curve leaves the first one at once. It is another
run, not a continuation.

    python examples/resume_from_checkpoint.py            # 2,000 steps
    python examples/resume_from_checkpoint.py --quick    # 200 steps

It writes ``checkpoint.npz``, ``resume_from_checkpoint.png`` (the curves) and
``resume_from_checkpoint.json`` under ``--out`` (default ``examples/output``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.figure import Figure  # the Figure API draws with Agg and never opens a window

import npoptim
from npoptim import Parameter
from npoptim.lr_scheduler import OneCycleLR

Array = np.ndarray[Any, Any]
DEFAULT_OUT = Path(__file__).resolve().parent / "output"


def make_data(seed: int = 0) -> tuple[Array, Array]:
    """2,000 points in 20 dimensions, labelled by a random two-layer "teacher" network."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2000, 20)).astype(np.float32)
    teacher = np.tanh(x @ rng.standard_normal((20, 16))) @ rng.standard_normal((16, 3))
    return x, teacher.argmax(axis=1)


class MLP:
    """``x -> tanh(x W1 + b1) -> W2 + b2 -> softmax``, with hand-written backprop."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.params = {
            "W1": Parameter((rng.standard_normal((20, 32)) / np.sqrt(20)).astype(np.float32)),
            "b1": Parameter(np.zeros(32, dtype=np.float32)),
            "W2": Parameter((rng.standard_normal((32, 3)) / np.sqrt(32)).astype(np.float32)),
            "b2": Parameter(np.zeros(3, dtype=np.float32)),
        }

    def backward(self, x: Array, y: Array) -> float:
        """Set each parameter's ``.grad`` to d(mean cross-entropy)/d(parameter); return the loss."""
        p = self.params
        h = np.tanh(x @ p["W1"] + p["b1"])
        logits = h @ p["W2"] + p["b2"]
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        n = len(y)
        loss = float(-np.log(probs[np.arange(n), y]).mean())
        d_logits = probs
        d_logits[np.arange(n), y] -= 1
        d_logits /= n
        p["W2"].grad = h.T @ d_logits
        p["b2"].grad = d_logits.sum(axis=0)
        d_pre = (d_logits @ p["W2"].T) * (1 - h**2)  # tanh' = 1 - tanh^2
        p["W1"].grad = x.T @ d_pre
        p["b1"].grad = d_pre.sum(axis=0)
        return loss


def train(
    total_steps: int,
    *,
    stop_at: int | None = None,
    checkpoint: Path,
    resume: Literal["no", "all", "model only"] = "no",
) -> tuple[list[float], dict[str, Array]]:
    """Train from step 0, or from ``checkpoint``, up to ``stop_at`` or the end.

    Everything is built from scratch here, as a new process would build it. ``resume="all"``
    then restores all of it from ``checkpoint``; ``"model only"`` restores just the
    parameters and the step count. When ``stop_at`` is reached the run is saved to
    ``checkpoint``. Returns the losses of every step (the loaded history included) and the
    final parameters.
    """
    x, y = make_data()
    model = MLP(seed=1)
    params = list(model.params.values())
    optimizer = npoptim.AdamW(params, lr=1e-3, weight_decay=1e-2)
    scheduler = OneCycleLR(optimizer, max_lr=1e-2, total_steps=total_steps)
    rng = np.random.default_rng(2)  # draws the batches
    losses: list[float] = []
    step = 0

    if resume != "no":
        ckpt = npoptim.load(checkpoint)
        for name, p in model.params.items():
            np.copyto(p, ckpt["model"][name])  # in place: the optimizer holds these objects
        step, losses = ckpt["step"], ckpt["losses"]
        if resume == "all":
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            rng.bit_generator.state = ckpt["rng"]

    while step < total_steps:
        if step == stop_at:
            npoptim.save(
                {
                    "model": dict(model.params),  # Parameters are saved as plain arrays
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng.bit_generator.state,
                    "step": step,
                    "losses": losses,
                },
                checkpoint,
            )
            break
        idx = rng.choice(len(y), size=64, replace=False)
        optimizer.zero_grad()
        losses.append(model.backward(x[idx], y[idx]))
        optimizer.step()
        scheduler.step()
        step += 1
    return losses, {name: p.view(np.ndarray).copy() for name, p in model.params.items()}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Resume training from an npoptim checkpoint")
    parser.add_argument("--quick", action="store_true", help="200 steps instead of 2,000")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the outputs")
    args = parser.parse_args(argv)
    total = 200 if args.quick else 2000
    stop_at = total // 2
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.out / "checkpoint.npz"

    straight, params_straight = train(total, checkpoint=checkpoint)
    first_half, _ = train(total, stop_at=stop_at, checkpoint=checkpoint)
    resumed, params_resumed = train(total, checkpoint=checkpoint, resume="all")
    model_only, _ = train(total, checkpoint=checkpoint, resume="model only")

    curves_equal = straight == resumed and first_half == straight[:stop_at]
    params_equal = all(
        np.array_equal(params_straight[k], params_resumed[k]) for k in params_straight
    )
    max_diff = float(np.max(np.abs(np.subtract(straight, resumed))))
    print(f"{'run':<34}{'steps':>6}{'first loss':>12}{'last loss':>11}")
    print(f"{'straight through':<34}{len(straight):>6}{straight[0]:>12.6f}{straight[-1]:>11.6f}")
    print(
        f"{'stopped and saved':<34}{len(first_half):>6}{first_half[0]:>12.6f}"
        f"{first_half[-1]:>11.6f}"
    )
    print(
        f"{'loaded from checkpoint.npz, resumed':<34}{len(resumed) - stop_at:>6}"
        f"{resumed[stop_at]:>12.6f}{resumed[-1]:>11.6f}"
    )
    print(
        f"{'model only loaded, resumed':<34}{len(model_only) - stop_at:>6}"
        f"{model_only[stop_at]:>12.6f}{model_only[-1]:>11.6f}"
    )
    print(
        f"\nlosses identical: {curves_equal} (max |difference| {max_diff:g}); "
        f"final parameters identical: {params_equal}"
    )
    print(f"checkpoint: {checkpoint} ({checkpoint.stat().st_size:,} bytes)")

    fig = Figure(figsize=(7, 6.5), layout="constrained")
    ax_loss, ax_diff = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    steps = np.arange(1, total + 1)
    window = max(1, total // 40)

    def smooth(values: list[float], start: int = 0) -> tuple[Array, Array]:
        """The trailing moving average of ``values`` from step ``start`` on, and its steps."""
        first = max(start, window - 1)
        mean = np.convolve(values, np.ones(window) / window, mode="valid")
        return steps[first : len(values)], mean[first - window + 1 :]

    ax_loss.plot(*smooth(straight), color="0.75", lw=5, label="straight through")
    ax_loss.plot(*smooth(first_half), color="C0", label="before the checkpoint")
    ax_loss.plot(*smooth(resumed, stop_at), color="C1", label="resumed: everything loaded")
    ax_loss.plot(
        *smooth(model_only, stop_at),
        color="C3",
        ls="--",
        label="resumed: model only (fresh optimizer)",
    )
    ax_loss.set(
        ylabel=f"batch loss ({window}-step mean)",
        yscale="log",
        title="AdamW + OneCycleLR, saved with npoptim.save at the dotted line",
    )
    ax_diff.plot(  # drawn first: the exact resume (zero throughout) stays visible over it
        steps, np.abs(np.subtract(model_only, straight)), color="C3", lw=0.8, label="model only"
    )
    ax_diff.plot(
        steps, np.abs(np.subtract(resumed, straight)), color="C1", lw=2, label="everything loaded"
    )
    ax_diff.set(xlabel="step", ylabel="|loss - straight\nthrough loss|")
    for ax in (ax_loss, ax_diff):
        ax.axvline(stop_at + 0.5, color="k", ls=":")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(args.out / "resume_from_checkpoint.png", dpi=110)
    summary = {
        "quick": args.quick,
        "steps": total,
        "stop_at": stop_at,
        "curves_equal": curves_equal,
        "params_equal": params_equal,
        "max_abs_loss_diff": max_diff,
        "straight": straight,
        "resumed": resumed,
    }
    (args.out / "resume_from_checkpoint.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
