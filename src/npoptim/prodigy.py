r"""Prodigy: Adam with a step size it estimates itself (beyond torch.optim)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np

from ._docs import _maximize_doc, _params_doc
from ._kernels.loop import CHUNK_BYTES, Array, as_real, parallel_map, temporaries
from ._validation import (
    LIKE_PARAM,
    STEP,
    StateKey,
    TypeCheck,
    check_betas,
    flag,
    integer,
    optional,
    pair,
    real,
)
from .optimizer import (
    Optimizer,
    ParamsT,
    _dense_params_and_grads,
    _eval_closure,
    _zeros_like,
)
from .parameter import Parameter

__all__ = ["Prodigy", "prodigy"]

_MIXED_LR = (
    "Setting different lr values in different parameter groups is only supported for values of 0"
)
_NO_FSDP = (
    "fsdp_in_use=True sums Prodigy's statistics over the ranks of torch's FSDP, which npoptim "
    "does not have; for data-parallel training run Prodigy on every rank after "
    "npoptim.distributed.all_reduce_grads_ (fsdp_in_use=False)"
)


def _sliced_shape(group: Mapping[str, Any], p: np.ndarray[Any, Any]) -> tuple[int, ...]:
    """The shape of ``s`` and ``p0``: every ``slice_p``-th entry of the flattened parameter."""
    return (-(-p.size // group["slice_p"]),)


def _exp_avg_required(group: Mapping[str, Any], p: np.ndarray[Any, Any]) -> bool:
    return bool(group["betas"][0] > 0)


#: ``s`` and ``p0`` (``p0`` may also be a 0-d zero: the oracle's record of an all-zero start).
_SLICED = StateKey(shape=_sliced_shape)


class Prodigy(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        beta3: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decouple: bool = True,
        use_bias_correction: bool = False,
        safeguard_warmup: bool = False,
        d0: float = 1e-6,
        d_coef: float = 1.0,
        growth_rate: float = float("inf"),
        fsdp_in_use: bool = False,
        slice_p: int = 1,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "beta3": beta3,
            "eps": eps,
            "weight_decay": weight_decay,
            "d": d0,
            "d0": d0,
            "d_max": d0,
            "d_numerator": 0.0,
            "d_coef": d_coef,
            "k": 0,
            "growth_rate": growth_rate,
            "use_bias_correction": use_bias_correction,
            "decouple": decouple,
            "safeguard_warmup": safeguard_warmup,
            "fsdp_in_use": fsdp_in_use,
            "slice_p": slice_p,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        **Optimizer._hyperparameters,
        "lr": real,
        "betas": pair(),
        "beta3": optional(real),
        "eps": real,
        "weight_decay": real,
        "d": real,
        "d0": real,
        "d_max": real,
        "d_numerator": real,
        "d_coef": real,
        "k": integer,
        "growth_rate": real,
        "use_bias_correction": flag,
        "decouple": flag,
        "safeguard_warmup": flag,
        "fsdp_in_use": flag,
        "slice_p": integer,
        # written by step()
        "d_denom": real,
        "d_hat": real,
    }
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "step": STEP,
        "s": _SLICED,
        "p0": _SLICED,
        "exp_avg": StateKey(required=_exp_avg_required),
        "exp_avg_sq": LIKE_PARAM,
    }
    _group_flags: ClassVar[dict[str, Any]] = {"maximize": False}

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        # The oracle's checks, in its order; lr 0 is allowed in a group (it freezes it).
        if not 0.0 < settings["d0"]:
            raise ValueError(f"Invalid d0 value: {settings['d0']}")
        if not 0.0 <= settings["lr"]:
            raise ValueError(f"Invalid learning rate: {settings['lr']}")
        if not 0.0 < settings["eps"]:
            raise ValueError(f"Invalid epsilon value: {settings['eps']}")
        check_betas(settings["betas"])
        if not settings["slice_p"] >= 1:
            raise ValueError(f"Invalid slice_p value: {settings['slice_p']}")
        if settings["fsdp_in_use"]:
            raise ValueError(_NO_FSDP)

    def _check_settings(self, settings: dict[str, Any], where: str) -> None:
        super()._check_settings(settings, where)
        if not where and not 0.0 < settings["lr"]:  # the constructor's lr (not a group's)
            raise ValueError(f"Invalid learning rate: {settings['lr']}")

    def _check_param_state(
        self,
        value: Any,
        saved_group: dict[str, Any],
        param: Parameter,
        index: Any,
        group_index: int,
        group: dict[str, Any],
        position: int,
    ) -> None:
        # The oracle keeps a 0-d zero as ``p0`` for a parameter that starts all zero.
        if isinstance(value, Mapping):
            p0 = value.get("p0")
            if isinstance(p0, np.ndarray) and p0.ndim == 0:
                if p0.dtype.kind not in "biuf" or p0 != 0:
                    raise ValueError(
                        f"loaded state for parameter {index} of param_groups[{group_index}]: "
                        f"'p0' is a 0-d array, which Prodigy keeps for an all-zero start only "
                        f"(a real 0), but got {p0!r}"
                    )
                value = {k: v for k, v in value.items() if k != "p0"}
        super()._check_param_state(value, saved_group, param, index, group_index, group, position)

    def step(self, closure: Any = None) -> float | None:
        """Perform a single optimization step (see :meth:`Optimizer.step`)."""
        self._check_param_groups()
        groups = self.param_groups
        lr = max(group["lr"] for group in groups)
        if any(group["lr"] not in (lr, 0.0) for group in groups):
            raise RuntimeError(_MIXED_LR)
        if groups[0]["fsdp_in_use"]:
            raise ValueError(_NO_FSDP)
        loss = _eval_closure(closure)
        found = [_dense_params_and_grads(group, "Prodigy", real_only=True) for group in groups]
        _check_slices(groups, self.state)
        first = groups[0]
        beta1, beta2 = first["betas"]
        for group, (params, _) in zip(groups, found, strict=True):
            for p in params:
                state = self.state[p]
                if "step" not in state:
                    _init_state(state, p, group["slice_p"], beta1 > 0)
                elif beta1 > 0 and "exp_avg" not in state:
                    state["exp_avg"] = _zeros_like(p)
        estimate = _Estimate.of(first, lr)
        measured = [
            _measure(
                params,
                grads,
                [self.state[p] for p in params],
                estimate,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                d0=group["d0"],
                weight_decay=0.0 if first["decouple"] else group["weight_decay"],
                safeguard_warmup=group["safeguard_warmup"],
                slice_p=group["slice_p"],
                maximize=group["maximize"],
            )
            for group, (params, grads) in zip(groups, found, strict=True)
        ]
        delta_numerator, d_denom = _total(measured)
        if d_denom == 0:  # no nonzero gradient yet (or every lr is 0): no step
            return loss
        # the oracle compares d with the d0 of the last group it visited
        new = estimate.updated(delta_numerator, d_denom, groups[-1]["d0"])
        for group, (params, grads), (_, _, kept) in zip(groups, found, measured, strict=True):
            group.update(new.record())
            states = [self.state[p] for p in params]
            for state in states:
                state["step"] += 1
            _apply(
                params, grads, states, kept, dlr=estimate.dlr, d=new.d, eps=group["eps"],
                weight_decay=group["weight_decay"] if first["decouple"] else 0.0,
                slice_p=group["slice_p"],
            )  # fmt: skip
            group["k"] += 1
        return loss


Prodigy.__doc__ = rf"""Implements Prodigy (Adam with D-adaptation's step size, estimated as it
    goes), beyond torch.optim.

    .. math::
       \begin{{aligned}}
            &\textbf{{input}}: \gamma \text{{ (lr)}}, \: \beta_1, \beta_2 \text{{ (betas)}},
                \: \beta_3 \: (\text{{default }} \sqrt{{\beta_2}}), \: d_0, \: c
                \text{{ (d\_coef)}}, \: \rho \text{{ (growth\_rate)}}, \: \lambda
                \text{{ (weight decay)}}, \: \epsilon, \: \theta_0 \\
            &\textbf{{initialize}}: d_0 \leftarrow d_0, \: \hat{{d}}_{{\max}} \leftarrow d_0,
                \: r_0 \leftarrow 0, \: s_0, m_0, v_0 \leftarrow 0 \\
            &\textbf{{for}} \: k=0 \: \textbf{{to}} \: \ldots \: \textbf{{do}} \\
            &\quad g_k \leftarrow \nabla f(\theta_k) \quad (-\nabla f \text{{ if maximize}};
                \: + \lambda \theta_k \text{{ if not decouple}}) \\
            &\quad \eta_k \leftarrow d_k \gamma \, b_k \quad (b_k = \sqrt{{1 - \beta_2^{{k+1}}}}
                / (1 - \beta_1^{{k+1}}) \text{{ with use\_bias\_correction, else }} 1) \\
            &\quad r_{{k+1}} \leftarrow \beta_3 r_k + \tfrac{{d_k}}{{d_0}} \eta_k
                \langle g_k, \theta_0 - \theta_k \rangle \\
            &\quad m_{{k+1}} \leftarrow \beta_1 m_k + (1 - \beta_1) d_k g_k, \:
                v_{{k+1}} \leftarrow \beta_2 v_k + (1 - \beta_2) d_k^2 g_k^2 \\
            &\quad s_{{k+1}} \leftarrow \beta_3 s_k + \tfrac{{d_k}}{{d_0}} \eta_k g_k
                \quad (\tfrac{{d_k}}{{d_0}} d_k g_k \text{{ with safeguard\_warmup}}) \\
            &\quad \hat{{d}}_{{k+1}} \leftarrow c \, r_{{k+1}} / \lVert s_{{k+1}} \rVert_1, \:
                \hat{{d}}_{{\max}} \leftarrow \max(\hat{{d}}_{{\max}}, \hat{{d}}_{{k+1}}) \\
            &\quad d_{{k+1}} \leftarrow \min(\hat{{d}}_{{\max}}, \rho \, d'_k), \:
                d'_k = \max(d_k, \hat{{d}}_{{k+1}}) \text{{ while }} d_k = d_0
                \text{{, else }} d_k \\
            &\quad \theta_{{k+1}} \leftarrow \theta_k (1 - \lambda \eta_k)
                \text{{ if decouple}}, \:
                \theta_{{k+1}} \leftarrow \theta_{{k+1}} - \eta_k m_{{k+1}}
                / (\sqrt{{v_{{k+1}}}} + d_{{k+1}} \epsilon) \\
            &\textbf{{return}} \: \theta_k
       \end{{aligned}}

    The sums :math:`\langle g, \theta_0 - \theta \rangle` and :math:`\lVert s \rVert_1` run
    over every parameter of every group: the step size is one number for the whole model.

    From Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner"
    (ICML 2024, https://arxiv.org/abs/2306.06101), with the arguments, defaults, state keys
    and behaviour of the authors' ``prodigyopt.Prodigy`` (1.1.2), the oracle npoptim is tested
    against. Leave ``lr`` at 1 and tune ``d_coef`` if anything.

    .. warning::
        As the oracle, and unlike the paper's Algorithm 3 (Adam version): the moments are
        scaled by :math:`d_k` (:math:`m` by :math:`d_k`, :math:`v` by :math:`d_k^2`) and the
        step is :math:`\eta_k m / (\sqrt{{v}} + d_{{k+1}} \epsilon)` rather than
        :math:`\eta_k m / (\sqrt{{v}} + d_k \epsilon)`; :math:`r` and :math:`s` are scaled by
        :math:`d_k / d_0` (the estimate is unchanged, the numbers stay away from underflow);
        :math:`d` may jump to :math:`\hat{{d}}` only while it is still :math:`d_0`, then grows
        through :math:`\hat{{d}}_{{\max}}` (and by at most :math:`\rho` a step); with
        ``slice_p`` > 1 the two sums see every ``slice_p``-th entry of each flattened parameter
        only; with ``betas[0] = 0`` no :math:`m` is kept and the step is
        :math:`\eta_k d_{{k+1}} g_k / (\sqrt{{v}} + d_{{k+1}}\epsilon)`. The settings of the
        first group are the ones used for ``betas``, ``beta3``, ``use_bias_correction``,
        ``decouple``, ``d_coef``, ``growth_rate`` and the estimate (``d``, ``d_max``,
        ``d_numerator``, ``k``); every group gets the new estimate. All groups share the largest
        ``lr``; a group may set ``lr=0`` instead (its moments and sums are left out, but, as in
        the oracle, it is still decoupled-decayed with the shared step size). npoptim never
        writes to a ``.grad`` (the oracle adds the L2 term to it in place), keeps ``step`` as a
        float like torch's optimizers, and adds ``maximize`` (torch's meaning; not in the
        oracle). ``fsdp_in_use=True`` is refused: npoptim has no FSDP.

    Args:
        {_params_doc}
        lr (float, optional): a factor on the estimated step size (default: 1.0)
        betas (Tuple[float, float], optional): coefficients of the running averages of the
            gradient and its square (default: (0.9, 0.999))
        beta3 (float, optional): coefficient of the running averages of the estimate's sums;
            None means :math:`\sqrt{{\beta_2}}` (default: None)
        eps (float, optional): term added to the denominator, times :math:`d` (default: 1e-8)
        weight_decay (float, optional): weight decay :math:`\lambda` (default: 0)
        decouple (bool, optional): AdamW's decoupled weight decay; False adds
            :math:`\lambda\theta` to the gradient (default: True)
        use_bias_correction (bool, optional): Adam's bias correction, folded into the step
            size (default: False)
        safeguard_warmup (bool, optional): leave the step size out of :math:`s`'s increments,
            for a warm-up schedule of ``lr`` (default: False)
        d0 (float, optional): the initial estimate :math:`d_0` (default: 1e-6)
        d_coef (float, optional): a factor :math:`c` on the estimate, the preferred way to tune
            it (default: 1.0)
        growth_rate (float, optional): the largest factor :math:`\rho` by which :math:`d` grows
            in one step (default: inf)
        fsdp_in_use (bool, optional): only False (see above) (default: False)
        slice_p (int, optional): estimate from every ``slice_p``-th entry of each parameter
            only, to save memory (default: 1)
        {_maximize_doc}

    State (``optimizer.state[p]``): ``step``, ``s`` and ``p0`` (:math:`s` and
    :math:`\theta_0`, flattened and sliced by ``slice_p``; ``p0`` is a 0-d zero for a
    parameter that starts all zero), ``exp_avg`` (:math:`m`, not with ``betas[0] = 0``) and
    ``exp_avg_sq`` (:math:`v`). Each group holds the estimate: ``d``, ``d_max``,
    ``d_numerator`` (:math:`r`), ``k``, and after the first step ``d_denom``
    (:math:`\lVert s \rVert_1`) and ``d_hat``.

    Example:
        >>> import numpy as np
        >>> from npoptim import Parameter, Prodigy
        >>> w = Parameter(np.array([3.0, -4.0]))
        >>> opt = Prodigy([w])
        >>> for _ in range(100):
        ...     w.grad = 2 * w.view(np.ndarray)  # the gradient of sum(w ** 2)
        ...     opt.step()
        >>> bool(opt.param_groups[0]["d"] > 1e-3)  # grew from d0 = 1e-6
        True
        >>> bool(np.all(np.abs(w) < [3.0, 4.0]))
        True
    """


# ------------------------------------------------------------------------- the estimate
@dataclass(frozen=True)
class _Estimate:
    """The step-size estimate and the numbers of one step that derive from it."""

    d: float
    d_max: float
    d_numerator: float
    d_coef: float
    growth_rate: float
    beta3: float
    dlr: float  # d_k γ b_k, the step size of this step
    d_denom: float = 0.0
    d_hat: float = 0.0

    @classmethod
    def of(cls, group: Mapping[str, Any], lr: float) -> _Estimate:
        """The estimate a step starts from (the first group's), with ``lr`` the groups'
        largest."""
        beta1, beta2 = group["betas"]
        beta3 = group["beta3"]
        k, d = group["k"], group["d"]
        bias_correction = 1.0
        if group["use_bias_correction"]:
            bias_correction = ((1 - beta2 ** (k + 1)) ** 0.5) / (1 - beta1 ** (k + 1))
        return cls(
            d=d,
            d_max=group["d_max"],
            d_numerator=group["d_numerator"],
            d_coef=group["d_coef"],
            growth_rate=group["growth_rate"],
            beta3=math.sqrt(beta2) if beta3 is None else beta3,
            dlr=d * lr * bias_correction,
        )

    def updated(self, delta_numerator: float, d_denom: float, d0: float) -> _Estimate:
        r"""The estimate after a step that measured ``delta_numerator`` (the new terms of
        :math:`r`) and ``d_denom`` (:math:`\lVert s \rVert_1`); ``d0`` is the last group's, the
        one the oracle compares ``d`` with."""
        d_numerator = self.d_numerator * self.beta3 + delta_numerator
        d_hat = self.d_coef * d_numerator / d_denom
        d = self.d
        if d == d0:
            d = max(d, d_hat)
        d_max = max(self.d_max, d_hat)
        d = min(d_max, d * self.growth_rate)
        return _Estimate(
            d, d_max, d_numerator, self.d_coef, self.growth_rate, self.beta3, self.dlr,
            d_denom, d_hat,
        )  # fmt: skip

    def record(self) -> dict[str, float]:
        """What every group holds of the estimate after a step."""
        return {
            "d_numerator": self.d_numerator,
            "d_denom": self.d_denom,
            "d": self.d,
            "d_max": self.d_max,
            "d_hat": self.d_hat,
        }


def _check_slices(groups: list[dict[str, Any]], state: Mapping[Any, Any]) -> None:
    """``slice_p`` still matches the ``s`` of every parameter that has stepped (it is fixed
    from a parameter's first step on)."""
    for i, group in enumerate(groups):
        for j, p in enumerate(group["params"]):
            s = state[p].get("s") if p in state else None
            if s is not None and s.shape != _sliced_shape(group, p):
                raise ValueError(
                    f"param_groups[{i}]['slice_p'] is {group['slice_p']}, but parameter {j} "
                    f"of that group has stepped with an s of {s.size} entries (of its "
                    f"{p.size}): slice_p cannot change once a parameter has stepped"
                )


def _init_state(state: dict[str, Any], p: Parameter, slice_p: int, momentum: bool) -> None:
    flat = as_real(p).reshape(-1)[::slice_p]
    state["step"] = 0.0
    state["s"] = np.zeros_like(flat)
    # the oracle keeps a 0-d zero for a parameter that starts all zero
    state["p0"] = flat.copy() if p.any() else np.zeros((), dtype=p.dtype)
    if momentum:
        state["exp_avg"] = _zeros_like(p)
    state["exp_avg_sq"] = _zeros_like(p)


# ----------------------------------------------------------------------------- passes
@dataclass(frozen=True)
class _Job:
    """One piece of one parameter: matching views of the parameter, its grad, its moments
    and the array that keeps its :math:`g_k` (1-D pieces of C-contiguous arrays, or the
    whole arrays in their shape), and the entries of ``s`` and ``p0`` that fall in it."""

    p: Array
    g: Array
    exp_avg: Array | None
    exp_avg_sq: Array
    kept: Array | None
    s: Array
    p0: Array


def _jobs(
    p: Parameter, grad: Array, state: Mapping[str, Any], slice_p: int, kept: Array | None
) -> list[_Job]:
    """The pieces of one parameter. Arrays that are all C-contiguous are cut into pieces of
    a whole multiple of ``slice_p`` entries (about ``CHUNK_BYTES`` each); others make one
    piece."""
    param, g, exp_avg, exp_avg_sq = (
        as_real(p),
        as_real(grad),
        state.get("exp_avg"),
        state["exp_avg_sq"],
    )
    s, p0 = state["s"], state["p0"]
    arrays = [param, g, exp_avg, exp_avg_sq, kept]
    if not all(a.flags.c_contiguous for a in arrays if a is not None):
        return [_Job(param, g, exp_avg, exp_avg_sq, kept, s, p0)]
    length = slice_p * max(1, (CHUNK_BYTES // p.itemsize) // slice_p)
    jobs = []
    for start in range(0, max(p.size, 1), length):
        piece = slice(start, start + length)
        sliced = slice(start // slice_p, -(-(start + length) // slice_p))
        flat = [None if a is None else a.reshape(-1)[piece] for a in arrays]
        jobs.append(
            _Job(
                cast(Array, flat[0]),
                cast(Array, flat[1]),
                flat[2],
                cast(Array, flat[3]),
                flat[4],
                s[sliced],
                p0 if p0.ndim == 0 else p0[sliced],
            )
        )
    return jobs


def _measure(
    params: list[Parameter],
    grads: list[Array],
    states: list[dict[str, Any]],
    estimate: _Estimate,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    d0: float,
    weight_decay: float,
    safeguard_warmup: bool,
    slice_p: int,
    maximize: bool,
) -> tuple[list[float], list[float], list[Array | None]]:
    r"""The first pass over one group: the moments and :math:`s` updated in place; returns
    each parameter's terms of :math:`r` and of :math:`\lVert s \rVert_1` (none where ``lr``
    is 0), and each parameter's
    :math:`g_k` where the update needs it (``betas[0]`` = 0), else None.

    ``weight_decay`` is the L2 term's (0 with ``decouple``). A group with ``lr`` 0 only
    computes its :math:`g_k` (for the update the oracle gives it with ``betas[0]`` = 0)."""
    active = lr > 0.0
    keep = beta1 == 0
    kept = [np.empty(p.shape, dtype=p.dtype) if keep else None for p in params]
    if not (active or keep):
        return [], [], kept
    ratio = estimate.d / d0
    numbers = {
        "beta1": beta1,
        "beta2": beta2,
        "beta3": estimate.beta3,
        "m_scale": estimate.d * (1 - beta1),
        "v_scale": estimate.d * estimate.d * (1 - beta2),
        "s_scale": ratio * (estimate.d if safeguard_warmup else estimate.dlr),
        "weight_decay": weight_decay,
        "maximize": maximize,
        "active": active,
        "slice_p": slice_p,
    }
    tasks: list[_Job] = []
    owners: list[int] = []
    for i, (p, grad, state) in enumerate(zip(params, grads, states, strict=True)):
        jobs = _jobs(p, grad, state, slice_p, kept[i])
        tasks += jobs
        owners += [i] * len(jobs)
    sums = parallel_map(lambda job: _measure_piece(job, **numbers), tasks)  # type: ignore[arg-type]
    if not active:
        return [], [], kept
    dots, totals = [0.0] * len(params), [0.0] * len(params)
    for i, (dot, total) in zip(owners, sums, strict=True):
        dots[i] += dot
        totals[i] += total
    # each parameter's terms: (d / d0) η ⟨g, θ0 - θ⟩ and Σ|s|
    return [ratio * estimate.dlr * dot for dot in dots], totals, kept


def _total(
    measured: list[tuple[list[float], list[float], list[Array | None]]],
) -> tuple[float, float]:
    """The two sums over every group's parameters, added one by one in order, as the oracle
    adds them."""
    delta_numerator, d_denom = 0.0, 0.0
    for numerators, denominators, _ in measured:
        for numerator, denominator in zip(numerators, denominators, strict=True):
            delta_numerator += numerator
            d_denom += denominator
    return delta_numerator, d_denom


def _measure_piece(
    job: _Job,
    *,
    beta1: float,
    beta2: float,
    beta3: float,
    m_scale: float,
    v_scale: float,
    s_scale: float,
    weight_decay: float,
    maximize: bool,
    active: bool,
    slice_p: int,
) -> tuple[float, float]:
    r"""One piece of the first pass: :math:`g_k`, then (``active``) the moments and
    :math:`s`; returns the piece's :math:`\langle g_k, \theta_0 - \theta_k \rangle` and
    :math:`\sum |s|`, each reduced in the parameter's dtype as the oracle reduces them."""
    p = job.p
    g_k, tmp = temporaries(p, 2)
    if job.kept is not None:
        g_k = job.kept
    if maximize:
        np.negative(job.g, out=g_k)
    elif job.kept is not None or weight_decay != 0.0:
        np.copyto(g_k, job.g)
    else:  # the grad itself, read only
        g_k = job.g
    if weight_decay != 0.0:  # the L2 form: g + λθ
        np.multiply(p, weight_decay, out=tmp)
        g_k += tmp
    if not active:
        return 0.0, 0.0
    g_sliced = g_k.reshape(-1)[::slice_p]
    t = tmp.reshape(-1)[: job.s.size]
    np.subtract(job.p0, p.reshape(-1)[::slice_p], out=t)
    dot = float(np.dot(g_sliced, t))
    exp_avg, exp_avg_sq, s = job.exp_avg, job.exp_avg_sq, job.s
    if exp_avg is not None:  # m ← β1 m + (1 - β1) d g
        exp_avg *= beta1
        np.multiply(g_k, m_scale, out=tmp)
        exp_avg += tmp
    exp_avg_sq *= beta2  # v ← β2 v + (1 - β2) d² g²
    np.multiply(g_k, v_scale, out=tmp)
    tmp *= g_k
    exp_avg_sq += tmp
    s *= beta3  # s ← β3 s + (d / d0) η g
    np.multiply(g_sliced, s_scale, out=t)
    s += t
    np.abs(s, out=t)
    return dot, float(t.sum())


def _apply(
    params: list[Parameter],
    grads: list[Array],
    states: list[dict[str, Any]],
    kept: list[Array | None],
    *,
    dlr: float,
    d: float,
    eps: float,
    weight_decay: float,
    slice_p: int,
) -> None:
    r"""The second pass over one group: the step :math:`\theta \leftarrow \theta (1 -
    \lambda\eta) - \eta m / (\sqrt{v} + d\epsilon)` (``weight_decay`` is the decoupled one's,
    0 without ``decouple``), with :math:`d g_k` for :math:`m` where ``kept``."""
    tasks = [
        job
        for p, grad, state, g_k in zip(params, grads, states, kept, strict=True)
        for job in _jobs(p, grad, state, slice_p, g_k)
    ]
    numbers = {"dlr": dlr, "d": d, "eps": eps, "weight_decay": weight_decay}
    parallel_map(lambda job: _apply_piece(job, **numbers), tasks)


def _apply_piece(job: _Job, *, dlr: float, d: float, eps: float, weight_decay: float) -> None:
    p = job.p
    denom, tmp = temporaries(p, 2)
    np.sqrt(job.exp_avg_sq, out=denom)
    denom += d * eps
    if weight_decay != 0.0:  # θ ← θ - λ η θ
        np.multiply(p, -weight_decay * dlr, out=tmp)
        p += tmp
    if job.exp_avg is not None:
        np.multiply(job.exp_avg, -dlr, out=tmp)
    else:  # no momentum: d g_k for m
        assert job.kept is not None
        np.multiply(job.kept, -dlr * d, out=tmp)
    tmp /= denom
    p += tmp


# ------------------------------------------------------------------------- functional
def prodigy(
    params: list[Parameter],
    grads: list[Array],
    exp_avgs: list[Array] | None,
    exp_avg_sqs: list[Array],
    s: list[Array],
    p0s: list[Array],
    *,
    d: float,
    d0: float,
    d_max: float,
    d_numerator: float,
    k: int,
    lr: float,
    beta1: float,
    beta2: float,
    beta3: float | None,
    eps: float,
    weight_decay: float,
    decouple: bool,
    use_bias_correction: bool,
    safeguard_warmup: bool,
    d_coef: float,
    growth_rate: float,
    slice_p: int,
    maximize: bool,
) -> dict[str, float] | None:
    r"""Functional Prodigy over one group: one step (``k`` >= 0 steps taken before it),
    updating ``params``, the moments and ``s`` in place; returns the new estimate (``d``,
    ``d_max``, ``d_numerator``, ``d_denom``, ``d_hat``), or None where no gradient is nonzero
    yet (then no step is taken; the moments have decayed).

    ``exp_avgs`` is None with ``beta1`` = 0; ``p0s`` are the parameters' flattened starting
    values, every ``slice_p``-th entry. See :class:`Prodigy` for the math. Two passes, each
    over pieces of the parameters shared among threads: the first updates the moments and
    :math:`s` and measures the two sums; the second takes the step.
    """
    states = [
        {"exp_avg": None if exp_avgs is None else exp_avgs[i], "exp_avg_sq": exp_avg_sqs[i],
         "s": s[i], "p0": p0s[i]}
        for i in range(len(params))
    ]  # fmt: skip
    group = {
        "betas": (beta1, beta2), "beta3": beta3, "k": k, "d": d, "d_max": d_max,
        "d_numerator": d_numerator, "d_coef": d_coef, "growth_rate": growth_rate,
        "use_bias_correction": use_bias_correction,
    }  # fmt: skip
    estimate = _Estimate.of(group, lr)
    measured = _measure(
        params, grads, states, estimate, lr=lr, beta1=beta1, beta2=beta2, d0=d0,
        weight_decay=0.0 if decouple else weight_decay, safeguard_warmup=safeguard_warmup,
        slice_p=slice_p, maximize=maximize,
    )  # fmt: skip
    delta_numerator, d_denom = _total([measured])
    if d_denom == 0:
        return None
    new = estimate.updated(delta_numerator, d_denom, d0)
    _apply(
        params, grads, states, measured[2], dlr=estimate.dlr, d=new.d, eps=eps,
        weight_decay=weight_decay if decouple else 0.0, slice_p=slice_p,
    )  # fmt: skip
    return new.record()
