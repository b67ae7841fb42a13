"""The compiled path: numba kernels generated from the algorithms' element updates.

An algorithm declares its update of one element (``Algorithm.element``, plain Python in its
own module, next to its NumPy piece function). This module makes a parallel kernel of it: a
small generated function walks the blocks of every parameter of a call on numba's threads and
applies the element update to each element, reading the parameter and its arrays once and
writing them once. numba compiles it without fast-math (no reordering, no ``a * b + c``
contracted into a fused multiply-add) and with NumPy's rules for division by zero, so the
results are bit-identical to the NumPy paths', as ``tests/test_paths.py`` checks.

Compile only what runs: each kernel is compiled (or loaded from numba's disk cache) the first
time an algorithm runs on a dtype, alone: about 2-3 s when compiled, a fraction of that when
loaded. :func:`kernel` with ``wait=False`` (the default path) never waits: it starts the
compilation on a background thread and returns None until the kernel is ready, and the NumPy
paths serve meanwhile (with the same results). The generated source is compiled under the
file name of the algorithm's module, so numba's cache finds it again in the next process and
sees when that module changes.

The arrays reach a kernel as a table of addresses (one row per role: parameter, gradient, each
state; 0 for an absent role), their sizes, one row of scalars per parameter in the parameter's
dtype (a float32 parameter computes in float32, as NumPy does with Python numbers) and the
flags. Arrays in one contiguous layout go in whole; the others (a Fortran-ordered parameter
with a C-ordered gradient, strided views) go in pieces in the parameter's memory order, the
pieces of the arrays that are not contiguous in that order copied to scratch buffers and back.

This module imports numba; :mod:`npoptim._kernels` imports it only when the compiled path is
used.
"""

from __future__ import annotations

import collections
import ctypes
import hashlib
import importlib
import itertools
import threading
import types
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np

from . import element, loop
from .loop import Array, get_num_threads, job, parallel_map, pieces, run_pieces, scratch
from .registry import Algorithm

__all__ = ["kernel", "real_dtype", "run"]

# numba is imported as an untyped module: its own annotations vary between versions.
numba: Any = importlib.import_module("numba")
_extending: Any = importlib.import_module("numba.extending")
_numba_types = numba.types

#: The options of every compiled function: IEEE arithmetic as written, NumPy's rules for
#: division by zero.
_OPTIONS = {"fastmath": False, "error_model": "numpy"}

#: Most elements of one work item; a parameter's elements are split into items this size.
_BLOCK = 1 << 14

#: Elements of work a thread must have before the kernels use it (see :func:`run`).
_PER_THREAD = 1 << 17

#: The dtypes the kernels compute in, and the complex ones they take as pairs of reals.
_REAL = {np.dtype(t): np.dtype(r) for t, r in [
    (np.float32, np.float32), (np.float64, np.float64),
    (np.complex64, np.float32), (np.complex128, np.float64),
]}  # fmt: skip

#: Where an ndarray object keeps its data pointer: right after the object header (the first
#: field of NumPy's PyArrayObject; Cython's PyArray_DATA reads it there too).
_HEADER = object.__basicsize__


def _data_field_is_where_expected() -> bool:
    probe = np.zeros(3)
    return ctypes.c_void_p.from_address(id(probe) + _HEADER).value == probe.ctypes.data


_READ_DATA_FIELD = _data_field_is_where_expected()


# ---------------------------------------------------------------------------- low level
_cache_warning = {"given": False}


def _warn_no_cache() -> None:
    if not _cache_warning["given"]:
        _cache_warning["given"] = True
        warnings.warn(
            "npoptim: numba has no writable folder for its cache of compiled kernels, so "
            "every process compiles them again (seconds per optimizer and dtype); set "
            "NUMBA_CACHE_DIR to a writable folder to keep them",
            RuntimeWarning,
            stacklevel=4,
        )


def _jit(f: Callable[..., Any]) -> Any:
    """``f`` compiled on first call (no disk cache: the kernels that call it hold its code)."""
    return numba.njit(**_OPTIONS)(f)


def _jit_cached(f: Callable[..., Any]) -> Any:
    """``f`` compiled on first call and kept in numba's disk cache (a function that Python
    calls), or compiled in each process where no cache folder is writable."""
    try:
        return numba.njit(cache=True, nogil=True, **_OPTIONS)(f)
    except RuntimeError:  # no writable place for the cache
        _warn_no_cache()
        return numba.njit(nogil=True, **_OPTIONS)(f)


def _intrinsic(f: Callable[..., Any]) -> Any:
    return _extending.intrinsic(f)


@_intrinsic
def _load_word(typingctx: Any, address: Any) -> Any:
    """The 64-bit integer stored at ``address``."""
    signature = _numba_types.int64(address)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        word = context.get_value_type(_numba_types.int64)
        return builder.load(builder.inttoptr(args[0], word.as_pointer()))

    return signature, codegen


@_jit_cached
def _data_addresses(objects: Any) -> Any:
    """The data pointers of the ndarray objects at the addresses ``objects`` (0: none)."""
    out = np.zeros_like(objects)
    for k in range(objects.size):
        if objects.flat[k] != 0:
            out.flat[k] = _load_word(objects.flat[k] + _HEADER)
    return out


@_intrinsic
def _pointer(typingctx: Any, address: Any, like: Any) -> Any:
    """The integer ``address`` as a pointer to elements of ``like``'s dtype."""
    signature = _numba_types.CPointer(like.dtype)(address, like)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))

    return signature, codegen


@_jit
def _view(addresses: Any, role: int, block: Any, like: Any) -> Any:
    """Elements ``start:stop`` of parameter ``i``'s array of ``role``, for ``block`` =
    ``(i, start, stop)``: a 1-D array whose indices numba knows to be in range (so that the
    loops over it vectorize), empty for a role the call does not have (address 0)."""
    i, start, stop = block[0], block[1], block[2]
    address = addresses[role, i]
    if address == 0:
        stop = start
    return numba.carray(_pointer(address + start * like.itemsize, like), (stop - start,))


@_jit_cached
def _blocks(sizes: Any) -> Any:
    """Work items ``(parameter, start, stop)`` of at most ``_BLOCK`` elements each."""
    count = 0
    for n in sizes:
        count += max(1, (n + _BLOCK - 1) // _BLOCK)
    blocks = np.empty((count, 3), dtype=np.int64)
    k = 0
    for i in range(sizes.size):
        start = 0
        while True:
            stop = min(start + _BLOCK, sizes[i])
            blocks[k, 0], blocks[k, 1], blocks[k, 2] = i, start, stop
            k += 1
            start = stop
            if start >= sizes[i]:
                break
    return blocks


_compiled_helpers: dict[Callable[..., Any], Any] = {}


def _compile_element(f: Callable[..., Any]) -> Any:
    """The element update (or helper) ``f`` compiled, with the helpers it calls
    (:data:`npoptim._kernels.element.HELPERS`) compiled in its globals."""
    found = _compiled_helpers.get(f)
    if found is None:
        code = cast(types.FunctionType, f)
        namespace = dict(code.__globals__)
        for name in code.__code__.co_names:
            value = namespace.get(name)
            if isinstance(value, types.FunctionType) and value in element.HELPERS:
                namespace[name] = _compile_element(value)
        copy = types.FunctionType(code.__code__, namespace, code.__name__, code.__defaults__)
        copy.__qualname__, copy.__module__ = code.__qualname__, code.__module__
        found = _compiled_helpers[f] = _jit(copy)
    return found


# ------------------------------------------------------------------------ code generation
# For each algorithm, a kernel made of two generated functions. The block function reads its
# parameter's row of scalars and the flags into named tuples (the fields that the algorithm's
# ``scalars`` and ``flags`` return, which the compiler keeps in registers), takes a view of
# each role and runs the element update over the block: one loop for each set of optional
# roles present, so that no loop touches an array it does not need and each one vectorizes.
# The run function walks a range of blocks; threads of :func:`npoptim._kernels.loop.parallel_map`
# share the blocks of a call (the kernels release the GIL).
_TEMPLATE = """
def {run}(addresses, blocks, scalars, flags):
    for k in range(blocks.shape[0]):
        {block}(addresses, blocks[k], scalars, flags)


def {block}(addresses, block, scalars, flags):
    row = scalars[block[0]]
    scalar = Scalars({scalar_fields})
    flag = Flags({flag_fields})
{views}
{loops}
"""


def _loops(roles: int, optional: Sequence[int]) -> str:
    """The loops of a block function: one for each subset of the optional roles present (an
    absent role's value is the gradient's, which the element update does not use)."""
    written = [r for r in range(roles) if r != 1]
    lines: list[str] = []
    for present in itertools.product([True, False], repeat=len(optional)):
        taken = [r for r in range(roles) if r not in optional or present[optional.index(r)]]
        tests = [
            f"addresses[{r}, block[0]] {'!=' if here else '=='} 0"
            for r, here in zip(optional, present, strict=True)
        ]
        lines.append(f"    if {' and '.join(tests) or 'True'}:")
        inputs = ", ".join(f"r{r}[j]" if r in taken else "r1[j]" for r in range(roles))
        outputs = ", ".join(f"r{r}[j]" if r in taken else "_" for r in written)
        lines.append("        for j in range(r0.size):")
        lines.append(f"            {outputs}, = update({inputs}, scalar, flag)")
    return "\n".join(lines)


class _Source:
    """The generated source of an algorithm's kernel, and the names it needs."""

    def __init__(
        self, algorithm: Algorithm, scalar_names: Sequence[str], flag_names: Sequence[str]
    ) -> None:
        roles = len(algorithm.roles)
        optional = [algorithm.roles.index(name) for name in algorithm.optional]
        body = _TEMPLATE.format(
            run="{run}", block="{block}",
            scalar_fields=", ".join(f"row[{k}]" for k in range(len(scalar_names))),
            flag_fields=", ".join(f"flags[{k}]" for k in range(len(flag_names))),
            views="\n".join(
                f"    r{r} = view(addresses, {r}, block, scalars)" for r in range(roles)
            ),
            loops=_loops(roles, optional),
        )  # fmt: skip
        update = cast(types.FunctionType, algorithm.element)
        digest = hashlib.sha256(
            "\0".join([body, *scalar_names, "|", *flag_names, update.__code__.co_filename]).encode()
        ).hexdigest()[:12]
        name = f"{algorithm.name}_{digest}"
        self.run_name = f"_run_{name}"
        self.text = body.format(run=self.run_name, block=f"_block_{name}")
        self.filename = update.__code__.co_filename
        self.scalar_names, self.flag_names = tuple(scalar_names), tuple(flag_names)


# --------------------------------------------------------------------------- the kernels
_kernels: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Any] = {}
_ready: dict[tuple[Any, ...], Any] = {}  # (kernel key, dtype) -> compiled for that dtype
_build_lock = threading.RLock()


def _kernel_function(source: _Source, algorithm: Algorithm) -> Any:
    """The jitted run function of ``source`` (not yet compiled for any dtype)."""
    key = (algorithm.name, source.scalar_names, source.flag_names)
    found = _kernels.get(key)
    if found is not None:
        return found
    update = cast(types.FunctionType, algorithm.element)
    namespace: dict[str, Any] = {
        "__name__": update.__module__,  # numba's cache finds the module of the code by this
        "view": _view,
        "update": _compile_element(update),
        "Scalars": collections.namedtuple(f"{algorithm.name}_scalars", source.scalar_names),
        "Flags": collections.namedtuple(f"{algorithm.name}_flags", source.flag_names),
    }
    # compiled under the name of the algorithm's module, so that numba's cache knows it
    exec(compile(source.text, source.filename, "exec"), namespace)
    block_name = source.run_name.replace("_run_", "_block_")
    namespace[block_name] = _jit(namespace[block_name])
    found = _kernels[key] = _jit_cached(namespace[source.run_name])
    return found


def _signature(real: np.dtype[Any]) -> Any:
    """The run function's signature for parameters of the real dtype ``real``."""
    t = _numba_types
    return t.void(t.int64[:, ::1], t.int64[:, ::1], numba.from_dtype(real)[:, ::1], t.boolean[::1])


def _names(algorithm: Algorithm, shared: Mapping[str, Any], per_param: Mapping[str, Any],
           present: Mapping[str, bool]) -> tuple[Any, Any]:  # fmt: skip
    assert algorithm.scalars is not None
    return algorithm.scalars(shared, per_param), algorithm.flags(shared, present)


def kernel(
    algorithm: Algorithm,
    real: np.dtype[Any],
    scalar_names: Sequence[str],
    flag_names: Sequence[str],
    *,
    wait: bool,
) -> Any:
    """The kernel of ``algorithm`` for the real dtype ``real``, compiled (or loaded from
    numba's cache) on first use; with ``wait=False``, None unless it is ready already."""
    key = (algorithm.name, tuple(scalar_names), tuple(flag_names), real)
    found = _ready.get(key)
    if found is not None or not wait:
        return found
    with _build_lock:  # one compilation at a time (numba has a lock of its own, too)
        if key not in _ready:
            function = _kernel_function(_Source(algorithm, scalar_names, flag_names), algorithm)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", numba.NumbaWarning)
                function.compile(_signature(real))
            _ready[key] = function
        return _ready[key]


# ------------------------------------------------------------------------ the Python side
def run(
    algorithm: Algorithm,
    roles: Sequence[Sequence[Array] | None],
    per_param: Mapping[str, Sequence[Any]],
    shared: Mapping[str, Any],
    *,
    wait: bool,
) -> bool:
    """Run ``algorithm``'s compiled kernel on every parameter (see
    :func:`npoptim._kernels.elementwise`); False, having changed nothing, when a kernel is
    not ready (``wait=False``: the caller runs a NumPy path). Parameters of a dtype the
    kernels do not compute in (float16, ...) take the for-loop path."""
    present = {name: role is not None for name, role in zip(algorithm.roles, roles, strict=True)}
    scalars, flags = _names(algorithm, shared, per_param, present)
    scalar_names, flag_names = list(scalars), list(flags)
    params = cast(Sequence[Array], roles[0])
    by_dtype: dict[np.dtype[Any], list[int]] = {}
    others: list[int] = []
    for i, p in enumerate(params):
        if p.dtype in _REAL:
            by_dtype.setdefault(p.dtype, []).append(i)
        else:
            others.append(i)
    kernels = {}
    for dtype in by_dtype:
        real = _REAL[dtype]
        found = kernel(algorithm, real, scalar_names, flag_names, wait=wait)
        if found is None:
            return False
        kernels[dtype] = found
    run_pieces(algorithm.piece, [job(roles, per_param, shared, i) for i in others])
    flag_array = np.array(list(flags.values()), dtype=np.bool_)
    for dtype, members in by_dtype.items():
        table = _scalar_table(scalars, members, _REAL[dtype])
        _run_dtype(kernels[dtype], roles, members, table, flag_array)
    return True


def _scalar_table(scalars: Mapping[str, Any], members: Sequence[int], real: np.dtype[Any]) -> Array:
    """One row of scalars per parameter of ``members``, in the parameter's (real) dtype."""
    table = np.empty((len(members), len(scalars)), dtype=real)
    for k, value in enumerate(scalars.values()):
        if isinstance(value, (list, tuple)):
            table[:, k] = [value[i] for i in members]
        else:
            table[:, k] = value
    return table


def _whole(arrays: Iterable[Array | None], like: Array) -> bool:
    """Whether the arrays share ``like``'s size and one contiguous layout (C or Fortran)."""
    present = [a for a in arrays if a is not None]
    return all(a.size == like.size for a in present) and (
        all(a.flags.c_contiguous for a in present) or all(a.flags.f_contiguous for a in present)
    )


def _run_dtype(
    function: Any,
    roles: Sequence[Sequence[Array] | None],
    members: Sequence[int],
    scalars: Array,
    flags: Array,
) -> None:
    """The kernel on the parameters ``members`` (all of one dtype): those whose arrays share
    one contiguous layout in one call, the others piece by piece (:func:`_run_staged`)."""
    whole: list[int] = []
    staged: list[int] = []
    for k, i in enumerate(members):
        arrays = [None if r is None else r[i] for r in roles]
        (whole if _whole(arrays, cast(Array, arrays[0])) else staged).append(k)
    if whole:
        table = np.zeros((len(roles), len(whole)), dtype=np.int64)
        for row, role in enumerate(roles):
            if role is not None:
                chosen = [role[members[k]] for k in whole]
                if _READ_DATA_FIELD:
                    table[row] = list(map(id, chosen))
                else:
                    table[row] = [a.ctypes.data for a in chosen]
        addresses = _data_addresses(table) if _READ_DATA_FIELD else table
        sizes = np.array([roles[0][members[k]].size for k in whole], dtype=np.int64)  # type: ignore[index]
        if roles[0][members[0]].dtype.kind == "c":  # type: ignore[index]
            sizes *= 2  # pairs of reals
        _launch(function, addresses, sizes, scalars[whole], flags)
    for k in staged:
        arrays = [None if r is None else loop.as_real(r[members[k]]) for r in roles]
        _run_staged(function, arrays, scalars[k : k + 1], flags)


def _run_staged(
    function: Any, arrays: Sequence[Array | None], scalars: Array, flags: Array
) -> None:
    """The kernel on one parameter whose arrays do not share a contiguous layout: pieces in
    the parameter's memory order, a batch of them (one per thread) at a time; the piece of
    an array that is not contiguous in that order is copied to a scratch buffer before the
    kernel runs and, unless it is the gradient, copied back after."""
    p = cast(Array, arrays[0])
    limit = max(1, loop.CHUNK_BYTES // p.itemsize)
    all_pieces = pieces(arrays, limit)
    batch = max(1, get_num_threads())
    rows = np.repeat(scalars, batch, axis=0)
    for start in range(0, len(all_pieces), batch):
        chosen = all_pieces[start : start + batch]
        staged: list[tuple[Array, Array, bool]] = []  # (buffer, piece, copy back)
        table = np.zeros((len(arrays), len(chosen)), dtype=np.int64)
        for k, views in enumerate(chosen):
            for r, view in enumerate(views):
                if view is None:
                    continue
                if not view.flags.c_contiguous:
                    buffer = scratch(view.size, view.dtype, 32 + r * batch + k).reshape(view.shape)
                    staged.append((buffer, view, r != 1))
                    view = buffer
                table[r, k] = view.ctypes.data
        parallel_map(lambda item: np.copyto(item[0], item[1]), staged)
        sizes = np.array([cast(Array, views[0]).size for views in chosen], dtype=np.int64)
        _launch(function, table, sizes, rows[: len(chosen)], flags)
        parallel_map(lambda item: np.copyto(item[1], item[0]), [s for s in staged if s[2]])


def _launch(function: Any, addresses: Array, sizes: Array, scalars: Array, flags: Array) -> None:
    """``function`` over every block of the parameters of ``sizes``, shared among threads: one
    for each ``_PER_THREAD`` elements, up to :func:`get_num_threads` (on less work, waking
    threads costs more than it saves)."""
    blocks = _blocks(sizes)
    scalars = np.ascontiguousarray(scalars)
    threads = min(get_num_threads(), int(sizes.sum()) // _PER_THREAD)
    if threads <= 1:
        function(addresses, blocks, scalars, flags)
        return
    bounds = np.linspace(0, len(blocks), 4 * threads + 1).astype(np.int64)
    ranges = [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]
    parallel_map(lambda r: function(addresses, blocks[r[0] : r[1]], scalars, flags), ranges)


def real_dtype(dtype: np.dtype[Any]) -> np.dtype[Any] | None:
    """The dtype the kernels compute ``dtype`` in (complex: its real part's), or None."""
    return _REAL.get(dtype)


_IMPORTED = True  # the last line: the background thread has finished importing this module
