"""Every algorithm against its reference, torch's golden trajectories and live torch.

For each optimizer with a reference module in ``tests/references`` and each CPU option
combination torch's own tests use (``tests/configs.py``), run the problem of
``tests/harness.py`` for ``STEPS`` steps (one parameter misses its grad at one step) and
compare the parameters after every step.
"""

from __future__ import annotations

from typing import Any

import pytest

from configs import CONFIGS, FLAGS
from harness import (
    DTYPES,
    golden_path,
    load_golden,
    max_relative_error,
    run_npoptim,
    run_reference,
    run_torch,
)
from references import load_all, tolerance

REFERENCES = load_all()

#: A large eps for every algorithm that has one (torch's configs keep eps small, where eps
#: placed inside instead of outside a square root changes a float32 result by less than
#: the tolerance): with 0.1 such a bug moves the parameters by percents.
LARGE_EPS: dict[str, dict[str, Any]] = {
    "Adadelta": {"eps": 0.1},
    "Adafactor": {"eps": (0.1, 1e-3)},
    "Adagrad": {"eps": 0.1},
    "Adam": {"eps": 0.1, "amsgrad": True},
    "AdamW": {"eps": 0.1},
    "Adamax": {"eps": 0.1},
    "NAdam": {"eps": 0.1},
    "RAdam": {"eps": 0.1},
    "RMSprop": {"eps": 0.1, "centered": True},
}


def _cases(dtype_names: list[str]) -> list[Any]:
    cases = []
    for name, module in REFERENCES.items():
        for desc, kwargs in CONFIGS[name]:
            for dtype_name in dtype_names:
                if dtype_name.startswith("complex") and not FLAGS[name]["supports_complex"]:
                    continue
                cases.append(
                    pytest.param(
                        name, module, kwargs, desc, dtype_name, id=f"{name}-{desc}-{dtype_name}"
                    )
                )
    return cases


@pytest.mark.parametrize(
    ("name", "module", "kwargs", "desc", "dtype_name"), _cases(["float64", "complex128"])
)
def test_matches_reference(
    name: str, module: Any, kwargs: dict[str, Any], desc: str, dtype_name: str
) -> None:
    dtype = DTYPES[dtype_name]
    actual, _ = run_npoptim(name, kwargs, dtype)
    expected = run_reference(module.reference, kwargs, dtype)
    assert max_relative_error(actual, expected) <= tolerance(module, dtype_name)


@pytest.mark.parametrize(
    ("name", "module", "kwargs", "desc", "dtype_name"), _cases(["float64", "float32", "complex128"])
)
def test_matches_torch_golden(
    name: str, module: Any, kwargs: dict[str, Any], desc: str, dtype_name: str
) -> None:
    if not golden_path(name).exists():
        pytest.fail(f"no golden file for {name}: run tools/make_golden.py {name}")
    actual, _ = run_npoptim(name, kwargs, DTYPES[dtype_name])
    expected = load_golden(name, desc, dtype_name)
    assert max_relative_error(actual, expected) <= tolerance(module, dtype_name)


@pytest.mark.parametrize(
    ("name", "module", "kwargs", "desc", "dtype_name"), _cases(["float64", "float32", "complex128"])
)
def test_matches_torch_live(
    name: str, module: Any, kwargs: dict[str, Any], desc: str, dtype_name: str
) -> None:
    pytest.importorskip("torch")
    dtype = DTYPES[dtype_name]
    actual, _ = run_npoptim(name, kwargs, dtype)
    expected = run_torch(name, kwargs, dtype)
    assert max_relative_error(actual, expected) <= tolerance(module, dtype_name)


def test_every_algorithm_with_an_eps_has_a_large_eps_case() -> None:
    import inspect

    import npoptim

    with_eps = {
        name for name in REFERENCES if "eps" in inspect.signature(getattr(npoptim, name)).parameters
    }
    assert with_eps == set(LARGE_EPS)


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(LARGE_EPS))
def test_large_eps_matches_torch_live_and_reference(name: str, dtype_name: str) -> None:
    pytest.importorskip("torch")
    dtype, module, kwargs = DTYPES[dtype_name], REFERENCES[name], LARGE_EPS[name]
    actual, _ = run_npoptim(name, kwargs, dtype)
    assert max_relative_error(actual, run_torch(name, kwargs, dtype)) <= tolerance(
        module, dtype_name
    )
    if dtype_name == "float64":  # the reference computes in float64
        expected = run_reference(module.reference, kwargs, dtype)
        assert max_relative_error(actual, expected) <= tolerance(module, dtype_name)
