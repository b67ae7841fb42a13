"""Griffe extension: show what npoptim's type aliases stand for in the API signatures.

npoptim's modules use ``from __future__ import annotations``, so a signature such as
``Adam(params: ParamsT, ...)`` carries the bare name ``ParamsT``. Left alone, mkdocstrings
resolves that name through the runtime object it is bound to, ``typing.Union[...]``, and the
page shows ``params: Union`` with the arguments lost. This extension replaces every annotation
that names a module-level ``typing`` alias by the alias spelled out, e.g. ``params:
Iterable[Parameter] | Iterable[tuple[str, Parameter]] | Iterable[dict[str, Any]]``.
"""

from __future__ import annotations

import importlib
import types
import typing
from typing import Any

import griffe


def spell(annotation: Any) -> str:
    """An annotation object written as a reader would write it (``A | B``, ``list[int]``)."""
    if annotation is None or annotation is type(None):
        return "None"
    if isinstance(annotation, typing.ForwardRef):
        return annotation.__forward_arg__
    if isinstance(annotation, str):
        return annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(spell(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", None) or str(origin).replace("typing.", "")
        if name == "Callable":
            params, result = args
            inner = "..." if params is Ellipsis else ", ".join(spell(a) for a in params)
            return f"Callable[[{inner}], {spell(result)}]"
        return f"{name}[{', '.join('...' if a is Ellipsis else spell(a) for a in args)}]"
    if annotation is Any:
        return "Any"
    return getattr(annotation, "__name__", None) or repr(annotation).replace("typing.", "")


def _alias(module_path: str, name: str) -> Any:
    """The typing alias bound to ``name`` in the module, or None."""
    try:
        value = getattr(importlib.import_module(module_path), name)
    except (ImportError, AttributeError):
        return None
    return value if typing.get_origin(value) is not None else None


class ExpandTypeAliases(griffe.Extension):
    """Spell out module-level typing aliases in parameter and return annotations."""

    def on_function_instance(self, *, func: griffe.Function, **kwargs: Any) -> None:
        module = func.module.path
        for parameter in func.parameters:
            ann = parameter.annotation
            if isinstance(ann, griffe.ExprName) and (alias := _alias(module, ann.name)):
                parameter.annotation = spell(alias)
        ret = func.returns
        if isinstance(ret, griffe.ExprName) and (alias := _alias(module, ret.name)):
            func.returns = spell(alias)
