r"""Adagrad, with learning-rate decay, an initial accumulator, weight decay, maximize and
row-sparse gradients."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ._docs import _differentiable_doc, _foreach_doc, _fused_doc, _maximize_doc, _params_doc
from ._kernels import elementwise
from ._kernels.element import decay_flags
from ._kernels.element import gradient as gradient_of
from ._kernels.loop import Array, as_real, gradient, temporaries
from ._kernels.registry import Algorithm
from ._validation import LIKE_PARAM, STEP, StateKey, TypeCheck, check_nonnegative, real
from .optimizer import Optimizer, ParamsT
from .parameter import Grad, Parameter, SparseGrad

__all__ = ["Adagrad", "adagrad"]


class Adagrad(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)
        # Unlike the other optimizers, Adagrad creates its state eagerly, as torch does.
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p)

    def _init_state(self, p: Parameter) -> None:
        """Step 0 and the accumulator filled with the optimizer's (not the group's)
        ``initial_accumulator_value`` (both parts of it for a complex parameter), as torch."""
        value: complex = self.defaults["initial_accumulator_value"]
        if np.iscomplexobj(p):
            value = complex(value, value)
        state = self.state[p]
        state["step"] = 0.0
        state["sum"] = np.full_like(p.view(np.ndarray), value)

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        **Optimizer._hyperparameters,
        "lr": real,
        "lr_decay": real,
        "weight_decay": real,
        "initial_accumulator_value": real,
        "eps": real,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {"step": STEP, "sum": LIKE_PARAM}

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        check_nonnegative(
            lr=settings["lr"], lr_decay=settings["lr_decay"], weight_decay=settings["weight_decay"]
        )
        check_nonnegative(initial_accumulator_value=settings["initial_accumulator_value"])
        check_nonnegative(eps=settings["eps"])

    _group_flags: ClassVar[dict[str, Any]] = {
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "fused": None,
    }

    def _step_group(self, group: dict[str, Any]) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            if len(self.state[p]) == 0:  # a parameter added after construction
                self._init_state(p)
            self.state[p]["step"] += 1
        adagrad(
            params,
            [p.grad for p in params],
            [self.state[p]["sum"] for p in params],
            [self.state[p]["step"] for p in params],
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            lr_decay=group["lr_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
            foreach=group["foreach"],
            fused=group["fused"],
        )


Adagrad.__doc__ = rf"""Implements the Adagrad algorithm.

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \gamma \text{{ (lr)}}, \: \theta_0 \text{{ (params)}},
                \: f(\theta) \text{{ (objective)}}, \: \lambda \text{{ (weight decay)}},
                \: \tau \text{{ (initial accumulator value)}}, \: \eta \text{{ (lr decay)}},
                \: \epsilon \text{{ (eps)}}, \: \textit{{maximize}} \\
            &\textbf{{initialize}}: s_0 \leftarrow \tau \text{{ (state sum)}} \\
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_t \leftarrow \nabla_{{\theta}} f_t (\theta_{{t-1}})
                \quad (-\nabla_{{\theta}} f_t (\theta_{{t-1}}) \text{{ if maximize}}) \\
            &\quad \tilde{{\gamma}} \leftarrow \gamma / (1 + (t-1) \eta) \\
            &\quad \textbf{{if}} \: \lambda \neq 0: \:
                g_t \leftarrow g_t + \lambda \theta_{{t-1}} \\
            &\quad s_t \leftarrow s_{{t-1}} + g_t^2 \\
            &\quad \theta_t \leftarrow \theta_{{t-1}} - \tilde{{\gamma}} g_t /
                \big(\sqrt{{s_t}} + \epsilon\big) \\
            &\textbf{{return}} \: \theta_t
       \end{{aligned}}

    From Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
    Stochastic Optimization" (JMLR 12, 2011, http://jmlr.org/papers/v12/duchi11a.html).
    Complex parameters are updated as pairs of reals; the accumulator of a complex parameter
    starts at :math:`\tau + i\tau`.

    Unlike the other optimizers, and as in torch, the state of every parameter given to the
    constructor exists right after construction (``step`` 0 and ``sum`` :math:`= \tau`).

    A row-sparse gradient (:class:`~npoptim.SparseGrad`) is coalesced and only its rows of
    ``sum`` and of the parameter change; ``weight_decay`` must then be 0. For a complex
    parameter with a sparse gradient npoptim updates those rows as pairs of reals, exactly as
    the dense path does; torch 2.13 instead squares and divides the complex values there.

    Args:
        {_params_doc}
        lr (float, optional): learning rate (default: 1e-2)
        lr_decay (float, optional): learning rate decay (default: 0)
        weight_decay (float, optional): weight decay (L2 penalty) (default: 0)
        initial_accumulator_value (float, optional): initial value of the sum of squares of
            gradients (default: 0)
        eps (float, optional): term added to the denominator to improve numerical stability
            (default: 1e-10)
        {_foreach_doc}
        {_maximize_doc}
        {_differentiable_doc}
        {_fused_doc}

    State (``optimizer.state[p]``): ``step`` (a float) and ``sum`` (:math:`s_t`).

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, Adagrad
        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> opt = Adagrad([w], lr=0.1)
        >>> w.grad = 2 * w.view(np.ndarray)
        >>> opt.step()
        >>> w
        Parameter([ 0.9, -1.9])
    """


def adagrad(
    params: list[Parameter],
    grads: list[Grad],
    state_sums: list[Array],
    state_steps: list[float],
    *,
    lr: float,
    weight_decay: float,
    lr_decay: float,
    eps: float,
    maximize: bool,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Functional Adagrad: updates ``params`` and ``state_sums`` in place.

    A grad may be a :class:`~npoptim.SparseGrad`. ``state_steps[i]`` is the step number
    :math:`t` of this update for ``params[i]``. See :class:`Adagrad` for the math.
    ``foreach`` and ``fused`` pick the implementation; with neither, the compiled kernels run
    where numba is installed and the multi-tensor path elsewhere, all bit-identical to the
    for-loop (see :mod:`npoptim._kernels`).
    """
    # the decayed learning rate γ̃ of each parameter
    clrs = [lr / (1 + (t - 1) * lr_decay) for t in state_steps]
    dense: list[int] = []
    dense_grads: list[Array] = []
    for i, grad in enumerate(grads):
        if isinstance(grad, SparseGrad):
            if weight_decay != 0:
                raise RuntimeError("weight_decay option is not compatible with sparse gradients")
            _sparse_adagrad_step(
                params[i], grad, state_sums[i], clr=clrs[i], eps=eps, maximize=maximize
            )
        else:
            dense.append(i)
            dense_grads.append(grad)
    elementwise(
        ALGORITHM,
        [[params[i] for i in dense], dense_grads, [state_sums[i] for i in dense]],
        {"clr": [clrs[i] for i in dense]},
        foreach=foreach, fused=fused, weight_decay=weight_decay, eps=eps, maximize=maximize,
    )  # fmt: skip


def _adagrad_piece(
    p: Array,
    g: Array,
    s: Array,
    *,
    clr: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
) -> None:
    """One Adagrad update of a piece of a parameter and its sum of squares ``s``."""
    g_t, tmp = temporaries(p, 2)
    g = gradient(p, g, g_t, tmp, maximize=maximize, weight_decay=weight_decay)
    np.multiply(g, g, out=tmp)
    s += tmp  # s_t = s_{t-1} + g_t²
    np.sqrt(s, out=tmp)
    tmp += eps
    np.divide(g, tmp, out=tmp)
    tmp *= clr
    p -= tmp  # θ_t = θ_{t-1} - γ̃ g_t / (sqrt(s_t) + ε)


def _sparse_adagrad_step(
    param: Parameter, grad: SparseGrad, state_sum: Array, *, clr: float, eps: float, maximize: bool
) -> None:
    """Adagrad with a row-sparse gradient: only the rows the gradient holds change."""
    g = grad.coalesce()  # the update is not linear in g: each row must appear once
    rows = g.indices
    values = as_real(-g.values if maximize else g.values)
    sums = as_real(state_sum)
    s = sums[rows]
    s += values * values  # s_t = s_{t-1} + g_t² on the rows of g
    sums[rows] = s
    std = np.sqrt(s)
    std += eps
    as_real(param.view(np.ndarray))[rows] -= clr * (values / std)


def _adagrad_element(p: Any, g: Any, s: Any, scalar: Any, flag: Any) -> Any:
    """:func:`_adagrad_piece` for one element (compiled by the fused path)."""
    g = gradient_of(p, g, scalar, flag)
    s = s + g * g  # s_t = s_{t-1} + g_t²
    std = np.sqrt(s) + scalar.eps
    return p - (g / std) * scalar.clr, s  # θ_t = θ_{t-1} - γ̃ g_t / (sqrt(s_t) + ε)


ALGORITHM = Algorithm(
    name="adagrad",
    roles=("param", "grad", "sum"),
    piece=_adagrad_piece,
    element=_adagrad_element,
    scalars=lambda shared, per_param: {
        "weight_decay": shared["weight_decay"], "eps": shared["eps"], "clr": per_param["clr"],
    },
    flags=lambda shared, present: decay_flags(shared),
)  # fmt: skip
