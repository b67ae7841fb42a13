r"""LAMB: Adam's direction rescaled per parameter by a trust ratio (beyond torch.optim)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from ._docs import _foreach_doc, _fused_doc, _maximize_doc, _params_doc
from ._kernels import elementwise
from ._kernels.loop import Array, temporaries
from ._kernels.registry import Algorithm
from ._validation import (
    LIKE_PARAM,
    StateKey,
    TypeCheck,
    check_betas,
    check_nonnegative,
    flag,
    never,
    pair,
    real,
)
from .optimizer import (
    Optimizer,
    ParamsT,
    _dense_params_and_grads,
    _eval_closure,
    _hooked_step,
    _zeros_like,
)
from .parameter import Parameter

__all__ = ["LAMB", "lamb"]

#: A number of the state that the update only records (a norm or a trust ratio).
_NORM = StateKey("scalar", required=never)

#: pytorch_optimizer's bound on the weight norm of the trust ratio.
TRUST_CLAMP = 10.0


class LAMB(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        weight_decouple: bool = True,
        fixed_decay: bool = False,
        rectify: bool = False,
        degenerated_to_sgd: bool = False,
        n_sma_threshold: int = 5,
        grad_averaging: bool = True,
        max_grad_norm: float = 1.0,
        adam: bool = False,
        pre_norm: bool = False,
        eps: float = 1e-6,
        foreach: bool | None = None,
        maximize: bool = False,
        *,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "weight_decay": weight_decay,
            "weight_decouple": weight_decouple,
            "fixed_decay": fixed_decay,
            "rectify": rectify,
            "degenerated_to_sgd": degenerated_to_sgd,
            "n_sma_threshold": n_sma_threshold,
            "grad_averaging": grad_averaging,
            "max_grad_norm": max_grad_norm,
            "adam": adam,
            "pre_norm": pre_norm,
            "eps": eps,
            "foreach": foreach,
            "maximize": maximize,
            "fused": fused,
        }
        super().__init__(params, defaults)

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        **Optimizer._hyperparameters,
        "lr": real,
        "betas": pair(),
        "weight_decay": real,
        "weight_decouple": flag,
        "fixed_decay": flag,
        "rectify": flag,
        "degenerated_to_sgd": flag,
        "n_sma_threshold": real,
        "grad_averaging": flag,
        "max_grad_norm": real,
        "adam": flag,
        "pre_norm": flag,
        "eps": real,
        "step": real,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "exp_avg": LIKE_PARAM,
        "exp_avg_sq": LIKE_PARAM,
        # the oracle's record of the last trust ratio and the norms it came from
        "weight_norm": _NORM,
        "adam_norm": _NORM,
        "trust_ratio": _NORM,
    }

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        check_nonnegative(lr=settings["lr"])
        check_betas(settings["betas"])
        check_nonnegative(
            weight_decay=settings["weight_decay"],
            max_grad_norm=settings["max_grad_norm"],
            eps=settings["eps"],
        )

    _group_flags: ClassVar[dict[str, Any]] = {
        "rectify": False,
        "degenerated_to_sgd": False,
        "n_sma_threshold": 5,
        "adam": False,
        "pre_norm": False,
        "maximize": False,
        "foreach": None,
        "fused": None,
    }

    def step(self, closure: Any = None) -> float | None:
        """Perform a single optimization step (see :meth:`Optimizer.step`)."""
        loss = _eval_closure(closure)
        grad_scale = 1.0
        if self.defaults["pre_norm"] and self.defaults["max_grad_norm"] != 0.0:
            grads = [g for group in self.param_groups for g in self._grads(group)]
            grad_scale = gradient_scale(grads, self.defaults["max_grad_norm"], self.defaults["eps"])
        for group in self.param_groups:
            self._step_group(group, grad_scale)
        return loss

    step = _hooked_step(step)

    @staticmethod
    def _grads(group: dict[str, Any]) -> list[np.ndarray[Any, Any]]:
        return _dense_params_and_grads(group, "LAMB")[1]

    def _step_group(self, group: dict[str, Any], grad_scale: float = 1.0) -> None:
        params, grads = _dense_params_and_grads(group, "LAMB")
        states = [self.state[p] for p in params]
        for p, state in zip(params, states, strict=True):
            if len(state) == 0:
                state["exp_avg"] = _zeros_like(p)
                state["exp_avg_sq"] = _zeros_like(p)
        # one step count per group, as pytorch_optimizer keeps it
        group["step"] = group.get("step", 0) + 1
        beta1, beta2 = group["betas"]
        norms = lamb(
            params,
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            step=group["step"],
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            weight_decouple=group["weight_decouple"],
            fixed_decay=group["fixed_decay"],
            grad_averaging=group["grad_averaging"],
            adam=group["adam"],
            rectify=group["rectify"],
            degenerated_to_sgd=group["degenerated_to_sgd"],
            n_sma_threshold=group["n_sma_threshold"],
            grad_scale=grad_scale,
            maximize=group["maximize"],
            foreach=group["foreach"],
            fused=group["fused"],
        )
        for state, found in zip(states, norms, strict=True):
            if found is not None:
                state["weight_norm"], state["adam_norm"], state["trust_ratio"] = found


LAMB.__doc__ = rf"""Implements LAMB (Layer-wise Adaptive Moments for Batch training), beyond
    torch.optim.

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \eta \text{{ (lr)}}, \: \beta_1, \beta_2 \text{{ (betas)}},
                \: \theta_0 \text{{ (params)}}, \: f(\theta) \text{{ (objective)}},
                \: \lambda \text{{ (weight decay)}}, \: \epsilon, \: \textit{{maximize}} \\
            &\textbf{{initialize}}: m_0 \leftarrow 0, \: v_0 \leftarrow 0 \\
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_t \leftarrow s \nabla_{{\theta}} f_t (\theta_{{t-1}})
                \quad (-s \nabla_{{\theta}} f_t \text{{ if maximize}};
                \: s = \min(1, c / (\lVert g \rVert_{{\text{{all}}}} + \epsilon))
                \text{{ with pre\_norm, else }} 1) \\
            &\quad \textbf{{if}} \: \textit{{weight\_decouple}}: \:
                \theta_{{t-1}} \leftarrow \theta_{{t-1}} (1 - \eta \lambda)
                \quad (1 - \lambda \text{{ if fixed\_decay}}) \\
            &\quad m_t \leftarrow \beta_1 m_{{t-1}} + \beta_3 g_t
                \quad (\beta_3 = 1 - \beta_1, \text{{ or 1 without grad\_averaging}}) \\
            &\quad v_t \leftarrow \beta_2 v_{{t-1}} + (1 - \beta_2) g_t^2 \\
            &\quad r_t \leftarrow m_t / (\sqrt{{v_t}} + \epsilon)
                \quad (+ \lambda \theta_{{t-1}} \text{{ without weight\_decouple}}) \\
            &\quad \phi_t \leftarrow \min(\lVert \theta_{{t-1}} \rVert, 10)
                / (\lVert r_t \rVert + \epsilon)
                \quad (1 \text{{ if either norm is 0, or with adam}}) \\
            &\quad \theta_t \leftarrow \theta_{{t-1}} - \frac{{\eta}}{{1 - \beta_1^t}}
                \phi_t r_t \\
            &\textbf{{return}} \: \theta_t
       \end{{aligned}}

    From You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes" (ICLR 2020, https://arxiv.org/abs/1904.00962), with the arguments, defaults,
    state keys and departures from the paper of pytorch_optimizer's ``Lamb`` (4.1), the
    oracle npoptim is tested against:

    .. warning::
        As pytorch_optimizer, and unlike the paper's Algorithm 2: the moments are not bias
        corrected, the step size is divided by :math:`1 - \beta_1^t` instead, with
        :math:`t` counted per parameter group (a parameter that misses a grad still sees
        it advance); the weight norm is bounded by 10; :math:`\epsilon` is added to
        :math:`\lVert r_t \rVert`. With ``rectify`` the update is RAdam's (rectified step size,
        SGD's direction below ``n_sma_threshold`` with ``degenerated_to_sgd``, no step
        otherwise), its trust ratio measured on :math:`\theta_{{t-1}} - \eta_t r_t`, and
        ``weight_decouple=False`` applies no weight decay at all. npoptim never writes to a
        ``.grad`` (pytorch_optimizer scales and negates it in place). Like pytorch_optimizer,
        the global gradient norm of ``pre_norm`` is computed in float32 whatever the dtype,
        and its ``max_grad_norm`` and ``eps`` are the constructor's (``defaults``).

    Args:
        {_params_doc}
        lr (float, optional): learning rate (default: 1e-3)
        betas (Tuple[float, float], optional): coefficients of the running averages of the
            gradient and its square (default: (0.9, 0.999))
        weight_decay (float, optional): weight decay :math:`\lambda` (default: 0)
        weight_decouple (bool, optional): decay the parameter (AdamW's way) instead of adding
            :math:`\lambda\theta` to :math:`r_t` (default: True)
        fixed_decay (bool, optional): decoupled decay by :math:`\lambda` without the learning
            rate (default: False)
        rectify (bool, optional): RAdam's rectified update (default: False)
        degenerated_to_sgd (bool, optional): with ``rectify``, an SGD step while the
            rectification is undefined (default: False)
        n_sma_threshold (int, optional): with ``rectify``, the length of the approximated
            simple moving average from which the adaptive step is taken (default: 5)
        grad_averaging (bool, optional): scale the gradient's contribution to :math:`m_t` by
            :math:`1 - \beta_1` (default: True)
        max_grad_norm (float, optional): the bound :math:`c` of ``pre_norm``; 0 disables the
            scaling (default: 1.0)
        adam (bool, optional): a trust ratio of 1 (Adam's update) (default: False)
        pre_norm (bool, optional): scale the gradients by :math:`s` above, from their norm
            over every parameter of every group (default: False)
        eps (float, optional): term added to denominators (default: 1e-6)
        {_foreach_doc}
        {_maximize_doc}
        {_fused_doc}

    State (``optimizer.state[p]``): ``exp_avg`` (:math:`m_t`), ``exp_avg_sq`` (:math:`v_t`),
    and, as pytorch_optimizer keeps them, the last step's ``weight_norm``, ``adam_norm`` and
    ``trust_ratio`` (Python floats); the group holds ``step``.

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, LAMB
        >>> w = Parameter(np.array([3.0, -4.0]))
        >>> opt = LAMB([w], lr=0.1)
        >>> w.grad = np.array([1.0, 0.0])
        >>> opt.step()  # r_1 ≈ (√10, 0), φ_1 ≈ ‖θ‖ / ‖r_1‖ = 5 / √10, step size 0.1 / 0.1
        >>> np.round(w, 4)
        array([-2., -4.])
    """


def gradient_scale(grads: list[Array], max_grad_norm: float, eps: float) -> float:
    r""":math:`\min(1, c / (\lVert g \rVert + \epsilon))`, with :math:`\lVert g \rVert` the
    norm of all ``grads`` together (``pre_norm``), in float32 as pytorch_optimizer computes it
    (each gradient's norm in its dtype, float32 for float16, rounded to float32, then
    squared and summed)."""
    norms = [np.linalg.norm(g.astype(np.float32) if g.dtype == np.float16 else g) for g in grads]
    squares = np.square(np.array(norms, dtype=np.float32))
    total = np.sqrt(squares.sum(dtype=np.float32)) + np.float32(eps)
    return min(float(np.float32(max_grad_norm) / total), 1.0)


def lamb(
    params: list[Parameter],
    grads: list[Array],
    exp_avgs: list[Array],
    exp_avg_sqs: list[Array],
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    weight_decouple: bool,
    fixed_decay: bool,
    grad_averaging: bool,
    adam: bool,
    rectify: bool = False,
    degenerated_to_sgd: bool = False,
    n_sma_threshold: int = 5,
    grad_scale: float = 1.0,
    maximize: bool = False,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> list[tuple[float, float, float] | None]:
    """Functional LAMB: updates ``params`` and the moments in place; returns each parameter's
    ``(weight_norm, adam_norm, trust_ratio)``, None where no step was taken (``rectify``
    before the rectification is defined).

    ``step`` is the group's step count (1, 2, ...), ``grad_scale`` the ``pre_norm`` factor.
    See :class:`LAMB` for the math. Two passes, each a registered element update run by the
    path ``foreach`` and ``fused`` pick: the first (:data:`MOMENTS`) updates the moments,
    decays the parameters and sums the squares of the norms; the second (:data:`ALGORITHM`)
    takes the step, scaled per parameter by its trust ratio.
    """
    if not params:
        return []
    step_size, adaptive = lr, True
    if rectify:  # RAdam's rectification of the step size (its ρ_t and r_t)
        n_sma_max = 2.0 / (1.0 - beta2) - 1.0
        beta2_t = beta2**step
        n_sma = n_sma_max - 2 * step * beta2_t / (1.0 - beta2_t)
        adaptive = n_sma >= n_sma_threshold
        if adaptive:
            step_size *= math.sqrt(
                (1.0 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma
                * n_sma_max / (n_sma_max - 2)
            )  # fmt: skip
        elif not degenerated_to_sgd:
            step_size = -lr
    step_size /= 1.0 - beta1**step
    decay_factor = 1.0
    if weight_decouple and weight_decay != 0.0:
        decay_factor = 1.0 - weight_decay * (1.0 if fixed_decay else lr)
    direction = {
        "eps": eps,
        "adaptive": adaptive,
        # λθ in r_t: the L2 form (none at all with rectify)
        "weight_decay": weight_decay if not (weight_decouple or rectify) else 0.0,
    }
    first = {
        "grad_scale": -grad_scale if maximize else grad_scale,
        "decay_factor": decay_factor,
        "beta1": beta1,
        "beta2": beta2,
        "beta3": 1.0 - beta1 if grad_averaging else 1.0,
        "shift": step_size if rectify else None,
        **direction,
    }
    squares = elementwise(
        MOMENTS, [params, grads, exp_avgs, exp_avg_sqs], {}, foreach=foreach, fused=fused, **first
    )
    weight_sq, update_sq = zip(*squares, strict=True)
    if rectify and step_size <= 0:
        return [None] * len(params)
    found: list[tuple[float, float, float] | None] = []
    for w2, u2 in zip(weight_sq, update_sq, strict=True):
        weight_norm, adam_norm = min(math.sqrt(w2), TRUST_CLAMP), math.sqrt(u2)
        trust = 1.0 if weight_norm == 0 or adam_norm == 0 else weight_norm / (adam_norm + eps)
        found.append((weight_norm, adam_norm, trust))
    scales = [step_size * (1.0 if adam else f[2]) for f in found if f is not None]
    elementwise(
        ALGORITHM,
        [params, grads, exp_avgs, exp_avg_sqs],
        {"scale": scales},
        foreach=foreach, fused=fused, **direction,
    )  # fmt: skip
    return found


def _silent() -> np.errstate:
    r"""NumPy's warnings off, as torch and the compiled path give inf and NaN silently: in
    float16, ε = 1e-8 rounds to 0 and :math:`v_t` can underflow to 0 (a gradient scaled
    down by ``pre_norm``), so :math:`r_t = m_t / 0 = \pm\infty`, the trust ratio
    :math:`\lVert\theta\rVert / \infty = 0` and the step :math:`0 \cdot \infty` NaN, as
    pytorch_optimizer's (a thread's own setting: the pieces run on the kernels' threads)."""
    return np.errstate(divide="ignore", over="ignore", invalid="ignore")


def _direction(
    p: Array, m: Array, v: Array, r: Array, tmp: Array, *, eps: float, adaptive: bool,
    weight_decay: float,
) -> None:  # fmt: skip
    """:math:`r_t` of a piece into ``r``: ``m / (sqrt(v) + ε)`` (``m`` itself when not
    ``adaptive``), plus ``λθ`` for a nonzero ``weight_decay``; ``tmp`` is scratch."""
    if adaptive:
        np.sqrt(v, out=r)
        r += eps
        np.divide(m, r, out=r)
    else:
        np.copyto(r, m)
    if weight_decay != 0.0:
        np.multiply(p, weight_decay, out=tmp)
        r += tmp


def _moments_and_norms(
    p: Array,
    g: Array,
    m: Array,
    v: Array,
    *,
    grad_scale: float,
    decay_factor: float,
    beta1: float,
    beta2: float,
    beta3: float,
    shift: float | None,
    eps: float,
    adaptive: bool,
    weight_decay: float,
) -> tuple[Array, Array]:
    r"""The first pass over a piece: decoupled decay, the moments, and the terms of the
    squared norms, :math:`\theta^2` of the decayed parameter and :math:`r_t^2` (of
    :math:`(\theta - \eta_t r_t)^2` with rectify's ``shift``)."""
    with _silent():
        return _first_pass(p, g, m, v, grad_scale=grad_scale, decay_factor=decay_factor,
                           beta1=beta1, beta2=beta2, beta3=beta3, shift=shift, eps=eps,
                           adaptive=adaptive, weight_decay=weight_decay)  # fmt: skip


def _first_pass(
    p: Array, g: Array, m: Array, v: Array, *, grad_scale: float, decay_factor: float,
    beta1: float, beta2: float, beta3: float, shift: float | None, eps: float,
    adaptive: bool, weight_decay: float,
) -> tuple[Array, Array]:  # fmt: skip
    g_t, tmp, r = temporaries(p, 3)
    if grad_scale != 1.0:
        np.multiply(g, grad_scale, out=g_t)  # pre_norm's s, negated to maximize
        g = g_t
    if decay_factor != 1.0:
        p *= decay_factor  # θ ← θ(1 - ηλ)
    m *= beta1
    np.multiply(g, beta3, out=tmp)
    m += tmp  # m_t = β1 m_{t-1} + β3 g_t
    v *= beta2
    np.multiply(g, g, out=tmp)
    tmp *= 1.0 - beta2
    v += tmp  # v_t = β2 v_{t-1} + (1 - β2) g_t²
    _direction(p, m, v, r, tmp, eps=eps, adaptive=adaptive, weight_decay=weight_decay)
    if shift is not None:
        r *= shift
        np.subtract(p, r, out=r)  # rectify measures θ - η_t r_t
    np.multiply(p, p, out=tmp)
    np.multiply(r, r, out=r)
    return tmp, r


def _moments_element(p: Any, g: Any, m: Any, v: Any, scalar: Any, flag: Any) -> Any:
    """:func:`_moments_and_norms` for one element (compiled by the fused path)."""
    if flag.scaled:
        g = g * scalar.grad_scale
    if flag.decoupled:
        p = p * scalar.decay_factor
    m = m * scalar.beta1 + g * scalar.beta3
    v = v * scalar.beta2 + (g * g) * scalar.one_minus_beta2
    r = m / (np.sqrt(v) + scalar.eps) if flag.adaptive else m
    if flag.decay:
        r = r + p * scalar.weight_decay
    if flag.shifted:
        r = p - r * scalar.shift
    return p, m, v, p * p, r * r


MOMENTS = Algorithm(
    name="lamb_moments",
    roles=("param", "grad", "exp_avg", "exp_avg_sq"),
    piece=_moments_and_norms,
    element=_moments_element,
    scalars=lambda shared, per_param: {
        "grad_scale": shared["grad_scale"], "decay_factor": shared["decay_factor"],
        "beta1": shared["beta1"], "beta2": shared["beta2"], "beta3": shared["beta3"],
        "one_minus_beta2": 1.0 - shared["beta2"], "eps": shared["eps"],
        "weight_decay": shared["weight_decay"],
        "shift": 0.0 if shared["shift"] is None else shared["shift"],
    },
    flags=lambda shared, present: {
        "scaled": shared["grad_scale"] != 1.0, "decoupled": shared["decay_factor"] != 1.0,
        "adaptive": shared["adaptive"], "decay": shared["weight_decay"] != 0.0,
        "shifted": shared["shift"] is not None,
    },
    sums=2,
)  # fmt: skip


def _lamb_piece(
    p: Array,
    g: Array,
    m: Array,
    v: Array,
    *,
    eps: float,
    adaptive: bool,
    weight_decay: float,
    scale: float,
) -> None:
    """The second pass over a piece: :math:`\\theta_t = \\theta - \\eta_t \\phi_t r_t`
    (``scale`` is :math:`\\eta_t \\phi_t`); ``g`` is not read."""
    tmp, r = temporaries(p, 2)
    with _silent():
        _direction(p, m, v, r, tmp, eps=eps, adaptive=adaptive, weight_decay=weight_decay)
        r *= scale
    p -= r


def _lamb_element(p: Any, g: Any, m: Any, v: Any, scalar: Any, flag: Any) -> Any:
    """:func:`_lamb_piece` for one element (compiled by the fused path)."""
    r = m / (np.sqrt(v) + scalar.eps) if flag.adaptive else m
    if flag.decay:
        r = r + p * scalar.weight_decay
    return p - r * scalar.scale, m, v


ALGORITHM = Algorithm(
    name="lamb",
    roles=("param", "grad", "exp_avg", "exp_avg_sq"),
    piece=_lamb_piece,
    element=_lamb_element,
    scalars=lambda shared, per_param: {
        "eps": shared["eps"], "weight_decay": shared["weight_decay"], **per_param,
    },
    flags=lambda shared, present: {
        "adaptive": shared["adaptive"], "decay": shared["weight_decay"] != 0.0,
    },
)  # fmt: skip
