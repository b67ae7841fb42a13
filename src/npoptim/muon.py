r"""Muon: momentum whose update is orthogonalized by a Newton–Schulz iteration (2-D only)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from ._docs import _params_doc
from ._kernels.loop import Array
from ._validation import (
    LIKE_PARAM,
    StateKey,
    TypeCheck,
    flag,
    integer,
    optional,
    real,
    reals,
    text,
)
from .optimizer import Optimizer, ParamsT, _dense_params_and_grads
from .parameter import Parameter

__all__ = ["Muon", "muon"]

# Keller Jordan's constants (https://kellerjordan.github.io/posts/muon/), as torch uses them.
EPS = 1e-7
DEFAULT_A = 3.4445
DEFAULT_B = -4.7750
DEFAULT_C = 2.0315
DEFAULT_NS_STEPS = 5


class Muon(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (DEFAULT_A, DEFAULT_B, DEFAULT_C),
        eps: float = EPS,
        ns_steps: int = DEFAULT_NS_STEPS,
        adjust_lr_fn: str | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_coefficients": ns_coefficients,
            "eps": eps,
            "ns_steps": ns_steps,
            "adjust_lr_fn": adjust_lr_fn,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(
                        "Muon only supports 2D parameters whereas we found a parameter with "
                        f"size: {p.shape}"
                    )

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        "lr": real,
        "weight_decay": real,
        "momentum": real,
        "nesterov": flag,
        "ns_coefficients": reals,
        "eps": real,
        "ns_steps": integer,
        "adjust_lr_fn": optional(text),
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {"momentum_buffer": LIKE_PARAM}

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        lr, momentum, weight_decay = settings["lr"], settings["momentum"], settings["weight_decay"]
        adjust_lr_fn = settings["adjust_lr_fn"]
        if not 0.0 <= lr:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        if not 0.0 <= momentum:
            raise ValueError(f"momentum should be >= 0 but is: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"weight decay should be >= 0 but is: {weight_decay}")
        if adjust_lr_fn is not None and adjust_lr_fn not in ["original", "match_rms_adamw"]:
            raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")

    def _step_group(self, group: dict[str, Any]) -> None:
        params, grads = _dense_params_and_grads(group, "Muon", real_only=True)
        states = [self.state[p] for p in params]
        for g, state in zip(grads, states, strict=True):
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = np.zeros_like(g)
        muon(
            params,
            grads,
            [s["momentum_buffer"] for s in states],
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            nesterov=group["nesterov"],
            ns_coefficients=group["ns_coefficients"],
            ns_steps=group["ns_steps"],
            eps=group["eps"],
            adjust_lr_fn=group["adjust_lr_fn"],
        )


Muon.__doc__ = rf"""Implements the Muon algorithm.

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \gamma \text{{ (lr)}}, \: \lambda \text{{ (weight decay)}},
                \: \mu \text{{ (momentum)}}, \: \textit{{nesterov}},
                \: (a, b, c) \text{{ (NS coefficients)}}, \: \varepsilon \text{{ (eps)}},
                \: k \text{{ (NS steps)}}, \: \theta_0 \in \mathbb{{R}}^{{A \times B}}
                \text{{ (params)}}, \: f(\theta) \text{{ (objective)}} \\
            &\textbf{{initialize}}: M_0 \leftarrow 0 \text{{ (momentum buffer)}} \\
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_t \leftarrow \nabla_{{\theta}} f_t (\theta_{{t-1}}) \\
            &\quad M_t \leftarrow \mu M_{{t-1}} + (1 - \mu) g_t \\
            &\quad X_0 \leftarrow (1 - \mu) g_t + \mu M_t \text{{ if nesterov else }} M_t \\
            &\quad X_0 \leftarrow X_0 / \max(\lVert X_0 \rVert_F, \varepsilon)
                \quad (X_0^\top \text{{ if }} A > B) \\
            &\quad \textbf{{for}} \: j = 1 \: \textbf{{to}} \: k \: \textbf{{do}}: \:
                X_j \leftarrow a X_{{j-1}} + \big(b \, X_{{j-1}} X_{{j-1}}^\top
                + c \, (X_{{j-1}} X_{{j-1}}^\top)^2\big) X_{{j-1}} \\
            &\quad O_t \leftarrow X_k \quad (X_k^\top \text{{ if }} A > B) \\
            &\quad \theta_t \leftarrow \theta_{{t-1}} - \gamma \lambda \theta_{{t-1}} \\
            &\quad \theta_t \leftarrow \theta_t - \gamma s \, O_t, \quad
                s = \sqrt{{\max(1, A/B)}} \text{{ (original) or }} 0.2\sqrt{{\max(A, B)}}
                \text{{ (match\_rms\_adamw)}} \\
            &\textbf{{return}} \: \theta_t
       \end{{aligned}}

    From Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024,
    https://kellerjordan.github.io/posts/muon/), with the learning-rate adjustment of Liu et
    al., "Muon is Scalable for LLM Training" (2025, https://arxiv.org/abs/2502.16982) as an
    option. The quintic iteration maps the singular values of :math:`X_0` close to 1 (roughly
    into [0.5, 1.5]), approximating :math:`UV^\top` for :math:`X_0 = USV^\top`. Muon is for
    the 2-D weights of hidden layers; optimize biases, embeddings and the like with another
    optimizer (e.g. :class:`~npoptim.AdamW`). Complex parameters are refused, as in torch.

    .. warning::
        torch runs the Newton–Schulz iteration in bfloat16 whatever the parameter's dtype;
        npoptim runs it in the parameter's dtype (NumPy has no bfloat16). The updates agree
        with torch to the precision of bfloat16, a few parts in a thousand, not to the last
        bits: over 20 steps the parameters differ from torch's by about 1e-3 of their size
        at lr = 0.01 (less at smaller learning rates).

    Args:
        {_params_doc} Every parameter must be 2-D.
        lr (float, optional): learning rate (default: 1e-3)
        weight_decay (float, optional): decoupled weight decay coefficient, scaled by the
            unadjusted lr (default: 0.1)
        momentum (float, optional): momentum factor :math:`\mu` (default: 0.95)
        nesterov (bool, optional): enables Nesterov momentum (default: True)
        ns_coefficients (Tuple[float, float, float], optional): coefficients :math:`(a, b, c)`
            of the Newton–Schulz polynomial (default: ({DEFAULT_A}, {DEFAULT_B}, {DEFAULT_C}))
        eps (float, optional): floor of the norm that normalizes the iteration's input
            (default: {EPS})
        ns_steps (int, optional): number of Newton–Schulz steps :math:`k`, less than 100
            (default: {DEFAULT_NS_STEPS})
        adjust_lr_fn (str, optional): learning-rate scaling by shape, ``"original"`` or
            ``"match_rms_adamw"``; None means ``"original"`` (default: None)

    State (``optimizer.state[p]``): ``momentum_buffer`` (:math:`M_t`); Muon keeps no step count.

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, Muon
        >>> w = Parameter(np.array([[2.0, 0.0], [0.0, 1.0]]))
        >>> opt = Muon([w], lr=0.1, weight_decay=0.0)
        >>> w.grad = w.view(np.ndarray).copy()
        >>> opt.step()
        >>> w.round(3)
        array([[1.931, 0.   ],
               [0.   , 0.889]])
    """


def muon(
    params: list[Parameter],
    grads: list[Array],
    muon_momentum_bufs: list[Array],
    *,
    lr: float,
    weight_decay: float,
    momentum: float,
    nesterov: bool,
    ns_coefficients: tuple[float, float, float],
    ns_steps: int,
    eps: float,
    adjust_lr_fn: str | None,
    foreach: bool | None = None,
) -> None:
    """Functional Muon: updates ``params`` and the momentum buffers in place (see
    :class:`Muon` for the math). Every parameter must be a real 2-D array."""
    if foreach:
        raise RuntimeError("Foreach is not supported for Muon yet")
    for param, grad, buf in zip(params, grads, muon_momentum_bufs, strict=True):
        if np.iscomplexobj(param):
            raise ValueError("Complex parameters are not supported")
        if grad.ndim != 2:
            raise ValueError("Param gradient must be a 2D matrix")
        buf += (1 - momentum) * (grad - buf)  # M_t = μ M_{t-1} + (1 - μ) g_t
        update = grad + momentum * (buf - grad) if nesterov else buf
        ortho = _zeropower_via_newtonschulz(update, ns_coefficients, ns_steps, eps)
        param *= 1 - lr * weight_decay  # decoupled weight decay, with the unadjusted lr
        ortho *= _adjust_lr(lr, adjust_lr_fn, param.shape)
        param -= ortho  # θ_t = θ_t - γ s O_t


def _zeropower_via_newtonschulz(
    grad: Array, ns_coefficients: tuple[float, float, float], ns_steps: int, eps: float
) -> Array:
    """An approximation of :math:`UV^\\top` for ``grad`` :math:`= USV^\\top` by ``ns_steps``
    quintic Newton–Schulz steps, in ``grad``'s dtype. Returns a new array."""
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if grad.ndim != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    a, b, c = ns_coefficients
    tall = grad.shape[0] > grad.shape[1]
    x = np.array(grad.T if tall else grad, copy=True)  # wide: X X^T is the smaller Gram matrix
    x /= max(float(np.linalg.norm(x)), eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(ns_steps):
        gram = x @ x.T
        poly = gram @ gram
        poly *= c
        gram *= b
        poly += gram  # b A + c A², A = X X^T
        step = poly @ x
        x *= a
        x += step  # X ← a X + (b A + c A²) X
    return x.T if tall else x


def _adjust_lr(lr: float, adjust_lr_fn: str | None, param_shape: tuple[int, ...]) -> float:
    """The learning rate scaled for a parameter of shape ``(A, B)``: by
    :math:`\\sqrt{\\max(1, A/B)}` (Keller Jordan's "original", the default) or by
    :math:`0.2\\sqrt{\\max(A, B)}` ("match_rms_adamw", Moonshot's, which matches AdamW's update
    RMS); any other name leaves it unscaled, as torch does."""
    rows, cols = param_shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        ratio = math.sqrt(max(1, rows / cols))
    elif adjust_lr_fn == "match_rms_adamw":
        ratio = 0.2 * math.sqrt(max(rows, cols))
    else:
        ratio = 1.0
    return lr * ratio
