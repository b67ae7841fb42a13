"""Fit L2-regularised logistic regression with npoptim.LBFGS, and check it against SciPy.

The problem is scikit-learn's breast-cancer data set (569 tumours, 30 features, standardised),
with the objective

    f(w, b) = mean_i log(1 + exp(-y_i (x_i . w + b))) + (lam / 2) |w|^2,   y_i in {-1, +1},

which is smooth and strictly convex: it has one minimum, so npoptim's L-BFGS and
``scipy.optimize.minimize(method="L-BFGS-B")`` must agree on it. Both keep 10 correction pairs.
npoptim runs twice: with ``line_search_fn="strong_wolfe"`` (what full-batch problems like this
one want) and with fixed steps of ``lr=1`` (torch's default, made for stochastic problems).

    python examples/lbfgs_logistic_regression.py            # four values of lam
    python examples/lbfgs_logistic_regression.py --quick    # lam = 1e-2 only

It prints a table per ``lam`` and writes ``lbfgs_logistic_regression.png`` (the gap to the
minimum against the number of function evaluations) and ``lbfgs_logistic_regression.json``
under ``--out`` (default ``examples/output``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.optimize
from matplotlib.figure import Figure  # the Figure API draws with Agg and never opens a window
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

import npoptim
from npoptim import Parameter

Array = np.ndarray[Any, np.dtype[np.float64]]
DEFAULT_OUT = Path(__file__).resolve().parent / "output"


class Objective:
    """The regularised logistic loss on ``(x, y)``; it records the loss at every evaluation."""

    def __init__(self, x: Array, y: Array, lam: float) -> None:
        self.x, self.y, self.lam = x, y, lam
        self.history: list[float] = []

    def __call__(self, w: Array, b: float) -> tuple[float, Array, float]:
        """The loss and its gradients with respect to ``w`` and ``b``."""
        z = self.y * (self.x @ w + b)  # margins
        loss = np.logaddexp(0.0, -z).mean() + 0.5 * self.lam * (w @ w)
        dz = -self.y / (1.0 + np.exp(z)) / len(self.y)  # d loss / d (x.w + b)
        self.history.append(float(loss))
        return float(loss), self.x.T @ dz + self.lam * w, float(dz.sum())


def fit_npoptim(objective: Objective, line_search_fn: str | None) -> dict[str, Any]:
    n_features = objective.x.shape[1]
    w = Parameter(np.zeros(n_features))
    b = Parameter(np.zeros(()))
    opt = npoptim.LBFGS(
        [w, b],
        lr=1,
        history_size=10,
        max_iter=500,  # one step() runs the whole optimisation ...
        max_eval=1000,
        tolerance_grad=1e-9,  # ... until max |gradient| <= 1e-9,
        tolerance_change=1e-14,  # or until the loss or the parameters stop changing
        line_search_fn=line_search_fn,
    )

    def closure() -> float:
        loss, grad_w, grad_b = objective(w.view(np.ndarray), float(b))
        w.grad = grad_w
        b.grad = np.asarray(grad_b)
        return loss

    start = time.perf_counter()
    for _ in range(5):  # a step stops at max_iter or max_eval; a few more cost nothing here
        opt.step(closure)
    seconds = time.perf_counter() - start
    loss, grad_w, grad_b = objective(w.view(np.ndarray), float(b))
    return {
        "loss": loss,
        "max_abs_grad": float(max(np.abs(grad_w).max(), abs(grad_b))),
        "evals": int(opt.state[w]["func_evals"]),
        "seconds": seconds,
        "w": w.view(np.ndarray).copy(),
        "b": float(b),
    }


def fit_scipy(objective: Objective) -> dict[str, Any]:
    n_features = objective.x.shape[1]

    def fun(theta: Array) -> tuple[float, Array]:
        loss, grad_w, grad_b = objective(theta[:-1], theta[-1])
        return loss, np.append(grad_w, grad_b)

    start = time.perf_counter()
    res = scipy.optimize.minimize(
        fun,
        np.zeros(n_features + 1),
        jac=True,
        method="L-BFGS-B",
        options={"maxcor": 10, "gtol": 1e-9, "ftol": 1e-15, "maxiter": 10_000},
    )
    seconds = time.perf_counter() - start
    return {
        "loss": float(res.fun),
        "max_abs_grad": float(np.abs(res.jac).max()),
        "evals": int(res.nfev),
        "seconds": seconds,
        "w": res.x[:-1],
        "b": float(res.x[-1]),
    }


def accuracy(x: Array, y: Array, w: Array, b: float) -> float:
    return float((np.sign(x @ w + b) == y).mean())


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="npoptim.LBFGS against SciPy's L-BFGS-B")
    parser.add_argument("--quick", action="store_true", help="one regularisation strength")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for PNG and JSON")
    args = parser.parse_args(argv)
    lams = [1e-2] if args.quick else [1e-1, 1e-2, 1e-3, 1e-4]

    data = load_breast_cancer()
    y = np.where(data.target == 1, 1.0, -1.0)
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, y, test_size=0.25, stratify=y, random_state=0
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

    methods = {
        "npoptim strong_wolfe": lambda obj: fit_npoptim(obj, "strong_wolfe"),
        "npoptim lr=1, no search": lambda obj: fit_npoptim(obj, None),
        "scipy L-BFGS-B": fit_scipy,
    }
    summary: dict[str, Any] = {"quick": args.quick, "runs": []}
    histories: dict[tuple[float, str], list[float]] = {}
    for lam in lams:
        fits = {}
        for name, fit in methods.items():
            objective = Objective(x_train, y_train, lam)
            fits[name] = fit(objective)
            histories[lam, name] = objective.history
        reference = fits["scipy L-BFGS-B"]["loss"]
        print(f"\nlam = {lam:g}  ({len(y_train)} training tumours, {x_train.shape[1]} features)")
        print(
            f"{'method':<25}{'loss':>20}{'rel. diff':>11}{'max|grad|':>11}"
            f"{'evals':>7}{'test acc':>10}{'ms':>8}"
        )
        for name, r in fits.items():
            rel = abs(r["loss"] - reference) / reference
            acc = accuracy(x_test, y_test, r["w"], r["b"])
            print(
                f"{name:<25}{r['loss']:>20.15f}{rel:>11.1e}{r['max_abs_grad']:>11.1e}"
                f"{r['evals']:>7}{acc:>10.4f}{1000 * r['seconds']:>8.1f}"
            )
            summary["runs"].append(
                {
                    "lam": lam,
                    "method": name,
                    "loss": r["loss"],
                    "rel_diff_vs_scipy": rel,
                    "max_abs_grad": r["max_abs_grad"],
                    "evals": r["evals"],
                    "test_acc": acc,
                    "seconds": r["seconds"],
                    "max_abs_param_diff_vs_scipy": float(
                        max(
                            np.abs(r["w"] - fits["scipy L-BFGS-B"]["w"]).max(),
                            abs(r["b"] - fits["scipy L-BFGS-B"]["b"]),
                        )
                    ),
                }
            )

    args.out.mkdir(parents=True, exist_ok=True)
    ncols = min(2, len(lams))
    nrows = -(-len(lams) // ncols)
    fig = Figure(figsize=(5.5 * ncols, 3.6 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True)).ravel()
    # The loss is a mean of ~430 terms, so two evaluations at the same minimum can differ by
    # ~1e-14 relative: gaps below ROUNDING are drawn on the dotted line, as "at the minimum".
    rounding = 1e-13
    styles = {  # the two npoptim runs coincide wherever every unit step is accepted: the
        # dashed curve is drawn over the solid one so that both stay visible
        "npoptim strong_wolfe": {"lw": 3.0, "alpha": 0.55},
        "npoptim lr=1, no search": {"lw": 1.4, "ls": "--"},
        "scipy L-BFGS-B": {"lw": 1.4},
    }
    for ax, lam in zip(axes, lams, strict=True):
        lowest = min(min(histories[lam, name]) for name in methods)  # of all three methods
        for name in methods:
            best_so_far = np.minimum.accumulate(histories[lam, name])
            gap = (best_so_far - lowest) / abs(lowest)
            ax.semilogy(np.arange(1, len(gap) + 1), np.maximum(gap, rounding), label=name,
                        **styles[name])  # fmt: skip
        ax.axhline(rounding, color="0.5", lw=0.8, ls=":", label="rounding level of the loss")
        ax.set(title=f"lam = {lam:g}", xlabel="function evaluations", ylim=(rounding / 3, 50))
        ax.grid(alpha=0.3)
    for ax in axes[::ncols]:
        ax.set_ylabel("(best loss so far - lowest) / lowest")
    axes[0].legend(fontsize="small")
    fig.suptitle("L-BFGS on regularised logistic regression (breast cancer)")
    fig.savefig(args.out / "lbfgs_logistic_regression.png", dpi=110)
    (args.out / "lbfgs_logistic_regression.json").write_text(json.dumps(summary, indent=1))
    print(f"\nwrote {args.out / 'lbfgs_logistic_regression.png'} and .json")
    return summary


if __name__ == "__main__":
    main()
