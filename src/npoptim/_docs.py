"""Argument documentation shared by the optimizers' docstrings.

Each optimizer formats its class docstring with these pieces (``{_params_doc}`` ...), so an
argument that several algorithms share is described once, in torch's words where torch has it.
"""

from __future__ import annotations

__all__ = [
    "_differentiable_doc",
    "_foreach_doc",
    "_fused_doc",
    "_maximize_doc",
    "_params_doc",
]

_params_doc = r"""params (iterable): iterable of Parameters or of ``(name, Parameter)`` pairs to
            optimize, or iterable of dicts defining parameter groups. When names are given,
            every parameter of every group must be named."""

_maximize_doc = r"""maximize (bool, optional): maximize the objective with respect to the
            params, instead of minimizing (default: False)"""

_foreach_doc = r"""foreach (bool, optional): whether the multi-tensor implementation is used.
            It computes the same values as the for-loop path; ``None`` lets npoptim choose
            (default: None)"""

_fused_doc = r"""fused (bool, optional): whether the compiled single-pass implementation is
            used (needs numba: ``pip install numba``). It computes the same values as the
            for-loop path; with neither flag, npoptim uses it when numba is installed
            (default: None)"""

_differentiable_doc = r"""differentiable (bool, optional): accepted for compatibility with
            torch; npoptim has no autograd, so only False is allowed (default: False)"""
