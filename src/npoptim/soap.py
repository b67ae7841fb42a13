r"""SOAP: Adam run in the eigenbasis of Shampoo's preconditioner (beyond torch.optim)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from ._docs import _maximize_doc, _params_doc
from ._kernels.loop import Array
from ._math import lerp_
from ._validation import (
    LIKE_PARAM,
    StateKey,
    TypeCheck,
    check_betas,
    check_nonnegative,
    flag,
    integer,
    optional,
    pair,
    real,
    text,
)
from .optimizer import Optimizer, ParamsT, _dense_params_and_grads, _zeros_like
from .parameter import Parameter

__all__ = ["SOAP", "soap"]

Shape = tuple[int, ...]

#: The two tensor layouts a 4-D parameter can have when ``merge_dims`` merges its axes.
DATA_FORMATS = ("channels_first", "channels_last")

#: SOAP's per-axis state (preconditioners ``GG`` and their eigenbases ``Q``): one square
#: matrix per axis of the (merged) parameter, of the shapes the group's options give.
_PER_AXIS = StateKey("arrays", shapes=lambda group, p: _preconditioner_shapes(p.shape, group))


class SOAP(Optimizer):
    def __init__(
        self,
        params: ParamsT,
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
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "shampoo_beta": shampoo_beta,
            "weight_decay": weight_decay,
            "precondition_frequency": precondition_frequency,
            "max_precondition_dim": max_precondition_dim,
            "merge_dims": merge_dims,
            "precondition_1d": precondition_1d,
            "correct_bias": correct_bias,
            "normalize_gradient": normalize_gradient,
            "data_format": data_format,
            "eps": eps,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        "maximize": flag,
        "lr": real,
        "betas": pair(),
        "shampoo_beta": optional(real),
        "weight_decay": real,
        "precondition_frequency": integer,
        "max_precondition_dim": integer,
        "merge_dims": flag,
        "precondition_1d": flag,
        "correct_bias": flag,
        "normalize_gradient": flag,
        "data_format": text,
        "eps": real,
    }

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        check_nonnegative(lr=settings["lr"])
        check_betas(settings["betas"])
        shampoo_beta = settings["shampoo_beta"]
        if shampoo_beta is not None and not 0.0 <= shampoo_beta < 1.0:
            raise ValueError(f"Invalid shampoo_beta value: {shampoo_beta}")
        check_nonnegative(weight_decay=settings["weight_decay"])
        if not settings["precondition_frequency"] > 0:
            raise ValueError(
                f"Invalid precondition_frequency value: {settings['precondition_frequency']}"
            )
        if not settings["max_precondition_dim"] > 0:
            raise ValueError(
                f"Invalid max_precondition_dim value: {settings['max_precondition_dim']}"
            )
        check_nonnegative(eps=settings["eps"])
        if settings["data_format"] not in DATA_FORMATS:
            raise ValueError(
                f"Invalid data_format value: {settings['data_format']!r}, "
                f"expected one of {DATA_FORMATS}"
            )

    _group_flags: ClassVar[dict[str, Any]] = {"data_format": "channels_first", "maximize": False}

    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "exp_avg": LIKE_PARAM,
        "exp_avg_sq": LIKE_PARAM,
        "GG": _PER_AXIS,
        "Q": _PER_AXIS,
        "precondition_frequency": StateKey("scalar"),
        "shampoo_beta": StateKey("scalar"),
    }

    def _step_group(self, group: dict[str, Any]) -> None:
        params, grads = _dense_params_and_grads(group, "SOAP", real_only=True)
        # One step count per group, as the oracle keeps it: a parameter that misses a grad
        # still sees the group's count (and its bias correction) advance.
        group.setdefault("step", 0)
        beta2 = group["betas"][1]
        layout = _layout(group)
        for p, grad in zip(params, grads, strict=True):
            state = self.state[p]
            if len(state) == 0:  # the first gradient builds the preconditioner only
                state["exp_avg"] = _zeros_like(p)
                state["exp_avg_sq"] = _zeros_like(p)
                state["GG"] = _new_preconditioners(grad, **layout)
                state["Q"] = []  # set from the preconditioners below
                state["precondition_frequency"] = group["precondition_frequency"]
                shampoo_beta = group["shampoo_beta"]
                state["shampoo_beta"] = beta2 if shampoo_beta is None else shampoo_beta
                _update_preconditioner(
                    grad, state["GG"], state["Q"], state["exp_avg_sq"], step=group["step"],
                    shampoo_beta=state["shampoo_beta"],
                    precondition_frequency=state["precondition_frequency"], **layout,
                )  # fmt: skip
        group["step"] += 1
        if group["step"] == 1:
            return
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        soap(
            params,
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["GG"] for s in states],
            [s["Q"] for s in states],
            step=group["step"] - 1,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            shampoo_betas=[s["shampoo_beta"] for s in states],
            precondition_frequencies=[s["precondition_frequency"] for s in states],
            correct_bias=group["correct_bias"],
            normalize_gradient=group["normalize_gradient"],
            maximize=group["maximize"],
            **layout,
        )


def _layout(group: Mapping[str, Any]) -> dict[str, Any]:
    """The options that decide how a parameter's axes are preconditioned."""
    return {
        "max_precondition_dim": group["max_precondition_dim"],
        "merge_dims": group["merge_dims"],
        "precondition_1d": group["precondition_1d"],
        "data_format": group["data_format"],
    }


SOAP.__doc__ = rf"""Implements SOAP (ShampoO with Adam in the Preconditioner's eigenbasis).

    For a matrix parameter (every axis of a tensor is handled like the two of a matrix):

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \gamma \text{{ (lr)}}, \: \beta_1, \beta_2 \text{{ (betas)}},
                \: \beta_s \text{{ (shampoo\_beta, default }} \beta_2),
                \: \lambda \text{{ (weight decay)}}, \: \epsilon \text{{ (eps)}},
                \: f \text{{ (precondition frequency)}},
                \: \theta_0 \in \mathbb{{R}}^{{m \times n}} \\
            &\textbf{{initialize}}: G_1 \leftarrow \nabla_\theta f_1(\theta_0),
                \: L_1 \leftarrow (1-\beta_s) G_1 G_1^\top,
                \: R_1 \leftarrow (1-\beta_s) G_1^\top G_1, \\
            &\hspace{{5.3em}} Q_L, Q_R \leftarrow \text{{eigenvectors of }} L_1, R_1
                \text{{ (by decreasing eigenvalue)}}, \: M_1 \leftarrow 0, \: V_1 \leftarrow 0,
                \: \theta_1 \leftarrow \theta_0 \\
            &\textbf{{for}} \: t=2 \: \textbf{{to}} \: \ldots \: \textbf{{do}}
                \quad (s = t - 1) \\
            &\quad G_t \leftarrow \nabla_{{\theta}} f_t (\theta_{{t-1}})
                \quad (-\nabla_{{\theta}} f_t \text{{ if maximize}}) \\
            &\quad G'_t \leftarrow Q_L^\top G_t Q_R \quad \text{{(rotate into the eigenbasis)}} \\
            &\quad M_t \leftarrow \beta_1 M_{{t-1}} + (1 - \beta_1) G_t
                \quad \text{{(first moment, original basis)}} \\
            &\quad V_t \leftarrow \beta_2 V_{{t-1}} + (1 - \beta_2) G'^2_t
                \quad \text{{(second moment, rotated basis)}} \\
            &\quad N_t \leftarrow Q_L \big( Q_L^\top M_t Q_R / (\sqrt{{V_t}} + \epsilon) \big)
                Q_R^\top \\
            &\quad \textbf{{if}} \: \textit{{normalize\_gradient}}: \:
                N_t \leftarrow N_t / (\mathrm{{rms}}(N_t) + \epsilon) \\
            &\quad \theta_t \leftarrow \theta_{{t-1}} - \gamma
                \frac{{\sqrt{{1-\beta_2^s}}}}{{1-\beta_1^s}} N_t
                \quad \text{{(without the factor if not correct\_bias)}} \\
            &\quad \theta_t \leftarrow (1 - \gamma\lambda) \theta_t \\
            &\quad L_t \leftarrow \beta_s L_{{t-1}} + (1-\beta_s) G_t G_t^\top, \:
                R_t \leftarrow \beta_s R_{{t-1}} + (1-\beta_s) G_t^\top G_t \\
            &\quad \textbf{{if}} \: s \bmod f = 0: \: \text{{for }} (P, Q) \in
                \{{(L_t, Q_L), (R_t, Q_R)\}}: \text{{order the columns of }} Q
                \text{{ by decreasing }} \mathrm{{diag}}(Q^\top P Q) \\
            &\qquad \text{{(and the axis of }} V_t \text{{ with them),}}
                \: Q \leftarrow \mathrm{{QR}}(P Q) \\
            &\textbf{{return}} \: \theta_t
       \end{{aligned}}

    From Vyas et al., "SOAP: Improving and Stabilizing Shampoo using Adam" (ICLR 2025,
    https://arxiv.org/abs/2409.11321): Adam (here AdamW, with decoupled weight decay) run in the
    basis that diagonalizes Shampoo's two-sided preconditioner, refreshed every ``f`` steps by
    one step of power iteration. Each axis of a tensor gets its own preconditioner
    :math:`P_k`, the running average of the gradient's outer product over every other axis;
    an axis longer than ``max_precondition_dim`` is left unrotated, and so is a vector unless
    ``precondition_1d``. ``merge_dims`` first merges adjacent small axes (up to
    ``max_precondition_dim``; a 4-D ``channels_last`` tensor is first read as channels-first).
    It is beyond torch.optim; it matches ``pytorch_optimizer.SOAP`` (version 4.1.0), argument
    names and defaults included.

    As in that implementation, and unlike the paper's per-layer pseudo-code:

    * one step count :math:`t` is kept per parameter group (``group["step"]``), so a
      parameter that misses its grad at a step still has its bias correction advance; the
      first step of the group only builds the preconditioners, and a parameter whose first
      grad arrives later gets that grad folded into its preconditioner twice;
    * ``eps`` is added to :math:`\sqrt{{V_t}}` before the bias correction, which is folded
      into the step size;
    * weight decay is applied after the update, to the updated parameter.

    .. warning::
        ``pytorch_optimizer`` computes the QR factorization of the eigenbasis refresh in
        float32 whatever the parameter's dtype; npoptim computes it in the parameter's
        dtype. For float32 parameters nothing differs; for float64 the trajectories part by
        float32's rounding (in the tests, at most 6e-8 of the parameters after 21 steps, and
        1.5e-6 at ``lr=1`` with a refresh every step). Eigenvectors of a repeated eigenvalue
        are not unique, and NumPy's LAPACK and torch's pick different ones: with such a
        spectrum (a vector of more than two entries under ``precondition_1d`` has one at its
        first step) the two implementations take different, equally valid, paths. npoptim
        never changes ``p.grad`` (the oracle negates it in place under ``maximize``), keeps
        ``maximize`` and ``data_format`` per group, and gives a merged shape of a single axis
        that axis (the oracle fails on it).

    Args:
        {_params_doc}
        lr (float, optional): learning rate (default: 3e-3)
        betas (Tuple[float, float], optional): coefficients of the running averages of the
            gradient and of its square in the eigenbasis (default: (0.95, 0.95))
        shampoo_beta (float, optional): coefficient of the running average of the
            preconditioners; None means ``betas[1]`` (default: None)
        weight_decay (float, optional): decoupled weight decay coefficient (default: 1e-2)
        precondition_frequency (int, optional): steps between two refreshes of the
            eigenbasis (default: 10)
        max_precondition_dim (int, optional): axes longer than this are not rotated
            (default: 10000)
        merge_dims (bool, optional): merge adjacent small axes before preconditioning
            (default: False)
        precondition_1d (bool, optional): rotate vectors too (default: False)
        correct_bias (bool, optional): Adam's bias correction (default: True)
        normalize_gradient (bool, optional): divide the update by its root mean square
            (default: False)
        data_format (str, optional): ``"channels_first"`` or ``"channels_last"``, the layout
            of 4-D parameters for ``merge_dims`` (default: "channels_first")
        eps (float, optional): term added to the denominator (default: 1e-8)
        {_maximize_doc}

    State (``optimizer.state[p]``): ``exp_avg`` (:math:`M`), ``exp_avg_sq`` (:math:`V`),
    ``GG`` (the preconditioners :math:`P_k`, one per axis, an empty array for an axis that is
    not rotated), ``Q`` (their eigenbases), ``precondition_frequency`` and ``shampoo_beta``;
    the step count is the group's ``"step"``.

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, SOAP
        >>> w = Parameter(np.array([[1.0, 2.0], [3.0, 4.0]]))
        >>> opt = SOAP([w], lr=0.1, weight_decay=0.0)
        >>> for _ in range(3):
        ...     w.grad = 2 * w.view(np.ndarray)  # the gradient of sum(w ** 2)
        ...     opt.step()
        >>> bool(np.all(np.abs(w) < [[1.0, 2.0], [3.0, 4.0]]))
        True
    """


def soap(
    params: list[Parameter],
    grads: list[Array],
    exp_avgs: list[Array],
    exp_avg_sqs: list[Array],
    preconditioners: list[list[Array]],
    eigenbases: list[list[Array]],
    *,
    step: int,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    eps: float,
    shampoo_betas: list[float],
    precondition_frequencies: list[int],
    correct_bias: bool,
    normalize_gradient: bool,
    maximize: bool,
    max_precondition_dim: int,
    merge_dims: bool,
    precondition_1d: bool,
    data_format: str,
) -> None:
    """Functional SOAP: one step (``step`` >= 1, counted after the group's first, which only
    builds the preconditioners) updating ``params``, the moments, the preconditioners and
    their eigenbases in place (see :class:`SOAP` for the math)."""
    layout: dict[str, Any] = {
        "max_precondition_dim": max_precondition_dim,
        "merge_dims": merge_dims,
        "precondition_1d": precondition_1d,
        "data_format": data_format,
    }
    step_size = lr
    if correct_bias:  # both corrections folded into the step size
        step_size *= math.sqrt(1.0 - math.pow(beta2, step)) / (1.0 - math.pow(beta1, step))
    for i, param in enumerate(params):
        grad = -grads[i] if maximize else grads[i]
        exp_avg, exp_avg_sq, Q = exp_avgs[i], exp_avg_sqs[i], eigenbases[i]
        grad_rotated = _project(grad, Q, **layout)  # G' = Q_L^T G Q_R
        lerp_(exp_avg, grad, 1.0 - beta1)  # M ← β1 M + (1 - β1) G
        lerp_(exp_avg_sq, np.square(grad_rotated), 1.0 - beta2)  # V ← β2 V + (1 - β2) G'²
        denom = np.sqrt(exp_avg_sq)
        denom += eps
        rotated = _project(exp_avg, Q, **layout)
        rotated /= denom  # N' = Q_L^T M Q_R / (√V + ε)
        update = _project(rotated, Q, backward=True, **layout)  # N = Q_L N' Q_R^T
        if normalize_gradient:
            update /= math.sqrt(float(np.mean(np.square(update)))) + eps
        update *= -step_size
        param += update
        if weight_decay != 0.0:
            param *= 1.0 - weight_decay * lr  # decoupled, after the update
        _update_preconditioner(
            grad, preconditioners[i], Q, exp_avg_sq, step=step, shampoo_beta=shampoo_betas[i],
            precondition_frequency=precondition_frequencies[i], **layout,
        )  # fmt: skip


# ----------------------------------------------------------------------- the pieces
def _merged_shape(shape: tuple[int, ...], max_dim: int) -> list[int]:
    """Adjacent axes merged while their product stays <= ``max_dim``; a shape that merges
    into one axis is that axis (length 1 for a scalar)."""
    merged: list[int] = []
    product = 1
    for dim in shape:
        product *= dim
        if product > max_dim:
            merged.append(product // dim)
            product = dim
    merged.append(product)
    return merged


#: The axes of a channels-last 4-D tensor (N, H, W, C) in channels-first order (N, C, H, W).
_CHANNELS_FIRST = (0, 3, 1, 2)


def _channels_last(x: Array, data_format: str) -> bool:
    return data_format == "channels_last" and x.ndim == 4


def _merge(x: Array, max_dim: int, data_format: str) -> Array:
    """``x`` with its small axes merged (a channels-last 4-D tensor read as channels-first)."""
    if _channels_last(x, data_format):
        x = x.transpose(_CHANNELS_FIRST)
    return x.reshape(_merged_shape(x.shape, max_dim))


def _unmerge(x: Array, like: Array, data_format: str) -> Array:
    """Undo :func:`_merge` for an array laid out like ``like``."""
    if _channels_last(like, data_format):
        n, h, w, c = like.shape
        channels_first: Array = x.reshape(n, c, h, w)
        restored: Array = channels_first.transpose(0, 2, 3, 1)
    else:
        restored = x.reshape(like.shape)
    return restored


def _merges(x: Array, merge_dims: bool) -> bool:
    # A vector is never merged: its one axis is its preconditioner's.
    return merge_dims and x.ndim != 1


def _project(
    x: Array,
    Q: list[Array],
    *,
    max_precondition_dim: int,
    merge_dims: bool,
    precondition_1d: bool,
    data_format: str,
    backward: bool = False,
) -> Array:
    """``x`` rotated into the eigenbasis (each axis ``k`` multiplied by ``Q_k^T``), or back
    with ``backward`` (by ``Q_k``); an axis with an empty ``Q_k`` is left as it is. Returns
    a new array."""
    y = _merge(x, max_precondition_dim, data_format) if _merges(x, merge_dims) else x
    for q in Q:
        if q.size:
            # Contracting axis 0 appends the rotated axis last: after every axis, the
            # original order is back.
            y = np.tensordot(y, q, axes=([0], [1 if backward else 0]))
        else:
            y = np.moveaxis(y, 0, -1)
    y = _unmerge(y, x, data_format) if _merges(x, merge_dims) else y
    return y.copy() if np.may_share_memory(y, x) else y


def _preconditioner_shapes(shape: tuple[int, ...], group: Mapping[str, Any]) -> list[Shape]:
    """The shape of each preconditioner (and eigenbasis) of a parameter of ``shape`` under the
    group's options: ``(n, n)`` for each axis of length ``n`` of the merged shape (a vector's
    one axis is never merged), ``(0, 0)`` for an axis that is not rotated (longer than
    ``max_precondition_dim``, or a vector without ``precondition_1d``)."""
    max_dim = group["max_precondition_dim"]
    if len(shape) == 1:
        lengths = [shape[0] if group["precondition_1d"] and shape[0] <= max_dim else 0]
    elif group["merge_dims"]:
        if group["data_format"] == "channels_last" and len(shape) == 4:
            shape = tuple(shape[k] for k in _CHANNELS_FIRST)
        lengths = [n if n <= max_dim else 0 for n in _merged_shape(shape, max_dim)]
    else:
        lengths = [n if n <= max_dim else 0 for n in shape]
    return [(n, n) for n in lengths]


def _new_preconditioners(grad: Array, **layout: Any) -> list[Array]:
    """Zero preconditioners, one per axis (of the merged shape); an empty array for an axis
    that is not rotated."""
    return [np.zeros(s, dtype=grad.dtype) for s in _preconditioner_shapes(grad.shape, layout)]


def _update_preconditioner(
    grad: Array,
    GG: list[Array],
    Q: list[Array],
    exp_avg_sq: Array,
    *,
    step: int,
    shampoo_beta: float,
    precondition_frequency: int,
    max_precondition_dim: int,
    merge_dims: bool,
    precondition_1d: bool,
    data_format: str,
) -> None:
    """Fold ``grad`` into the preconditioners (:math:`P_k ← β_s P_k + (1-β_s) G_{(k)}
    G_{(k)}^\\top`), then set the eigenbases: by an eigendecomposition the first time, by
    one power-iteration step every ``precondition_frequency`` steps after that."""
    g = _merge(grad, max_precondition_dim, data_format) if _merges(grad, merge_dims) else grad
    for axis, P in enumerate(GG):
        if P.size:
            others = [k for k in range(g.ndim) if k != axis]
            lerp_(P, np.tensordot(g, g, axes=(others, others)), 1.0 - shampoo_beta)
    if len(Q) != len(GG):  # the first gradient: a full eigendecomposition
        Q[:] = [_eigenvectors(P) for P in GG]
    elif step > 0 and step % precondition_frequency == 0:
        _refresh_eigenbases(GG, Q, exp_avg_sq, max_precondition_dim, merge_dims, data_format)


def _eigenvectors(P: Array) -> Array:
    """The eigenvectors of the symmetric ``P``, by decreasing eigenvalue (empty for empty)."""
    if not P.size:
        empty: Array = P.copy()
        return empty
    _, vectors = np.linalg.eigh(P + 1e-30 * np.eye(P.shape[0], dtype=P.dtype))
    flipped: Array = np.ascontiguousarray(vectors[:, ::-1])
    return flipped


def _refresh_eigenbases(
    GG: list[Array],
    Q: list[Array],
    exp_avg_sq: Array,
    max_precondition_dim: int,
    merge_dims: bool,
    data_format: str,
) -> None:
    """One power-iteration step per axis: order the columns of ``Q_k`` by the eigenvalue
    estimates :math:`\\mathrm{diag}(Q_k^\\top P_k Q_k)`, largest first, permute that axis of
    ``exp_avg_sq`` alike, and replace ``Q_k`` by the Q factor of :math:`P_k Q_k`."""
    merged = _merges(exp_avg_sq, merge_dims)
    v = _merge(exp_avg_sq, max_precondition_dim, data_format) if merged else exp_avg_sq
    for axis, (P, q) in enumerate(zip(GG, Q, strict=True)):
        if not P.size:
            continue
        power = P @ q
        estimates = (q * power).sum(axis=0)
        order = np.argsort(-estimates, kind="stable")
        v = np.take(v, order, axis=axis)
        Q[axis] = np.linalg.qr(power[:, order])[0]
    exp_avg_sq[...] = _unmerge(v, exp_avg_sq, data_format) if merged else v
