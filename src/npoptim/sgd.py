r"""Stochastic gradient descent, with momentum, dampening, Nesterov momentum and weight decay."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._docs import _differentiable_doc, _foreach_doc, _fused_doc, _maximize_doc, _params_doc
from ._kernels import elementwise
from ._kernels.element import decay_flags
from ._kernels.element import gradient as gradient_of
from ._kernels.loop import Array, gradient, temporaries
from ._kernels.registry import Algorithm
from ._validation import StateKey, TypeCheck, check_nonnegative, flag, never, real
from .optimizer import Optimizer, ParamsT
from .parameter import Parameter, SparseGrad

__all__ = ["SGD", "sgd"]


class SGD(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        **Optimizer._hyperparameters,
        "lr": real,
        "momentum": real,
        "dampening": real,
        "weight_decay": real,
        "nesterov": flag,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        # only with momentum; a SparseGrad for a parameter stepped with sparse grads
        "momentum_buffer": StateKey(required=never, nullable=True, sparse=True),
    }

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        check_nonnegative(lr=settings["lr"], momentum=settings["momentum"])
        check_nonnegative(weight_decay=settings["weight_decay"])
        if settings["nesterov"] and (settings["momentum"] <= 0 or settings["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    _group_flags: ClassVar[dict[str, Any]] = {
        "nesterov": False,
        "maximize": False,
        "foreach": None,
        "differentiable": False,
        "fused": False,
    }

    def _step_group(self, group: dict[str, Any]) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        momentum = group["momentum"]
        buffers = [self.state[p].get("momentum_buffer") if momentum != 0 else None for p in params]
        sgd(
            params,
            grads,
            buffers,
            weight_decay=group["weight_decay"],
            momentum=momentum,
            lr=group["lr"],
            dampening=group["dampening"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
            foreach=group["foreach"],
            fused=group["fused"],
        )
        if momentum != 0:
            for p, buf in zip(params, buffers, strict=True):
                self.state[p]["momentum_buffer"] = buf


SGD.__doc__ = rf"""Implements stochastic gradient descent (optionally with momentum).

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \gamma \text{{ (lr)}}, \: \theta_0 \text{{ (params)}},
                \: f(\theta) \text{{ (objective)}}, \: \lambda \text{{ (weight decay)}},
                \: \mu \text{{ (momentum)}}, \: \tau \text{{ (dampening)}},
                \: \textit{{nesterov}}, \: \textit{{maximize}} \\
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_t \leftarrow \nabla_{{\theta}} f_t (\theta_{{t-1}})
                \quad (-\nabla_{{\theta}} f_t (\theta_{{t-1}}) \text{{ if maximize}}) \\
            &\quad \textbf{{if}} \: \lambda \neq 0:
                \: g_t \leftarrow g_t + \lambda \theta_{{t-1}} \\
            &\quad \textbf{{if}} \: \mu \neq 0: \\
            &\qquad b_t \leftarrow g_t \text{{ if }} t = 1
                \text{{ else }} \mu b_{{t-1}} + (1-\tau) g_t \\
            &\qquad g_t \leftarrow g_t + \mu b_t \text{{ if nesterov else }} b_t \\
            &\quad \theta_t \leftarrow \theta_{{t-1}} - \gamma g_t \\
            &\textbf{{return}} \: \theta_t
       \end{{aligned}}

    Nesterov momentum follows Sutskever et al., "On the importance of initialization and
    momentum in deep learning" (ICML 2013), in torch's form: the learning rate multiplies the
    whole velocity, and the momentum buffer starts at the first gradient (so dampening applies
    from the second step on).

    Args:
        {_params_doc}
        lr (float, optional): learning rate (default: 1e-3)
        momentum (float, optional): momentum factor (default: 0)
        dampening (float, optional): dampening for momentum (default: 0)
        weight_decay (float, optional): weight decay (L2 penalty) (default: 0)
        nesterov (bool, optional): enables Nesterov momentum. Only applicable when momentum
            is non-zero. (default: False)
        {_maximize_doc}
        {_foreach_doc}
        {_differentiable_doc}
        {_fused_doc}

    Row-sparse gradients (:class:`~npoptim.SparseGrad`) are accepted, without weight decay, as
    in torch; the momentum buffer of such a parameter is then a coalesced ``SparseGrad``.

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, SGD
        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> opt = SGD([w], lr=0.1, momentum=0.9)
        >>> w.grad = 2 * w.view(np.ndarray)      # gradient of |w|^2
        >>> opt.step()
        >>> w
        Parameter([ 0.8, -1.6])
    """


def sgd(
    params: list[Parameter],
    d_p_list: list[Any],
    momentum_buffer_list: list[Any],
    *,
    weight_decay: float,
    momentum: float,
    lr: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Functional SGD: updates ``params`` in place (see :class:`SGD` for the math).

    ``momentum_buffer_list[i]`` is the momentum buffer of ``params[i]`` or None before the
    first step; new buffers are written back into the list.
    ``foreach`` and ``fused`` pick the implementation; with neither, the compiled kernels run
    where numba is installed and the multi-tensor path elsewhere, all bit-identical to the
    for-loop (see :mod:`npoptim._kernels`).
    """
    dense: list[int] = []
    for i, (param, grad) in enumerate(zip(params, d_p_list, strict=True)):
        if isinstance(grad, SparseGrad):
            momentum_buffer_list[i] = _sparse_sgd_step(
                param, grad, momentum_buffer_list[i], weight_decay=weight_decay,
                momentum=momentum, lr=lr, dampening=dampening, nesterov=nesterov,
                maximize=maximize,
            )  # fmt: skip
        else:
            dense.append(i)
    first = [momentum != 0 and momentum_buffer_list[i] is None for i in dense]
    for i, new in zip(dense, first, strict=True):
        if new:  # b_1 = g_1: the piece fills the new buffer
            momentum_buffer_list[i] = np.empty_like(params[i].view(np.ndarray))
    elementwise(
        ALGORITHM,
        [
            [params[i] for i in dense],
            [d_p_list[i] for i in dense],
            [momentum_buffer_list[i] for i in dense] if momentum != 0 else None,
        ],
        {"first": first},
        foreach=foreach, fused=fused, weight_decay=weight_decay, momentum=momentum, lr=lr,
        dampening=dampening, nesterov=nesterov, maximize=maximize,
    )  # fmt: skip


def _sgd_piece(
    p: Array,
    g: Array,
    b: Array | None = None,
    *,
    weight_decay: float,
    momentum: float,
    lr: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
    first: bool,
) -> None:
    """One SGD update of a piece of a parameter ``p`` with gradient ``g`` and buffer ``b``."""
    d_p, tmp = temporaries(p, 2)
    g = gradient(p, g, d_p, tmp, maximize=maximize, weight_decay=weight_decay)
    if b is not None:
        if first:
            np.copyto(b, g)  # b_1 = g_1
        else:
            b *= momentum
            if 1 - dampening != 1:
                np.multiply(g, 1 - dampening, out=tmp)
                g_damped = tmp
            else:  # (1 - τ) g_t is g_t, exactly: one pass fewer
                g_damped = g
            b += g_damped  # b_t = μ b_{t-1} + (1 - τ) g_t
        if nesterov:
            np.multiply(b, momentum, out=tmp)
            np.add(g, tmp, out=d_p)  # g_t + μ b_t
            g = d_p
        else:
            g = b
    np.multiply(g, lr, out=tmp)
    p -= tmp  # θ_t = θ_{t-1} - γ g_t


def _sparse_sgd_step(
    param: Parameter,
    grad: SparseGrad,
    buf: SparseGrad | None,
    *,
    weight_decay: float,
    momentum: float,
    lr: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
) -> SparseGrad | None:
    """SGD with a row-sparse gradient: only the rows held by the gradient (and, with
    momentum, by the buffer) change. Returns the new momentum buffer."""
    if weight_decay != 0:
        raise RuntimeError("add(sparse, dense) is not supported. Use add(dense, sparse) instead.")
    g = (-grad if maximize else grad).coalesce()
    if momentum != 0:
        if buf is None:
            buf = g
        else:
            rows = np.concatenate([buf.indices, g.indices])
            vals = np.concatenate([momentum * buf.values, (1 - dampening) * g.values])
            buf = SparseGrad(rows, vals, g.shape).coalesce()
        if nesterov:
            rows = np.concatenate([g.indices, buf.indices])
            g = SparseGrad(rows, np.concatenate([g.values, momentum * buf.values]), g.shape)
            g = g.coalesce()
        else:
            g = buf
    data = param.view(np.ndarray)
    data[g.indices] -= lr * g.values
    return buf


def _sgd_element(p: Any, g: Any, b: Any, scalar: Any, flag: Any) -> Any:
    """:func:`_sgd_piece` for one element (compiled by the fused path)."""
    g = gradient_of(p, g, scalar, flag)
    if flag.momentum:
        # b_1 = g_1, then b_t = μ b_{t-1} + (1 - τ) g_t
        b = g if scalar.first else b * scalar.momentum + g * scalar.one_minus_dampening
        g = g + b * scalar.momentum if flag.nesterov else b
    return p - g * scalar.lr, b  # θ_t = θ_{t-1} - γ g_t


ALGORITHM = Algorithm(
    name="sgd",
    roles=("param", "grad", "momentum_buffer"),
    optional=("momentum_buffer",),
    piece=_sgd_piece,
    element=_sgd_element,
    scalars=lambda shared, per_param: {
        "weight_decay": shared["weight_decay"], "momentum": shared["momentum"],
        "one_minus_dampening": 1 - shared["dampening"], "lr": shared["lr"],
        "first": per_param["first"],
    },
    flags=lambda shared, present: {
        **decay_flags(shared), "momentum": present["momentum_buffer"],
        "nesterov": shared["nesterov"],
    },
)  # fmt: skip
