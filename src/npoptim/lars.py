r"""LARS: SGD with momentum, its step scaled per parameter by a trust ratio (beyond
torch.optim)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from ._docs import _foreach_doc, _fused_doc, _maximize_doc, _params_doc
from ._kernels import elementwise
from ._kernels.loop import Array, temporaries
from ._kernels.registry import Algorithm
from ._validation import (
    StateKey,
    TypeCheck,
    check_nonnegative,
    flag,
    real,
    when,
)
from .optimizer import (
    Optimizer,
    ParamsT,
    _dense_params_and_grads,
    _zeros_like,
)
from .parameter import Parameter

__all__ = ["LARS", "lars"]


class LARS(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        dampening: float = 0.0,
        trust_coefficient: float = 1e-3,
        nesterov: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        *,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "dampening": dampening,
            "trust_coefficient": trust_coefficient,
            "nesterov": nesterov,
            "foreach": foreach,
            "maximize": maximize,
            "fused": fused,
        }
        super().__init__(params, defaults)

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        **Optimizer._hyperparameters,
        "lr": real,
        "weight_decay": real,
        "momentum": real,
        "dampening": real,
        "trust_coefficient": real,
        "nesterov": flag,
        "step": real,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "momentum_buffer": StateKey(required=when("momentum")),
    }

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        check_nonnegative(lr=settings["lr"], weight_decay=settings["weight_decay"])
        for name in ("momentum", "dampening"):  # pytorch_optimizer: in [0, 1)
            if not 0.0 <= settings[name] < 1.0:
                raise ValueError(f"Invalid {name} value: {settings[name]}")
        check_nonnegative(trust_coefficient=settings["trust_coefficient"])

    _group_flags: ClassVar[dict[str, Any]] = {
        "nesterov": False,
        "maximize": False,
        "foreach": None,
        "fused": None,
    }

    def _step_group(self, group: dict[str, Any]) -> None:
        params, grads = _dense_params_and_grads(group, "LARS")
        # one step count per group, as pytorch_optimizer keeps it (LARS itself reads none)
        group["step"] = group.get("step", 0) + 1
        buffers: list[Array] | None = None
        if group["momentum"] > 0.0:
            for p in params:
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = _zeros_like(p)
            buffers = [self.state[p]["momentum_buffer"] for p in params]
        lars(
            params,
            grads,
            buffers,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            dampening=group["dampening"],
            trust_coefficient=group["trust_coefficient"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
            foreach=group["foreach"],
            fused=group["fused"],
        )


LARS.__doc__ = rf"""Implements LARS (Layer-wise Adaptive Rate Scaling), beyond torch.optim.

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \gamma \text{{ (lr)}}, \: \eta \text{{ (trust coefficient)}},
                \: \beta \text{{ (weight decay)}}, \: \mu \text{{ (momentum)}},
                \: \tau \text{{ (dampening)}}, \: \theta_0 \text{{ (params)}},
                \: f(\theta) \text{{ (objective)}}, \: \textit{{nesterov}},
                \: \textit{{maximize}} \\
            &\textbf{{initialize}}: b_0 \leftarrow 0 \text{{ (momentum buffer)}} \\
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_t \leftarrow \nabla_{{\theta}} f_t (\theta_{{t-1}})
                \quad (-\nabla_{{\theta}} f_t (\theta_{{t-1}}) \text{{ if maximize}}) \\
            &\quad \textbf{{if}} \: \theta \text{{ has 2 or more axes}}: \\
            &\quad\quad \lambda_t \leftarrow \eta \lVert \theta_{{t-1}} \rVert
                / (\lVert g_t \rVert + \beta \lVert \theta_{{t-1}} \rVert)
                \quad (1 \text{{ if }} \lVert \theta_{{t-1}} \rVert = 0
                \text{{ or the denominator is 0}}) \\
            &\quad\quad g_t \leftarrow \lambda_t (g_t + \beta \theta_{{t-1}}) \\
            &\quad \textbf{{if}} \: \mu > 0: \\
            &\quad\quad b_t \leftarrow \mu b_{{t-1}} + (1 - \tau) g_t \\
            &\quad\quad g_t \leftarrow g_t + \mu b_t \: \text{{ if nesterov, else }} b_t \\
            &\quad \theta_t \leftarrow \theta_{{t-1}} - \gamma g_t \\
            &\textbf{{return}} \: \theta_t
       \end{{aligned}}

    From You, Gitman and Ginsburg, "Large Batch Training of Convolutional Networks"
    (2017, https://arxiv.org/abs/1708.03888), Algorithm 1, with the arguments, defaults,
    state and departures from the paper of pytorch_optimizer's ``LARS`` (4.1), the oracle
    npoptim is tested against.

    .. warning::
        As pytorch_optimizer, and unlike the paper: parameters of fewer than 2 axes (biases,
        normalization scales, scalars) take a plain SGD step, without weight decay or trust
        ratio; the learning rate multiplies the step after the momentum buffer (the paper
        puts :math:`\gamma \lambda_t` inside it, the same while :math:`\gamma` is constant);
        the trust ratio is 1 where the paper's is undefined; ``dampening`` and ``nesterov``
        are SGD's options, which the paper does not have. The first step's buffer is
        :math:`(1 - \tau) g_1` (torch's SGD takes :math:`g_1` itself). npoptim never writes
        to a ``.grad`` (pytorch_optimizer scales and negates it in place).

    Args:
        {_params_doc}
        lr (float, optional): learning rate :math:`\gamma` (default: 1e-3)
        weight_decay (float, optional): weight decay :math:`\beta`, for parameters of 2 or
            more axes (default: 0)
        momentum (float, optional): momentum factor :math:`\mu`; 0 keeps no buffer
            (default: 0.9)
        dampening (float, optional): dampening :math:`\tau` of the momentum (default: 0)
        trust_coefficient (float, optional): :math:`\eta` of the trust ratio (default: 1e-3)
        nesterov (bool, optional): Nesterov momentum (default: False)
        {_foreach_doc}
        {_maximize_doc}
        {_fused_doc}

    State (``optimizer.state[p]``): ``momentum_buffer`` (:math:`b_t`, while ``momentum`` >
    0); the group holds ``step``, as pytorch_optimizer keeps it.

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, LARS
        >>> w = Parameter(np.array([[3.0, 4.0]]))
        >>> opt = LARS([w], lr=1.0, momentum=0.0, trust_coefficient=0.1)
        >>> w.grad = np.array([[0.0, 1.0]])
        >>> opt.step()  # λ = 0.1 · 5 / 1: a step of 0.5 along the gradient
        >>> w
        Parameter([[3. , 3.5]])
    """


def lars(
    params: list[Parameter],
    grads: list[Array],
    momentum_buffers: list[Array] | None,
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    dampening: float,
    trust_coefficient: float,
    nesterov: bool,
    maximize: bool,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Functional LARS: updates ``params`` and ``momentum_buffers`` (None without momentum)
    in place. See :class:`LARS` for the math. Two passes, each a registered element update
    run by the path ``foreach`` and ``fused`` pick: :data:`NORMS` measures the norms of the
    parameters of 2 or more axes and their gradients, :data:`ALGORITHM` takes the step."""
    shared = {
        "lr": lr, "momentum": momentum, "dampening": dampening, "nesterov": nesterov,
        "maximize": maximize, "weight_decay": weight_decay,
    }  # fmt: skip
    matrices = [i for i, p in enumerate(params) if p.ndim > 1]
    others = [i for i, p in enumerate(params) if p.ndim <= 1]
    trust: list[float] = []
    if matrices:
        squares = elementwise(
            NORMS, [[params[i] for i in matrices], [grads[i] for i in matrices]], {},
            foreach=foreach, fused=fused,
        )  # fmt: skip
        trust = [trust_ratio(w2, g2, trust_coefficient, weight_decay) for w2, g2 in squares]
    for members, scaled in ((matrices, True), (others, False)):
        if not members:
            continue
        buffers = None if momentum_buffers is None else [momentum_buffers[i] for i in members]
        elementwise(
            ALGORITHM,
            [[params[i] for i in members], [grads[i] for i in members], buffers],
            {"trust": trust if scaled else [1.0] * len(members)},
            foreach=foreach, fused=fused, scaled=scaled, **shared,
        )  # fmt: skip


def trust_ratio(
    weight_sq: float, grad_sq: float, trust_coefficient: float, weight_decay: float
) -> float:
    r""":math:`\lambda = \eta \lVert\theta\rVert / (\lVert g \rVert + \beta \lVert\theta\rVert)`
    from the squared norms; 1 unless both :math:`\lVert\theta\rVert` and the denominator
    are > 0 (so also where one is NaN, as pytorch_optimizer's comparisons give)."""
    weight_norm, grad_norm = math.sqrt(weight_sq), math.sqrt(grad_sq)
    denominator = grad_norm + weight_decay * weight_norm
    if not (weight_norm > 0.0 and denominator > 0.0):
        return 1.0
    return trust_coefficient * weight_norm / denominator


def _norms_piece(p: Array, g: Array) -> tuple[Array, Array]:
    """The terms of the squared norms of a piece: :math:`\\theta^2` and :math:`g^2`."""
    weight_sq, grad_sq = temporaries(p, 2)
    np.multiply(p, p, out=weight_sq)
    np.multiply(g, g, out=grad_sq)
    return weight_sq, grad_sq


def _norms_element(p: Any, g: Any, scalar: Any, flag: Any) -> Any:
    """:func:`_norms_piece` for one element (compiled by the fused path)."""
    return p * p, g * g


#: The first pass: the squared norms of each parameter and its gradient (nothing written).
NORMS = Algorithm(
    name="lars_norms",
    roles=("param", "grad"),
    piece=_norms_piece,
    element=_norms_element,
    scalars=lambda shared, per_param: {},
    sums=2,
    writes=(),
)


def _lars_piece(
    p: Array,
    g: Array,
    buf: Array | None,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
    weight_decay: float,
    scaled: bool,
    trust: float,
) -> None:
    """The step over a piece: ``trust`` is :math:`\\lambda_t`, ``scaled`` whether the
    parameter takes weight decay and trust ratio (2 or more axes)."""
    d, tmp = temporaries(p, 2)
    if maximize:
        np.negative(g, out=d)
    else:
        np.copyto(d, g)
    if scaled:
        np.multiply(p, weight_decay, out=tmp)
        d += tmp  # g_t + βθ
        d *= trust  # λ_t (g_t + βθ)
    if buf is not None:
        buf *= momentum
        np.multiply(d, 1.0 - dampening, out=tmp)
        buf += tmp  # b_t = μ b_{t-1} + (1 - τ) g_t
        if nesterov:
            np.multiply(buf, momentum, out=tmp)
            d += tmp
        else:
            np.copyto(d, buf)
    d *= lr
    p -= d


def _lars_element(p: Any, g: Any, buf: Any, scalar: Any, flag: Any) -> Any:
    """:func:`_lars_piece` for one element (compiled by the fused path)."""
    d = -g if flag.maximize else g
    if flag.scaled:
        d = (d + p * scalar.weight_decay) * scalar.trust
    if flag.momentum:
        buf = buf * scalar.momentum + d * scalar.one_minus_dampening
        d = d + buf * scalar.momentum if flag.nesterov else buf
    return p - d * scalar.lr, buf


ALGORITHM = Algorithm(
    name="lars",
    roles=("param", "grad", "momentum_buffer"),
    optional=("momentum_buffer",),
    piece=_lars_piece,
    element=_lars_element,
    scalars=lambda shared, per_param: {
        "lr": shared["lr"], "momentum": shared["momentum"],
        "one_minus_dampening": 1.0 - shared["dampening"],
        "weight_decay": shared["weight_decay"], "trust": per_param["trust"],
    },
    flags=lambda shared, present: {
        "maximize": shared["maximize"], "scaled": shared["scaled"],
        "momentum": present["momentum_buffer"], "nesterov": shared["nesterov"],
    },
)  # fmt: skip
