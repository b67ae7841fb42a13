"""Shared checks of hyperparameters and loaded state, used by every optimizer.

Each optimizer class declares, once, what its settings and its state look like:

- ``_hyperparameters``: group key -> a *type check* (:func:`real`, :func:`flag`,
  :func:`pair` ...). The base class runs these where a value enters (constructor,
  ``add_param_group``, ``load_state_dict``) and again at every ``step()``, before any kernel
  path is chosen, so a value a user wrote into ``param_groups`` is refused the same way on
  the for-loop, multi-tensor and compiled paths.
- ``_check_ranges``: torch's value checks with torch's messages (``Invalid learning rate:
  -1``), run by the constructor and ``add_param_group``.
- ``_state_keys``: state key -> :class:`StateKey` (its kind, its expected shape for a given
  parameter, whether the group's options require it). ``load_state_dict`` checks a loaded
  state against it before it changes anything.

A type check ``check(value)`` returns None, or the error to raise with the value named
``LABEL``; :func:`check_types` puts the key there (``lr`` in a constructor,
``param_groups[1]['lr']`` for a group), so a passing check formats no message.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._kernels import require_numba

__all__ = [
    "StateKey",
    "TypeCheck",
    "check_adam_ranges",
    "check_betas",
    "check_impl_flags",
    "check_nonnegative",
    "check_types",
    "flag",
    "integer",
    "is_real",
    "optional",
    "optional_flag",
    "pair",
    "real",
    "reals",
    "text",
    "triple",
    "wrapper_hint",
]

#: A type check: None for a good value, else the error to raise, its message naming the value
#: as ``LABEL`` (replaced by :func:`check_types` with the key, so that a passing check, run at
#: every step, formats nothing).
TypeCheck = Callable[[Any], "Exception | None"]
LABEL = "\x00label\x00"


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def is_real(value: Any) -> bool:
    """A real number: Python or NumPy int/float, or a real 0-d array; not a bool, not a str."""
    kind = type(value)
    if kind is float or kind is int:
        return True
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Real):
        return True
    return (
        isinstance(value, np.ndarray)
        and value.ndim == 0
        and (np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating))
    )


def real(value: Any) -> Exception | None:
    """A real number (``lr``, ``eps``, ``weight_decay`` ...)."""
    if is_real(value):
        return None
    return TypeError(f"{LABEL} must be a real number, but got {_describe(value)}")


def integer(value: Any) -> Exception | None:
    """An integer (``max_iter``, ``ns_steps`` ...)."""
    if type(value) is int or (
        isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    ):
        return None
    return TypeError(f"{LABEL} must be an integer, but got {_describe(value)}")


def text(value: Any) -> Exception | None:
    """A string (a mode's name)."""
    if isinstance(value, str):
        return None
    return TypeError(f"{LABEL} must be a str, but got {_describe(value)}")


def flag(value: Any) -> Exception | None:
    """A bool (``amsgrad``, ``maximize`` ...)."""
    if value is True or value is False or isinstance(value, np.bool_):
        return None
    return TypeError(f"{LABEL} must be a bool, but got {_describe(value)}")


def optional(check: TypeCheck) -> TypeCheck:
    """``check``, or None."""

    def check_optional(value: Any) -> Exception | None:
        return None if value is None else check(value)

    return check_optional


#: None or a bool (``foreach``, ``fused``: None lets npoptim choose).
optional_flag = optional(flag)


def _relabel(error: Exception, label: str) -> Exception:
    """``error`` with its value named ``label``."""
    return type(error)(str(error).replace(LABEL, label))


def _sequence(length: int, name: str, items: tuple[TypeCheck, ...]) -> TypeCheck:
    def check_sequence(value: Any) -> Exception | None:
        if not isinstance(value, (tuple, list)):
            return TypeError(f"{LABEL} must be a {name} (a tuple), but got {_describe(value)}")
        if len(value) != length:
            return ValueError(
                f"{LABEL} must be a {name} (a tuple of {length}), but got {value!r} "
                f"of length {len(value)}"
            )
        for i in range(length):
            error = items[i](value[i])
            if error is not None:
                return _relabel(error, f"{LABEL}[{i}]")
        return None

    return check_sequence


def pair(first: TypeCheck = real, second: TypeCheck = real) -> TypeCheck:
    """A tuple (or list) of two values, each checked (``betas``, ``etas`` ...)."""
    return _sequence(2, "pair", (first, second))


def triple(first: TypeCheck = real, second: TypeCheck = real, third: TypeCheck = real) -> TypeCheck:
    """A tuple (or list) of three values, each checked (AdEMAMix's ``betas``)."""
    return _sequence(3, "triple", (first, second, third))


def reals(value: Any) -> Exception | None:
    """A tuple (or list) of real numbers, of any length (Muon's ``ns_coefficients``, whose
    length its kernel checks with torch's message)."""
    if not isinstance(value, (tuple, list)):
        return TypeError(f"{LABEL} must be a tuple of real numbers, but got {_describe(value)}")
    for i, item in enumerate(value):
        error = real(item)
        if error is not None:
            return _relabel(error, f"{LABEL}[{i}]")
    return None


def check_types(checks: Mapping[str, TypeCheck], values: Mapping[str, Any], where: str) -> None:
    """Run the type check of every key of ``checks`` that ``values`` holds; raise the first
    error.

    ``where`` prefixes the key in messages: ``""`` gives ``lr``, ``"param_groups[1]"`` gives
    ``param_groups[1]['lr']``.
    """
    for key, check in checks.items():
        if key in values:
            error = check(values[key])
            if error is not None:
                raise _relabel(error, f"{where}[{key!r}]" if where else key)


def wrapper_hint(container: Any, expected: list[str]) -> str:
    """``"; pass state_dict['optimizer']"`` when ``container`` holds, under some key, a dict
    with the ``expected`` keys (a checkpoint given where its part was meant); else ``""``."""
    if not isinstance(container, Mapping):
        return ""
    for key, value in container.items():
        if isinstance(value, Mapping) and all(e in value for e in expected):
            return f"; pass state_dict[{key!r}]"
    return ""


# ----------------------------------------------------------------- torch's range checks
_INVALID = {"lr": "Invalid learning rate: {}", "eps": "Invalid epsilon value: {}"}


def check_nonnegative(**values: float) -> None:
    """torch's range checks, in the order given: each value must be >= 0 (NaN is refused).

    Messages are torch's: "Invalid learning rate: -1", "Invalid epsilon value: ...",
    "Invalid <name> value: ..." for the others.
    """
    for name, value in values.items():
        if not 0.0 <= value:
            raise ValueError(_INVALID.get(name, f"Invalid {name} value: {{}}").format(value))


def check_betas(betas: tuple[float, float]) -> None:
    """torch's check that each beta lies in [0, 1)."""
    for index, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {index}: {beta}")


def check_adam_ranges(settings: Mapping[str, Any]) -> None:
    """torch's checks of the Adam family's shared settings, in torch's order: ``lr``, ``eps``,
    ``betas``, ``weight_decay``."""
    check_nonnegative(lr=settings["lr"], eps=settings["eps"])
    check_betas(settings["betas"])
    check_nonnegative(weight_decay=settings["weight_decay"])


def check_impl_flags(foreach: bool | None, fused: bool | None, differentiable: bool) -> None:
    """torch's checks on the implementation flags, plus what npoptim cannot do."""
    if differentiable:
        raise ValueError("differentiable=True needs autograd, which npoptim does not have")
    if fused:
        if foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        require_numba()


# ------------------------------------------------------------------------- loaded state
Shape = tuple[int, ...]


def param_shape(group: Mapping[str, Any], p: np.ndarray[Any, Any]) -> Shape | None:
    """The parameter's own shape (most state arrays)."""
    return tuple(p.shape)


def always(group: Mapping[str, Any], p: np.ndarray[Any, Any]) -> bool:
    return True


def never(group: Mapping[str, Any], p: np.ndarray[Any, Any]) -> bool:
    return False


def when(option: str) -> Callable[[Mapping[str, Any], np.ndarray[Any, Any]], bool]:
    """Required when the group's ``option`` is true (``amsgrad``, ``centered`` ...)."""

    def required(group: Mapping[str, Any], p: np.ndarray[Any, Any]) -> bool:
        return bool(group.get(option))

    return required


@dataclass(frozen=True)
class StateKey:
    """What one key of a parameter's state holds.

    Attributes:
        kind: ``"array"`` (an array, or a row-sparse ``SparseGrad`` where ``sparse``),
            ``"scalar"`` (a real number or a 0-d array), ``"arrays"`` / ``"scalars"`` (lists
            of those; ``None`` items allowed in ``"scalars"``).
        shape: the expected shape of an array for a parameter, or None where the key does not
            belong to that parameter's state (Adafactor: ``variance`` of a matrix).
        shapes: for ``"arrays"`` whose entries differ in shape: the expected shape of each
            entry, given the group's options and the parameter (SOAP's preconditioners, one
            per axis); the list must have exactly that many entries. None: every entry has
            ``shape``, in any number (LBFGS's history).
        required: whether a non-empty state must hold the key, given the group and parameter.
        nullable: whether the value may be None.
        sparse: whether a ``SparseGrad`` of the expected shape is accepted (SGD's buffer).
    """

    kind: str = "array"
    shape: Callable[[Mapping[str, Any], np.ndarray[Any, Any]], Shape | None] = param_shape
    shapes: Callable[[Mapping[str, Any], np.ndarray[Any, Any]], list[Shape]] | None = None
    required: Callable[[Mapping[str, Any], np.ndarray[Any, Any]], bool] = always
    nullable: bool = False
    sparse: bool = False


#: ``step``, the per-parameter step counter every torch optimizer but Muon and LBFGS keeps.
STEP = StateKey("scalar", required=always)
#: An array of the parameter's shape, always present once the parameter has stepped.
LIKE_PARAM = StateKey()
