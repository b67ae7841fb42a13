r"""Gradient clipping and parameter-vector utilities: torch.nn.utils' ``clip_grad_norm_``,
``clip_grad_value_``, ``get_total_norm``, ``clip_grads_with_norm_``,
``parameters_to_vector`` and ``vector_to_parameters`` for npoptim Parameters.

Gradients may be dense arrays or row-sparse :class:`~npoptim.SparseGrad` s; a sparse
gradient is treated as the dense array it stands for (torch itself refuses sparse gradients
here). All functions modify gradients in place.

Example:
    >>> loss_grad(params)                       # fills p.grad
    >>> total = clip_grad_norm_(params, max_norm=1.0)
    >>> opt.step()
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Iterable
from typing import Any, Union, cast

import numpy as np

from .parameter import Parameter, SparseGrad

__all__ = [
    "clip_grad_norm_",
    "clip_grad_value_",
    "clip_grads_with_norm_",
    "get_total_norm",
    "parameters_to_vector",
    "vector_to_parameters",
]

Array = np.ndarray[Any, Any]
Grad = Union[Array, SparseGrad]  # noqa: UP007  (a runtime alias that also reads on 3.10)
Params = Union[Parameter, Iterable[Parameter]]  # noqa: UP007


def _as_list(items: Any) -> list[Any]:
    """A single array (or SparseGrad) as a one-element list, any other iterable as a list."""
    if isinstance(items, (np.ndarray, SparseGrad)):
        return [items]
    return list(items)


def _grads(parameters: list[Parameter]) -> list[Grad]:
    return [p.grad for p in parameters if p.grad is not None]


def _vector_norm(x: Array, norm_type: float) -> np.floating[Any]:
    r"""The ``norm_type``-norm of ``x`` seen as one vector, :math:`(\sum_i |x_i|^p)^{1/p}`
    (max/min of :math:`|x_i|` for :math:`\pm\infty`, the count of non-zeros for 0), in the
    real dtype of ``x``."""
    flat = x.reshape(-1)
    if flat.size == 0 and np.isinf(norm_type):
        raise RuntimeError(
            "_foreach_norm cannot compute the infinity norm on an empty tensor because the "
            "operation does not have an identity"
        )
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        norm = np.linalg.norm(flat, ord=norm_type)
    return cast(np.floating[Any], np.finfo(flat.dtype).dtype.type(norm))


def _grad_norm(grad: Grad, norm_type: float) -> np.floating[Any]:
    """The norm of a gradient; a sparse one counts its missing rows as zeros."""
    if isinstance(grad, SparseGrad):
        if norm_type < 0:  # zeros decide a negative-order norm: use the dense array
            return _vector_norm(grad.to_dense(), norm_type)
        return _vector_norm(grad.coalesce().values, norm_type)
    return _vector_norm(np.asarray(grad), norm_type)


def get_total_norm(
    tensors: Grad | Iterable[Grad],
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> np.floating[Any]:
    r"""The norm of a list of arrays, as if they were concatenated into one vector.

    .. math::
        \|(g_1, \dots, g_n)\|_p = \bigl\|(\|g_1\|_p, \dots, \|g_n\|_p)\bigr\|_p

    (for order 0, as in torch, that is the number of non-zero arrays).

    Args:
        tensors (Iterable[ndarray] or ndarray): the arrays (usually gradients; a
            :class:`~npoptim.SparseGrad` counts as its dense array).
        norm_type (float): the order :math:`p` of the norm; ``inf`` for the max norm.
            Default: 2.0.
        error_if_nonfinite (bool): raise a RuntimeError when the norm is nan or inf.
            Default: False.
        foreach (bool, optional): accepted for torch compatibility; npoptim has one
            implementation. Default: None.

    Returns:
        The total norm, a NumPy scalar of the arrays' (promoted, real) dtype; ``0.0`` for no
        arrays.
    """
    arrays = _as_list(tensors)
    norm_type = float(norm_type)
    if not arrays:
        return cast(np.floating[Any], np.float64(0.0))
    norms = [_grad_norm(g, norm_type) for g in arrays]
    total = _vector_norm(np.stack(norms), norm_type)
    if error_if_nonfinite and not bool(np.isfinite(total)):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from "
            "`parameters` is non-finite, so it cannot be clipped. To disable "
            "this error and scale the gradients by the non-finite norm anyway, "
            "set `error_if_nonfinite=False`"
        )
    return total


def _scale_(grad: Grad, factor: np.floating[Any]) -> None:
    """``grad *= factor`` in place, with ``factor`` in the gradient's own precision (as torch
    multiplies by a 0-d tensor)."""
    values = grad.values if isinstance(grad, SparseGrad) else grad
    with np.errstate(invalid="ignore"):  # inf * 0 is nan, silently as in torch
        values *= np.finfo(values.dtype).dtype.type(factor)


def clip_grads_with_norm_(
    parameters: Params,
    max_norm: float,
    total_norm: float | np.floating[Any],
    foreach: bool | None = None,
) -> None:
    r"""Scale the gradients by ``max_norm / (total_norm + 1e-6)`` when that is below 1.

    .. math::
        g \leftarrow g \cdot \min\left(\frac{\text{max\_norm}}{\text{total\_norm} + 10^{-6}},
        1\right)

    The same as :func:`clip_grad_norm_` with a total norm computed beforehand (for example
    by :func:`get_total_norm`). Gradients are never scaled up.

    Args:
        parameters (Iterable[Parameter] or Parameter): the parameters whose gradients are
            scaled; those without a gradient are skipped.
        max_norm (float): the largest norm allowed.
        total_norm (float): the norm of the gradients.
        foreach (bool, optional): accepted for torch compatibility. Default: None.
    """
    grads = _grads(_as_list(parameters))
    max_norm = float(max_norm)
    if not grads:
        return
    total = np.asarray(total_norm)
    if not np.issubdtype(total.dtype, np.floating):
        total = total.astype(np.float64)
    coef = cast(np.floating[Any], np.minimum(max_norm / (total + 1e-6), 1.0)[()])  # nan stays
    for grad in grads:
        _scale_(grad, coef)


def clip_grad_norm_(
    parameters: Params,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> np.floating[Any]:
    r"""Clip the total norm of the gradients of ``parameters`` to ``max_norm``, in place.

    The norm is taken over all gradients together, as if concatenated into one vector
    (:func:`get_total_norm`); every gradient is then multiplied by
    :math:`\min(\text{max\_norm} / (\text{total\_norm} + 10^{-6}), 1)`
    (:func:`clip_grads_with_norm_`).

    Args:
        parameters (Iterable[Parameter] or Parameter): the parameters whose gradients are
            clipped; those without a gradient are skipped.
        max_norm (float): the largest norm allowed.
        norm_type (float, optional): the order of the norm; ``inf`` for the max norm.
            Default: 2.0.
        error_if_nonfinite (bool, optional): raise a RuntimeError instead of clipping when
            the total norm is nan or inf. Default: False.
        foreach (bool, optional): accepted for torch compatibility. Default: None.

    Returns:
        The total norm of the gradients before clipping.

    Example:
        >>> total = clip_grad_norm_(params, max_norm=1.0, norm_type=2.0)
    """
    params: list[Parameter]
    if isinstance(parameters, np.ndarray):
        params = [cast(Parameter, parameters)]
    else:
        is_generator = isinstance(parameters, types.GeneratorType)
        params = list(parameters)
        if is_generator and not params:
            warnings.warn(
                "`parameters` is an empty generator, no gradient clipping will occur.",
                stacklevel=2,
            )
    total_norm = get_total_norm(_grads(params), norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(params, max_norm, total_norm, foreach)
    return total_norm


def clip_grad_value_(parameters: Params, clip_value: float, foreach: bool | None = None) -> None:
    r"""Clamp every gradient entry to :math:`[-\text{clip\_value}, \text{clip\_value}]`, in
    place.

    Args:
        parameters (Iterable[Parameter] or Parameter): the parameters whose gradients are
            clipped; those without a gradient are skipped.
        clip_value (float): the largest magnitude allowed. A sparse gradient is coalesced
            first (duplicate rows summed) and needs ``clip_value >= 0``.
        foreach (bool, optional): accepted for torch compatibility. Default: None.
    """
    clip_value = float(clip_value)
    grads = _grads(_as_list(parameters))
    for grad in grads:
        if np.iscomplexobj(grad.values if isinstance(grad, SparseGrad) else grad):
            raise NotImplementedError("clamp is not supported for complex types")
    for grad in grads:
        if isinstance(grad, SparseGrad):
            if clip_value < 0:
                raise ValueError(
                    "clip_value must be non-negative to clip a sparse gradient, whose "
                    f"missing rows are zeros, but got {clip_value}"
                )
            if not grad.is_coalesced():
                merged = grad.coalesce()
                grad.indices, grad.values = merged.indices, merged.values
            values = grad.values
        else:
            values = grad
        # max then min, as torch's clamp_min_ then clamp_max_ (nan stays nan)
        np.maximum(values, -clip_value, out=values)
        np.minimum(values, clip_value, out=values)


def parameters_to_vector(parameters: Iterable[Array]) -> Array:
    """Flatten parameters into one new 1-D array (their dtypes promoted together).

    Args:
        parameters (Iterable[ndarray]): the parameters of a model.

    Returns:
        The concatenated values, a plain ndarray.
    """
    return np.concatenate([np.asarray(p).view(np.ndarray).reshape(-1) for p in parameters])


def vector_to_parameters(vec: Array, parameters: Iterable[Array]) -> None:
    """Copy consecutive slices of ``vec`` into ``parameters``, in place.

    The inverse of :func:`parameters_to_vector`: parameter ``i`` receives the next
    ``parameters[i].size`` entries, reshaped to its shape and cast to its dtype.

    Args:
        vec (ndarray): a 1-D array holding the values of all parameters.
        parameters (Iterable[ndarray]): the parameters to overwrite.
    """
    if not isinstance(vec, np.ndarray):
        raise TypeError(f"expected numpy.ndarray, but got: {type(vec).__name__}")
    pointer = 0
    for param in parameters:
        size = int(np.size(param))
        chunk = vec[pointer : pointer + size]
        if chunk.size != size:
            raise ValueError(
                f"vec has {vec.size} elements, too few for the parameters (needed at least "
                f"{pointer + size})"
            )
        np.copyto(param, chunk.reshape(np.shape(param)), casting="same_kind")
        pointer += size
