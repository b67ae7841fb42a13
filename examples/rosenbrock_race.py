"""Every npoptim optimizer on the Rosenbrock function, and a contour plot of their paths.

    f(x, y) = (1 - x)^2 + 100 (y - x^2)^2,   minimum f(1, 1) = 0,   start (-1.5, 2)

The valley is curved and badly scaled (curvatures 1 to 1000 at the minimum), the classic
stress test for an optimizer. Every optimizer gets the same start and the same number of
steps, with the learning rate that did best here on a small grid (not the default, which is
made for neural networks). A few details:

* ``Muon`` orthogonalises the update of a matrix, so its point is stored as a 1 x 2 matrix;
  on a single row that makes each update ``lr`` times the unit vector along its momentum:
  steps of a fixed length, which reach the minimum and then circle around it.
* ``SparseAdam`` gets a row-sparse gradient that holds one coordinate per step, picked at
  random, so it runs a randomised coordinate descent, moving only the coordinate it was given.
* ``LBFGS`` runs one iteration per ``step(closure)``; its closure may be called several
  times per iteration by the strong-Wolfe line search, and the table counts every call.
  Without the line search (``lr=1``), the same algorithm is shown for comparison.
* ``RAdam`` takes plain momentum steps, not normalised ones, until its variance estimate is
  trusted (the first five steps): with gradients in the hundreds they jump far.
* ``AdamW`` keeps its default ``weight_decay=1e-2``, which pulls the point towards 0: it
  minimises a slightly different function and stops just short of (1, 1).

    python examples/rosenbrock_race.py            # 2,000 steps each
    python examples/rosenbrock_race.py --quick    # 300 steps each

Prints a table (final f, distance to the minimum, the steps and gradient evaluations it took
to bring f below 1e-4) and writes ``rosenbrock_race.png`` and ``rosenbrock_race.json`` under
``--out`` (default ``examples/output``).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # the Figure API draws with Agg and never opens a window

import npoptim
from npoptim import Parameter, SparseGrad

Array = np.ndarray[Any, Any]
DEFAULT_OUT = Path(__file__).resolve().parent / "output"
START = (-1.5, 2.0)
VIEW = (np.array([-2.0, -1.0]), np.array([2.0, 3.0]))  # the valley and the start
FRAME_MAX = 50.0  # farther than this, a panel would show nothing but the excursion


def rosenbrock(x: float, y: float) -> float:
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def rosenbrock_grad(x: float, y: float) -> Array:
    return np.array([-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)])


@dataclass
class Racer:
    name: str
    make: Callable[[list[Parameter]], npoptim.Optimizer]
    shape: tuple[int, ...] = (2,)  # how the point is stored
    sparse: bool = False  # one random coordinate per step, as a SparseGrad
    closure: bool = False  # LBFGS: step(closure)


def schedule_free(
    cls: type[npoptim.AdamWScheduleFree | npoptim.SGDScheduleFree], lr: float
) -> Callable[[list[Parameter]], npoptim.Optimizer]:
    """A Schedule-Free optimizer in train mode (its steps need it; ``eval()`` would move the
    point to the averaged iterate)."""

    def make(params: list[Parameter]) -> npoptim.Optimizer:
        optimizer = cls(params, lr=lr)
        optimizer.train()
        return optimizer

    return make


RACERS = [
    # Learning rates: the best of a grid (1e-4, 2e-4, 5e-4, ..., 5, 10) for 2,000 steps.
    Racer("SGD", lambda ps: npoptim.SGD(ps, lr=2e-3)),
    Racer("SGD momentum=0.9", lambda ps: npoptim.SGD(ps, lr=1e-3, momentum=0.9)),
    Racer("SGD nesterov", lambda ps: npoptim.SGD(ps, lr=1e-3, momentum=0.9, nesterov=True)),
    Racer("Adam", lambda ps: npoptim.Adam(ps, lr=0.1)),
    Racer("AdamW", lambda ps: npoptim.AdamW(ps, lr=0.1)),
    Racer("Adam amsgrad", lambda ps: npoptim.Adam(ps, lr=0.2, amsgrad=True)),
    Racer("Adamax", lambda ps: npoptim.Adamax(ps, lr=1.0)),
    Racer("NAdam", lambda ps: npoptim.NAdam(ps, lr=0.02)),
    Racer("RAdam", lambda ps: npoptim.RAdam(ps, lr=0.01)),
    Racer("RMSprop", lambda ps: npoptim.RMSprop(ps, lr=5e-3)),
    Racer("Adagrad", lambda ps: npoptim.Adagrad(ps, lr=2.0)),
    Racer("Adadelta", lambda ps: npoptim.Adadelta(ps, lr=0.2)),
    Racer("ASGD", lambda ps: npoptim.ASGD(ps, lr=2e-3)),
    Racer("Rprop", lambda ps: npoptim.Rprop(ps, lr=1e-2)),
    Racer("Adafactor", lambda ps: npoptim.Adafactor(ps, lr=0.1)),
    Racer("Muon", lambda ps: npoptim.Muon(ps, lr=0.01, weight_decay=0.0), shape=(1, 2)),
    Racer("SparseAdam", lambda ps: npoptim.SparseAdam(ps, lr=0.05), sparse=True),
    # max_iter=1: one iteration per step() (max_eval must then be raised from its default
    # of max_iter * 5 // 4, or the line search would get no evaluations).
    Racer(
        "LBFGS strong_wolfe",
        lambda ps: npoptim.LBFGS(ps, max_iter=1, max_eval=25, line_search_fn="strong_wolfe"),
        closure=True,
    ),
    Racer("LBFGS lr=1, no search", lambda ps: npoptim.LBFGS(ps, max_iter=1), closure=True),
    # Beyond torch.optim. SOAP's point is a 1 x 2 matrix, so its two-sided preconditioner
    # rotates the step (as a vector it would be Adam unless precondition_1d=True).
    Racer("SOAP", lambda ps: npoptim.SOAP(ps, lr=0.01, weight_decay=0.0), shape=(1, 2)),
    Racer("Lookahead Adam", lambda ps: npoptim.Lookahead(npoptim.Adam(ps, lr=0.1))),
    Racer("Lion", lambda ps: npoptim.Lion(ps, lr=5e-3)),
    # LAMB's trust ratio makes each step a fraction of the point's norm (2.5 here).
    Racer("LAMB", lambda ps: npoptim.LAMB(ps, lr=2e-2)),
    Racer("AdEMAMix", lambda ps: npoptim.AdEMAMix(ps, lr=2e-2)),
    Racer("AdamWScheduleFree", schedule_free(npoptim.AdamWScheduleFree, lr=0.05)),
    Racer("SGDScheduleFree", schedule_free(npoptim.SGDScheduleFree, lr=0.01)),
    # Prodigy estimates its own step size (from d0 = 1e-6): its defaults, lr=1 included.
    Racer("Prodigy", lambda ps: npoptim.Prodigy(ps)),
    # LARS's trust ratio applies to matrices (a vector takes plain SGD steps): each step is
    # about lr x trust_coefficient x the point's norm (not shrinking near the minimum).
    Racer("LARS", lambda ps: npoptim.LARS(ps, lr=0.5, trust_coefficient=3e-3), shape=(1, 2)),
]


def race(racer: Racer, steps: int, seed: int) -> dict[str, Any]:
    point = Parameter(np.array(START).reshape(racer.shape))
    optimizer = racer.make([point])
    rng = np.random.default_rng(seed)
    evals = 0

    def closure() -> float:
        nonlocal evals
        evals += 1
        x, y = point.ravel()
        point.grad = rosenbrock_grad(x, y).reshape(racer.shape)
        return rosenbrock(x, y)

    path = [point.ravel().copy()]
    evals_after = [0]  # gradient evaluations made by the end of each step
    with np.errstate(over="ignore", invalid="ignore"):  # a racer that diverges is shown as such
        for _ in range(steps):
            optimizer.zero_grad()
            if racer.closure:
                optimizer.step(closure)
            else:
                closure()
                if racer.sparse:
                    i = rng.integers(2)
                    assert isinstance(point.grad, np.ndarray)
                    point.grad = SparseGrad([i], point.grad[[i]], point.shape)
                optimizer.step()
            path.append(point.ravel().copy())
            evals_after.append(evals)
            if not np.all(np.isfinite(point)):
                break
    xy = np.array(path)
    with np.errstate(over="ignore", invalid="ignore"):
        values = np.array([rosenbrock(x, y) for x, y in xy])
    reached = np.flatnonzero(values < 1e-4)
    final = float(values[-1])
    return {
        "optimizer": racer.name,
        "final_f": final if math.isfinite(final) else None,
        "distance": float(np.hypot(*(xy[-1] - 1))) if math.isfinite(final) else None,
        "first_step_below_1e-4": int(reached[0]) if len(reached) else None,
        "evals_to_below_1e-4": evals_after[reached[0]] if len(reached) else None,
        "gradient_evaluations": evals,
        "path": xy.tolist(),
        "f": [float(v) if math.isfinite(v) else None for v in values],
    }


def frame(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Axis limits that hold the default view and the whole path, up to |x|, |y| <= FRAME_MAX.

    Returns the lower and upper corners and whether part of the path lies beyond them.
    """
    lo = np.minimum(xy.min(axis=0), VIEW[0]) if len(xy) else VIEW[0]
    hi = np.maximum(xy.max(axis=0), VIEW[1]) if len(xy) else VIEW[1]
    clipped = bool(np.any(lo < -FRAME_MAX) or np.any(hi > FRAME_MAX))
    lo, hi = np.maximum(lo, -FRAME_MAX), np.minimum(hi, FRAME_MAX)
    pad = 0.04 * (hi - lo)
    return lo - pad, hi + pad, clipped


def plot(results: list[dict[str, Any]], steps: int, path: Path) -> None:
    ncols = 4
    nrows = -(-len(results) // ncols)
    fig = Figure(figsize=(3.4 * ncols, 3.1 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols).ravel()
    for ax, r in zip(axes, results, strict=False):
        xy = np.array(r["path"], dtype=float)
        xy = xy[np.all(np.isfinite(xy), axis=1)]
        lo, hi, clipped = frame(xy)
        gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 300), np.linspace(lo[1], hi[1], 300))
        log_f = np.log10(rosenbrock(gx, gy) + 1e-3)  # type: ignore[arg-type]
        ax.contourf(gx, gy, log_f, levels=20, cmap="Greys_r", alpha=0.6)
        ax.plot(xy[:, 0], xy[:, 1], "-", color="C3", lw=1, marker=".", ms=2)
        ax.plot(*START, "o", color="C0", ms=5)
        ax.plot(1, 1, "*", color="gold", mec="k", ms=11)
        final = "diverged" if r["final_f"] is None else f"final f = {r['final_f']:.1e}"
        first = r["first_step_below_1e-4"]
        reached = "" if first is None else f", f < 1e-4 at step {first}"
        ax.set_title(f"{r['optimizer']}\n{final}{reached}", fontsize=9)
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]))
        ax.tick_params(labelsize=7)
        if clipped:
            ax.text(0.02, 0.02, f"path leaves the frame (|x|, |y| > {FRAME_MAX:g})",
                    transform=ax.transAxes, fontsize=7, color="C3")  # fmt: skip
    for ax in axes[len(results) :]:
        ax.set_axis_off()
    fig.suptitle(
        f"Rosenbrock from (-1.5, 2) (blue): {steps} steps per optimizer; the star is the minimum;"
        " each panel is widened to show its whole path"
    )
    fig.savefig(path, dpi=100)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description="Every npoptim optimizer on Rosenbrock")
    parser.add_argument("--quick", action="store_true", help="300 steps instead of 2,000")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for PNG and JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    steps = 300 if args.quick else 2000

    results = [race(racer, steps, args.seed) for racer in RACERS]
    print(f"{'':<44}{'-- f < 1e-4 after --':>22}")
    print(f"{'optimizer':<24}{'final f':>10}{'|x - x*|':>10}{'steps':>10}{'grad evals':>12}")
    for r in results:
        final = "diverged" if r["final_f"] is None else f"{r['final_f']:.2e}"
        dist = "" if r["distance"] is None else f"{r['distance']:.2e}"
        first, evals = r["first_step_below_1e-4"], r["evals_to_below_1e-4"]
        print(
            f"{r['optimizer']:<24}{final:>10}{dist:>10}{'-' if first is None else first:>10}"
            f"{'-' if evals is None else evals:>12}"
        )

    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, steps, args.out / "rosenbrock_race.png")
    summary = {"quick": args.quick, "steps": steps, "results": results}
    (args.out / "rosenbrock_race.json").write_text(json.dumps(summary))
    print(f"\nwrote {args.out / 'rosenbrock_race.png'} and .json")
    return results


if __name__ == "__main__":
    main()
