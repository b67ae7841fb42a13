"""The compiled path: numba kernels generated from the algorithms' element updates.

An algorithm declares its update of one element (``Algorithm.element``, plain Python in its
own module, next to its NumPy piece function). This module generates a small kernel from it
(:data:`_TEMPLATE`) that walks blocks of the parameters of a call and applies the element
update to each element, reading the parameter and its arrays once and writing them once; the
blocks are shared among :func:`~npoptim._kernels.loop.get_num_threads` threads (the kernels
release the GIL). numba compiles it without fast-math (no reordering, no ``a * b + c``
contracted into a fused multiply-add) and with NumPy's rules for division by zero, so the
results are bit-identical to the NumPy paths', as ``tests/test_paths.py`` checks.

Compile only what runs: each kernel is compiled (or loaded from numba's disk cache) the first
time an algorithm runs on a dtype, alone. :func:`kernel` with ``wait=False`` (the default
path) never compiles: it returns None until the kernel is ready, and the caller steps on
NumPy meanwhile while :func:`prepare` runs on a background thread. The generated source is
compiled under the file name and module of the algorithm's module, so numba's cache finds it
again in the next process and sees when that module changes; its function names carry a
digest of the source, so a change of the template makes new cache entries.

The arrays reach a kernel as a table of addresses (one row per role: parameter, gradient, each
state; 0 for an absent role), one row of scalars per parameter in the parameter's dtype (a
float32 parameter computes in float32, as NumPy does with Python numbers) and the flags. Each
algorithm has two kernels: the *contiguous* one, for parameters whose arrays share one
contiguous layout (flat blocks), and the *strided* one, for the others (a Fortran-ordered
parameter with a C-ordered gradient, strided views, state in another order): their arrays seen
as rows and columns in the parameter's memory order and cut into tiles of a few rows and long
columns; the tile of an array whose columns are not contiguous (the transposed gradient of a
Fortran-ordered parameter) is copied into a scratch copy that stays in the cache, in square
blocks transposed in registers (or element by element along the array's smaller stride, for
other strides), updated there row by row and written back. A parameter that
cannot be seen as rows and columns takes the for-loop path.

This module imports numba; :mod:`npoptim._kernels` imports it only when the compiled path is
used.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import hashlib
import importlib
import itertools
import os
import threading
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np

from . import element, loop
from .loop import (
    Array,
    as_real,
    as_rows_and_columns,
    get_num_threads,
    job,
    parallel_map,
    run_pieces,
    same_layouts,
)
from .registry import Algorithm

__all__ = ["kernel", "prepare", "real_dtype", "run", "run_sums"]

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
    """``f`` compiled on first call, for other compiled functions only (no disk cache: the
    kernels that call it hold its code; no wrappers for Python or C callers, whose making
    is a good part of a compilation's time)."""
    return numba.njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, **_OPTIONS)(f)


def _jit_cached(f: Callable[..., Any]) -> Any:
    """``f`` compiled on first call and kept in numba's disk cache (a function that Python
    calls), or compiled in each process where no cache folder is writable."""
    try:
        return numba.njit(cache=True, nogil=True, no_cfunc_wrapper=True, **_OPTIONS)(f)
    except RuntimeError:  # no writable place for the cache
        _warn_no_cache()
        return numba.njit(nogil=True, no_cfunc_wrapper=True, **_OPTIONS)(f)


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


@_intrinsic
def _pointer(typingctx: Any, address: Any, like: Any) -> Any:
    """The integer ``address`` as a pointer to elements of ``like``'s dtype."""
    signature = _numba_types.CPointer(like.dtype)(address, like)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))

    return signature, codegen


# The helpers below take one role's row of the address table (``addresses[role]``, a 1-D
# array), never the role's number: numba compiles a function called with a constant integer
# once for each value of it.
@_jit
def _view(addresses: Any, header: int, block: Any, like: Any) -> Any:
    """Elements ``start:stop`` of parameter ``i``'s array, for ``block`` = ``(i, start,
    stop)``: a 1-D array whose indices numba knows to be in range (so that the loops over it
    vectorize), empty for a role the call does not have (address 0). ``addresses[i]`` is the
    address of the array's data, or with ``header`` > 0 that of the ndarray object, whose data
    pointer is ``header`` bytes into it (read here: faster than asking each array in Python)."""
    i, start, stop = block[0], block[1], block[2]
    address = addresses[i]
    if address == 0:
        stop = start
    elif header > 0:
        address = _load_word(address + header)
    return numba.carray(_pointer(address + start * like.itemsize, like), (stop - start,))


#: Bytes of one vector row of :func:`_transpose_square` (an AVX register; elsewhere LLVM
#: splits or joins the vectors into the target's own).
_SQUARE_BYTES = 32

# The masks of LLVM's ``shufflevector`` that transpose 8 x 8 float32 in three stages (within
# 128-bit halves: interleave pairs of elements, then pairs of pairs; then join the halves), and
# 4 x 4 float64 in two; each lowers to one instruction on x86-64 (unpck, shufps, perm2f128).
# Each stage pairs vector ``k`` with vector ``k + distance`` and puts its two shuffles there;
# ``order`` is where column ``j`` of the block ends up.
_SHUFFLES: dict[int, tuple[list[tuple[list[int], list[int], int]], list[int]]] = {
    8: (
        [
            ([0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15], 1),
            ([0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15], 2),
            ([0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15], 4),
        ],
        [0, 2, 1, 3, 4, 6, 5, 7],
    ),
    4: ([([0, 4, 2, 6], [1, 5, 3, 7], 1), ([0, 1, 4, 5], [2, 3, 6, 7], 2)], [0, 1, 2, 3]),
}


def _transpose_vectors(builder: Any, rows: list[Any]) -> list[Any]:
    """``rows`` (LLVM vectors, as many as each has elements) transposed: the columns."""
    ir: Any = importlib.import_module("llvmlite.ir")
    stages, order = _SHUFFLES[len(rows)]
    for low, high, distance in stages:
        out: list[Any] = [None] * len(rows)
        for k in range(len(rows)):
            if k & distance == 0:
                for mask, place in ((low, k), (high, k + distance)):
                    indices = ir.Constant(ir.VectorType(ir.IntType(32), len(mask)), mask)
                    out[place] = builder.shuffle_vector(rows[k], rows[k + distance], indices)
        rows = out
    return [rows[k] for k in order]


@_intrinsic
def _transpose_square(
    typingctx: Any, source: Any, source_stride: Any, target: Any, target_stride: Any, like: Any
) -> Any:
    """Copy a square block of ``like``'s dtype, ``_SQUARE_BYTES`` bytes a side, transposed: row
    ``k`` of the block starts at address ``source + k * source_stride`` (strides in bytes) and
    becomes column ``k`` of the block at ``target``. The rows are loaded as vectors and
    transposed in registers by shuffles: data movement only, so every bit is kept."""
    signature = _numba_types.void(source, source_stride, target, target_stride, like)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        ir: Any = importlib.import_module("llvmlite.ir")
        element = context.get_value_type(sig.args[4].dtype)
        width = _SQUARE_BYTES // context.get_abi_sizeof(element)
        vector = ir.VectorType(element, width).as_pointer()

        def row(base: Any, stride: Any, k: int) -> Any:
            offset = builder.mul(stride, ir.Constant(ir.IntType(64), k))
            return builder.inttoptr(builder.add(base, offset), vector)

        rows = [builder.load(row(args[0], args[1], k), align=1) for k in range(width)]
        for k, column in enumerate(_transpose_vectors(builder, rows)):
            builder.store(column, row(args[2], args[3], k), align=1)
        return context.get_dummy_value()

    return signature, codegen


@_jit
def _move(buffer: Any, a: Any, c: Any, corner: Any, k: Any, into_buffer: bool) -> None:
    """Element ``(a, c)`` of a tile's copy from element ``k`` of the array at ``corner``, or
    with ``into_buffer`` False back to it."""
    if into_buffer:
        buffer[a, c] = corner[k]
    else:
        corner[k] = buffer[a, c]


@_jit
def _copy_tile(addresses: Any, strides: Any, tile: Any, buffer: Any, into_buffer: bool) -> None:
    """Copy a tile of one role's array into ``buffer`` (its rows and columns, from row 0 and
    column 0) or, with ``into_buffer`` False, back: only where its columns are not contiguous
    (else the kernel reads and writes the array itself) and the call has the role. An array
    whose rows are contiguous in the tile's other direction (a Fortran-ordered array seen in a
    C-ordered parameter's order, and the reverse) is copied in square blocks transposed in
    registers (:func:`_transpose_square`), walking it in runs of contiguous elements; other
    strides element by element, along the array's smaller stride."""
    i = tile[0]
    row_stride, column_stride = strides[i, 0], strides[i, 1]
    if addresses[i] == 0 or column_stride == 1:
        return
    rows, columns = tile[2] - tile[1], tile[4] - tile[3]
    size = buffer.itemsize
    start = addresses[i] + (tile[1] * row_stride + tile[3] * column_stride) * size
    corner = _pointer(start, buffer)
    if row_stride == 1:
        side = _SQUARE_BYTES // size
        width = buffer.shape[1]
        block_rows, block_columns = rows - rows % side, columns - columns % side
        for c in range(0, block_columns, side):
            for a in range(0, block_rows, side):
                array = start + (a + c * column_stride) * size
                copy = buffer.ctypes.data + (a * width + c) * size
                if into_buffer:
                    _transpose_square(array, column_stride * size, copy, width * size, buffer)
                else:
                    _transpose_square(copy, width * size, array, column_stride * size, buffer)
        # the rows and columns left over: at most side - 1 of each
        for c in range(columns):
            for a in range(block_rows if c < block_columns else 0, rows):
                _move(buffer, a, c, corner, a + c * column_stride, into_buffer)
    elif abs(row_stride) < abs(column_stride):
        for c in range(columns):
            for a in range(rows):
                _move(buffer, a, c, corner, a * row_stride + c * column_stride, into_buffer)
    else:
        for a in range(rows):
            for c in range(columns):
                _move(buffer, a, c, corner, a * row_stride + c * column_stride, into_buffer)


@_jit
def _row(addresses: Any, strides: Any, tile: Any, a: Any, copy: Any) -> Any:
    """Row ``a`` of a tile of one role's array: the array's own elements where its columns
    are contiguous, else the row of the copy :func:`_copy_tile` made in ``copy``; for a role
    the call does not have, a row of ``copy`` that the loops never read. Always a
    reference-free 1-D array of the tile's width, so that the loops over it vectorize."""
    i = tile[0]
    if addresses[i] == 0 or strides[i, 1] != 1:
        address = copy.ctypes.data + (a - tile[1]) * copy.shape[1] * copy.itemsize
    else:
        address = addresses[i] + (a * strides[i, 0] + tile[3]) * copy.itemsize
    return numba.carray(_pointer(address, copy), (tile[4] - tile[3],))


def _blocks(sizes: Array, block: int = _BLOCK) -> Array:
    """Work items ``(parameter, start, stop)`` of at most ``block`` elements each (one, maybe
    empty, for a parameter without elements)."""
    counts = np.maximum(1, -(-sizes // block))
    param = np.repeat(np.arange(len(sizes), dtype=np.int64), counts)
    start = (
        np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(counts.cumsum() - counts, counts)
    ) * block
    return np.stack([param, start, np.minimum(start + block, sizes[param])], axis=1)


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
# For each algorithm, two kernels of one generated function each (every function numba compiles
# costs a fixed part of a second, so the per-block work is written inside the walk, not in a
# function of its own: that cut the compile time by about 40%). The contiguous kernel walks a
# range of blocks: for each, it reads its parameter's row of scalars and the flags into named
# tuples (the fields that the algorithm's ``scalars`` and ``flags`` return, which the compiler
# keeps in registers), takes a view of each role and runs the element update over the block: one
# loop for each set of optional roles present, so that no loop touches an array it does not need
# and each one vectorizes. The strided kernel does the same row by row over each tile of rows
# and columns of its range, the tile of an array whose columns are not contiguous copied into
# its slot of the scratch copy first and written back after (the gradient is only read). Threads
# of :func:`npoptim._kernels.loop.parallel_map` share the blocks (tiles) of a call (the kernels
# release the GIL).
_TEMPLATE = """
def {name}_run(addresses, header, blocks, scalars, flags):
    for k in range(blocks.shape[0]):
        block = blocks[k]
        row = scalars[block[0]]
        scalar = Scalars({scalar_fields})
        flag = Flags({flag_fields})
{views}
{loops}


def {name}_run_strided(addresses, strides, tiles, scalars, flags, buffer, slots):
    for k in range(tiles.shape[0]):
        tile = tiles[k]
        row = scalars[tile[0]]
        scalar = Scalars({scalar_fields})
        flag = Flags({flag_fields})
{tile_views}
{gather}
        for a in range(tile[1], tile[2]):
{rows}
{strided_loops}
{write_back}
"""


def _loops(roles: int, optional: Sequence[int], strided: bool) -> str:
    """The loops of a block (or tile row): one for each subset of the optional roles present
    (an absent role's value is the gradient's, which the element update does not use)."""
    written = [r for r in range(roles) if r != 1]
    indent = "            " if strided else "        "
    lines: list[str] = []
    for present in itertools.product([True, False], repeat=len(optional)):
        taken = [r for r in range(roles) if r not in optional or present[optional.index(r)]]
        tests = [
            f"addresses[{r}, {'tile' if strided else 'block'}[0]] {'!=' if here else '=='} 0"
            for r, here in zip(optional, present, strict=True)
        ]
        inputs = ", ".join(f"r{r}[j]" if r in taken else "r1[j]" for r in range(roles))
        outputs = ", ".join(f"r{r}[j]" if r in taken else "_" for r in written)
        lines += [
            f"{indent}if {' and '.join(tests) or 'True'}:",
            f"{indent}    for j in range(r0.size):",
            f"{indent}        {outputs}, = update({inputs}, scalar, flag)",
        ]
    return "\n".join(lines)


@functools.cache
def _machinery() -> str:
    """A digest of this module and :mod:`.element`, whose compiled functions every kernel
    holds: numba's cache checks only the file of the algorithm's module, so a kernel's name
    carries this to tell a kernel made by other helpers from the current one."""
    files = [__file__, element.__file__]
    digest = hashlib.sha256()
    for name in files:
        with open(name, "rb") as source:
            digest.update(source.read())
    return digest.hexdigest()


class _Source:
    """The source generated from ``template`` for an algorithm (the fields every template
    has, its scalars' and flags' names, plus ``fields``), the name of its functions (which
    carries a digest of it, see :func:`_machinery`), and the functions it defines."""

    def __init__(
        self,
        algorithm: Algorithm,
        scalar_names: Sequence[str],
        flag_names: Sequence[str],
        template: str,
        label: str,
        fields: Mapping[str, Any],
    ) -> None:
        body = template.format(
            name="{name}",
            scalar_fields=", ".join(f"row[{k}]" for k in range(len(scalar_names))),
            flag_fields=", ".join(f"flags[{k}]" for k in range(len(flag_names))),
            **fields,
        )
        self.algorithm = algorithm
        self.update = cast(types.FunctionType, algorithm.element)
        digest = hashlib.sha256(
            "\0".join(
                [body, *scalar_names, "|", *flag_names, self.update.__code__.co_filename,
                 _machinery()]
            ).encode()
        ).hexdigest()[:12]  # fmt: skip
        self.name = f"_{algorithm.name}{label}_{digest}"
        self.text = body.format(name=self.name)
        self.scalar_names, self.flag_names = tuple(scalar_names), tuple(flag_names)

    def functions(self, **helpers: Any) -> dict[str, Any]:
        """The namespace of the generated functions (not compiled), which call the element
        update, :func:`_view` and ``helpers``."""
        name = self.algorithm.name
        namespace: dict[str, Any] = {
            "__name__": self.update.__module__,  # numba's cache finds the code's module by this
            "view": _view,
            "np": np,
            "update": _compile_element(self.update),
            "Scalars": collections.namedtuple(f"{name}_scalars", self.scalar_names),
            "Flags": collections.namedtuple(f"{name}_flags", self.flag_names),
            **helpers,
        }
        # compiled under the file name of the algorithm's module, so that numba's cache knows it
        exec(compile(self.text, self.update.__code__.co_filename, "exec"), namespace)
        return namespace


def _elementwise_source(
    algorithm: Algorithm, scalar_names: Sequence[str], flag_names: Sequence[str]
) -> _Source:
    """The source of an algorithm's kernels, contiguous and strided (:data:`_TEMPLATE`)."""
    roles = len(algorithm.roles)
    optional = [algorithm.roles.index(name) for name in algorithm.optional]
    fields = dict(
        views="\n".join(
            f"        r{r} = view(addresses[{r}], header, block, scalars)" for r in range(roles)
        ),
        loops=_loops(roles, optional, strided=False),
        tile_views="\n".join(
            f"        a{r}, s{r}, c{r} = addresses[{r}], strides[{r}], buffer[slots[{r}]]"
            for r in range(roles)
        ),
        gather="\n".join(
            f"        copy_tile(a{r}, s{r}, tile, c{r}, True)" for r in range(roles)
        ),
        rows="\n".join(
            f"            r{r} = row_of(a{r}, s{r}, tile, a, c{r})" for r in range(roles)
        ),
        strided_loops=_loops(roles, optional, strided=True),
        write_back="\n".join(
            f"        copy_tile(a{r}, s{r}, tile, c{r}, False)" for r in range(roles) if r != 1
        ),
    )  # fmt: skip
    return _Source(algorithm, scalar_names, flag_names, _TEMPLATE, "", fields)


# --------------------------------------------------------------------------- the kernels
_kernels: dict[tuple[str, tuple[str, ...], tuple[str, ...]], dict[str, Any]] = {}
_ready: dict[tuple[Any, ...], Any] = {}  # (kernel key, dtype) -> compiled for that dtype
_build_lock = threading.RLock()


def _after_fork_in_child() -> None:
    """A child forked while a background thread compiled (or a kernel ran) must not wait for
    that thread."""
    global _build_lock, _scratch_lock
    _build_lock = threading.RLock()
    _scratch_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _kernel_functions(source: _Source) -> dict[str, Any]:
    """The jitted run functions of ``source``, ``"contiguous"`` and ``"strided"`` (not yet
    compiled for any dtype)."""
    key = (source.algorithm.name, source.scalar_names, source.flag_names)
    found = _kernels.get(key)
    if found is not None:
        return found
    namespace = source.functions(row_of=_row, copy_tile=_copy_tile)
    found = _kernels[key] = {
        "contiguous": _jit_cached(namespace[f"{source.name}_run"]),
        "strided": _jit_cached(namespace[f"{source.name}_run_strided"]),
    }
    return found


def _signature(real: np.dtype[Any], kind: str) -> Any:
    """The signature of a run function of ``kind`` for parameters of the real dtype ``real``."""
    t = _numba_types
    table, scalars, flags = t.int64[:, ::1], numba.from_dtype(real)[:, ::1], t.boolean[::1]
    if kind == "strided":
        buffer = numba.from_dtype(real)[:, :, ::1]
        return t.void(table, t.int64[:, :, ::1], table, scalars, flags, buffer, t.int64[::1])
    return t.void(table, t.int64, table, scalars, flags)


def kernel(
    algorithm: Algorithm,
    real: np.dtype[Any],
    scalar_names: Sequence[str],
    flag_names: Sequence[str],
    *,
    wait: bool,
    kind: str = "contiguous",
) -> Any:
    """The kernel of ``kind`` (``"contiguous"`` arrays or ``"strided"`` rows) of
    ``algorithm`` for the real dtype ``real``, compiled (or loaded from numba's cache) on
    first use; with ``wait=False``, None unless it is ready already."""
    key = (algorithm.name, tuple(scalar_names), tuple(flag_names), real, kind)
    found = _ready.get(key)
    if found is not None or not wait:
        return found
    with _build_lock:  # one compilation at a time (numba has a lock of its own, too)
        if key not in _ready:
            source = _elementwise_source(algorithm, scalar_names, flag_names)
            function = _kernel_functions(source)[kind]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", numba.NumbaWarning)
                function.compile(_signature(real, kind))
            _ready[key] = function
        return _ready[key]


def prepare(
    algorithm: Algorithm,
    roles: Sequence[Sequence[Array] | None],
    per_param: Mapping[str, Sequence[Any]],
    shared: Mapping[str, Any],
) -> None:
    """Compile (or load) every kernel a call with these arguments needs."""
    scalars, flags = algorithm.numbers(roles, per_param, shared)
    if algorithm.sums:
        for real, _ in _needed(roles):
            _sums_kernel(algorithm, real, list(scalars), list(flags), wait=True)
        return
    for real, kind in _needed(roles):
        kernel(algorithm, real, list(scalars), list(flags), wait=True, kind=kind)


def _needed(
    roles: Sequence[Sequence[Array] | None], contiguous: Sequence[bool] | None = None
) -> set[tuple[np.dtype[Any], str]]:
    """The (real dtype, kind) of the kernels the parameters of ``roles`` need (``contiguous``:
    their :func:`same_layouts`, when the caller has them)."""
    if contiguous is None:
        contiguous = same_layouts(roles)
    needed = set()
    for p, whole in zip(cast(Sequence[Array], roles[0]), contiguous, strict=True):
        if p.dtype in _REAL:
            needed.add((_REAL[p.dtype], "contiguous" if whole else "strided"))
    return needed


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
    scalars, flags = algorithm.numbers(roles, per_param, shared)
    scalar_names, flag_names = list(scalars), list(flags)
    params = cast(Sequence[Array], roles[0])
    by_dtype: dict[np.dtype[Any], list[int]] = {}
    others: list[int] = []
    for i, p in enumerate(params):
        if p.dtype in _REAL:
            by_dtype.setdefault(p.dtype, []).append(i)
        else:
            others.append(i)
    contiguous = same_layouts(roles)
    kernels = {}
    for real, kind in _needed(roles, contiguous):
        found = kernel(algorithm, real, scalar_names, flag_names, wait=wait, kind=kind)
        if found is None:
            return False
        kernels[real, kind] = found
    flag_array = np.array(list(flags.values()), dtype=np.bool_)
    for dtype, members in by_dtype.items():
        table = _scalar_table(scalars, members, _REAL[dtype])
        functions = {kind: kernels.get((_REAL[dtype], kind)) for kind in ("contiguous", "strided")}
        others += _run_dtype(functions, roles, members, table, flag_array, contiguous)
    run_pieces(algorithm.piece, [job(roles, per_param, shared, i) for i in others])
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


def _run_dtype(
    functions: Mapping[str, Any],
    roles: Sequence[Sequence[Array] | None],
    members: Sequence[int],
    scalars: Array,
    flags: Array,
    contiguous: Sequence[bool],
) -> list[int]:
    """The kernels on the parameters ``members`` (all of one dtype): those whose arrays share
    one contiguous layout in one call of the contiguous kernel, the others in one call of the
    strided kernel (:func:`_run_strided`). Returns the parameters neither can take (strided
    views of 3 or more axes that cannot be seen as rows and columns), for the for-loop path.
    ``contiguous[i]``: whether parameter ``i``'s arrays share one contiguous layout."""
    whole: list[int] = []
    mixed: list[int] = []
    for k, i in enumerate(members):
        (whole if contiguous[i] else mixed).append(k)
    if whole:
        table = np.zeros((len(roles), len(whole)), dtype=np.int64)
        for row, role in enumerate(roles):
            if role is not None:
                chosen = [role[members[k]] for k in whole]
                if _READ_DATA_FIELD:
                    table[row] = list(map(id, chosen))
                else:
                    table[row] = [a.ctypes.data for a in chosen]
        params = cast(Sequence[Array], roles[0])
        sizes = np.array([params[members[k]].size for k in whole], dtype=np.int64)
        if params[members[0]].dtype.kind == "c":
            sizes *= 2  # pairs of reals
        _launch(functions["contiguous"], table, _blocks(sizes), scalars[whole], flags, sizes)
    matrices, taken, left = [], [], []
    for k in mixed:
        found = as_rows_and_columns([None if r is None else as_real(r[members[k]]) for r in roles])
        if found is None:
            left.append(members[k])
        else:
            matrices.append(found)
            taken.append(k)
    if taken:
        _run_strided(functions["strided"], matrices, scalars[taken], flags)
    return left


#: The tiles of the strided kernel: rows of ``_TILE_ROW_BYTES`` bytes of an array whose rows
#: are contiguous (eight cache lines: the runs a transposed array's copy is read from and
#: written back to; shorter runs at a large stride leave the memory waiting between them) and
#: ``_TILE_COLUMNS`` columns (long runs of the parameter's contiguous rows, which cutting
#: slows more). A tile's copy of one array is about 1 MiB. Measured on Adam's 2000 x 2000
#: float32 step, Fortran-ordered parameter and C-ordered gradient, against the matched
#: layouts: 1.5-1.6x with these, 1.6-1.8x with 128-byte rows, 1.8-2.1x with 1024 columns.
_TILE_ROW_BYTES = 512
_TILE_COLUMNS = 2048
#: Elements that each row of a tile's copy has beyond the tile's columns: without them, the
#: elements of a column of the copy (which :func:`_copy_tile` writes one after the other) would
#: fall into the same few sets of the L1 cache.
_PADDING = 16

#: The copies of tiles, by (dtype, shape): reused from step to step, one per thread
#: at work at once (a step allocates none once the first has made them).
_scratch: dict[tuple[Any, ...], list[Array]] = {}
_scratch_lock = threading.Lock()


def _run_strided(
    function: Any, matrices: Sequence[Sequence[Array | None]], scalars: Array, flags: Array
) -> None:
    """The strided kernel on parameters whose arrays do not share a contiguous layout, each
    given as rows and columns in the parameter's memory order (a Fortran-ordered parameter's
    columns are its rows): tiles of them, shared among threads. Each role whose columns are
    not contiguous in some parameter gets a slot in the scratch copy of the tiles."""
    roles = len(matrices[0])
    addresses = np.zeros((roles, len(matrices)), dtype=np.int64)
    strides = np.zeros((roles, len(matrices), 2), dtype=np.int64)
    copied = [False] * roles
    tiles: list[tuple[int, int, int, int, int]] = []
    real = cast(Array, matrices[0][0]).dtype
    height = max(1, _TILE_ROW_BYTES // real.itemsize)
    for i, views in enumerate(matrices):
        for r, m in enumerate(views):
            if m is not None:
                addresses[r, i] = m.ctypes.data
                strides[r, i] = [m.strides[0] // m.itemsize, m.strides[1] // m.itemsize]
                copied[r] = copied[r] or strides[r, i, 1] != 1
        rows, columns = cast(Array, views[0]).shape
        tiles += [
            (i, a, min(a + height, rows), c, min(c + _TILE_COLUMNS, columns))
            for a in range(0, rows, height)
            for c in range(0, columns, _TILE_COLUMNS)
        ]  # fmt: skip
    slots = np.zeros(roles, dtype=np.int64)
    slots[copied] = np.arange(sum(copied))
    key = (real, max(1, sum(copied)), height, _TILE_COLUMNS + _PADDING)
    table = np.array(tiles, dtype=np.int64).reshape(-1, 5)
    work = int(((table[:, 2] - table[:, 1]) * (table[:, 4] - table[:, 3])).sum())
    threads = min(get_num_threads(), work // _PER_THREAD)
    scalars = np.ascontiguousarray(scalars)

    def tiles_in(bounds: tuple[int, int]) -> None:
        with _scratch_lock:
            free = _scratch.setdefault(key, [])
            buffer = free.pop() if free else None
        if buffer is None:
            buffer = np.empty(key[1:], dtype=real)
        try:
            function(
                addresses, strides, table[bounds[0] : bounds[1]], scalars, flags, buffer, slots
            )
        finally:
            with _scratch_lock:
                free.append(buffer)

    if threads <= 1:
        tiles_in((0, len(table)))
        return
    bounds = np.linspace(0, len(table), 4 * threads + 1).astype(np.int64)
    parallel_map(tiles_in, [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a])


def _launch(
    function: Any, addresses: Array, blocks: Array, scalars: Array, flags: Array, sizes: Array
) -> None:
    """``function`` over ``blocks``, shared among threads: one for each ``_PER_THREAD``
    elements, up to :func:`get_num_threads` (on less work, waking threads costs more than it
    saves)."""
    scalars = np.ascontiguousarray(scalars)
    header = _HEADER if _READ_DATA_FIELD else 0
    threads = min(get_num_threads(), int(sizes.sum()) // _PER_THREAD)
    if threads <= 1:
        function(addresses, header, blocks, scalars, flags)
        return
    bounds = np.linspace(0, len(blocks), 4 * threads + 1).astype(np.int64)
    ranges = [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]
    parallel_map(lambda r: function(addresses, header, blocks[r[0] : r[1]], scalars, flags), ranges)


def real_dtype(dtype: np.dtype[Any]) -> np.dtype[Any] | None:
    """The dtype the kernels compute ``dtype`` in (complex: its real part's), or None."""
    return _REAL.get(dtype)


# -------------------------------------------------------------------- kernels with sums
# An algorithm with ``sums`` (see the registry) has one kernel, for arrays that share one
# contiguous layout: each block of ``loop.REDUCE_BLOCK`` elements adds its terms in float64,
# first to last, into its row of ``totals``; the rows of a parameter are then added in block
# order, as :func:`npoptim._kernels.loop.reduce_pieces` does on the NumPy paths. A parameter
# of mixed layouts goes through ``reduce_pieces``, whose staged tiles the kernel takes.
_SUMS_TEMPLATE = """
def {name}_run(addresses, blocks, scalars, flags, totals):
    for k in range(blocks.shape[0]):
        block, total = blocks[k], totals[k]
        row = scalars[block[0]]
        scalar = Scalars({scalar_fields})
        flag = Flags({flag_fields})
{views}
        lanes = np.zeros(({sums}, {lanes}))
        n = r0.size
        whole = n // {lanes} * {lanes}
        for i in range(0, whole, {lanes}):
            for lane in range({lanes}):
                j = i + lane
                {outputs}, = update({inputs}, scalar, flag)
{adds}
        for j in range(whole, n):
            lane = j - whole
            {outputs}, = update({inputs}, scalar, flag)
{tail_adds}
        used = min(n, {lanes})
        for s in range({sums}):
            if used == 0:
                total[s] = 0.0
            else:
                running = lanes[s, 0]
                for lane in range(1, used):
                    running += lanes[s, lane]
                total[s] = running
"""


def _sums_kernel(
    algorithm: Algorithm,
    real: np.dtype[Any],
    scalar_names: Sequence[str],
    flag_names: Sequence[str],
    *,
    wait: bool,
) -> Any:
    """The kernel of an algorithm with ``sums`` for the real dtype ``real`` (see
    :func:`kernel`)."""
    key = (algorithm.name, tuple(scalar_names), tuple(flag_names), real, loop.REDUCE_LANES)
    found = _ready.get(key)
    if found is not None or not wait:
        return found
    with _build_lock:
        if key not in _ready:
            roles = range(len(algorithm.roles))
            writes = algorithm.writes
            written = [r for r in roles if r != 1 and (
                writes is None or algorithm.roles[r] in writes)]  # fmt: skip
            terms = [f"t{k}" for k in range(algorithm.sums)]
            fields = dict(
                views="\n".join(
                    f"        r{r} = view(addresses[{r}], 0, block, scalars)" for r in roles
                ),
                sums=algorithm.sums,
                outputs=", ".join([f"r{r}[j]" for r in written] + terms),
                inputs=", ".join(f"r{r}[j]" for r in roles),
                lanes=loop.REDUCE_LANES,
                adds="\n".join(
                    f"                lanes[{k}, lane] += t{k}" for k in range(algorithm.sums)
                ),
                tail_adds="\n".join(
                    f"            lanes[{k}, lane] += t{k}" for k in range(algorithm.sums)
                ),
            )
            source = _Source(algorithm, scalar_names, flag_names, _SUMS_TEMPLATE, "_sums", fields)
            namespace = source.functions()
            function = _jit_cached(namespace[f"{source.name}_run"])
            t = _numba_types
            table, totals = t.int64[:, ::1], t.float64[:, ::1]
            scalars = numba.from_dtype(real)[:, ::1]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", numba.NumbaWarning)
                function.compile(t.void(table, table, scalars, t.boolean[::1], totals))
            _ready[key] = function
        return _ready[key]


def _sums_range(
    function: Any, table: Array, blocks: Array, scalars: Array, flags: Array, sums: Array,
    span: tuple[int, int],
) -> None:  # fmt: skip
    """``function`` on the blocks ``span[0]:span[1]`` (one thread's share)."""
    a, b = span
    function(table, blocks[a:b], scalars, flags, sums[a:b])


def run_sums(
    algorithm: Algorithm,
    roles: Sequence[Sequence[Array] | None],
    per_param: Mapping[str, Sequence[Any]],
    shared: Mapping[str, Any],
    *,
    wait: bool,
) -> list[tuple[float, ...]] | None:
    """:func:`run` for an algorithm with ``sums``: each parameter's totals, or None, having
    changed nothing, when a kernel is not ready (``wait=False``). Parameters of mixed layouts
    go through :func:`npoptim._kernels.loop.reduce_pieces`, whose tiles of whole rows the
    kernel takes once staged (:func:`_tile_totals`); parameters of other dtypes, and tiles
    that are not contiguous even then, take its NumPy path."""
    scalars, flags = algorithm.numbers(roles, per_param, shared)
    params = cast(Sequence[Array], roles[0])
    by_dtype: dict[np.dtype[Any], list[int]] = {}
    others: list[int] = []
    for i, (p, whole) in enumerate(zip(params, same_layouts(roles), strict=True)):
        if p.dtype in _REAL and whole:
            by_dtype.setdefault(p.dtype, []).append(i)
        else:
            others.append(i)
    kernels = {}
    for dtype in {params[i].dtype for i in others if params[i].dtype in _REAL} | set(by_dtype):
        found = _sums_kernel(algorithm, _REAL[dtype], list(scalars), list(flags), wait=wait)
        if found is None:
            return None
        kernels[dtype] = found
    flag_array = np.array(list(flags.values()), dtype=np.bool_)
    totals: list[tuple[float, ...]] = [()] * len(params)
    for dtype, members in by_dtype.items():
        table = np.zeros((len(roles), len(members)), dtype=np.int64)
        for row, role in enumerate(roles):
            if role is not None:
                table[row] = [as_real(role[i]).ctypes.data for i in members]
        sizes = np.array([as_real(params[i]).size for i in members], dtype=np.int64)
        blocks = _blocks(sizes, loop.REDUCE_BLOCK)
        sums = np.zeros((len(blocks), algorithm.sums))
        scalar_table = np.ascontiguousarray(_scalar_table(scalars, members, _REAL[dtype]))
        function = kernels[dtype]
        threads = min(get_num_threads(), int(sizes.sum()) // _PER_THREAD)
        if threads <= 1:
            function(table, blocks, scalar_table, flag_array, sums)
        else:
            bounds = np.linspace(0, len(blocks), 4 * threads + 1).astype(np.int64)
            ranges = [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]
            parallel_map(functools.partial(
                _sums_range, function, table, blocks, scalar_table, flag_array, sums
            ), ranges)  # fmt: skip
        edges = np.searchsorted(blocks[:, 0], np.arange(len(members) + 1))
        for k, i in enumerate(members):
            rows = sums[edges[k] : edges[k + 1]]
            totals[i] = tuple(loop.add_in_order(0.0, rows[:, s]) for s in range(algorithm.sums))
    if others:
        jobs = [job(roles, per_param, shared, i) for i in others]
        per_tile = [  # each parameter's kernel and row of scalars, for all its tiles
            (kernels[params[i].dtype], _scalar_table(scalars, [i], _REAL[params[i].dtype]))
            if params[i].dtype in kernels
            else None
            for i in others
        ]
        tiles = functools.partial(_tile_totals, algorithm.sums, per_tile, flag_array)
        for i, found in zip(others, loop.reduce_pieces(algorithm.piece, jobs, algorithm.sums,
                                                       tiles), strict=True):  # fmt: skip
            totals[i] = found
    return totals


def _tile_totals(
    sums: int,
    per_tile: Sequence[tuple[Any, Array] | None],
    flags: Array,
    k: int,
    staged: Sequence[Array | None],
) -> list[Array] | None:
    """The block totals of a tile of the ``k``-th parameter that
    :func:`npoptim._kernels.loop.reduce_pieces` is given (one of mixed layouts), its arrays as
    it stages them, from the parameter's kernel and row of scalars (``per_tile[k]``): a tile
    of whole rows is contiguous in every array then, and its blocks are those of
    :func:`npoptim._kernels.loop.block_totals`, from the tile's first element. None (the NumPy
    piece then) for a dtype without a kernel, or a tile that is not contiguous (a strided
    parameter)."""
    found = per_tile[k]
    if found is None or any(v is not None and not v.flags.c_contiguous for v in staged):
        return None
    function, scalar_row = found
    table = np.array([[0 if v is None else v.ctypes.data] for v in staged], dtype=np.int64)
    blocks = _blocks(np.array([cast(Array, staged[0]).size], dtype=np.int64), loop.REDUCE_BLOCK)
    totals = np.zeros((len(blocks), sums))
    function(table, blocks, scalar_row, flags, totals)
    return [totals[:, s] for s in range(sums)]


_IMPORTED = True  # the last line: the background thread has finished importing this module
