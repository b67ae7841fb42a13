"""The ``fused=True`` path: compiled single-pass kernels of the elementwise optimizers.

Each kernel here is another implementation of a piece function of the optimizer modules
(``_adam_piece`` and its kin): the same quantities under the same names, computed by the same
IEEE operations in the same order, one element at a time, so that a parameter and its state
are read and written once per step instead of once per NumPy call. numba compiles them
(``parallel=True``, ``fastmath=False``, so it neither reorders nor contracts ``a * b + c``
into a fused multiply-add) on first use and caches the machine code on disk; the results are
bit-identical to the for-loop path's, as ``tests/test_paths.py`` checks.

One call updates every parameter of a group: the arrays reach the kernel as a table of
addresses (one row per role: parameter, gradient, each state), their sizes and one row of
scalars per parameter in the parameter's dtype (a float32 parameter computes in float32, as
NumPy does with Python scalars). The work is cut into blocks of at most ``_BLOCK`` elements
that numba's threads share.

Parameters this path cannot take (a dtype numba does not compute in, such as float16, or
arrays whose memory layouts differ) take the for-loop path; so do sparse gradients, which the
optimizer modules handle before they get here.

This module imports numba; :mod:`npoptim._kernel` imports it only when ``fused=True`` is used.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import numpy as np

from ._kernel import Array, Job, Piece, get_num_threads, job, run_pieces

__all__ = ["run", "usable"]

# numba is imported as an untyped module: its own annotations vary between versions.
numba: Any = importlib.import_module("numba")
_extending: Any = importlib.import_module("numba.extending")
#: ``_tuple(array, n)``: the first n elements of an array as a tuple (n a literal), for scalars
#: that the compiler may keep in registers (an array could alias the arrays being written).
_tuple = importlib.import_module("numba.np.unsafe.ndarray").to_fixed_tuple
types, prange = numba.types, numba.prange

_F = TypeVar("_F", bound=Callable[..., Any])


def _compile(f: _F, **options: Any) -> _F:
    """``f`` compiled by numba on first call: IEEE arithmetic as written (no fast-math, and
    NumPy's rules for division by zero), the machine code cached on disk where it can be."""
    options.update(fastmath=False, error_model="numpy")
    try:
        return cast(_F, numba.njit(cache=True, **options)(f))
    except RuntimeError:  # no writable place for the cache: compile in each process
        return cast(_F, numba.njit(**options)(f))


def _jit(f: _F) -> _F:
    return _compile(f)


def _jit_parallel(f: _F) -> _F:
    """As :func:`_jit`, with its ``prange`` loop run on numba's threads."""
    return _compile(f, parallel=True)


def _intrinsic(f: Callable[..., Any]) -> Callable[..., Any]:
    return cast(Callable[..., Any], _extending.intrinsic(f))


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
@_intrinsic
def _load_word(typingctx: Any, address: Any) -> Any:
    """The 64-bit integer stored at ``address``."""
    signature = types.int64(address)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        word = context.get_value_type(types.int64)
        return builder.load(builder.inttoptr(args[0], word.as_pointer()))

    return signature, codegen


@_jit
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
    signature = types.CPointer(like.dtype)(address, like)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))

    return signature, codegen


@_intrinsic
def _as(typingctx: Any, value: Any, like: Any) -> Any:
    """``value`` converted to ``like``'s dtype (a constant in the parameter's precision)."""
    signature = (like.dtype if isinstance(like, types.Array) else like)(value, like)

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        return context.cast(builder, args[0], sig.args[0], sig.return_type)

    return signature, codegen


@_jit
def _view(ptrs: Any, role: int, block: Any, like: Any) -> Any:
    """Elements ``start:stop`` of parameter ``i``'s array of ``role``, for ``block`` =
    ``(i, start, stop)``: a 1-D array whose indices numba knows to be in range (so that the
    loops over it vectorize), empty for a role the update does not use (address 0)."""
    i, start, stop = block[0], block[1], block[2]
    address = ptrs[role, i]
    if address == 0:
        stop = start
    return numba.carray(_pointer(address + start * like.itemsize, like), (stop - start,))


@_jit
def _views3(ptrs: Any, block: Any, like: Any) -> Any:
    """The views of roles 0, 1 and 2 of ``block``."""
    return _view(ptrs, 0, block, like), _view(ptrs, 1, block, like), _view(ptrs, 2, block, like)


@_jit
def _views4(ptrs: Any, block: Any, like: Any) -> Any:
    return (*_views3(ptrs, block, like), _view(ptrs, 3, block, like))


@_jit
def _views5(ptrs: Any, block: Any, like: Any) -> Any:
    return (*_views4(ptrs, block, like), _view(ptrs, 4, block, like))


@_jit
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


@_jit
def _gradient(g: Any, p: Any, maximize: bool, decay: bool, weight_decay: Any) -> Any:
    """g_t: the gradient, negated for maximize, plus L2 weight decay λθ when ``decay``."""
    if maximize:
        g = -g
    if decay:
        g = g + p * weight_decay
    return g


@_jit
def _maximum(a: Any, b: Any) -> Any:
    """np.maximum of two numbers: NaN if either is NaN."""
    if a != a or a >= b:
        return a
    return b


@_jit
def _sign(x: Any) -> Any:
    """np.sign of a number: ±1, +0 for ±0, NaN for NaN."""
    if x > 0:
        return _as(1.0, x)
    if x < 0:
        return _as(-1.0, x)
    return x - x


# ------------------------------------------------------------------------------ kernels
# Per algorithm, two functions. The update function is the piece function's math for one
# element: it takes the values of the roles, the scalars c and the flags f (tuples, which the
# compiler keeps in registers), and returns the new values of the roles it writes. The block
# function runs it over one block of one parameter, with that parameter's row of scalars and
# the flags read into tuples of the algorithm's fixed lengths: a loop per set of roles present,
# so that no loop touches an array it does not need and each one vectorizes.


@_jit
def _sgd_update(p: Any, g: Any, b: Any, c: Any, f: Any) -> Any:
    weight_decay, momentum, one_minus_dampening, lr, first = c
    maximize, decay, has_momentum, nesterov = f
    g = _gradient(g, p, maximize, decay, weight_decay)
    if has_momentum:
        # b_1 = g_1, then b_t = μ b_{t-1} + (1 - τ) g_t
        b = g if first else b * momentum + g * one_minus_dampening
        g = g + b * momentum if nesterov else b
    return p - g * lr, b  # θ_t = θ_{t-1} - γ g_t


@_jit
def _sgd_block(ptrs: Any, block: Any, sc: Any, fl: Any) -> None:
    c, f = _tuple(sc[block[0]], 5), _tuple(fl, 4)
    p, g, b = _views3(ptrs, block, sc)
    if f[2]:
        for j in range(p.size):
            p[j], b[j] = _sgd_update(p[j], g[j], b[j], c, f)
    else:
        for j in range(p.size):
            p[j], _ = _sgd_update(p[j], g[j], g[j], c, f)


@_jit
def _adam_update(p: Any, g: Any, m: Any, v: Any, v_max: Any, c: Any, f: Any) -> Any:
    one_minus_beta1, beta2, one_minus_beta2, weight_decay, decoupled_decay, eps = c[:6]
    step_size, bias_correction2_sqrt = c[6:]
    maximize, decay, decoupled_weight_decay, amsgrad = f
    if decoupled_weight_decay:
        g = -g if maximize else g
        p = p * decoupled_decay if decay else p  # θ ← θ(1 - γλ)
    else:
        g = _gradient(g, p, maximize, decay, weight_decay)
    m = m + (g - m) * one_minus_beta1  # m_t = β1 m_{t-1} + (1 - β1) g_t
    v = v * beta2 + (g * g) * one_minus_beta2  # v_t = β2 v_{t-1} + (1 - β2) g_t²
    if amsgrad:
        v_max = _maximum(v_max, v)  # v_t^max = max(v_{t-1}^max, v_t)
    denom = np.sqrt(v_max if amsgrad else v) / bias_correction2_sqrt + eps  # sqrt(v̂_t) + ε
    return p - (m / denom) * step_size, m, v, v_max  # θ_t = θ_{t-1} - γ m̂_t / (sqrt(v̂_t) + ε)


@_jit
def _adam_block(ptrs: Any, block: Any, sc: Any, fl: Any) -> None:
    c, f = _tuple(sc[block[0]], 8), _tuple(fl, 4)
    p, g, m, v, v_max = _views5(ptrs, block, sc)
    if f[3]:
        for j in range(p.size):
            p[j], m[j], v[j], v_max[j] = _adam_update(p[j], g[j], m[j], v[j], v_max[j], c, f)
    else:
        for j in range(p.size):
            p[j], m[j], v[j], _ = _adam_update(p[j], g[j], m[j], v[j], g[j], c, f)


@_jit
def _rmsprop_update(p: Any, g: Any, v: Any, g_ave: Any, b: Any, c: Any, f: Any) -> Any:
    lr, alpha, one_minus_alpha, eps, weight_decay, momentum = c
    maximize, decay, centered, has_momentum = f
    g = _gradient(g, p, maximize, decay, weight_decay)
    v = v * alpha + (g * g) * one_minus_alpha  # v_t = α v_{t-1} + (1 - α) g_t²
    if centered:
        g_ave = g_ave + (g - g_ave) * one_minus_alpha  # g^ave_t = α g^ave_{t-1} + (1 - α) g_t
        avg = np.sqrt(v - g_ave * g_ave) + eps  # sqrt(v_t - (g^ave_t)²) + ε
    else:
        avg = np.sqrt(v) + eps
    if has_momentum:
        b = b * momentum + g / avg  # b_t = μ b_{t-1} + g_t / (sqrt(ṽ_t) + ε)
        return p - b * lr, v, g_ave, b
    return p - (g / avg) * lr, v, g_ave, b


@_jit
def _rmsprop_block(ptrs: Any, block: Any, sc: Any, fl: Any) -> None:
    c, f = _tuple(sc[block[0]], 6), _tuple(fl, 4)
    p, g, v, g_ave, b = _views5(ptrs, block, sc)
    if f[2] and f[3]:
        for j in range(p.size):
            p[j], v[j], g_ave[j], b[j] = _rmsprop_update(p[j], g[j], v[j], g_ave[j], b[j], c, f)
    elif f[2]:
        for j in range(p.size):
            p[j], v[j], g_ave[j], _ = _rmsprop_update(p[j], g[j], v[j], g_ave[j], g[j], c, f)
    elif f[3]:
        for j in range(p.size):
            p[j], v[j], _, b[j] = _rmsprop_update(p[j], g[j], v[j], g[j], b[j], c, f)
    else:
        for j in range(p.size):
            p[j], v[j], _, _ = _rmsprop_update(p[j], g[j], v[j], g[j], g[j], c, f)


@_jit
def _adagrad_update(p: Any, g: Any, state_sum: Any, c: Any, f: Any) -> Any:
    weight_decay, eps, clr = c
    maximize, decay = f
    g = _gradient(g, p, maximize, decay, weight_decay)
    state_sum = state_sum + g * g  # s_t = s_{t-1} + g_t²
    std = np.sqrt(state_sum) + eps
    return p - (g / std) * clr, state_sum  # θ_t = θ_{t-1} - γ̃ g_t / (sqrt(s_t) + ε)


@_jit
def _adagrad_block(ptrs: Any, block: Any, sc: Any, fl: Any) -> None:
    c, f = _tuple(sc[block[0]], 3), _tuple(fl, 2)
    p, g, state_sum = _views3(ptrs, block, sc)
    for j in range(p.size):
        p[j], state_sum[j] = _adagrad_update(p[j], g[j], state_sum[j], c, f)


@_jit
def _adadelta_update(p: Any, g: Any, v: Any, u: Any, c: Any, f: Any) -> Any:
    lr, rho, one_minus_rho, eps, weight_decay = c
    maximize, decay = f
    g = _gradient(g, p, maximize, decay, weight_decay)
    v = v * rho + (g * g) * one_minus_rho  # v_t = ρ v_{t-1} + (1 - ρ) g_t²
    delta = np.sqrt(u + eps) / np.sqrt(v + eps) * g  # Δx_t = sqrt(u_{t-1} + ε) / sqrt(v_t + ε) g_t
    u = u * rho + (delta * delta) * one_minus_rho  # u_t = ρ u_{t-1} + (1 - ρ) Δx_t²
    return p - delta * lr, v, u  # θ_t = θ_{t-1} - γ Δx_t


@_jit
def _adadelta_block(ptrs: Any, block: Any, sc: Any, fl: Any) -> None:
    c, f = _tuple(sc[block[0]], 5), _tuple(fl, 2)
    p, g, v, u = _views4(ptrs, block, sc)
    for j in range(p.size):
        p[j], v[j], u[j] = _adadelta_update(p[j], g[j], v[j], u[j], c, f)


@_jit
def _adamax_update(p: Any, g: Any, m: Any, u: Any, c: Any, f: Any) -> Any:
    eps, one_minus_beta1, beta2, weight_decay, clr = c
    maximize, decay = f
    g = _gradient(g, p, maximize, decay, weight_decay)
    m = m + (g - m) * one_minus_beta1  # m_t = β1 m_{t-1} + (1 - β1) g_t
    u = _maximum(u * beta2, abs(g) + eps)  # u_t = max(β2 u_{t-1}, |g_t| + ε)
    return p - (m / u) * clr, m, u  # θ_t = θ_{t-1} - γ m_t / ((1 - β1^t) u_t)


@_jit
def _adamax_block(ptrs: Any, block: Any, sc: Any, fl: Any) -> None:
    c, f = _tuple(sc[block[0]], 5), _tuple(fl, 2)
    p, g, m, u = _views4(ptrs, block, sc)
    for j in range(p.size):
        p[j], m[j], u[j] = _adamax_update(p[j], g[j], m[j], u[j], c, f)


@_jit
def _asgd_update(p: Any, g: Any, ax: Any, c: Any, f: Any) -> Any:
    weight_decay, shrink, eta, mu, averaging = c
    maximize, decay = f
    g = _gradient(g, p, maximize, decay, weight_decay)
    p = p * shrink - g * eta  # θ_t = (1 - λη) θ_{t-1} - η g_t
    if averaging:
        return p, ax + (p - ax) * mu  # θ̄_t = θ̄_{t-1} + μ (θ_t - θ̄_{t-1})
    return p, p  # θ̄_t = θ_t


@_jit
def _asgd_block(ptrs: Any, block: Any, sc: Any, fl: Any) -> None:
    c, f = _tuple(sc[block[0]], 5), _tuple(fl, 2)
    p, g, ax = _views3(ptrs, block, sc)
    if c[4]:  # averaging
        for j in range(p.size):
            p[j], ax[j] = _asgd_update(p[j], g[j], ax[j], c, f)
    else:  # θ̄_t = θ_t: the old average is not read
        for j in range(p.size):
            p[j], ax[j] = _asgd_update(p[j], g[j], g[j], c, f)


@_jit
def _rprop_update(p: Any, g: Any, prev: Any, eta: Any, c: Any, f: Any) -> Any:
    step_size_min, step_size_max, etaminus, etaplus = c
    (maximize,) = f
    product = -(g * prev) if maximize else g * prev  # g_{t-1} g_t, with g_t = -grad to maximize
    if product > 0:
        factor = etaplus
    elif product < 0:
        factor = etaminus
    elif product == 0:
        factor = _as(1.0, product)  # no sign information: the step size stays
    else:
        factor = product  # NaN
    eta = eta * factor
    eta = step_size_min if eta < step_size_min else eta
    eta = step_size_max if eta > step_size_max else eta  # η_t in [Γ_min, Γ_max]
    g = -g if maximize else g
    g = _as(0.0, g) if product < 0 else g  # after a sign change the element rests: g_t = 0
    return p - _sign(g) * eta, g, eta  # θ_t = θ_{t-1} - η_t sign(g_t)


@_jit
def _rprop_block(ptrs: Any, block: Any, sc: Any, fl: Any) -> None:
    c, f = _tuple(sc[block[0]], 4), _tuple(fl, 1)
    p, g, prev, eta = _views4(ptrs, block, sc)
    for j in range(p.size):
        p[j], prev[j], eta[j] = _rprop_update(p[j], g[j], prev[j], eta[j], c, f)


@_jit
def _nadam_update(p: Any, g: Any, m: Any, v: Any, c: Any, f: Any) -> Any:
    one_minus_beta1, beta2, one_minus_beta2, weight_decay, decoupled_decay, eps = c[:6]
    bias_correction2, grad_step, momentum_step = c[6:]
    maximize, decay, decoupled_weight_decay = f
    if decoupled_weight_decay:
        g = -g if maximize else g
        p = p * decoupled_decay if decay else p  # θ ← θ(1 - γλ)
    else:
        g = _gradient(g, p, maximize, decay, weight_decay)
    m = m + (g - m) * one_minus_beta1  # m_t = β1 m_{t-1} + (1 - β1) g_t
    v = v * beta2 + (g * g) * one_minus_beta2  # v_t = β2 v_{t-1} + (1 - β2) g_t²
    denom = np.sqrt(v / bias_correction2) + eps  # sqrt(v̂_t) + ε
    p = p - (g / denom) * grad_step  # the gradient's share: γ(1 - μ_t) g_t / (1 - Π_t)
    return p - (m / denom) * momentum_step, m, v  # the momentum's: γ μ_{t+1} m_t / (1 - Π_{t+1})


@_jit
def _nadam_block(ptrs: Any, block: Any, sc: Any, fl: Any) -> None:
    c, f = _tuple(sc[block[0]], 9), _tuple(fl, 3)
    p, g, m, v = _views4(ptrs, block, sc)
    for j in range(p.size):
        p[j], m[j], v[j] = _nadam_update(p[j], g[j], m[j], v[j], c, f)


@_jit
def _radam_update(p: Any, g: Any, m: Any, v: Any, c: Any, f: Any) -> Any:
    one_minus_beta1, beta2, one_minus_beta2, weight_decay, decoupled_decay = c[:5]
    sgd_step, rectified, step_size, eps = c[5:]
    maximize, decay, decoupled_weight_decay = f
    if decoupled_weight_decay:
        g = -g if maximize else g
        p = p * decoupled_decay if decay else p  # θ ← θ(1 - γλ)
    else:
        g = _gradient(g, p, maximize, decay, weight_decay)
    m = m + (g - m) * one_minus_beta1  # m_t = β1 m_{t-1} + (1 - β1) g_t
    v = v * beta2 + (g * g) * one_minus_beta2  # v_t = β2 v_{t-1} + (1 - β2) g_t²
    if rectified:
        return p - (m / (np.sqrt(v) + eps)) * step_size, m, v  # θ_t = θ_{t-1} - γ m̂_t r_t l_t
    return p - m * sgd_step, m, v  # θ_t = θ_{t-1} - γ m̂_t


@_jit
def _radam_block(ptrs: Any, block: Any, sc: Any, fl: Any) -> None:
    c, f = _tuple(sc[block[0]], 9), _tuple(fl, 3)
    p, g, m, v = _views4(ptrs, block, sc)
    for j in range(p.size):
        p[j], m[j], v[j] = _radam_update(p[j], g[j], m[j], v[j], c, f)


# --------------------------------------------------------------------------- the driver
@_jit
def _block(kind: int, ptrs: Any, block: Any, sc: Any, fl: Any) -> None:
    """Update ``block`` by the block function of algorithm number ``kind`` (its place in
    ``_ALGORITHMS``). A plain branch rather than a function argument: numba caches the
    compiled code of this function on disk, which it cannot do reliably for a function that
    takes another as an argument."""
    if kind == 0:
        _sgd_block(ptrs, block, sc, fl)
    elif kind == 1:
        _adam_block(ptrs, block, sc, fl)
    elif kind == 2:
        _rmsprop_block(ptrs, block, sc, fl)
    elif kind == 3:
        _adagrad_block(ptrs, block, sc, fl)
    elif kind == 4:
        _adadelta_block(ptrs, block, sc, fl)
    elif kind == 5:
        _adamax_block(ptrs, block, sc, fl)
    elif kind == 6:
        _asgd_block(ptrs, block, sc, fl)
    elif kind == 7:
        _rprop_block(ptrs, block, sc, fl)
    elif kind == 8:
        _nadam_block(ptrs, block, sc, fl)
    else:
        _radam_block(ptrs, block, sc, fl)


@_jit_parallel
def _run(kind: int, ptrs: Any, sizes: Any, sc: Any, fl: Any) -> None:
    """Every block of every parameter by algorithm number ``kind``, shared among numba's
    threads (compiled once per dtype, every algorithm in it)."""
    blocks = _blocks(sizes)
    for k in prange(blocks.shape[0]):
        _block(kind, ptrs, blocks[k], sc, fl)


# ------------------------------------------------------------------------ the Python side
# For each algorithm: its compiled kernel and a function that turns the piece function's
# keyword arguments (h: shared, c: per parameter) into the kernel's scalars (shared ones, then
# per-parameter columns, in the order the block function reads them) and flags (maximize and
# "weight_decay != 0" first). Scalars are computed from Python floats exactly as the piece
# functions compute them, then cast to the parameter's dtype.
H = Mapping[str, Any]
C = Mapping[str, Sequence[Any]]
Scalars = tuple[list[float], list[Sequence[float]], list[bool]]


def _flags(h: H, *more: bool) -> list[bool]:
    return [h["maximize"], h["weight_decay"] != 0, *more]


def _sgd_scalars(h: H, c: C, present: Sequence[bool]) -> Scalars:
    shared = [h["weight_decay"], h["momentum"], 1 - h["dampening"], h["lr"]]
    return shared, [c["first"]], _flags(h, present[2], h["nesterov"])


def _adam_scalars(h: H, c: C, present: Sequence[bool]) -> Scalars:
    shared = [1 - h["beta1"], h["beta2"], 1 - h["beta2"], h["weight_decay"],
              1 - h["lr"] * h["weight_decay"], h["eps"]]  # fmt: skip
    columns = [c["step_size"], c["bias_correction2_sqrt"]]
    return shared, columns, _flags(h, h["decoupled_weight_decay"], present[4])


def _rmsprop_scalars(h: H, c: C, present: Sequence[bool]) -> Scalars:
    shared = [h["lr"], h["alpha"], 1 - h["alpha"], h["eps"], h["weight_decay"], h["momentum"]]
    return shared, [], _flags(h, present[3], present[4])


def _adagrad_scalars(h: H, c: C, present: Sequence[bool]) -> Scalars:
    return [h["weight_decay"], h["eps"]], [c["clr"]], _flags(h)


def _adadelta_scalars(h: H, c: C, present: Sequence[bool]) -> Scalars:
    return [h["lr"], h["rho"], 1 - h["rho"], h["eps"], h["weight_decay"]], [], _flags(h)


def _adamax_scalars(h: H, c: C, present: Sequence[bool]) -> Scalars:
    shared = [h["eps"], 1 - h["beta1"], h["beta2"], h["weight_decay"]]
    return shared, [c["clr"]], _flags(h)


def _asgd_scalars(h: H, c: C, present: Sequence[bool]) -> Scalars:
    shrink = [1 - h["lambd"] * eta for eta in c["eta"]]  # 1 - λη
    averaging = [mu != 1 for mu in c["mu"]]
    return [h["weight_decay"]], [shrink, c["eta"], c["mu"], averaging], _flags(h)


def _rprop_scalars(h: H, c: C, present: Sequence[bool]) -> Scalars:
    shared = [h["step_size_min"], h["step_size_max"], h["etaminus"], h["etaplus"]]
    return shared, [], [h["maximize"]]  # no weight decay


def _nadam_scalars(h: H, c: C, present: Sequence[bool]) -> Scalars:
    shared = [1 - h["beta1"], h["beta2"], 1 - h["beta2"], h["weight_decay"],
              1 - h["lr"] * h["weight_decay"], h["eps"]]  # fmt: skip
    columns = [c["bias_correction2"], c["grad_step"], c["momentum_step"]]
    return shared, columns, _flags(h, h["decoupled_weight_decay"])


def _radam_scalars(h: H, c: C, present: Sequence[bool]) -> Scalars:
    shared = [1 - h["beta1"], h["beta2"], 1 - h["beta2"], h["weight_decay"],
              1 - h["lr"] * h["weight_decay"]]  # fmt: skip
    adaptive = c["adaptive"]  # (γ r_t sqrt(1 - β2^t) / (1 - β1^t), ε) or None
    columns = [
        c["sgd_step"],
        [a is not None for a in adaptive],
        [0.0 if a is None else a[0] for a in adaptive],
        [0.0 if a is None else a[1] for a in adaptive],
    ]
    return shared, columns, _flags(h, h["decoupled_weight_decay"])


#: Per algorithm: its name, block function and scalars function. Its place in this list is the
#: number that tells the driver which block function to compile in.
_ALGORITHMS: list[tuple[str, Callable[..., None], Callable[..., Scalars]]] = [
    ("sgd", _sgd_block, _sgd_scalars),
    ("adam", _adam_block, _adam_scalars),
    ("rmsprop", _rmsprop_block, _rmsprop_scalars),
    ("adagrad", _adagrad_block, _adagrad_scalars),
    ("adadelta", _adadelta_block, _adadelta_scalars),
    ("adamax", _adamax_block, _adamax_scalars),
    ("asgd", _asgd_block, _asgd_scalars),
    ("rprop", _rprop_block, _rprop_scalars),
    ("nadam", _nadam_block, _nadam_scalars),
    ("radam", _radam_block, _radam_scalars),
]
_KIND = {name: kind for kind, (name, _, _) in enumerate(_ALGORITHMS)}


def run(
    name: str,
    piece: Piece,
    roles: Sequence[Sequence[Array] | None],
    per_param: Mapping[str, Sequence[Any]],
    shared: Mapping[str, Any],
) -> None:
    """Run algorithm ``name``'s compiled kernel on every parameter (see
    :func:`npoptim._kernel.elementwise`); ``piece`` updates those the kernel cannot take."""
    kind = _KIND[name]
    scalars = _ALGORITHMS[kind][2]
    used = [r for r in roles if r is not None]
    params = used[0]
    # The kernels index raw memory: every array of a parameter must have its dtype, its size
    # and one contiguous layout. The common case, checked at once: one dtype, all C-ordered.
    groups: dict[np.dtype[Any], Sequence[int]] = {}
    dtype = params[0].dtype
    sizes_of = [p.size for p in params]
    if (
        dtype in _REAL
        and all([a.dtype == dtype and a.flags.c_contiguous for r in used for a in r])
        and all([[a.size for a in r] == sizes_of for r in used[1:]])
    ):
        groups[dtype] = range(len(params))
    else:
        by_dtype: dict[np.dtype[Any], list[int]] = {}
        others: list[Job] = []
        for i, p in enumerate(params):
            arrays = [r[i] for r in used]
            if (
                p.dtype in _REAL
                and all(a.dtype == p.dtype and a.size == p.size for a in arrays)
                and (
                    all(a.flags.c_contiguous for a in arrays)
                    or all(a.flags.f_contiguous for a in arrays)
                )
            ):
                by_dtype.setdefault(p.dtype, []).append(i)
            else:
                others.append(job(roles, per_param, shared, i))
        run_pieces(piece, others)
        groups.update(by_dtype)
    shared_values, columns, flags = scalars(shared, per_param, [r is not None for r in roles])
    flag_array = np.array(flags, dtype=np.bool_)
    for dtype, members in groups.items():
        everyone = isinstance(members, range)
        table = np.zeros((len(roles), len(members)), dtype=np.int64)
        for row, role in enumerate(roles):
            if role is not None:
                chosen = role if everyone else [role[i] for i in members]
                if _READ_DATA_FIELD:
                    table[row] = list(map(id, chosen))
                else:
                    table[row] = [a.ctypes.data for a in chosen]
        ptrs = _data_addresses(table) if _READ_DATA_FIELD else table
        sizes = np.array(sizes_of if everyone else [sizes_of[i] for i in members], np.int64)
        if dtype.kind == "c":
            sizes *= 2  # pairs of reals
        sc = np.empty((len(members), len(shared_values) + len(columns)), dtype=_REAL[dtype])
        sc[:, : len(shared_values)] = shared_values
        for k, column in enumerate(columns):
            sc[:, len(shared_values) + k] = column if everyone else [column[i] for i in members]
        with _lock:  # numba's workqueue threads (its fallback) take one caller at a time
            # a thread for each _PER_THREAD elements: on less work, waking threads costs more
            # than it saves, and threads left spinning slow the caller's next NumPy calls
            threads = min(get_num_threads(), int(sizes.sum()) // _PER_THREAD)
            numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
            _run(kind, ptrs, sizes, sc, flag_array)
            _launched.add(os.getpid())


_lock = threading.Lock()
_launched: set[int] = set()  # the processes that have run a kernel


def usable() -> bool:
    """Whether the kernels can run in this process: not in a child forked from a process that
    ran them on GNU OpenMP threads, which cannot start again after a fork (numba would abort
    the child); there the NumPy paths serve, with the same results."""
    return not _launched or os.getpid() in _launched or numba.threading_layer() != "omp"
