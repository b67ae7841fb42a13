"""Data parallelism without autograd: gradient averaging as DDP does it, and broadcasts that
make every replica start identical.

Every function here is collective: every rank of the communicator must call it, with the same
parameters (shapes, dtypes, order). That is checked collectively first (one small allgather),
so a mismatch raises the same error on every rank instead of hanging one of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..optimizer import Optimizer
from ..parameter import Parameter, SparseGrad
from ._comm import agree, bcast_in_place, resolve, scratch

if TYPE_CHECKING:
    from mpi4py.MPI import Intracomm, Request

__all__ = ["all_reduce_grads_", "broadcast_optimizer_state_", "broadcast_parameters_"]

# What a rank holds as a parameter's grad (the payload of the collective check).
_NONE, _DENSE, _SPARSE = 0, 1, 2


def _parameter_list(params: Iterable[Parameter] | Parameter) -> list[Any]:
    return [params] if isinstance(params, np.ndarray) else list(params)


def _describe(params: list[Any], what: str) -> list[str]:
    """The lines every rank must agree on: each parameter's shape and dtype."""
    lines = []
    for i, p in enumerate(params):
        if not isinstance(p, Parameter):
            raise TypeError(f"{what} takes Parameters, but parameter {i} is {type(p).__name__}")
        lines.append(f"parameter {i} of shape {p.shape} and dtype {p.dtype}")
    return lines


def _grad_kind(p: Parameter) -> int:
    g = p.grad
    return _NONE if g is None else _SPARSE if isinstance(g, SparseGrad) else _DENSE


def all_reduce_grads_(
    params: Iterable[Parameter] | Parameter,
    comm: Intracomm | None = None,
    *,
    average: bool = True,
    bucket_cap_mb: float = 25,
) -> None:
    r"""Sum (or average) the gradients of ``params`` over every rank of ``comm``, in place:
    what ``DistributedDataParallel`` does to the grads during ``backward``, for code that
    computes its grads itself.

    With :math:`K` ranks and :math:`g_r` rank :math:`r`'s gradient, every rank ends with

    .. math::
        g \leftarrow \frac{1}{K} \sum_{r=0}^{K-1} g_r \quad (\text{average}), \qquad
        g \leftarrow \sum_{r=0}^{K-1} g_r \quad (\text{otherwise}).

    So if each rank computes the mean loss's gradient over its equal share of a batch, the
    average is the gradient of the mean loss over the whole batch.

    Dense grads are packed, in parameter order, into contiguous buckets of one dtype of at
    most ``bucket_cap_mb`` megabytes (a larger parameter gets a bucket of its own), one
    non-blocking ``MPI_Iallreduce`` each: the next bucket is packed while the previous ones
    travel. Results are written back into the grad arrays in place (a read-only grad is
    replaced). Packing buffers are kept between calls.

    Missing grads: a rank whose parameter has no grad contributes zeros, and every rank ends
    with a grad if any rank had one; if no rank had one, the grad stays None everywhere.
    Row-sparse grads (:class:`~npoptim.SparseGrad`) are gathered instead, indices and values
    (``MPI_Allgatherv``), then coalesced, as torch's gloo backend does for a sparse
    allreduce; a rank without a grad contributes no rows. A parameter with a dense grad on one
    rank and a sparse one on another is refused.

    Args:
        params: the parameters whose grads to reduce (a Parameter or an iterable of them),
            the same shapes, dtypes and order on every rank.
        comm: the MPI communicator (an ``mpi4py`` intracommunicator); ``MPI.COMM_WORLD`` by
            default.
        average: divide the sum by the number of ranks (default: True).
        bucket_cap_mb: the largest bucket, in megabytes of :math:`2^{20}` bytes (DDP's 25 by
            default).

    Raises:
        ValueError: on every rank, if the ranks' parameters differ in number, shape or dtype
            (naming the first difference and both sides), or mix dense and sparse grads.

    Example:
        >>> for x, y in batches:                   # each rank: its own share of the data
        ...     w.grad = grad_of_loss(w, x, y)     # doctest: +SKIP
        ...     all_reduce_grads_([w])             # now the gradient of the whole batch
        ...     opt.step()
    """
    comm = resolve(comm)
    plist = _parameter_list(params)

    def describe() -> tuple[list[str], bytes]:
        if not bucket_cap_mb > 0:
            raise ValueError(f"Invalid bucket_cap_mb: {bucket_cap_mb}")
        options = f"average={bool(average)}, bucket_cap_mb={bucket_cap_mb}"
        lines = [options, *_describe(plist, "all_reduce_grads_")]
        return lines, bytes(_grad_kind(p) for p in plist)

    kinds_per_rank = agree(comm, "all_reduce_grads_", describe)
    world = comm.Get_size()
    dense: dict[str, list[Parameter]] = {}
    sparse: list[Parameter] = []
    for i, p in enumerate(plist):
        kinds = [k[i] for k in kinds_per_rank]
        if _DENSE in kinds and _SPARSE in kinds:
            raise ValueError(
                f"all_reduce_grads_: parameter {i} has a dense grad on rank "
                f"{kinds.index(_DENSE)} and a SparseGrad on rank {kinds.index(_SPARSE)}"
            )
        if _DENSE in kinds:
            dense.setdefault(p.dtype.str, []).append(p)
        elif _SPARSE in kinds:
            sparse.append(p)
    cap_bytes = int(bucket_cap_mb * 2**20)
    for group in dense.values():
        _reduce_dense(comm, group, cap_bytes, world if average else 1)
    if sparse:
        _gather_sparse(comm, sparse, world if average else 1)


def _reduce_dense(comm: Intracomm, params: list[Parameter], cap_bytes: int, divisor: int) -> None:
    """Sum the dense grads of ``params`` (one dtype) over ``comm`` in buckets; divide by
    ``divisor``; write back in place."""
    from mpi4py import MPI

    flat = scratch("grads", params[0].dtype, sum(p.size for p in params))
    itemsize = params[0].itemsize
    # buckets: consecutive parameters up to cap_bytes (a larger one alone)
    buckets: list[list[tuple[Parameter, int]]] = [[]]
    offset = bucket_bytes = 0
    for p in params:
        if buckets[-1] and bucket_bytes + p.nbytes > cap_bytes:
            buckets.append([])
            bucket_bytes = 0
        buckets[-1].append((p, offset))
        offset += p.size
        bucket_bytes += p.size * itemsize
    requests: list[Request] = []
    for bucket in buckets:
        for p, start in bucket:
            view = flat[start : start + p.size].reshape(p.shape)
            g = p.grad
            if isinstance(g, np.ndarray):
                np.copyto(view, g)
            else:  # no grad on this rank: zeros
                view.fill(0)
            if requests:
                MPI.Request.Testall(requests)  # let the buckets already sent progress
        start, last = bucket[0][1], bucket[-1]
        stop = last[1] + last[0].size
        requests.append(comm.Iallreduce(MPI.IN_PLACE, flat[start:stop], op=MPI.SUM))
    for request, bucket in zip(requests, buckets, strict=True):
        request.Wait()
        for p, start in bucket:
            view = flat[start : start + p.size].reshape(p.shape)
            g = p.grad
            if isinstance(g, np.ndarray) and g.flags.writeable:
                np.divide(view, divisor, out=g) if divisor != 1 else np.copyto(g, view)
            else:
                p.grad = view / divisor if divisor != 1 else view.copy()


def _no_rows(p: Parameter) -> SparseGrad:
    """An empty row-sparse grad for ``p`` (what a rank without a grad contributes)."""
    return SparseGrad(np.empty(0, np.int64), np.empty((0, *p.shape[1:]), p.dtype), p.shape)


def _gather_sparse(comm: Intracomm, params: list[Parameter], divisor: int) -> None:
    """Gather the row-sparse grads of ``params`` from every rank, coalesce, divide."""
    grads = [p.grad if isinstance(p.grad, SparseGrad) else _no_rows(p) for p in params]
    world = comm.Get_size()
    counts = np.empty((world, len(params)), dtype=np.int64)
    comm.Allgather(np.array([g.nnz for g in grads], dtype=np.int64), counts)
    for j, (p, g) in enumerate(zip(params, grads, strict=True)):
        nnz = counts[:, j]
        row = int(np.prod(p.shape[1:], dtype=np.int64))
        indices = np.empty(int(nnz.sum()), dtype=np.int64)
        values = np.empty((indices.size, *p.shape[1:]), dtype=p.dtype)
        comm.Allgatherv(np.ascontiguousarray(g.indices), [indices, nnz])
        comm.Allgatherv(np.ascontiguousarray(g.values, dtype=p.dtype), [values, nnz * row])
        if divisor != 1:
            values /= divisor
        p.grad = SparseGrad(indices, values, p.shape).coalesce()


def broadcast_parameters_(
    params: Iterable[Parameter] | Parameter, root: int = 0, comm: Intracomm | None = None
) -> None:
    """Copy the values of ``params`` on rank ``root`` into the same parameters on every other
    rank, in place (as DDP does at construction), so every replica starts identical.

    Args:
        params: the parameters (a Parameter or an iterable of them), the same shapes, dtypes
            and order on every rank.
        root: the rank whose values are sent (default: 0).
        comm: the MPI communicator; ``MPI.COMM_WORLD`` by default.

    Raises:
        ValueError: on every rank, if the ranks' parameters differ in number, shape or dtype,
            or ``root`` is not a rank of ``comm``.
    """
    comm = resolve(comm)
    plist = _parameter_list(params)

    def describe() -> tuple[list[str], None]:
        if not 0 <= root < comm.Get_size():
            raise ValueError(f"Invalid root: {root} (the communicator has {comm.Get_size()} ranks)")
        return [f"root={root}", *_describe(plist, "broadcast_parameters_")], None

    agree(comm, "broadcast_parameters_", describe)
    bcast_in_place(comm, [(p, root) for p in plist])


def broadcast_optimizer_state_(
    optimizer: Optimizer, root: int = 0, comm: Intracomm | None = None
) -> None:
    """Load rank ``root``'s optimizer state (its :meth:`~npoptim.Optimizer.state_dict`) into
    ``optimizer`` on every other rank, so replicas that resume from one rank's checkpoint
    continue identically (Horovod's ``broadcast_optimizer_state``).

    Args:
        optimizer: this rank's optimizer, over the same parameters (shapes, dtypes, groups) on
            every rank.
        root: the rank whose state is sent (default: 0).
        comm: the MPI communicator; ``MPI.COMM_WORLD`` by default.

    Raises:
        ValueError: on every rank, if the optimizers' parameter groups differ between ranks
            (nothing is loaded then).
    """
    comm = resolve(comm)

    def describe() -> tuple[list[str], None]:
        if not 0 <= root < comm.Get_size():
            raise ValueError(f"Invalid root: {root} (the communicator has {comm.Get_size()} ranks)")
        lines = [f"root={root}", f"optimizer {type(optimizer).__name__}"]
        for index, group in enumerate(optimizer.param_groups):
            lines.append(f"group {index} of {len(group['params'])} parameters")
            lines += _describe(group["params"], "broadcast_optimizer_state_")
        return lines, None

    agree(comm, "broadcast_optimizer_state_", describe)
    from mpi4py.util import pkl5

    state = optimizer.state_dict() if comm.Get_rank() == root else None
    state = pkl5.Intracomm(comm).bcast(state, root=root)
    if comm.Get_rank() != root:
        optimizer.load_state_dict(state)
