r"""L-BFGS with an optional strong-Wolfe line search."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from ._kernels.loop import Array, as_real
from ._validation import (
    StateKey,
    TypeCheck,
    integer,
    is_real,
    never,
    optional,
    real,
    text,
)
from .optimizer import Optimizer, ParamsT
from .parameter import Parameter, SparseGrad

__all__ = ["LBFGS"]


def _flat_shape(group: Mapping[str, Any], p: np.ndarray[Any, Any]) -> tuple[int, ...] | None:
    """The flat length of all parameters (complex as two reals), for the first parameter's
    state; other parameters keep none."""
    params = group["params"]
    if p is not params[0]:
        return None
    return (sum(q.size * (2 if np.iscomplexobj(q) else 1) for q in params),)


def _first_only(group: Mapping[str, Any], p: np.ndarray[Any, Any]) -> bool:
    return _flat_shape(group, p) is not None


_FIRST_COUNTER = StateKey("scalar", shape=_flat_shape, required=_first_only)

Scalar = Any  # a Python float or a NumPy floating scalar of the flat vectors' dtype
ObjFunc = Callable[[list[Array], Scalar, Array], tuple[float, Array]]


class LBFGS(Optimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float = 1,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: str | None = None,
    ) -> None:
        if max_eval is None and integer(max_iter) is None:  # a bad max_iter: refused below
            max_eval = max_iter * 5 // 4
        defaults = {
            "lr": lr,
            "max_iter": max_iter,
            "max_eval": max_eval,
            "tolerance_grad": tolerance_grad,
            "tolerance_change": tolerance_change,
            "history_size": history_size,
            "line_search_fn": line_search_fn,
        }
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")

    _hyperparameters: ClassVar[dict[str, TypeCheck]] = {
        "lr": real,
        "max_iter": integer,
        "max_eval": real,
        "tolerance_grad": real,
        "tolerance_change": real,
        "history_size": integer,
        "line_search_fn": optional(text),
    }
    # All of L-BFGS's state lives under the group's first parameter; its vectors are the
    # flat (complex as two reals) length of all parameters.
    _state_keys: ClassVar[dict[str, StateKey] | None] = {
        "func_evals": _FIRST_COUNTER,
        "n_iter": _FIRST_COUNTER,
        "d": StateKey(shape=_flat_shape, required=never),
        "t": StateKey("scalar", shape=_flat_shape, required=never, nullable=True),
        "old_dirs": StateKey("arrays", shape=_flat_shape, required=never),
        "old_stps": StateKey("arrays", shape=_flat_shape, required=never),
        "ro": StateKey("scalars", shape=_flat_shape, required=never),
        "al": StateKey("scalars", shape=_flat_shape, required=never),
        "H_diag": StateKey("scalar", shape=_flat_shape, required=never),
        "prev_flat_grad": StateKey(shape=_flat_shape, required=never),
        "prev_loss": StateKey("scalar", shape=_flat_shape, required=never, nullable=True),
    }

    @staticmethod
    def _check_ranges(settings: dict[str, Any]) -> None:
        if not 0.0 <= settings["lr"]:
            raise ValueError(f"Invalid learning rate: {settings['lr']}")

    @property
    def _params(self) -> list[Parameter]:
        params: list[Parameter] = self.param_groups[0]["params"]
        return params

    def _directional_evaluate(
        self, evaluate: Callable[[], tuple[Any, float]], x: list[Array], t: Scalar, d: Array
    ) -> tuple[float, Array]:
        """The loss and flat gradient at ``x + t d``; the parameters are then reset to ``x``."""
        _add_to_params(self._params, t, d)
        loss = evaluate()[1]
        flat_grad = _gather_flat_grad(self._params)
        for p, saved in zip(self._params, x, strict=True):
            np.copyto(p.view(np.ndarray), saved)
        return loss, flat_grad

    def step(self, closure: Callable[[], Any]) -> Any:  # type: ignore[override]
        """Perform a single optimization step: up to ``max_iter`` L-BFGS iterations.

        Args:
            closure: a callable that re-evaluates the model, sets the ``.grad`` of every
                parameter and returns the loss. It is called several times.

        Returns:
            What the first call of ``closure`` returned (the loss before the step).

        As in torch, overflow and division by zero in L-BFGS's own arithmetic (a diverging
        or degenerate run) give inf and NaN silently; the closure runs under the caller's
        NumPy error settings.
        """
        self._check_param_groups()
        errors = np.geterr()

        def evaluate() -> tuple[Any, float]:
            """The closure's result, and the loss as a float."""
            with np.errstate(**errors):
                value = closure()
            return value, _loss_value(value)

        with np.errstate(all="ignore"):
            return self._step(evaluate)

    def _step(self, evaluate: Callable[[], tuple[Any, float]]) -> Any:
        """The body of :meth:`step`, with the closure wrapped as ``evaluate``."""
        if len(self.param_groups) != 1:
            raise AssertionError(
                f"Expected exactly one param_group, but got {len(self.param_groups)}"
            )
        group = self.param_groups[0]
        lr = float(group["lr"])
        max_iter = group["max_iter"]
        max_eval = group["max_eval"]
        tolerance_grad = group["tolerance_grad"]
        tolerance_change = group["tolerance_change"]
        line_search_fn = group["line_search_fn"]
        history_size = group["history_size"]
        params = self._params

        # All of L-BFGS's state is global; it lives under the first parameter, as in torch.
        orig_loss, loss = evaluate()  # checked before any state changes
        state = self.state[params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        current_evals = 1
        state["func_evals"] += 1
        flat_grad = _gather_flat_grad(params)
        if np.abs(flat_grad).max() <= tolerance_grad:
            return orig_loss  # already first-order optimal

        d: Array | None = state.get("d")
        t: Scalar = state.get("t")
        old_dirs: list[Array] = state.get("old_dirs", [])  # y_k: gradient differences
        old_stps: list[Array] = state.get("old_stps", [])  # s_k: parameter steps
        ro: list[float] = state.get("ro", [])  # 1 / (y_k · s_k)
        H_diag: float = state.get("H_diag", 1.0)  # scale γ_k of the initial inverse Hessian
        prev_flat_grad: Array | None = state.get("prev_flat_grad")
        prev_loss: float | None = state.get("prev_loss")

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1

            # ---- search direction
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro, H_diag = [], [], [], 1.0
            else:
                assert d is not None and prev_flat_grad is not None
                H_diag = _update_memory(
                    old_dirs, old_stps, ro, H_diag, y=flat_grad - prev_flat_grad, s=d * t,
                    history_size=history_size,
                )  # fmt: skip
                if "al" not in state:
                    state["al"] = [None] * history_size
                d = _two_loop_direction(flat_grad, old_dirs, old_stps, ro, H_diag, state["al"])
            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.copy()
            else:
                np.copyto(prev_flat_grad, flat_grad)
            prev_loss = loss

            # ---- step length: a scaled first step, then the learning rate
            t = lr if state["n_iter"] != 1 else min(1.0, 1.0 / np.abs(flat_grad).sum()) * lr
            gtd = flat_grad.dot(d)  # directional derivative g · d
            if gtd > -tolerance_change:
                break  # not a descent direction (to tolerance)

            ls_func_evals = 0
            if line_search_fn is not None:
                if line_search_fn != "strong_wolfe":
                    raise RuntimeError("only 'strong_wolfe' is supported")
                x_init = [p.view(np.ndarray).copy() for p in params]

                def obj_func(x: list[Array], t: Scalar, d: Array) -> tuple[float, Array]:
                    return self._directional_evaluate(evaluate, x, t, d)

                loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                    obj_func, x_init, t, d, loss, flat_grad, gtd, max_ls=max_eval - current_evals
                )
                _add_to_params(params, t, d)
                opt_cond = np.abs(flat_grad).max() <= tolerance_grad
            else:
                _add_to_params(params, t, d)
                opt_cond = False
                if n_iter != max_iter:
                    # Re-evaluate except after the last iteration (torch's rule: in a
                    # stochastic setting the extra evaluation would be of no use).
                    loss = evaluate()[1]
                    flat_grad = _gather_flat_grad(params)
                    opt_cond = np.abs(flat_grad).max() <= tolerance_grad
                    ls_func_evals = 1
            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals

            # ---- stopping rules
            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if np.abs(d * t).max() <= tolerance_change:
                break  # the step no longer moves the parameters
            if abs(loss - prev_loss) < tolerance_change:
                break  # the loss no longer changes

        state["d"] = d
        state["t"] = None if t is None else float(t)
        state["old_dirs"] = old_dirs
        state["old_stps"] = old_stps
        state["ro"] = ro
        state["H_diag"] = H_diag
        state["prev_flat_grad"] = prev_flat_grad
        state["prev_loss"] = prev_loss
        return orig_loss


def _loss_value(value: Any) -> float:
    """The closure's loss as a float; anything but a real number is refused."""
    if is_real(value):
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        return float(value.reshape(()))
    raise TypeError(
        "LBFGS needs a closure that returns the loss as a real number, but it returned "
        f"{value!r} ({type(value).__name__})"
    )


LBFGS.__doc__ = r"""Implements the L-BFGS algorithm, optionally with a strong-Wolfe line search.

    All parameters are seen as one flat vector :math:`x` (a complex value counts as two
    reals) with gradient :math:`g`. One ``step(closure)`` runs up to ``max_iter`` iterations:

    .. math::
       \begin{aligned}
            &\textbf{input}: \gamma \text{ (lr)}, \: x_0, \: f \text{ (closure)},
                \: m \text{ (history size)} \\
            &\textbf{for} \: k = 0, 1, \ldots \: \textbf{do} \\
            &\quad \textbf{if} \: k = 0: \: d_k \leftarrow -g_0 \\
            &\quad \textbf{else}: \: y \leftarrow g_k - g_{k-1}, \: s \leftarrow t_{k-1}
                d_{k-1}; \: \textbf{if} \: y^\top s > 10^{-10}: \text{ keep } (s, y)
                \text{ (the last } m \text{)}, \: H_0 \leftarrow \frac{y^\top s}{y^\top y} \\
            &\qquad d_k \leftarrow -H_k g_k \text{ (two-loop recursion over the kept pairs)} \\
            &\quad t_k \leftarrow \min(1, 1 / \lVert g_0 \rVert_1) \gamma \text{ if } k = 0
                \text{ else } \gamma \\
            &\quad \textbf{if line search}: \: t_k \leftarrow \text{a step that satisfies }
                f(x_k + t_k d_k) \le f(x_k) + c_1 t_k g_k^\top d_k, \:
                |g(x_k + t_k d_k)^\top d_k| \le c_2 |g_k^\top d_k| \\
            &\quad x_{k+1} \leftarrow x_k + t_k d_k \\
            &\textbf{return} \: x
       \end{aligned}

    with :math:`c_1 = 10^{-4}` and :math:`c_2 = 0.9`. Iterations stop early when
    :math:`\max|g| \le` ``tolerance_grad``, when :math:`g^\top d > -` ``tolerance_change``,
    when :math:`\max|t d| \le` ``tolerance_change``, when the loss changes by less than
    ``tolerance_change``, or after ``max_eval`` closure calls.

    L-BFGS is from Nocedal, "Updating quasi-Newton matrices with limited storage" (Math.
    Comp. 35, 1980) and Liu & Nocedal (Math. Prog. 45, 1989); the line search is
    Algorithms 3.5 (bracketing) and 3.6 (zoom) of Nocedal & Wright, *Numerical
    Optimization* (2nd ed., 2006), with cubic interpolation, in torch's form (itself from
    minFunc): the same constants and stopping rules, so that the same steps are taken with the
    same number of function evaluations.

    .. warning::
        There is a single parameter group and no per-parameter options. The optimizer keeps
        ``2 * history_size + 2`` flat vectors the size of all parameters together.

    Args:
        params (iterable): iterable of Parameters (or ``(name, Parameter)`` pairs) to optimize,
            as a single group.
        lr (float, optional): learning rate (default: 1)
        max_iter (int, optional): maximal number of iterations per optimization step
            (default: 20)
        max_eval (int, optional): maximal number of function evaluations per optimization
            step (default: ``max_iter * 5 // 4``)
        tolerance_grad (float, optional): termination tolerance on first order optimality
            (default: 1e-7)
        tolerance_change (float, optional): termination tolerance on function
            value/parameter changes (default: 1e-9)
        history_size (int, optional): update history size (default: 100)
        line_search_fn (str, optional): either ``'strong_wolfe'`` or None (default: None)

    ``step(closure)`` requires the closure, which must set the ``.grad`` of the parameters
    (a missing grad counts as zero, a :class:`~npoptim.SparseGrad` as its dense form) and
    return the loss; ``step`` returns the closure's first result.

    State (``optimizer.state[first parameter]``): ``func_evals`` and ``n_iter`` (ints,
    cumulative), ``d`` (last direction), ``t`` (last step length), ``old_dirs`` and
    ``old_stps`` (lists of the kept :math:`y` and :math:`s`), ``ro`` (their
    :math:`1 / y^\top s`), ``H_diag``, ``prev_flat_grad``, ``prev_loss`` and ``al`` (the
    two-loop coefficients). A run resumed from ``state_dict()`` continues exactly.

    Example:
        >>> import numpy as np
        >>> from npoptim import LBFGS, Parameter
        >>> x = Parameter(np.array([-1.5, 2.0]))
        >>> opt = LBFGS([x], line_search_fn="strong_wolfe")
        >>> def closure():
        ...     a, b = x.view(np.ndarray)
        ...     x.grad = np.array([-400 * a * (b - a**2) - 2 * (1 - a), 200 * (b - a**2)])
        ...     return (1 - a) ** 2 + 100 * (b - a**2) ** 2
        >>> for _ in range(5):
        ...     _ = opt.step(closure)
        >>> np.round(x, 4)
        array([1., 1.])
    """


# -------------------------------------------------------------------------------------------
# Flat vectors


def _gather_flat_grad(params: list[Parameter]) -> Array:
    """All gradients as one new flat real vector (zeros for a missing grad)."""
    pieces = []
    for p in params:
        grad = p.grad
        if grad is None:
            dense = np.zeros(p.shape, dtype=p.dtype)
        elif isinstance(grad, SparseGrad):
            dense = grad.to_dense()
        else:
            dense = grad
        pieces.append(as_real(np.asarray(dense)).reshape(-1))
    return np.concatenate(pieces)


def _add_to_params(params: list[Parameter], t: Scalar, d: Array) -> None:
    """``x += t d`` in place on the parameters, ``d`` being a flat real vector."""
    offset = 0
    for p in params:
        x = as_real(p.view(np.ndarray))
        x += t * d[offset : offset + x.size].reshape(x.shape)
        offset += x.size
    if offset != d.shape[0]:
        raise AssertionError(f"Expected offset {offset} to equal {d.shape[0]}")


# -------------------------------------------------------------------------------------------
# L-BFGS memory and direction


def _update_memory(
    old_dirs: list[Array],
    old_stps: list[Array],
    ro: list[float],
    H_diag: float,
    *,
    y: Array,
    s: Array,
    history_size: int,
) -> float:
    """Keep the pair ``(s, y)`` if it has positive curvature, forgetting the oldest pair
    beyond ``history_size``; returns the new initial inverse-Hessian scale."""
    ys = y.dot(s)  # y · s
    if ys > 1e-10:
        if len(old_dirs) == history_size:
            old_dirs.pop(0)
            old_stps.pop(0)
            ro.pop(0)
        old_dirs.append(y)
        old_stps.append(s)
        ro.append(float(1.0 / ys))
        H_diag = float(ys / y.dot(y))  # γ = y·s / y·y
    return H_diag


def _two_loop_direction(
    flat_grad: Array,
    old_dirs: list[Array],
    old_stps: list[Array],
    ro: list[float],
    H_diag: float,
    al: list[Any],
) -> Array:
    """The L-BFGS direction ``-H g`` by the two-loop recursion (Nocedal & Wright, Alg. 7.4);
    ``al`` receives the first loop's coefficients."""
    q = -flat_grad
    for i in range(len(old_dirs) - 1, -1, -1):  # newest to oldest
        al[i] = float(old_stps[i].dot(q) * ro[i])  # α_i = ρ_i s_i · q
        q -= old_dirs[i] * al[i]  # q ← q - α_i y_i
    r = q * H_diag  # r ← H_0 q
    for i in range(len(old_dirs)):  # oldest to newest
        be_i = old_dirs[i].dot(r) * ro[i]  # β = ρ_i y_i · r
        r += old_stps[i] * (al[i] - be_i)  # r ← r + (α_i - β) s_i
    return r


# -------------------------------------------------------------------------------------------
# Strong-Wolfe line search (Nocedal & Wright, Algorithms 3.5 and 3.6)


def _cubic_interpolate(
    x1: Scalar,
    f1: Scalar,
    g1: Scalar,
    x2: Scalar,
    f2: Scalar,
    g2: Scalar,
    bounds: tuple[Scalar, Scalar] | None = None,
) -> Scalar:
    """The minimizer of the cubic through ``(x1, f1)`` and ``(x2, f2)`` with slopes ``g1``
    and ``g2``, clipped to ``bounds`` (default: the interval between the points).

    Nocedal & Wright, eq. (3.59). When the cubic has no minimizer the midpoint of the
    bounds is returned.
    """
    lo, hi = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    with np.errstate(divide="ignore", invalid="ignore"):  # inf/nan as in torch, silently
        d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
        d2_square = d1**2 - g1 * g2
        if not d2_square >= 0:  # no real minimizer (or NaN): bisect
            return (lo + hi) / 2.0
        d2 = np.sqrt(d2_square)
        if x1 <= x2:
            minimizer = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            minimizer = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(minimizer, lo), hi)


class _Point:
    """A trial step ``t`` with its loss ``f``, flat gradient ``g`` and slope ``gtd = g·d``."""

    __slots__ = ("f", "g", "gtd", "t")

    def __init__(self, t: Scalar, f: Scalar, g: Array, gtd: Scalar) -> None:
        self.t, self.f, self.g, self.gtd = t, f, g, gtd


def _strong_wolfe(
    obj_func: ObjFunc,
    x: list[Array],
    t: Scalar,
    d: Array,
    f: float,
    g: Array,
    gtd: Scalar,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
    max_ls: int = 25,
) -> tuple[float, Array, Scalar, int]:
    """Find a step along ``d`` from ``x`` that satisfies the strong Wolfe conditions.

    ``f``, ``g`` and ``gtd`` are the loss, gradient and slope at ``x``; ``t`` is the first
    trial step; ``obj_func(x, t, d)`` returns the loss and gradient at ``x + t d``; at most
    ``max_ls`` evaluations follow the first. Returns the loss, gradient and step of the
    accepted (or best found) point and the number of evaluations.
    """
    d_norm = np.abs(d).max()
    origin = _Point(0, f, g.copy(), gtd)

    def evaluate(t: Scalar) -> _Point:
        f_t, g_t = obj_func(x, t, d)
        return _Point(t, f_t, g_t, g_t.dot(d))

    def armijo_fails(p: _Point) -> bool:
        return bool(p.f > f + c1 * p.t * gtd)  # f(x + t d) > f(x) + c1 t g·d

    def curvature_holds(p: _Point) -> bool:
        return bool(abs(p.gtd) <= -c2 * gtd)  # |g(x + t d)·d| <= c2 |g·d|

    # Algorithm 3.5: increase the step until an interval [lo, hi] brackets an acceptable step,
    # or the step itself is acceptable.
    new = evaluate(t)
    evals = 1
    prev = origin
    bracket: list[_Point] | None = None
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if armijo_fails(new) or (ls_iter > 1 and new.f >= prev.f):
            bracket = [prev, new]
            break
        if curvature_holds(new):
            bracket, done = [new], True
            break
        if new.gtd >= 0:
            bracket = [prev, new]
            break
        # Extrapolate: a cubic step, at least 1% further than t and at most 10 t.
        t_next = _cubic_interpolate(
            prev.t, prev.f, prev.gtd, new.t, new.f, new.gtd,
            bounds=(new.t + 0.01 * (new.t - prev.t), new.t * 10),
        )  # fmt: skip
        prev = new
        new = evaluate(t_next)
        evals += 1
        ls_iter += 1
    if bracket is None:  # out of evaluations: choose between the origin and the last step
        bracket = [origin, new]

    # Algorithm 3.6: shrink the bracket by cubic interpolation, keeping in `lo` the best
    # point that satisfies sufficient decrease, until the curvature condition holds.
    insufficient_progress = False
    lo, hi = (0, 1) if bracket[0].f <= bracket[-1].f else (1, 0)
    while not done and ls_iter < max_ls:
        a, b = bracket
        if abs(b.t - a.t) * d_norm < tolerance_change:
            break  # the bracket is too small to matter
        t = _cubic_interpolate(a.t, a.f, a.gtd, b.t, b.f, b.gtd)
        # Keep the trial step away from the bracket's ends: if it lands within 10% of an end
        # twice in a row, or outside, move it to 10% of the bracket from the nearer end.
        left, right = min(a.t, b.t), max(a.t, b.t)
        margin = 0.1 * (right - left)
        if min(right - t, t - left) < margin:
            if insufficient_progress or t >= right or t <= left:
                t = right - margin if abs(t - right) < abs(t - left) else left + margin
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False

        new = evaluate(t)
        evals += 1
        ls_iter += 1
        if armijo_fails(new) or new.f >= bracket[lo].f:
            bracket[hi] = new  # the new point bounds the bracket from the high side
            lo, hi = (0, 1) if bracket[0].f <= bracket[1].f else (1, 0)
        else:
            if curvature_holds(new):
                done = True
            elif new.gtd * (bracket[hi].t - bracket[lo].t) >= 0:
                bracket[hi] = bracket[lo]  # the slope points away from hi: old lo becomes hi
            bracket[lo] = new

    best = bracket[lo]
    return best.f, best.g, best.t, evals
