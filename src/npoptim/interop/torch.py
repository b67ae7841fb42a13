r"""Convert optimizer and scheduler ``state_dict`` s between npoptim and ``torch.optim``.

npoptim's state_dicts have torch 2.13's layout, so a conversion only changes the types of the
values. With it a run can move between the two libraries mid-training and continue exactly as
an uninterrupted run of either would (the way from NumPy to torch's distributed training when
a model outgrows one machine)::

    tparams = [torch.nn.Parameter(torch.from_numpy(np.array(p))) for p in params]
    torch_opt = torch.optim.Adam(tparams, lr=1e-3)   # the same class, groups and order
    torch_opt.load_state_dict(to_torch_state_dict(npoptim_opt.state_dict()))
    ...
    npoptim_opt.load_state_dict(from_torch_state_dict(torch_opt.state_dict()))

A state_dict does not hold the parameters' values: move those yourself, as above. Schedulers
go the same way: build the scheduler in the other library, load the optimizer's state, then
the scheduler's.

PyTorch is imported when a function is called, not when this module is imported; without it
the functions raise :class:`ImportError` with the command that installs it.

What changes, npoptim to torch (:func:`from_torch_state_dict` undoes each row):

=====================================  ==================================================
npoptim                                torch
=====================================  ==================================================
array (any shape, real or complex)     tensor of the same dtype and shape, on the CPU
SparseGrad (SGD's momentum buffer      sparse COO tensor with one sparse dimension
with sparse grads)
``step``: float                        0-d tensor of torch's scalar dtype (float32 unless
                                       the default dtype is float64); SparseAdam: int
ASGD ``eta``, ``mu``, NAdam            float, which torch's ``load_state_dict`` turns into
``mu_product``: float                  the float32 0-d tensor a fresh torch run holds
LBFGS ``ro``, ``al``: lists of float   lists of 0-d tensors of the flat vectors' dtype
LBFGS ``H_diag``: float                0-d tensor of that dtype (the int 1 before the
                                       first curvature pair is stored)
LBFGS ``t``: float                     float (torch holds an int or a 0-d tensor on some
                                       paths; the value is the same)
MultiStepLR ``milestones``: dict       ``collections.Counter``
NumPy scalar                           Python scalar
anything else                          unchanged (copied)
=====================================  ==================================================

From torch, every tensor becomes an array, except the scalar entries above and 0-d tensors
in param groups and scheduler state (torch's Tensor learning rates), which become Python
numbers. Results share no memory with their input.

ASGD's and NAdam's float32 scalars are handed to torch as Python floats on purpose. torch's
``load_state_dict`` casts every 0-d tensor but ``step`` to the parameter's dtype, so a float32
tensor would come back float64 and the run would no longer follow an uninterrupted torch run
bit for bit (NAdam's ``mu_product`` parts it by a relative 2e-12 within five steps). A float is
turned by torch's ``__setstate__`` into exactly the float32 tensor it would have held.
"""

from __future__ import annotations

import copy
import importlib
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..parameter import SparseGrad

__all__ = ["INSTALL_HINT", "from_torch_state_dict", "to_torch_state_dict"]

INSTALL_HINT = "npoptim.interop.torch needs PyTorch: pip install torch==2.13.0"

# Per-parameter state that torch holds as 0-d tensors (or ints) and npoptim as Python floats.
_SCALAR_STATE = frozenset({"step", "eta", "mu", "mu_product"})
# Of those, the float32 ones that torch's load_state_dict would cast to the parameter's dtype
# if given as tensors: they go to torch as floats (see the module docstring).
_FLOAT32_STATE = frozenset({"eta", "mu", "mu_product"})
# L-BFGS state (recognised by its "func_evals" counter): scalars and lists of scalars.
_LBFGS_SCALARS = frozenset({"t", "H_diag"})
_LBFGS_SCALAR_LISTS = frozenset({"ro", "al"})
# The hyperparameters of a SparseAdam group, whose ``step`` torch keeps as a Python int.
_SPARSE_ADAM_KEYS = frozenset({"lr", "betas", "eps", "maximize"})


def _torch() -> Any:
    """The ``torch`` module, or an ImportError that says how to install it."""
    try:
        return importlib.import_module("torch")
    except ImportError as error:
        raise ImportError(INSTALL_HINT) from error


def _is_optimizer_state_dict(state_dict: Mapping[str, Any]) -> bool:
    return set(state_dict) == {"state", "param_groups"}


# ------------------------------------------------------------------------ npoptim -> torch
def to_torch_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Convert an npoptim optimizer or scheduler ``state_dict`` to torch's types.

    Args:
        state_dict: what an npoptim optimizer's or scheduler's ``state_dict()`` returned (or
            :func:`npoptim.load` read back, memory-mapped or not). Its arrays may be
            read-only.

    Returns:
        A new dict that the ``load_state_dict`` of the matching ``torch.optim`` optimizer or
        scheduler accepts, after which torch continues the run as npoptim would have. Its
        tensors are writeable copies that share no memory with ``state_dict``.

    Raises:
        ImportError: PyTorch is not installed.

    Example:
        >>> import numpy as np, torch, npoptim
        >>> w = npoptim.Parameter(np.array([1.0, -2.0]))
        >>> opt = npoptim.Adam([w], lr=0.1)
        >>> w.grad = np.array([0.5, -0.5])
        >>> _ = opt.step()
        >>> tw = torch.nn.Parameter(torch.tensor(np.array(w)))
        >>> topt = torch.optim.Adam([tw], lr=0.1)
        >>> topt.load_state_dict(to_torch_state_dict(opt.state_dict()))
        >>> topt.state[tw]["step"]
        tensor(1.)
    """
    torch = _torch()
    if not _is_optimizer_state_dict(state_dict):
        return dict(_to_torch(torch, dict(state_dict), scheduler=True))
    groups = [_to_torch(torch, group) for group in state_dict["param_groups"]]
    int_step = {
        param_id
        for group in groups
        if set(group) - {"params", "param_names"} == _SPARSE_ADAM_KEYS
        for param_id in group["params"]
    }
    state = {
        param_id: _param_state_to_torch(torch, entries, int_step=param_id in int_step)
        for param_id, entries in state_dict["state"].items()
    }
    return {"state": state, "param_groups": groups}


def _param_state_to_torch(torch: Any, entries: Any, int_step: bool) -> Any:
    """One parameter's state in torch's types (``int_step``: SparseAdam's int ``step``)."""
    if not isinstance(entries, Mapping):
        return _to_torch(torch, entries)
    lbfgs = "func_evals" in entries
    flat = entries.get("d", entries.get("prev_flat_grad"))
    flat_dtype = _torch_dtype(torch, np.asarray(flat).dtype) if flat is not None else torch.float64
    scalar_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32

    def scalar(value: Any) -> Any:
        return None if value is None else torch.tensor(float(value), dtype=flat_dtype)

    out: dict[str, Any] = {}
    for key, value in entries.items():
        if key == "step":
            out[key] = int(value) if int_step else torch.tensor(float(value), dtype=scalar_dtype)
        elif key in _FLOAT32_STATE:
            out[key] = float(value)
        elif lbfgs and key in _LBFGS_SCALAR_LISTS:
            out[key] = [scalar(v) for v in value]
        elif lbfgs and key == "H_diag":
            # torch's H_diag is the int 1 until the first curvature pair is stored.
            out[key] = 1 if not entries.get("old_dirs") and value == 1 else scalar(value)
        elif lbfgs and key == "t":
            out[key] = None if value is None else float(value)
        else:
            out[key] = _to_torch(torch, value)
    return out


def _torch_dtype(torch: Any, dtype: np.dtype[Any]) -> Any:
    """The torch dtype of a NumPy dtype."""
    return torch.from_numpy(np.empty(0, dtype=dtype.newbyteorder("="))).dtype


def _tensor(torch: Any, array: Any) -> Any:
    """A CPU tensor holding a copy of ``array`` (in native byte order)."""
    array = np.asarray(array)
    return torch.from_numpy(np.array(array, dtype=array.dtype.newbyteorder("="), copy=True))


def _sparse_tensor(torch: Any, grad: SparseGrad) -> Any:
    """A sparse COO tensor with one sparse dimension holding a copy of ``grad``."""
    return torch.sparse_coo_tensor(
        _tensor(torch, grad.indices[None, :]),
        _tensor(torch, grad.values),
        grad.shape,
        check_invariants=True,
        is_coalesced=grad.is_coalesced(),
    )


def _to_torch(torch: Any, value: Any, scheduler: bool = False) -> Any:
    """``value`` with arrays made tensors, SparseGrads sparse tensors and NumPy scalars
    Python ones, containers walked."""
    if isinstance(value, np.ndarray):
        return _tensor(torch, value)
    if isinstance(value, SparseGrad):
        return _sparse_tensor(torch, value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {
            k: Counter(v)
            if scheduler and k == "milestones" and isinstance(v, dict)
            else _to_torch(torch, v, scheduler)
            for k, v in value.items()
        }
    if type(value) in (list, tuple):
        return type(value)(_to_torch(torch, v, scheduler) for v in value)
    return _copy(value)


# ------------------------------------------------------------------------ torch -> npoptim
def from_torch_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Convert a ``torch.optim`` optimizer or scheduler ``state_dict`` to npoptim's types.

    Args:
        state_dict: what a torch optimizer's or scheduler's ``state_dict()`` returned (or
            ``torch.load`` read back). Tensors may live on any device.

    Returns:
        A new dict of NumPy arrays and Python values that the ``load_state_dict`` of the
        matching npoptim optimizer or scheduler accepts, after which npoptim continues the
        run as torch would have, and that :func:`npoptim.save` can store.

    Raises:
        ImportError: PyTorch is not installed.
        TypeError: a tensor has no NumPy counterpart (bfloat16, or a sparse layout other
            than COO with one sparse dimension).

    Example:
        >>> import numpy as np, torch, npoptim
        >>> tw = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
        >>> topt = torch.optim.Adam([tw], lr=0.1)
        >>> tw.grad = torch.tensor([0.5, -0.5], dtype=torch.float64)
        >>> topt.step()
        >>> sd = from_torch_state_dict(topt.state_dict())
        >>> sd["state"][0]["step"], sd["state"][0]["exp_avg"]
        (1.0, array([ 0.05, -0.05]))
    """
    torch = _torch()
    if not _is_optimizer_state_dict(state_dict):
        return dict(_from_torch(torch, dict(state_dict), scalars=True))
    groups = [_from_torch(torch, group, scalars=True) for group in state_dict["param_groups"]]
    state = {
        param_id: _param_state_from_torch(torch, entries)
        for param_id, entries in state_dict["state"].items()
    }
    return {"state": state, "param_groups": groups}


def _param_state_from_torch(torch: Any, entries: Any) -> Any:
    """One parameter's state in npoptim's types: its scalars Python floats."""
    if not isinstance(entries, Mapping):
        return _from_torch(torch, entries, scalars=False)
    lbfgs = "func_evals" in entries

    def scalar(value: Any) -> float | None:
        return None if value is None else float(value)

    out: dict[str, Any] = {}
    for key, value in entries.items():
        if key in _SCALAR_STATE or (lbfgs and key in _LBFGS_SCALARS):
            out[key] = scalar(value)
        elif lbfgs and key in _LBFGS_SCALAR_LISTS:
            out[key] = [scalar(v) for v in value]
        else:
            out[key] = _from_torch(torch, value, scalars=False)
    return out


def _array(torch: Any, tensor: Any) -> np.ndarray[Any, Any]:
    """A NumPy copy of a strided ``tensor`` (detached, on the CPU, conjugation resolved)."""
    if tensor.dtype == torch.bfloat16:
        raise TypeError("cannot convert a bfloat16 tensor: NumPy has no bfloat16 dtype")
    return np.array(tensor.numpy(force=True), copy=True)


def _from_tensor(torch: Any, tensor: Any) -> np.ndarray[Any, Any] | SparseGrad:
    """An array, or a SparseGrad for a sparse COO tensor with one sparse dimension."""
    if tensor.layout == torch.strided:
        return _array(torch, tensor)
    if tensor.layout == torch.sparse_coo and tensor.sparse_dim() == 1:
        coalesced = bool(tensor.is_coalesced())
        return SparseGrad(
            _array(torch, tensor._indices()[0]),
            _array(torch, tensor._values()),
            tuple(tensor.shape),
            _coalesced=coalesced,
        )
    raise TypeError(
        f"cannot convert a tensor with layout {tensor.layout} to NumPy: npoptim holds only "
        "dense arrays and row-sparse SparseGrads (sparse COO with one sparse dimension)"
    )


def _from_torch(torch: Any, value: Any, scalars: bool) -> Any:
    """``value`` with tensors made arrays (0-d ones Python numbers if ``scalars``), a Counter
    made a dict, containers walked."""
    if isinstance(value, torch.Tensor):
        return value.item() if scalars and value.ndim == 0 else _from_tensor(torch, value)
    if isinstance(value, Mapping):
        return {k: _from_torch(torch, v, scalars) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_from_torch(torch, v, scalars) for v in value)
    return _copy(value)


def _copy(value: Any) -> Any:
    """A copy of a leaf value; immutable ones are returned as they are."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return value
    return copy.deepcopy(value)
