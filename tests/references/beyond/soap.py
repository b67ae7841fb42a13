"""SOAP (Vyas et al., 2024, "SOAP: Improving and Stabilizing Shampoo using Adam"),
Algorithms 3 and 4 of the paper, for a tensor of any order.

Each axis ``k`` of the (working) gradient :math:`G` has a Shampoo factor
:math:`P_k = \\mathrm{EMA}_{\\beta_s}(G_{(k)} G_{(k)}^\\top)`, with :math:`G_{(k)}` the
unfolding of :math:`G` along axis ``k``; :math:`Q_k` holds its eigenvectors by decreasing
eigenvalue. Adam runs on :math:`G' = G \\times_k Q_k^\\top` (every axis rotated), the first
moment kept in the original basis and rotated when used. The first gradient only sets the
factors and their eigenvectors (the authors' code skips the first update so that the current
gradient is never used in its own projection). Every ``f`` updates the eigenvectors are
refreshed by one power-iteration step, :math:`Q_k \\leftarrow \\mathrm{QR}(P_k Q_k)`, after
ordering the columns by their Rayleigh quotients and the second moment's axis with them.
Bias correction is folded into the step size and weight decay is decoupled, as in the
authors' AdamW-based code. Options as in pytorch_optimizer: an axis longer than
``max_precondition_dim`` is not rotated, nor is a vector without ``precondition_1d``;
``merge_dims`` first merges adjacent axes while their product stays within
``max_precondition_dim`` (4-D ``channels_last`` tensors are read channels-first).
"""

from __future__ import annotations

from typing import Any

import numpy as np

NAME = "SOAP"


def mode_product(X: np.ndarray, A: np.ndarray, k: int) -> np.ndarray:
    """X ×_k A: the matrix A applied to every fibre of X along axis k."""
    return np.moveaxis(np.tensordot(A, X, axes=([1], [k])), 0, k)


def unfold(X: np.ndarray, k: int) -> np.ndarray:
    """The mode-k unfolding: axis k as rows, all other axes flattened into columns."""
    return np.moveaxis(X, k, 0).reshape(X.shape[k], -1)


def working_shape(shape: tuple[int, ...], max_dim: int) -> tuple[int, ...]:
    """Adjacent axes merged greedily while their product stays within ``max_dim``."""
    merged, product = [], 1
    for d in shape:
        if product * d > max_dim:
            merged.append(product)
            product = d
        else:
            product *= d
    merged.append(product)
    return tuple(merged)


def reference(
    p: np.ndarray,
    g: np.ndarray,
    state: dict[str, Any],
    t: int,
    lr: float = 3e-3,
    betas: tuple[float, float] = (0.95, 0.95),
    shampoo_beta: float | None = None,
    weight_decay: float = 1e-2,
    precondition_frequency: int = 10,
    max_precondition_dim: int = 10000,
    merge_dims: bool = False,
    precondition_1d: bool = False,
    correct_bias: bool = True,
    normalize_gradient: bool = False,
    data_format: str = "channels_first",
    eps: float = 1e-8,
    maximize: bool = False,
) -> np.ndarray:
    beta1, beta2 = betas
    beta_s = beta2 if shampoo_beta is None else shampoo_beta
    if maximize:
        g = -g
    channels_last = data_format == "channels_last" and g.ndim == 4

    def to_work(X: np.ndarray) -> np.ndarray:
        if not merge_dims or X.ndim == 1:
            return X
        if channels_last:
            X = np.transpose(X, (0, 3, 1, 2))
        return X.reshape(working_shape(X.shape, max_precondition_dim))

    def from_work(X: np.ndarray) -> np.ndarray:
        if not merge_dims or p.ndim == 1:
            return X
        if channels_last:
            n, h, w, c = p.shape
            return np.transpose(X.reshape(n, c, h, w), (0, 2, 3, 1))
        return X.reshape(p.shape)

    G = to_work(g)
    if g.ndim == 1:  # a vector (never merged); a tensor merged into one axis is not one
        axes = [0] if precondition_1d and G.shape[0] <= max_precondition_dim else []
    else:
        axes = [k for k in range(G.ndim) if G.shape[k] <= max_precondition_dim]

    def fold_in(G: np.ndarray) -> None:  # P_k ← β_s P_k + (1 - β_s) G_(k) G_(k)^T
        for k in axes:
            Gk = unfold(G, k)
            state["P"][k] = beta_s * state["P"][k] + (1 - beta_s) * (Gk @ Gk.T)

    if t == 1:  # the first gradient sets the preconditioner and its eigenbasis only
        state["P"] = {k: np.zeros((G.shape[k], G.shape[k])) for k in axes}
        fold_in(G)
        state["Q"] = {k: np.linalg.eigh(state["P"][k])[1][:, ::-1] for k in axes}
        state["M"] = np.zeros_like(G)
        state["V"] = np.zeros_like(G)
        return p

    Q = state["Q"]

    def rotate(X: np.ndarray) -> np.ndarray:
        for k in axes:
            X = mode_product(X, Q[k].T, k)
        return X

    def rotate_back(X: np.ndarray) -> np.ndarray:
        for k in axes:
            X = mode_product(X, Q[k], k)
        return X

    G_rot = rotate(G)
    state["M"] = beta1 * state["M"] + (1 - beta1) * G  # first moment, original basis
    state["V"] = beta2 * state["V"] + (1 - beta2) * G_rot**2  # second moment, eigenbasis
    N = rotate_back(rotate(state["M"]) / (np.sqrt(state["V"]) + eps))
    if normalize_gradient:
        N = N / (np.sqrt(np.mean(N**2)) + eps)
    s = t - 1  # Adam updates so far, this one included
    step_size = lr * np.sqrt(1 - beta2**s) / (1 - beta1**s) if correct_bias else lr
    p = p - step_size * from_work(N)
    p = p - lr * weight_decay * p  # decoupled weight decay, after the update
    fold_in(G)
    if s % precondition_frequency == 0:  # Algorithm 4: one power-iteration step per axis
        for k in axes:
            P, Qk = state["P"][k], Q[k]
            order = np.argsort(-np.diag(Qk.T @ P @ Qk), kind="stable")
            state["V"] = np.take(state["V"], order, axis=k)
            Q[k] = np.linalg.qr(P @ Qk[:, order])[0]
    return p
