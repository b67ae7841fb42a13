r"""Adafactor: adaptive steps from a factored (row times column) second moment."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from ._docs import _maximize_doc, _params_doc
from ._kernels.loop import CHUNK_BYTES, Array, parallel_map, temporaries
from ._math import lerp_
from ._validation import STEP, StateKey, TypeCheck, optional, pair, real
from .optimizer import Optimizer, ParamsT, _zeros_like
from .parameter import Parameter

__all__ = ["Adafactor", "adafactor"]


class Adafactor(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "beta2_decay": beta2_decay,
            "eps": eps,
            "d": d,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        **Optimizer._hyperparameters,
        "lr": real,
        "beta2_decay": real,
        "eps": pair(optional(real), real),
        "d": real,
        "weight_decay": real,
    }
    # A matrix (or stack of them) keeps factored row and column variances, a vector the
    # full one.
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": STEP,
        "row_var": StateKey(shape=lambda g, p: (*p.shape[:-1], 1) if p.ndim > 1 else None),
        "col_var": StateKey(
            shape=lambda g, p: (*p.shape[:-2], 1, p.shape[-1]) if p.ndim > 1 else None
        ),
        "variance": StateKey(shape=lambda g, p: None if p.ndim > 1 else tuple(p.shape)),
    }

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        lr, beta2_decay, eps = settings["lr"], settings["beta2_decay"], settings["eps"]
        d, weight_decay = settings["d"], settings["weight_decay"]
        if not 0.0 <= lr:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not 0.0 >= beta2_decay:
            raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
        if eps[0] is not None and not 0.0 <= eps[0]:
            raise ValueError(f"epsilon1 should be >= 0 but is: {eps[0]}")
        if not 0.0 <= eps[1]:
            raise ValueError(f"epsilon2 should be >= 0 but is: {eps[1]}")
        if not 1.0 <= d:
            raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"weight_decay should be >= 0 but is: {weight_decay}")

    _group_flags: ClassVar[dict[str, Any]] = {
        "foreach": None,
        "maximize": False,
    }

    @staticmethod
    def _new_state(group: dict[str, Any], p: Parameter, state: dict[str, Any]) -> None:
        if p.ndim > 1:  # factored over the last two axes
            state["row_var"] = np.zeros((*p.shape[:-1], 1), dtype=p.dtype)
            state["col_var"] = np.zeros((*p.shape[:-2], 1, p.shape[-1]), p.dtype)
        else:
            state["variance"] = _zeros_like(p)

    def _step_group(self, group: dict[str, Any]) -> None:
        params, grads, states = self._init_group(
            group, self._new_state, "Adafactor", real_only=True
        )
        eps1, eps2 = group["eps"]
        adafactor(
            params,
            grads,
            [s.get("row_var") for s in states],
            [s.get("col_var") for s in states],
            [s.get("variance") for s in states],
            [s["step"] for s in states],
            d=group["d"],
            lr=group["lr"],
            beta2_decay=group["beta2_decay"],
            weight_decay=group["weight_decay"],
            eps1=eps1,
            eps2=eps2,
            maximize=group["maximize"],
            foreach=group["foreach"],
        )


Adafactor.__doc__ = rf"""Implements the Adafactor algorithm.

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \gamma \text{{ (lr)}}, \: \tau \text{{ (beta2\_decay)}},
                \: \theta_0 \text{{ (params)}}, \: f(\theta) \text{{ (objective)}},
                \: \epsilon_1, \epsilon_2 \text{{ (eps)}}, \: d \text{{ (clipping threshold)}},
                \: \lambda \text{{ (weight decay)}}, \: \textit{{maximize}} \\
            &\textbf{{initialize}}: R_0 \leftarrow 0 \text{{ (row factor)}},
                \: C_0 \leftarrow 0 \text{{ (column factor)}},
                \: \widehat{{V}}_0 \leftarrow 0 \text{{ (second moment of vectors)}} \\
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad G_t \leftarrow \nabla_{{\theta}} f_t (\theta_{{t-1}})
                \quad (-\nabla_{{\theta}} f_t (\theta_{{t-1}}) \text{{ if maximize}}) \\
            &\quad \widehat{{\beta}}_{{2_t}} \leftarrow 1 - t^{{\tau}}, \quad
                \rho_t \leftarrow \min(\gamma, 1/\sqrt{{t}}), \quad
                \alpha_t \leftarrow \max(\epsilon_2, \mathrm{{RMS}}(\theta_{{t-1}})) \rho_t \\
            &\quad \theta_{{t-1}} \leftarrow \theta_{{t-1}} - \gamma \lambda \theta_{{t-1}} \\
            &\quad \textbf{{if}} \: \dim(G_t) > 1: \\
            &\qquad R_t \leftarrow \widehat{{\beta}}_{{2_t}} R_{{t-1}}
                + (1 - \widehat{{\beta}}_{{2_t}}) \mathrm{{mean}}_{{cols}}(G_t \odot G_t) \\
            &\qquad C_t \leftarrow \widehat{{\beta}}_{{2_t}} C_{{t-1}}
                + (1 - \widehat{{\beta}}_{{2_t}}) \mathrm{{mean}}_{{rows}}(G_t \odot G_t) \\
            &\qquad \widehat{{V}}_t \leftarrow R_t C_t / \max(\mathrm{{mean}}(R_t), \epsilon_1) \\
            &\quad \textbf{{else}}: \: \widehat{{V}}_t \leftarrow \widehat{{\beta}}_{{2_t}}
                \widehat{{V}}_{{t-1}} + (1 - \widehat{{\beta}}_{{2_t}}) G_t \odot G_t \\
            &\quad U_t \leftarrow G_t / \max(\sqrt{{\widehat{{V}}_t}}, \epsilon_1) \\
            &\quad \widehat{{U}}_t \leftarrow U_t / \max(1, \mathrm{{RMS}}(U_t) / d) \\
            &\quad \theta_t \leftarrow \theta_{{t-1}} - \alpha_t \widehat{{U}}_t \\
            &\textbf{{return}} \: \theta_t
       \end{{aligned}}

    From Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost"
    (ICML 2018, https://arxiv.org/abs/1804.04235), in torch's variant: ``lr`` caps the relative
    step size :math:`\rho_t` (the paper uses 0.01) and scales a decoupled weight decay;
    :math:`\epsilon_1` guards the variance estimate and the update rather than being added to
    the squared gradient; the factors hold means rather than sums. A parameter with two or
    more dimensions keeps factors over its last two axes (the others are batch axes); vectors
    and scalars keep a full second moment. Complex parameters are refused, as in torch.

    Args:
        {_params_doc}
        lr (float, optional): the maximum relative step size :math:`\rho_t`, also the
            coefficient of the decoupled weight decay (default: 1e-2)
        beta2_decay (float, optional): the decay rate :math:`\tau` of
            :math:`\widehat{{\beta}}_{{2_t}}`, the coefficient of the running average of the
            squared gradient (default: -0.8)
        eps (Tuple[float | None, float], optional): :math:`\epsilon_1`, the floor of the
            variance estimate's square root (None: the machine epsilon of the parameter's
            dtype), and :math:`\epsilon_2`, the floor of the parameter RMS that scales the
            step (default: (None, 1e-3))
        d (float, optional): the clipping threshold :math:`d` of the update's RMS
            (default: 1.0)
        weight_decay (float, optional): weight decay coefficient (default: 0.0)
        foreach (bool, optional): whether the multi-tensor implementation is used; npoptim
            computes the same values either way (default: None)
        {_maximize_doc}

    State (``optimizer.state[p]``): ``step`` (a float) and, for parameters with two or more
    dimensions, ``row_var`` (:math:`R_t`, shape ``(..., m, 1)``) and ``col_var``
    (:math:`C_t`, shape ``(..., 1, n)``); for vectors and scalars, ``variance``
    (:math:`\widehat{{V}}_t`).

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, Adafactor
        >>> w = Parameter(np.array([[1.0, -2.0], [2.0, 1.0]]))
        >>> opt = Adafactor([w], lr=0.1)
        >>> w.grad = 2 * w.view(np.ndarray)
        >>> opt.step()
        >>> w.round(4)
        array([[ 0.9, -1.8],
               [ 1.8,  0.9]])
    """


def adafactor(
    params: list[Parameter],
    grads: list[Array],
    row_vars: list[Array | None],
    col_vars: list[Array | None],
    variances: list[Array | None],
    state_steps: list[float],
    *,
    d: float,
    lr: float,
    beta2_decay: float,
    weight_decay: float,
    eps1: float | None,
    eps2: float,
    maximize: bool,
    foreach: bool | None = None,
) -> None:
    """Functional Adafactor: updates ``params`` and the second-moment arrays in place.

    Parameters with two or more dimensions use ``row_vars[i]`` and ``col_vars[i]`` (and
    ``variances[i]`` is None), the others ``variances[i]``. ``state_steps[i]`` is the step
    number :math:`t` of this update. See :class:`Adafactor` for the math.
    """
    for i, param in enumerate(params):
        grad = grads[i]
        if eps1 is None:
            # as torch does, the first parameter's dtype fixes eps1 for the rest of the group
            eps1 = float(np.finfo(param.dtype).eps)
        t = state_steps[i]
        weight = t**beta2_decay  # 1 - β̂2_t, the weight of the new squared gradient
        rho = min(lr, 1 / t**0.5)
        alpha = max(eps2, float(np.linalg.norm(param)) / param.size**0.5) * rho
        if weight_decay != 0:
            param *= 1 - lr * weight_decay  # decoupled weight decay
        if grad.ndim > 1:
            row_var, col_var = row_vars[i], col_vars[i]
            assert row_var is not None and col_var is not None
            n_rows, n_cols = grad.shape[-2:]
            # mean of G⊙G along each row / column, without a parameter-sized G⊙G
            row_mean = np.einsum("...ij,...ij->...i", grad, grad)[..., None] / n_cols
            col_mean = np.einsum("...ij,...ij->...j", grad, grad)[..., None, :] / n_rows
            lerp_(row_var, row_mean, weight)  # R_t
            lerp_(col_var, col_mean, weight)  # C_t
        # U_t is computed a piece at a time, twice: once for its norm (a vector's V̂_t is
        # updated on that pass), once to apply it; the pieces are shared among threads
        pieces = _pieces_of(param, grad, row_vars[i], col_vars[i], variances[i], eps1)

        def squared_norm(piece: Piece, weight: float = weight, eps1: float = eps1) -> float:
            u = _update(piece, eps1, weight)
            return float(np.dot(u.reshape(-1), u.reshape(-1)))

        squares = sum(parallel_map(squared_norm, pieces))  # summed in order: deterministic
        clip = max(1.0, math.sqrt(squares) / (grad.size**0.5 * d))  # max(1, RMS(U_t) / d)

        def apply(piece: Piece, scale: float = alpha / clip, eps1: float = eps1) -> None:
            p, u = piece[0], _update(piece, eps1, None)
            u *= scale
            if maximize:
                p += u  # G_t = -grad; the factors only see G_t², which is the same
            else:
                p -= u  # θ_t = θ_{t-1} - α_t Û_t

        parallel_map(apply, pieces)


#: Matching pieces of a parameter, its gradient and its second moment: ``(θ, G, V̂)`` for a
#: vector, ``(θ, G, R, C, max(mean(R), ε1))`` for a stack of matrices.
Piece = tuple[Array, ...]


def _pieces_of(
    param: Array,
    grad: Array,
    row_var: Array | None,
    col_var: Array | None,
    variance: Array | None,
    eps1: float,
) -> list[Piece]:
    """The pieces of at most ``CHUNK_BYTES`` of a parameter's update (views: writes to a piece
    write to the arrays): flat runs of a vector; whole matrices of a stack, or rows of one
    matrix where a matrix is larger than a piece. A factored parameter whose arrays are not
    C-contiguous is one piece."""
    if variance is not None:  # a vector or a scalar: V̂_t is stored
        flat = [a.reshape(-1) for a in (param, grad, variance)]
        step = max(1, CHUNK_BYTES // grad.itemsize)
        return [tuple(f[i : i + step] for f in flat) for i in range(0, grad.size, step)]
    assert row_var is not None and col_var is not None
    n_rows, n_cols = grad.shape[-2:]
    row_scale = np.maximum(row_var.mean(axis=-2, keepdims=True), eps1)
    if not (param.flags.c_contiguous and grad.flags.c_contiguous):
        return [(param, grad, row_var, col_var, row_scale)]
    p3, g3 = param.reshape(-1, n_rows, n_cols), grad.reshape(-1, n_rows, n_cols)
    r3, c3 = row_var.reshape(-1, n_rows, 1), col_var.reshape(-1, 1, n_cols)
    s3 = row_scale.reshape(-1, 1, 1)
    row_bytes = n_cols * grad.itemsize
    matrices = max(1, CHUNK_BYTES // (n_rows * row_bytes))
    rows = n_rows if matrices > 1 else max(1, CHUNK_BYTES // row_bytes)
    pieces: list[Piece] = []
    for first in range(0, g3.shape[0], matrices):
        stack = slice(first, first + matrices)
        for start in range(0, n_rows, rows):
            part = (stack, slice(start, start + rows))
            pieces.append((p3[part], g3[part], r3[part], c3[stack], s3[stack]))
    return pieces


def _update(piece: Piece, eps1: float, weight: float | None) -> Array:
    r"""The unclipped update :math:`U_t = G_t / \max(\sqrt{\widehat{V}_t}, \epsilon_1)` of a
    piece, with :math:`\widehat{V}_t = R_t C_t / \max(\operatorname{mean}(R_t), \epsilon_1)`
    for a factored parameter, in a scratch buffer (or a new array for a piece larger than
    ``CHUNK_BYTES``). With a ``weight`` (the first pass), a vector's :math:`\widehat{V}_t` is
    first updated in place."""
    g = piece[1]
    if len(piece) == 3:  # (θ, G, V̂)
        v = piece[2]
        u, tmp = temporaries(g, 2)
        if weight is not None:
            lerp_(v, np.multiply(g, g, out=u), weight, tmp)  # V̂_t
        return _divide_by_root(g, np.maximum(v, eps1 * eps1, out=u))
    _, _, r, c, scale = piece
    (u,) = temporaries(g, 1)
    np.multiply(r, c, out=u)  # R_t C_t
    u /= scale  # V̂_t
    return _divide_by_root(g, np.maximum(u, eps1 * eps1, out=u))


def _divide_by_root(g: Array, u: Array) -> Array:
    """``u`` overwritten with ``g / sqrt(u)``."""
    np.sqrt(u, out=u)
    return np.divide(g, u, out=u)
