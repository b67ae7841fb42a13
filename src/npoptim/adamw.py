r"""AdamW: Adam with decoupled weight decay."""

from __future__ import annotations

from typing import Any

from ._docs import _differentiable_doc, _foreach_doc, _fused_doc, _maximize_doc, _params_doc
from ._kernels.loop import Array
from .adam import Adam, adam
from .optimizer import ParamsT
from .parameter import Parameter

__all__ = ["AdamW", "adamw"]


class AdamW(Adam):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


AdamW.__doc__ = rf"""Implements AdamW: Adam whose weight decay does not pass through the moments.

    .. math::
       \begin{{aligned}}
            &\textbf{{for}} \: t=1 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_t \leftarrow \nabla_{{\theta}} f_t (\theta_{{t-1}})
                \quad (-\nabla_{{\theta}} f_t (\theta_{{t-1}}) \text{{ if maximize}}) \\
            &\quad \theta_{{t-1}} \leftarrow \theta_{{t-1}} - \gamma \lambda \theta_{{t-1}} \\
            &\quad m_t \leftarrow \beta_1 m_{{t-1}} + (1 - \beta_1) g_t, \quad
                v_t \leftarrow \beta_2 v_{{t-1}} + (1 - \beta_2) g_t^2 \\
            &\quad \widehat{{m_t}} \leftarrow m_t / (1 - \beta_1^t), \quad
                \widehat{{v_t}} \leftarrow (\max(v^{{max}}_{{t-1}}, v_t) \text{{ if amsgrad
                else }} v_t) / (1 - \beta_2^t) \\
            &\quad \theta_t \leftarrow \theta_{{t-1}} - \gamma \widehat{{m_t}} /
                \big(\sqrt{{\widehat{{v_t}}}} + \epsilon \big) \\
            &\textbf{{return}} \: \theta_t
       \end{{aligned}}

    From Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (ICLR 2019,
    https://arxiv.org/abs/1711.05101). It is :class:`~npoptim.Adam` with
    ``decoupled_weight_decay=True``: note the default ``weight_decay`` is 1e-2, and that the
    decay is scaled by the learning rate (:math:`\gamma\lambda`), as in torch.

    Args:
        {_params_doc}
        lr (float, optional): learning rate (default: 1e-3)
        betas (Tuple[float, float], optional): coefficients used for computing running
            averages of gradient and its square (default: (0.9, 0.999))
        eps (float, optional): term added to the denominator to improve numerical stability
            (default: 1e-8)
        weight_decay (float, optional): weight decay coefficient (default: 1e-2)
        amsgrad (bool, optional): whether to use the AMSGrad variant (default: False)
        {_maximize_doc}
        {_foreach_doc}
        capturable (bool, optional): accepted for compatibility; has no effect (default: False)
        {_differentiable_doc}
        {_fused_doc}

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, AdamW
        >>> w = Parameter(np.array([1.0, -2.0]))
        >>> opt = AdamW([w], lr=0.1, weight_decay=0.0)
        >>> w.grad = 2 * w.view(np.ndarray)
        >>> opt.step()
        >>> w
        Parameter([ 0.9, -1.9])
    """


def adamw(
    params: list[Parameter],
    grads: list[Array],
    exp_avgs: list[Array],
    exp_avg_sqs: list[Array],
    max_exp_avg_sqs: list[Array],
    state_steps: list[float],
    *,
    amsgrad: bool,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Functional AdamW: :func:`~npoptim.functional.adam` with decoupled weight decay."""
    adam(
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps,
        amsgrad=amsgrad, beta1=beta1, beta2=beta2, lr=lr, weight_decay=weight_decay, eps=eps,
        maximize=maximize, decoupled_weight_decay=True, foreach=foreach, fused=fused,
    )  # fmt: skip
