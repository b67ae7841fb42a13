"""Gradients from the ``autograd`` package, updates from npoptim.

``autograd`` differentiates ordinary NumPy code, so nothing has to be derived by hand: write
the loss, ask ``autograd.value_and_grad`` for its gradient with respect to a dict of arrays,
and hand the result to npoptim by assigning each parameter's ``.grad``.

autograd only differentiates plain ``np.ndarray`` s, not subclasses such as
``npoptim.Parameter``; ``p.view(np.ndarray)`` is a plain array that shares ``p``'s memory, so
it is made once and sees every in-place update the optimizer makes.

The model is a 1-32-32-1 tanh network fitted to 256 noisy samples of
``f(x) = sin(3x) + 0.3 x^2`` on [-2, 2], twice: with Adam on minibatches under a cosine
schedule, and with full-batch LBFGS (``line_search_fn="strong_wolfe"``, the closure calling
autograd).

    python examples/autograd_mlp.py            # 3,000 Adam steps, 300 LBFGS iterations
    python examples/autograd_mlp.py --quick    # 1,000 Adam steps, 100 LBFGS iterations

Prints the error of each fit against the noiseless ``f`` and writes ``autograd_mlp.png`` and
``autograd_mlp.json`` under ``--out`` (default ``examples/output``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import autograd.numpy as anp
import numpy as np
from autograd import value_and_grad
from matplotlib.figure import Figure  # the Figure API draws with Agg and never opens a window
from tqdm import tqdm

import npoptim
from npoptim import Parameter
from npoptim.lr_scheduler import CosineAnnealingLR

Array = np.ndarray[Any, Any]
Params = dict[str, Array]
DEFAULT_OUT = Path(__file__).resolve().parent / "output"


def target(x: Array) -> Array:
    return np.asarray(np.sin(3 * x) + 0.3 * x**2)


def predict(params: Params, x: Array) -> Any:  # an ArrayBox while autograd traces it
    """The network, in ``autograd.numpy`` so that autograd can trace it."""
    h = anp.tanh(x @ params["W1"] + params["b1"])
    h = anp.tanh(h @ params["W2"] + params["b2"])
    return h @ params["W3"] + params["b3"]


def mse(params: Params, x: Array, y: Array) -> Any:  # an ArrayBox while autograd traces it
    return anp.mean((predict(params, x) - y) ** 2)


loss_and_grad: Callable[[Params, Array, Array], tuple[float, Params]] = value_and_grad(mse)


def init(seed: int) -> dict[str, Parameter]:
    rng = np.random.default_rng(seed)
    sizes = [(1, 32), (32, 32), (32, 1)]
    params = {}
    for i, (n_in, n_out) in enumerate(sizes, start=1):
        params[f"W{i}"] = Parameter(rng.standard_normal((n_in, n_out)) / np.sqrt(n_in))
        params[f"b{i}"] = Parameter(np.zeros(n_out))
    return params


def set_grads(params: dict[str, Parameter], grads: Params) -> None:
    for name, p in params.items():
        p.grad = grads[name]


def fit_adam(x: Array, y: Array, steps: int, seed: int) -> dict[str, Parameter]:
    params = init(seed)
    plain = {name: p.view(np.ndarray) for name, p in params.items()}  # shares memory
    optimizer = npoptim.Adam(params.values(), lr=2e-2)
    scheduler = CosineAnnealingLR(optimizer, T_max=steps)
    rng = np.random.default_rng(seed)
    for _ in tqdm(range(steps), desc="Adam", disable=None):
        idx = rng.choice(len(x), size=64, replace=False)
        optimizer.zero_grad()
        _, grads = loss_and_grad(plain, x[idx], y[idx])
        set_grads(params, grads)
        optimizer.step()
        scheduler.step()
    return params


def fit_lbfgs(x: Array, y: Array, iterations: int, seed: int) -> dict[str, Parameter]:
    params = init(seed)
    plain = {name: p.view(np.ndarray) for name, p in params.items()}
    optimizer = npoptim.LBFGS(
        params.values(),
        max_iter=iterations,
        history_size=20,
        tolerance_grad=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> float:
        loss, grads = loss_and_grad(plain, x, y)
        set_grads(params, grads)
        return float(loss)

    optimizer.step(closure)  # one step runs up to max_iter iterations
    return params


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="autograd gradients, npoptim updates")
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for PNG and JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    adam_steps, lbfgs_iterations = (1000, 100) if args.quick else (3000, 300)

    rng = np.random.default_rng(args.seed)
    x = rng.uniform(-2, 2, (256, 1))
    y = target(x) + 0.1 * rng.standard_normal(x.shape)
    grid = np.linspace(-2, 2, 401)[:, None]

    fits: dict[str, dict[str, Any]] = {}
    for name, fit, budget in [
        (f"Adam + cosine, {adam_steps} steps", fit_adam, adam_steps),
        (f"LBFGS strong_wolfe, {lbfgs_iterations} it.", fit_lbfgs, lbfgs_iterations),
    ]:
        start = time.perf_counter()
        params = fit(x, y, budget, args.seed)
        seconds = time.perf_counter() - start
        plain = {k: p.view(np.ndarray) for k, p in params.items()}
        fits[name] = {
            "train_mse": float(mse(plain, x, y)),
            "rmse_vs_f": float(np.sqrt(np.mean((predict(plain, grid) - target(grid)) ** 2))),
            "seconds": seconds,
            "curve": predict(plain, grid).ravel().tolist(),
        }

    print(f"\n{'fit':<34}{'train MSE':>10}{'RMSE vs f':>11}{'time (s)':>10}")
    for name, r in fits.items():
        print(f"{name:<34}{r['train_mse']:>10.4f}{r['rmse_vs_f']:>11.4f}{r['seconds']:>10.2f}")
    print("(the noise has variance 0.01: a train MSE near 0.01 is a good fit)")

    args.out.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    ax.scatter(x, y, s=6, color="0.6", label="noisy samples")
    ax.plot(grid, target(grid), color="k", lw=1, ls=":", label="f(x) = sin 3x + 0.3 x²")
    for name, r in fits.items():
        ax.plot(grid, r["curve"], lw=1.5, label=name)
    ax.set(xlabel="x", ylabel="y", title="A tanh MLP, gradients by autograd, updates by npoptim")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    fig.savefig(args.out / "autograd_mlp.png", dpi=110)
    summary = {"quick": args.quick, "fits": fits}
    (args.out / "autograd_mlp.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {args.out / 'autograd_mlp.png'} and .json")
    return summary


if __name__ == "__main__":
    main()
