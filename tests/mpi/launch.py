"""Start an MPI job from a test: ``mpiexec -n K python ...`` with a timeout."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCH_TIMEOUT_S = 120  # a hang fails the test after this


def mpiexec() -> str:
    """The ``mpiexec`` next to this Python (the mpich wheel's), else the one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.fail('no mpiexec next to sys.executable or on PATH: pip install "npoptim[mpi]"')
    return found


def launch(
    k: int, *args: str, timeout: float = LAUNCH_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run ``mpiexec -n k python *args`` with this process's import path; kill the whole job
    after ``timeout`` seconds and fail."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and Path(p).is_dir())
    # MPICH: waiting ranks sleep instead of spinning, so 4 ranks share 2 cores well
    env.setdefault("MPIR_CVAR_ENABLE_HEAVY_YIELD", "1")
    proc = subprocess.Popen(
        [mpiexec(), "-n", str(k), sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mpiexec -n {k} {args} hung (killed after {timeout} s)\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
