"""Make the test helpers (harness, configs, references) importable from every test module.

The optional dependencies the suite compares with (torch, numba, the examples' libraries) are
required: a missing one stops the run with a message instead of silently skipping its tests.
``NPOPTIM_TEST_WITHOUT=torch,numba,examples`` (any of the three) lets those tests skip on
purpose. ``NPOPTIM_TEST_INSTALLED=1`` (set by ``.ci/run``) requires that npoptim is imported
from an installed package (site-packages), not from a source tree.

Before the tests start, the main process (pytest-xdist's controller) fills numba's disk cache
with every kernel of the fused path (:func:`warm_numba_cache`), in one subprocess per CPU that
share the algorithms out: each kernel is compiled once in the run, and every worker and every
script the tests start loads it from the cache (about a second in all) instead of compiling it
again (over a minute of CPU per process, on an empty cache). The workers' own state is not
touched: a test process still compiles or loads its kernels when it first needs them, as
before.

The files whose tests take longest run first (:func:`pytest_collection_modifyitems`), shared
out among the workers, so that no worker is still on a long test when the others are done.
"""

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

OPTIONAL = {
    "torch": ("torch",),
    "numba": ("numba",),
    "examples": ("sklearn", "matplotlib", "tqdm", "autograd", "scipy"),
    "mpi": ("mpi4py",),
    "beyond": ("lion_pytorch", "pytorch_optimizer", "schedulefree", "prodigyopt"),
}
WITHOUT = {name.strip() for name in os.environ.get("NPOPTIM_TEST_WITHOUT", "").split(",")} - {""}


def pytest_configure(config: pytest.Config) -> None:
    unknown = WITHOUT - set(OPTIONAL)
    if unknown:
        raise pytest.UsageError(
            f"NPOPTIM_TEST_WITHOUT names {sorted(unknown)}; known: {sorted(OPTIONAL)}"
        )
    for group, modules in OPTIONAL.items():
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing and group not in WITHOUT:
            raise pytest.UsageError(
                f"{', '.join(missing)} not installed: install the test extras "
                '(pip install -e ".[test,torch,fused,examples,mpi,beyond]"), or set '
                f"NPOPTIM_TEST_WITHOUT={group} to skip the tests that need it"
            )
    if "mpi" in WITHOUT:  # the MPI tests read this (they fail, not skip, without mpi4py)
        os.environ["NPOPTIM_MPI_TESTS"] = "0"
    if os.environ.get("NPOPTIM_TEST_INSTALLED") == "1":
        import npoptim

        if "site-packages" not in Path(npoptim.__file__).parts:
            raise pytest.UsageError(
                f"NPOPTIM_TEST_INSTALLED=1 but npoptim comes from {npoptim.__file__}, "
                "not from site-packages"
            )


def pytest_report_header(config: pytest.Config) -> list[str]:
    import npoptim

    return [f"npoptim {npoptim.__version__} from {npoptim.__file__}; numpy {np.__version__}"]


#: Run by each subprocess of :func:`warm_numba_cache`: compile the kernels of each module of
#: algorithms that no other subprocess has claimed (a file of that name in ``sys.argv[1]``).
WARM = """
import os, sys
import npoptim
from npoptim._kernels import registry
units = {}
for name, module in registry.ELEMENTWISE.items():
    units.setdefault(module, []).append(name)
for module, names in units.items():
    try:
        os.close(os.open(os.path.join(sys.argv[1], module), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        continue
    npoptim.compile_kernels(names)
"""


def warm_numba_cache() -> None:
    """Compile every fused kernel into numba's disk cache, one subprocess per CPU.

    The subprocesses run with this process's environment, so they import the same npoptim and
    write the cache the workers read (numba's default place beside npoptim's modules, or
    ``NUMBA_CACHE_DIR``). A failure here fails nothing: the tests then compile what they need,
    and report any error themselves.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="npoptim-warm-") as claims:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WARM, claims],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(max(1, cpus or 1))
        ]
        for proc in procs:
            proc.wait()


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workerinput") or config.option.collectonly:
        return  # a pytest-xdist worker: the controller has filled the cache before it started
    if "numba" not in WITHOUT:
        warm_numba_cache()


#: The files of the longest tests (scripts in subprocesses, MPI jobs, property tests), with
#: their seconds on one core of a 2-core machine (empty numba cache filled as above). Each
#: moves, whole (its module fixtures are set up once), to the front of a worker's first batch.
SLOW_FILES = {
    "test_serialization_properties.py": 38.0,
    "test_examples.py": 33.0,
    "test_distributed.py": 24.0,
    "test_benchmark_script.py": 19.0,
    "test_benchmark_checkpoint.py": 7.0,
    "test_benchmark_sharded.py": 3.0,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the files of :data:`SLOW_FILES` first, shared out among the workers.

    pytest-xdist's default scheduler (``--dist load``) gives worker ``w`` the items
    ``[w * batch, (w + 1) * batch)`` first, ``batch`` being a quarter of a worker's share, and
    the rest as workers run out; every worker collects the same order, so each computes the
    same layout. The slow files go to the worker with the fewest seconds so far, longest first,
    at the front of its batch; the other items keep their order. Only the order changes.
    """
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    by_file: dict[str, list[pytest.Item]] = {}
    rest = []
    for item in items:
        name = item.path.name
        if name in SLOW_FILES:
            by_file.setdefault(name, []).append(item)
        else:
            rest.append(item)
    batch = max(len(items) // workers // 4, 2)
    bins: list[list[pytest.Item]] = [[] for _ in range(workers)]
    seconds = [0.0] * workers
    for name in sorted(by_file, key=SLOW_FILES.__getitem__, reverse=True):
        w = seconds.index(min(seconds))
        bins[w] += by_file[name]
        seconds[w] += SLOW_FILES[name]
    ordered: list[pytest.Item] = []
    for w in range(workers):
        ordered += bins[w]
        take = max(0, (w + 1) * batch - len(ordered)) if w < workers - 1 else 0
        ordered += rest[:take]
        rest = rest[take:]
    items[:] = ordered + rest
