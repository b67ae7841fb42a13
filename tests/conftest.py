"""Make the test helpers (harness, configs, references) importable from every test module.

The optional dependencies the suite compares with (torch, numba, the examples' libraries) are
required: a missing one stops the run with a message instead of silently skipping its tests.
``NPOPTIM_TEST_WITHOUT=torch,numba,examples`` (any of the three) lets those tests skip on
purpose. ``NPOPTIM_TEST_INSTALLED=1`` (set by ``.ci/run``) requires that npoptim is imported
from an installed package (site-packages), not from a source tree.
"""

import importlib.util
import os
import sys
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
