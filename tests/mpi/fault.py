"""A job in which rank 1 raises during a ZeRO step while rank 0 enters the step's broadcasts;
run as ``mpiexec -n 2 python -m mpi4py tests/mpi/fault.py`` by tests/test_distributed.py."""

import time

import numpy as np
from mpi4py import MPI

import npoptim
from npoptim import Parameter
from npoptim.distributed import ZeroRedundancyOptimizer

params = [Parameter(np.ones(4)), Parameter(np.ones(3))]
opt = ZeroRedundancyOptimizer(params, npoptim.SGD, lr=0.1)
for p in params:
    p.grad = np.ones_like(p)


def failing_step_hook(*args: object) -> None:
    if MPI.COMM_WORLD.Get_rank() == 1:
        raise RuntimeError("rank 1 failed during its step on purpose")


opt.optim.register_step_pre_hook(failing_step_hook)
opt.step()  # rank 0 waits here for rank 1's parameter
time.sleep(300)  # never reached by a healthy abort
