"""The registry of optimizers, and the declaration an elementwise algorithm makes.

An *elementwise* algorithm updates each element of a parameter from the same element of its
gradient and state arrays and a few numbers. Its module declares it once, as an
:class:`Algorithm`: the roles of its arrays, its NumPy *piece* function (the update of
matching pieces of those arrays, which the for-loop and multi-tensor paths run), its compiled
*element* update (the same math for one element, which :mod:`npoptim._kernels.compiled` turns
into a parallel kernel), and two functions that give the element update its numbers and flags
by name. The paths (:mod:`.loop`, :mod:`.foreach`, :mod:`.compiled`) run any declaration and
know no algorithm by name.

:data:`ELEMENTWISE` and :data:`OTHERS` list every optimizer class; tests, tools and benchmarks
iterate them instead of keeping lists of their own. Adding an elementwise optimizer is its
module (class, functional kernel, piece and element functions, declaration), one line in
:data:`ELEMENTWISE`, its exports (``npoptim/__init__.py``, ``npoptim/functional.py``), and
its test reference and configurations; the three paths, the path and allocation tests, the
golden tool and the benchmark take it from here.

This module imports nothing of npoptim: every other part imports it, never the reverse.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ELEMENTWISE",
    "OTHERS",
    "Algorithm",
    "Flags",
    "Scalars",
    "algorithms",
    "optimizer_names",
]

#: The scalars an element update reads, by name: one number shared by every parameter of the
#: call, or a sequence with one number per parameter. They are cast to the parameter's dtype
#: (as NumPy casts a Python number in ``array * number``).
Scalars = Mapping[str, "float | Sequence[float]"]
#: The flags an element update branches on, by name.
Flags = Mapping[str, bool]


def _no_flags(shared: Mapping[str, Any], present: Mapping[str, bool]) -> Flags:
    return {}


@dataclass(frozen=True)
class Algorithm:
    """The declaration of an elementwise algorithm (see the module docstring).

    Attributes:
        name: the algorithm's name (that of its functional kernel, e.g. ``"adam"``).
        roles: the names of its arrays in the order the piece and element functions take
            them: the parameter, its gradient, then each state array.
        optional: the roles a call may lack (``None`` in place of their arrays, e.g.
            AMSGrad's maximum): the compiled kernel has a loop for each set of them present.
        piece: ``piece(*arrays, **shared, **per_param)`` updates matching pieces of the arrays
            (NumPy views, ``None`` for an absent role) in place.
        element: ``element(*values, scalar, flag)`` takes one element of each role (any
            number for an absent role) and returns the new values of every role but the
            gradient, in order. ``scalar`` and ``flag`` are named tuples whose fields are the
            keys of what ``scalars`` and ``flags`` return. It is plain Python that numba can
            compile: numbers, ``np.sqrt``, ``abs``, the helpers of
            :mod:`npoptim._kernels.element`. ``None``: no compiled kernel, the NumPy paths serve.
        scalars: ``scalars(shared, per_param)``: the numbers ``element`` reads, computed from
            the piece function's keyword arguments as the piece function computes them (so
            that both paths round alike). Its keys must not depend on the values.
        flags: ``flags(shared, present)``: the flags ``element`` reads; ``present`` tells
            which roles the call has.
        sums: how many sums over each parameter the update takes (e.g. squared norms, for a
            trust ratio that a second pass applies). The piece function then returns that
            many arrays of terms shaped like its piece, and the element update returns the
            terms after the new values; :func:`npoptim._kernels.elementwise` returns each
            parameter's totals, added in one fixed order on every path (see
            :func:`npoptim._kernels.loop.reduce_pieces`). No optional roles then.
        writes: with ``sums``, the roles the element update returns (and the kernel writes),
            None for all but the gradient; ``()`` for a pass that only measures.
    """

    name: str
    roles: tuple[str, ...]
    piece: Callable[..., Any]
    optional: tuple[str, ...] = ()
    element: Callable[..., Any] | None = None
    scalars: Callable[[Mapping[str, Any], Mapping[str, Sequence[Any]]], Scalars] | None = None
    flags: Callable[[Mapping[str, Any], Mapping[str, bool]], Flags] = field(default=_no_flags)
    sums: int = 0
    writes: tuple[str, ...] | None = None

    def numbers(
        self,
        roles: Sequence[object | None],
        per_param: Mapping[str, Sequence[Any]],
        shared: Mapping[str, Any],
    ) -> tuple[Scalars, Flags]:
        """The scalars and flags of the element update for a call with these ``roles`` (None
        for an absent one) and piece keyword arguments."""
        assert self.scalars is not None, f"{self.name} has no element update"
        present = {name: role is not None for name, role in zip(self.roles, roles, strict=True)}
        return self.scalars(shared, per_param), self.flags(shared, present)


#: Every elementwise optimizer class, and the module of npoptim that declares its algorithm
#: (its ``ALGORITHM``). One line per optimizer.
ELEMENTWISE: dict[str, str] = {
    "SGD": "sgd",
    "Adam": "adam",
    "AdamW": "adam",
    "RMSprop": "rmsprop",
    "Adagrad": "adagrad",
    "Adadelta": "adadelta",
    "Adamax": "adamax",
    "ASGD": "asgd",
    "Rprop": "rprop",
    "NAdam": "nadam",
    "RAdam": "radam",
    "Lion": "lion",
    "LAMB": "lamb",
    "AdEMAMix": "ademamix",
    "AdamWScheduleFree": "schedulefree",
    "SGDScheduleFree": "sgd_schedulefree",
    "LARS": "lars",
}

#: The other optimizer classes (updates that are not elementwise), and their modules.
OTHERS: dict[str, str] = {
    "Adafactor": "adafactor",
    "Muon": "muon",
    "SparseAdam": "sparse_adam",
    "LBFGS": "lbfgs",
    "Prodigy": "prodigy",
}


def optimizer_names(elementwise_only: bool = False) -> list[str]:
    """The class names of npoptim's optimizers (the elementwise ones first)."""
    return list(ELEMENTWISE) + ([] if elementwise_only else list(OTHERS))


def algorithms() -> dict[str, Algorithm]:
    """Every elementwise algorithm's declaration, by name (imports their modules)."""
    found: dict[str, Algorithm] = {}
    for module in dict.fromkeys(ELEMENTWISE.values()):
        algorithm: Algorithm = importlib.import_module(f"npoptim.{module}").ALGORITHM
        found[algorithm.name] = algorithm
    return found
