"""Training on several processes over MPI (``pip install "npoptim[mpi]"``).

torch.distributed's answers for NumPy, through mpi4py:

* :func:`all_reduce_grads_`: gradient averaging as ``DistributedDataParallel`` does it
  (buckets, one non-blocking allreduce each);
* :func:`broadcast_parameters_` and :func:`broadcast_optimizer_state_`: every replica starts
  identical;
* :class:`ZeroRedundancyOptimizer`: optimizer state sharded across ranks (ZeRO stage 1);
* :func:`save_sharded` and :func:`load_sharded`: checkpoints written by every rank in
  parallel, one shard each, loadable at any world size or into a plain optimizer;
* :func:`node_threads`: the kernel threads per rank that share a node's cores (applied by
  default on the first collective call, unless :func:`npoptim.set_num_threads` chose a count).

Importing this module does not import mpi4py; the first call does. Start a run as any MPI
program: ``mpiexec -n 4 python -m mpi4py train.py``.
"""

from ._comm import node_threads
from .checkpoint import load_sharded, save_sharded, shard_files
from .data_parallel import all_reduce_grads_, broadcast_optimizer_state_, broadcast_parameters_
from .zero import ZeroRedundancyOptimizer

__all__ = [
    "ZeroRedundancyOptimizer",
    "all_reduce_grads_",
    "broadcast_optimizer_state_",
    "broadcast_parameters_",
    "load_sharded",
    "node_threads",
    "save_sharded",
    "shard_files",
]
