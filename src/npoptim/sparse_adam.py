r"""SparseAdam: Adam restricted to the rows a row-sparse gradient touches."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from ._docs import _maximize_doc, _params_doc
from ._kernels.loop import CHUNK_BYTES, Array, scratch
from ._validation import LIKE_PARAM, STEP, StateKey, TypeCheck, check_betas, flag, pair, real
from .optimizer import Optimizer, ParamsT
from .parameter import Parameter, SparseGrad

__all__ = ["SparseAdam", "sparse_adam"]


class SparseAdam(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        maximize: bool = False,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "maximize": maximize}
        super().__init__(params, defaults)
        complex_params = [
            [i, j]
            for i, group in enumerate(self.param_groups)
            for j, p in enumerate(group["params"])
            if np.iscomplexobj(p)
        ]
        if complex_params:
            raise ValueError(
                f"Complex params at indices {complex_params}: SparseAdam does not support "
                "complex parameters"
            )

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        "lr": real,
        "betas": pair(),
        "eps": real,
        "maximize": flag,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": STEP,
        "exp_avg": LIKE_PARAM,
        "exp_avg_sq": LIKE_PARAM,
    }

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        lr, eps = settings["lr"], settings["eps"]
        if not 0.0 < lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 < eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        check_betas(settings["betas"])

    _group_flags: ClassVar[dict[str, Any]] = {"maximize": False}

    def _step_group(self, group: dict[str, Any]) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not all(isinstance(p.grad, SparseGrad) for p in params):
            # Checked before any state of the group changes: a refused step changes nothing.
            raise RuntimeError(
                "SparseAdam does not support dense gradients, please consider Adam instead"
            )
        states = [self.state[p] for p in params]
        for p, state in zip(params, states, strict=True):
            if len(state) == 0:
                state["step"] = 0.0
                # np.zeros, not zeros_like: fresh zero pages, so that rows never touched
                # cost neither time nor memory.
                state["exp_avg"] = np.zeros(p.shape, dtype=p.dtype)
                state["exp_avg_sq"] = np.zeros(p.shape, dtype=p.dtype)
            state["step"] += 1
        beta1, beta2 = group["betas"]
        sparse_adam(
            params,
            [p.grad for p in params],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["step"] for s in states],
            eps=group["eps"],
            beta1=beta1,
            beta2=beta2,
            lr=float(group["lr"]),
            maximize=group["maximize"],
        )


SparseAdam.__doc__ = rf"""Implements the lazy ("masked") Adam of torch for row-sparse gradients.

    Only the rows :math:`R_t` listed by the gradient (a :class:`~npoptim.SparseGrad`, duplicate
    rows summed first) see their moments and values change; every other row is left exactly
    as it was, moments included. The step counter :math:`t` advances on every step, also for
    an empty gradient.

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \gamma \text{{ (lr)}}, \: \beta_1, \beta_2 \text{{ (betas)}},
                \: \theta_0 \text{{ (params)}}, \: \epsilon \text{{ (eps)}},
                \: \textit{{maximize}} \\
            &\textbf{{initialize}}: m_0 \leftarrow 0, \: v_0 \leftarrow 0 \\
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_t \leftarrow \text{{coalesce}}(\nabla_{{\theta}} f_t (\theta_{{t-1}}))
                \quad (\text{{negated if maximize}}), \quad R_t \leftarrow \text{{rows of }} g_t \\
            &\quad \textbf{{for}} \: r \in R_t: \\
            &\qquad m_{{t,r}} \leftarrow \beta_1 m_{{t-1,r}} + (1 - \beta_1) g_{{t,r}} \\
            &\qquad v_{{t,r}} \leftarrow \beta_2 v_{{t-1,r}} + (1 - \beta_2) g_{{t,r}}^2 \\
            &\qquad \theta_{{t,r}} \leftarrow \theta_{{t-1,r}} - \gamma
                \frac{{\sqrt{{1 - \beta_2^t}}}}{{1 - \beta_1^t}}
                \frac{{m_{{t,r}}}}{{\sqrt{{v_{{t,r}}}} + \epsilon}} \\
            &\textbf{{return}} \: \theta_t
       \end{{aligned}}

    From Kingma & Ba, "Adam: A Method for Stochastic Optimization" (ICLR 2015,
    https://arxiv.org/abs/1412.6980), with the moments updated lazily as torch's SparseAdam
    does. Unlike :class:`~npoptim.Adam`, ``eps`` is added to :math:`\sqrt{{v_t}}` before the
    bias correction is applied (folded into the step size), as in torch. A step costs
    :math:`O(|R_t| \times \text{{row width}})`: no pass is made over the whole table.

    Parameters must be real and dense; gradients must be :class:`~npoptim.SparseGrad` s (a
    dense gradient is refused).

    Args:
        {_params_doc}
        lr (float, optional): learning rate (default: 1e-3)
        betas (Tuple[float, float], optional): coefficients used for computing running
            averages of gradient and its square (default: (0.9, 0.999))
        eps (float, optional): term added to the denominator to improve numerical stability
            (default: 1e-8)
        {_maximize_doc}

    State (``optimizer.state[p]``): ``step`` (a float), ``exp_avg`` (:math:`m_t`) and
    ``exp_avg_sq`` (:math:`v_t`), both of the parameter's full shape.

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, SparseAdam, SparseGrad
        >>> table = Parameter(np.zeros((4, 2)))
        >>> opt = SparseAdam([table], lr=0.1)
        >>> table.grad = SparseGrad(np.array([3, 1, 3]), np.ones((3, 2)), (4, 2))
        >>> opt.step()
        >>> np.round(table[:, 0], 4)  # rows 1 and 3 moved by lr; the others did not
        array([ 0. , -0.1,  0. , -0.1])
    """


def sparse_adam(
    params: list[Parameter],
    grads: list[SparseGrad],
    exp_avgs: list[Array],
    exp_avg_sqs: list[Array],
    state_steps: list[float],
    *,
    eps: float,
    beta1: float,
    beta2: float,
    lr: float,
    maximize: bool,
) -> None:
    """Functional SparseAdam: updates the touched rows of ``params`` and of the moment
    arrays in place (see :class:`SparseAdam` for the math).

    ``state_steps[i]`` is the step number :math:`t` of this update for ``params[i]``. Work and
    temporaries are proportional to the number of rows the gradient holds.
    """
    for i, param in enumerate(params):
        grad = grads[i].coalesce()  # the update is not linear: each row once, summed
        if grad.values.size == 0:
            continue  # nothing touched; the step was still counted by the caller
        rows = grad.indices
        g: Array = grad.values  # a fresh copy: used as scratch below
        if maximize:
            np.negative(g, out=g)
        t = state_steps[i]
        step_size = lr * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        # The touched rows go through in pieces of CHUNK_BYTES, in reused scratch buffers.
        per_piece = max(1, CHUNK_BYTES // (g[0].size * g.itemsize))
        for begin in range(0, rows.shape[0], per_piece):
            end = begin + per_piece
            _sparse_adam_rows(
                param.view(np.ndarray), exp_avgs[i], exp_avg_sqs[i], rows[begin:end],
                g[begin:end], beta1=beta1, beta2=beta2, eps=eps, step_size=step_size,
            )  # fmt: skip


def _sparse_adam_rows(
    p: Array,
    exp_avg: Array,
    exp_avg_sq: Array,
    rows: Array,
    g: Array,
    *,
    beta1: float,
    beta2: float,
    eps: float,
    step_size: float,
) -> None:
    """The Adam update of rows ``rows`` (sorted, unique) of ``p`` and its moments, given
    their gradient rows ``g`` (overwritten)."""
    m, v, x = (scratch(g.size, g.dtype, slot).reshape(g.shape) for slot in range(3))
    np.take(exp_avg, rows, axis=0, out=m)  # m_{t-1} on the touched rows
    np.take(exp_avg_sq, rows, axis=0, out=v)  # v_{t-1}
    np.subtract(g, m, out=x)
    x *= 1 - beta1
    m += x  # m_t = m_{t-1} + (1 - β1)(g_t - m_{t-1})
    exp_avg[rows] = m
    np.multiply(g, g, out=g)
    g -= v
    g *= 1 - beta2
    v += g  # v_t = v_{t-1} + (1 - β2)(g_t² - v_{t-1})
    exp_avg_sq[rows] = v
    np.sqrt(v, out=v)
    v += eps  # sqrt(v_t) + ε
    np.divide(m, v, out=m)
    m *= -step_size
    np.take(p, rows, axis=0, out=x)
    x += m
    p[rows] = x  # θ_t = θ_{t-1} - γ √(1 - β2^t) / (1 - β1^t) · m_t / (sqrt(v_t) + ε)
