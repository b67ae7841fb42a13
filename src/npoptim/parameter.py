"""Parameters: NumPy arrays that carry a gradient.

A :class:`Parameter` is an ``np.ndarray`` subclass with one extra attribute, ``grad``, the
NumPy analog of ``torch.nn.Parameter``. A gradient is either dense (an ndarray of the
parameter's shape and dtype) or row-sparse (a :class:`SparseGrad`, the analog of the sparse
gradient torch gives an embedding table).
"""

from __future__ import annotations

import copy
from typing import Any, Union

import numpy as np
import numpy.typing as npt

__all__ = ["Grad", "Parameter", "SparseGrad", "is_supported_dtype"]


def is_supported_dtype(dtype: np.dtype[Any]) -> bool:
    """Whether ``dtype`` can hold a parameter: a real or complex floating type."""
    return bool(np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating))


class SparseGrad:
    """A row-sparse gradient in COO form, the analog of torch's sparse grad of an embedding.

    Row ``indices[k]`` of the dense gradient receives ``values[k]``; an index may appear more
    than once (its rows add up) and indices need not be sorted.

    Args:
        indices: integer array of shape ``(nnz,)``, each in ``[0, shape[0])``.
        values: array of shape ``(nnz, *shape[1:])``.
        shape: the dense shape (the parameter's shape), at least one dimension.

    Example:
        >>> g = SparseGrad(np.array([2, 0, 2]), np.ones((3, 4)), (5, 4))
        >>> g.coalesce().indices
        array([0, 2])
        >>> g.to_dense()[2]
        array([2., 2., 2., 2.])
    """

    __slots__ = ("_coalesced", "indices", "shape", "values")

    def __init__(
        self,
        indices: npt.ArrayLike,
        values: npt.ArrayLike,
        shape: tuple[int, ...],
        *,
        _coalesced: bool = False,
    ) -> None:
        shape = tuple(int(n) for n in shape)
        idx = np.asarray(indices)
        vals = np.asarray(values)
        if len(shape) == 0:
            raise ValueError("SparseGrad needs a shape with at least one dimension, got ()")
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise ValueError(
                f"SparseGrad indices must be a 1-D integer array, got shape {idx.shape} "
                f"and dtype {idx.dtype}"
            )
        expected = (idx.shape[0], *shape[1:])
        if vals.shape != expected:
            raise ValueError(
                f"SparseGrad values must have shape (nnz, *shape[1:]) = {expected}, "
                f"got {vals.shape}"
            )
        if not is_supported_dtype(vals.dtype):
            raise TypeError(f"SparseGrad values must be floating or complex, got {vals.dtype}")
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (idx.min() < 0 or idx.max() >= shape[0]):
            raise IndexError(
                f"SparseGrad index out of range: indices span [{idx.min()}, {idx.max()}] "
                f"but the first dimension has size {shape[0]}"
            )
        self.indices: npt.NDArray[np.int64] = idx
        self.values: np.ndarray[Any, Any] = vals
        self.shape: tuple[int, ...] = shape
        self._coalesced = _coalesced or idx.size <= 1

    @property
    def dtype(self) -> np.dtype[Any]:
        """The dtype of the values."""
        dtype: np.dtype[Any] = self.values.dtype
        return dtype

    @property
    def nnz(self) -> int:
        """The number of stored rows (duplicates counted)."""
        return int(self.indices.shape[0])

    def is_coalesced(self) -> bool:
        """Whether indices are known to be sorted and unique."""
        return self._coalesced

    def coalesce(self) -> SparseGrad:
        """A copy with sorted, unique indices; the values of duplicate rows are summed."""
        if self._coalesced:
            return SparseGrad(self.indices.copy(), self.values.copy(), self.shape, _coalesced=True)
        order = np.argsort(self.indices, kind="stable")  # duplicates keep their order
        rows = self.indices[order]
        values = self.values[order]
        first = np.concatenate(([True], rows[1:] != rows[:-1]))  # first entry of each row
        if not first.all():
            # Sum each row's entries one after the other, in the order given (as torch does).
            run = np.cumsum(first) - 1
            summed = values[first]
            np.add.at(summed, run[~first], values[~first])
            rows, values = rows[first], summed
        return SparseGrad(rows, values, self.shape, _coalesced=True)

    def to_dense(self) -> np.ndarray[Any, Any]:
        """The dense gradient: zeros except the listed rows, duplicates summed."""
        dense = np.zeros(self.shape, dtype=self.values.dtype)
        np.add.at(dense, self.indices, self.values)
        return dense

    def zero_(self) -> None:
        """Drop every stored row in place (torch's ``sparse_grad.zero_()``)."""
        self.indices = self.indices[:0].copy()
        self.values = self.values[:0].copy()
        self._coalesced = True

    def __neg__(self) -> SparseGrad:
        return SparseGrad(self.indices, -self.values, self.shape, _coalesced=self._coalesced)

    def __repr__(self) -> str:
        return f"SparseGrad(indices={self.indices!r}, values={self.values!r}, shape={self.shape})"


Grad = Union[np.ndarray, SparseGrad]  # noqa: UP007  (a runtime alias that also reads on 3.10)


def _grad_error(param: Parameter, grad: object) -> Exception | None:
    """Why ``grad`` cannot be the gradient of ``param``, or None when it can."""
    if grad is None:
        return None
    if isinstance(grad, SparseGrad):
        kind = "sparse grad"
    elif isinstance(grad, np.ndarray):
        kind = "grad"
    else:
        return TypeError(
            "assigned grad expected to be a numpy.ndarray, SparseGrad or None but got grad "
            f"of type {type(grad).__name__}"
        )
    if grad.dtype != param.dtype:
        return TypeError(
            f"assigned grad has data of a different type: {kind} dtype {grad.dtype} "
            f"vs parameter dtype {param.dtype}"
        )
    if tuple(grad.shape) != param.shape:
        return RuntimeError(
            f"assigned grad has data of a different size: {kind} shape {tuple(grad.shape)} "
            f"vs parameter shape {param.shape}"
        )
    return None


class Parameter(np.ndarray):
    """A NumPy array that an optimizer can update, with a ``grad`` buffer.

    ``Parameter(data)`` shares memory with ``data`` where it can (an ndarray of a floating or
    complex dtype) and starts with ``grad = None``. Optimizers update it in place, so code that
    holds the parameter sees new values after ``step()``.

    * ``grad`` is None, an ndarray of the parameter's shape and dtype, or a :class:`SparseGrad`
      of that shape and dtype; anything else is refused on assignment and the old grad kept.
    * Hashing is by identity (as torch tensors), so parameters key dictionaries such as
      ``optimizer.state``.
    * Arithmetic on a parameter and views of it give plain ndarrays.
    * ``copy.copy``, ``copy.deepcopy``, ``.copy()`` and pickling keep a copy of ``grad``.

    Example:
        >>> w = Parameter(np.zeros(3))
        >>> w.grad = np.ones(3)
        >>> type(w * 2).__name__
        'ndarray'
    """

    _grad: Grad | None

    def __new__(cls, data: npt.ArrayLike) -> Parameter:
        arr = np.asarray(data)
        if not is_supported_dtype(arr.dtype):
            raise TypeError(
                "Only arrays of floating point and complex dtype can be Parameters, "
                f"got dtype {arr.dtype}"
            )
        obj = arr.view(cls)
        obj._grad = None
        return obj

    def __array_finalize__(self, obj: Any) -> None:
        self._grad = None

    __hash__ = object.__hash__  # type: ignore[assignment]

    # ----------------------------------------------------------------------- grad
    @property
    def grad(self) -> Grad | None:
        """The gradient: None, a dense ndarray or a :class:`SparseGrad`."""
        return self._grad

    @grad.setter
    def grad(self, value: Grad | None) -> None:
        error = _grad_error(self, value)
        if error is not None:
            raise error
        self._grad = value

    @property
    def data(self) -> Any:
        """The values as a plain ndarray view (shares memory)."""
        return self.view(np.ndarray)

    # ---------------------------------------------------- plain results and views
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        plain_inputs = tuple(_plain(x) for x in inputs)
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_plain(x) for x in out)
        result = getattr(ufunc, method)(*plain_inputs, **kwargs)
        if out is not None:
            # In-place operators (``w += g``) must hand back the Parameter itself.
            return out[0] if len(out) == 1 else out
        return result

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        return func(*_plain_tree(args), **_plain_tree(kwargs))

    def __getitem__(self, key: Any) -> Any:
        return self.view(np.ndarray)[key]

    def view(self, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs:
            return np.ndarray.view(self, np.ndarray)
        return np.ndarray.view(self, *args, **kwargs)

    def reshape(self, *args: Any, **kwargs: Any) -> Any:
        return self.view(np.ndarray).reshape(*args, **kwargs)

    def ravel(self, *args: Any, **kwargs: Any) -> Any:
        return self.view(np.ndarray).ravel(*args, **kwargs)

    def transpose(self, *args: Any) -> Any:
        return self.view(np.ndarray).transpose(*args)

    def squeeze(self, *args: Any, **kwargs: Any) -> Any:
        return self.view(np.ndarray).squeeze(*args, **kwargs)

    def swapaxes(self, *args: Any) -> Any:
        return self.view(np.ndarray).swapaxes(*args)

    def flatten(self, *args: Any, **kwargs: Any) -> Any:
        return self.view(np.ndarray).flatten(*args, **kwargs)

    def astype(self, *args: Any, **kwargs: Any) -> Any:
        return self.view(np.ndarray).astype(*args, **kwargs)

    @property
    def T(self) -> Any:
        return self.view(np.ndarray).T

    @property  # type: ignore[misc]
    def real(self) -> Any:
        return self.view(np.ndarray).real

    @property  # type: ignore[misc]
    def imag(self) -> Any:
        return self.view(np.ndarray).imag

    # ------------------------------------------------------------ copy and pickle
    def copy(self, order: Any = "C") -> Parameter:
        new = Parameter(np.array(self.view(np.ndarray), order=order, copy=True))
        new._grad = copy.deepcopy(self._grad)
        return new

    def __copy__(self) -> Parameter:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any] | None = None, /) -> Parameter:
        memo = {} if memo is None else memo
        new = Parameter(np.array(self.view(np.ndarray), copy=True))
        memo[id(self)] = new
        new._grad = copy.deepcopy(self._grad, memo)
        return new

    def __reduce__(self) -> tuple[Any, ...]:
        reduced: tuple[Any, Any, Any] = super().__reduce__()  # type: ignore[assignment]
        rebuild, args, state = reduced
        return rebuild, args, (state, self._grad)

    def __setstate__(self, state: Any) -> None:
        array_state, grad = state
        super().__setstate__(array_state)
        self._grad = grad

    def __repr__(self) -> str:
        body = repr(self.view(np.ndarray))
        return "Parameter" + body[len("array") :] if body.startswith("array") else body


def _plain(x: Any) -> Any:
    return x.view(np.ndarray) if isinstance(x, Parameter) else x


def _plain_tree(x: Any) -> Any:
    if isinstance(x, Parameter):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(_plain_tree(v) for v in x)
    if isinstance(x, dict):
        return {k: _plain_tree(v) for k, v in x.items()}
    return x
