"""Property tests for npoptim.serialization.

1. Any nested structure of supported values round-trips exactly.
2. Whatever bytes ``load`` is given (random bytes, truncated or edited checkpoints, checkpoints
   with a mutated manifest), it either returns a saveable object or raises CheckpointError.

Every property runs in both load modes: ``plain`` (``load`` of a file object: every byte read
and its CRC-32 checked; here with 64-byte pieces, each checked in the CRC-32 thread, the path a
large checkpoint takes) and ``mmap`` (``load(path, mmap=True)`` of a file: only the structure
checked, arrays mapped; a damaged file must still never crash the process). Changed bytes are
also loaded with ``mmap=True, verify=True`` (the mapped values' CRC-32s checked).

Run with ``pytest tests/test_serialization_properties.py --hypothesis-show-statistics`` to see
how many cases each property generated and, for the corruption properties, how often ``load``
succeeded or which check refused the input. Set ``NPOPTIM_HYPOTHESIS_SCALE=50`` (say) to run
fifty times as many cases.
"""

from __future__ import annotations

import ast
import copy
import io
import json
import os
import re
import struct
import tempfile
import zipfile
from typing import Any
from unittest import mock

import numpy as np
import numpy.lib.format as npy
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import npoptim
from configs import CONFIGS
from npoptim import Parameter, SparseGrad, serialization
from npoptim.serialization import CheckpointError, load, save

NUMERIC_DTYPES = [
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
]


SCALE = int(os.environ.get("NPOPTIM_HYPOTHESIS_SCALE", "1"))


def examples(count: int) -> settings:
    return settings(
        max_examples=count * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


# --- helpers (kept in step with tests/test_serialization.py) -------------------------------


def assert_identical(actual: Any, expected: Any) -> None:
    """Same types all the way down, same dict key order, bit-identical floats and arrays."""
    assert type(actual) is type(expected) or (
        isinstance(expected, np.ndarray) and type(actual) is np.ndarray
    ), (type(actual), type(expected))
    if isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype.newbyteorder("=")
        assert actual.dtype.isnative
        assert actual.shape == expected.shape
        assert actual.tobytes() == expected.astype(actual.dtype).tobytes()
    elif isinstance(expected, np.generic):
        assert actual.tobytes() == expected.tobytes()
    elif isinstance(expected, float):
        assert struct.pack(">d", actual) == struct.pack(">d", expected)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        for a_key, e_key in zip(actual, expected, strict=True):
            assert type(a_key) is type(e_key)
            assert_identical(actual[a_key], expected[e_key])
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_identical(a, e)
    else:
        assert actual == expected


LOAD_MODES = ["plain", "mmap"]
_FILES = tempfile.TemporaryDirectory(prefix="npoptim-properties-")  # removed at exit


def load_in(mode: str, data: bytes) -> Any:
    """``load`` of ``data`` from a file object (plain) or memory-mapped from a file (mmap)."""
    if mode == "plain":
        with (
            mock.patch.object(serialization, "_CHUNK", 64),
            mock.patch.object(serialization, "_THREADED", 1),
        ):
            return load(io.BytesIO(data))
    fd, path = tempfile.mkstemp(dir=_FILES.name, suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return load(path, mmap=True, verify=mode == "mmap+verify")
    finally:
        os.unlink(path)  # the mapping, if any, keeps the file's pages alive


def to_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    save(obj, buffer)
    return buffer.getvalue()


def load_or_checkpoint_error(data: bytes, mode: str) -> None:
    """Loads ``data``; only CheckpointError may escape, and a loaded object must save again."""
    try:
        result = load_in(mode, data)
    except CheckpointError as error:  # record which check refused it, without the details
        words = [
            w
            for w in re.split(r"[\s:]+", str(error))
            if w.isascii() and w.isalpha() and w.islower() and w not in ("obj", "at", "got")
        ]
        reason = " ".join(words[:6])
        event(f"refused: {reason}")
        return
    event("loaded")
    to_bytes(result)


def members_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def build_archive(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    return buffer.getvalue()


def rebuild(data: bytes, manifest_text: bytes) -> bytes:
    """``data`` with its manifest replaced by ``manifest_text`` (stored as a uint8 .npy)."""
    buffer = io.BytesIO()
    np.save(buffer, np.frombuffer(manifest_text, dtype=np.uint8), allow_pickle=False)
    return build_archive(members_of(data) | {"__manifest__.npy": buffer.getvalue()})


def read_manifest(data: bytes) -> Any:
    with zipfile.ZipFile(io.BytesIO(data)) as zf, zf.open("__manifest__.npy") as member:
        return json.loads(npy.read_array(member).tobytes())


# --- strategies ----------------------------------------------------------------------------

dtypes = st.sampled_from(NUMERIC_DTYPES).map(np.dtype)
any_order_dtypes = st.builds(
    lambda dt, order: dt.newbyteorder(order), dtypes, st.sampled_from("<>=")
)
arrays = st.builds(
    lambda array, transpose: array.T if transpose else array,
    any_order_dtypes.flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    ),
    st.booleans(),
)
numpy_scalars = dtypes.flatmap(lambda dt: hnp.arrays(dt, ())).map(lambda a: a[()])
python_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**300), 2**300)
    | st.floats()
    | st.text(max_size=8)
)
keys = st.integers() | st.text(max_size=4)
structures = st.recursive(
    python_scalars | numpy_scalars | arrays,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(keys, inner, max_size=4)
    ),
    max_leaves=12,
)


def small_dicts(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[Any, Any]]:
    return st.dictionaries(keys, inner, max_size=3)


small_structures = st.recursive(python_scalars | arrays, small_dicts, max_leaves=5)

# Manifest edits: random JSON mixed with words the format uses, so that many edits are
# nearly valid and reach the deeper checks.
VOCABULARY = [
    "none",
    "bool",
    "int",
    "float",
    "str",
    "list",
    "tuple",
    "dict",
    "scalar",
    "array",
    *NUMERIC_DTYPES,
    "object",
    "float128",
    "arr_0",
    "arr_1",
    "__manifest__",
    "0x1",
    "-0x0",
    "0x",
    "3ff0000000000000",
    "7ff8000000000000",
    "00",
    "01",
    "02",
    "0000803f",
    "npoptim-checkpoint",
    0,
    1,
    2,
    -1,
    [],
    [0],
    [2, 3],
    [-1],
    True,
    False,
    None,
]
NODE_FIELDS = ["t", "v", "dtype", "shape", "name"]
FIELD_NAMES = [*NODE_FIELDS, "format", "version", "root"]
# Values of every JSON type, to put where another type belongs.
misfits = st.sampled_from(
    [
        None,
        True,
        0,
        -1,
        2**64,
        1.5,
        "",
        "x",
        [],
        {},
        [[]],
        [None],
        {"t": "none"},
        [{"t": "none"}] * 2,
    ]
).map(copy.deepcopy)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(VOCABULARY).map(copy.deepcopy),  # edits must not change VOCABULARY
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=8,
)


# .npy header edits: pieces of Python literals that numpy's header parser understands.
HEADER_PIECES = [
    b"True",
    b"False",
    b"None",
    b"(",
    b")",
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b":",
    b"'",
    b"-1",
    b"0",
    b"1",
    b"2",
    b"'<f8'",
    b"'>i2'",
    b"'|b1'",
    b"'|O'",
    b"'<U1'",
    b"[('a', '<f8')]",
    b"('<f8', (2,))",
    b"'shape'",
    b"'descr'",
    b"'fortran_order'",
    b"(1,)",
    b"()",
    b"(0, 2)",
    b"[]",
    b"{}",
    b"{[]: 0}",
]
# Values to put into a parsed .npy header (for any of its keys), and into one shape entry.
HEADER_VALUES = [
    "<f8", ">f4", "|b1", "|u1", "|O", "<U1", "<M8[D]", [("a", "<f8")], ("<f8", (2,)), "",
    (), (0,), (1, 2), (-1,), [1], 1, None, True, False,
]  # fmt: skip
SHAPE_ENTRIES = [True, False, -1, 0, 1, 2**40, 2**70, 1.5, None, "1"]


def locations(node: Any, found: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key) pair inside a JSON value, parents before children."""
    if isinstance(node, dict):
        for key in list(node):
            found.append((node, key))
            locations(node[key], found)
    elif isinstance(node, list):
        for index in range(len(node)):
            found.append((node, index))
            locations(node[index], found)
    return found


# --- properties ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", LOAD_MODES)
@examples(250)
@given(structures)
def test_supported_structures_round_trip_exactly(mode: str, obj: Any) -> None:
    assert_identical(load_in(mode, to_bytes(obj)), obj)


@pytest.mark.parametrize("mode", LOAD_MODES)
@examples(300)
@given(st.binary(max_size=2048) | st.binary(max_size=512).map(lambda b: b"PK\x03\x04" + b))
def test_random_bytes_raise_checkpoint_error(mode: str, data: bytes) -> None:
    with pytest.raises(CheckpointError):
        load_in(mode, data)


@pytest.mark.parametrize("mode", LOAD_MODES)
@examples(200)
@given(
    st.dictionaries(
        st.sampled_from(["__manifest__.npy", "arr_0.npy", "x"]), st.binary(), max_size=3
    )
)
def test_zip_archives_of_random_members_raise_checkpoint_error(
    mode: str, members: dict[str, bytes]
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    with pytest.raises(CheckpointError):
        load_in(mode, buffer.getvalue())


@pytest.mark.parametrize("mode", LOAD_MODES)
@examples(300)
@given(small_structures, st.data())
def test_truncated_checkpoints_raise_checkpoint_error(
    mode: str, obj: Any, data: st.DataObject
) -> None:
    full = to_bytes(obj)
    cut = data.draw(st.integers(0, len(full) - 1), label="cut")
    with pytest.raises(CheckpointError):
        load_in(mode, full[:cut])


@pytest.mark.parametrize("mode", [*LOAD_MODES, "mmap+verify"])
@examples(300)
@given(small_structures, st.data())
def test_checkpoints_with_changed_bytes_load_or_raise_checkpoint_error(
    mode: str, obj: Any, data: st.DataObject
) -> None:
    damaged = bytearray(to_bytes(obj))
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        position = data.draw(st.integers(0, len(damaged) - 1), label="position")
        damaged[position] = data.draw(st.integers(0, 255), label="byte")
    load_or_checkpoint_error(bytes(damaged), mode)


# 300 a mode, 600 in all (it drew 1,000 before it ran in both modes; the manifest is parsed and
# checked by the same code in both): the suite's time limit; NPOPTIM_HYPOTHESIS_SCALE draws more.
@pytest.mark.parametrize("mode", LOAD_MODES)
@examples(300)
@given(structures, st.data())
def test_checkpoints_with_an_edited_manifest_load_or_raise_checkpoint_error(
    mode: str, obj: Any, data: st.DataObject
) -> None:
    original = to_bytes(obj)
    manifest = read_manifest(original)
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        pool = locations(manifest, [])
        fields = [(p, k) for p, k in pool if k in NODE_FIELDS and p is not manifest]
        if fields and data.draw(st.booleans(), label="edit a node field"):
            pool = fields
        parent, key = data.draw(st.sampled_from(pool), label="location")
        action = data.draw(st.sampled_from(["replace", "delete", "rename", "duplicate"]))
        if action == "replace":
            parent[key] = data.draw(misfits | json_values, label="value")
        elif action == "delete":
            del parent[key]
        elif action == "rename" and isinstance(parent, dict):
            parent[data.draw(st.sampled_from(FIELD_NAMES), label="new key")] = parent.pop(key)
        elif isinstance(parent, list):
            parent.insert(key, parent[key])
    load_or_checkpoint_error(rebuild(original, json.dumps(manifest).encode()), mode)


@pytest.mark.parametrize("mode", LOAD_MODES)
@examples(300)
@given(small_structures, st.data())
def test_checkpoints_with_edited_manifest_text_load_or_raise_checkpoint_error(
    mode: str, obj: Any, data: st.DataObject
) -> None:
    original = to_bytes(obj)
    text = bytearray(json.dumps(read_manifest(original)).encode())
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        position = data.draw(st.integers(0, len(text) - 1), label="position")
        replacement = data.draw(
            st.binary(max_size=3)
            | st.sampled_from(
                [b"{", b"}", b"[", b"]", b'"', b",", b":", b"0", b"-", b"\\", b"\xff"]
            )
        )
        text[position : position + data.draw(st.integers(0, 2))] = replacement
    load_or_checkpoint_error(rebuild(original, bytes(text)), mode)


# numpy's header parser may warn about what it is given (escape sequences, Python 2 headers).
@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::SyntaxWarning", "ignore::UserWarning"
)
@pytest.mark.parametrize("mode", LOAD_MODES)
@examples(300)
@given(st.lists(arrays, min_size=1, max_size=3), st.data())
def test_checkpoints_with_an_edited_npy_header_load_or_raise_checkpoint_error(
    mode: str, obj: list[Any], data: st.DataObject
) -> None:
    members = members_of(to_bytes(obj))
    name = data.draw(st.sampled_from(sorted(members, reverse=True)), label="member")  # arrays first
    payload = members[name]
    length = struct.unpack("<H", payload[8:10])[0]  # .npy 1.0: magic, version, header length
    header = bytearray(payload[10 : 10 + length])
    parsed = data.draw(st.booleans(), label="edit the parsed header, else its text")
    if parsed:
        fields = ast.literal_eval(header.decode("latin1"))
        key = data.draw(st.sampled_from(sorted(fields)), label="key")
        how = data.draw(st.sampled_from(["value", "entry", "bools"]), label="how")
        if key == "shape" and fields["shape"] and how == "entry":
            shape = list(fields["shape"])
            shape[data.draw(st.integers(0, len(shape) - 1))] = data.draw(
                st.sampled_from(SHAPE_ENTRIES), label="entry"
            )
            fields["shape"] = tuple(shape)
        elif key == "shape" and how == "bools":  # equal to 0 and 1, but not ints numpy accepts
            fields["shape"] = tuple(bool(n) if n in (0, 1) else n for n in fields["shape"])
        else:
            fields[key] = data.draw(st.sampled_from(HEADER_VALUES), label="value")
        header = bytearray(repr(fields).encode("latin1"))
    for _ in range(0 if parsed else data.draw(st.integers(1, 3), label="text edits")):
        position = data.draw(st.integers(0, len(header) - 1), label="position")
        piece = data.draw(st.sampled_from(HEADER_PIECES) | st.binary(max_size=3), label="piece")
        header[position : position + data.draw(st.integers(0, 6), label="cut")] = piece
    members[name] = payload[:8] + struct.pack("<H", len(header)) + header + payload[10 + length :]
    load_or_checkpoint_error(build_archive(members), mode)


# --- random optimizer configurations -------------------------------------------------------
# Every optimizer with every option combination of torch's own tests (configs.py), on 1 to 3
# random parameters of random shapes and dtypes, after 1 to 4 steps: its state_dict goes
# through a checkpoint unchanged, and a fresh optimizer that loads it continues exactly.
OPTIMIZER_CASES = [(name, kwargs) for name, cases in CONFIGS.items() for _, kwargs in cases]
MATRIX_ONLY = {"Muon"}  # 2-D parameters only
REAL_ONLY = {"Adafactor", "Muon", "SparseAdam", "LBFGS"}  # LBFGS: complex kept out for brevity


def _grads(name: str, params: list[Parameter], rng: np.random.Generator) -> None:
    for p in params:
        values = rng.standard_normal(p.shape)
        if p.dtype.kind == "c":
            values = values + 1j * rng.standard_normal(p.shape)
        if name == "SparseAdam":
            rows = rng.integers(0, p.shape[0], size=2)
            p.grad = SparseGrad(rows, values[rows].astype(p.dtype), p.shape)
        else:
            p.grad = values.astype(p.dtype)


def _take_step(name: str, opt: Any, params: list[Parameter], rng: np.random.Generator) -> None:
    """One step with fresh random grads (LBFGS: a closure of a fixed convex quadratic)."""
    if name == "LBFGS":

        def closure() -> float:
            loss = 0.0
            for k, p in enumerate(params):
                p.grad = ((k + 1.0) * np.asarray(p)).astype(p.dtype)
                loss += 0.5 * (k + 1.0) * float(np.sum(np.asarray(p) ** 2))
            return loss

        opt.step(closure)
    else:
        _grads(name, params, rng)
        opt.step()


@pytest.mark.parametrize("mode", LOAD_MODES)
@examples(150)
@given(
    case=st.sampled_from(OPTIMIZER_CASES),
    shapes=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 3)), min_size=1, max_size=3),
    vectors=st.booleans(),
    dtype=st.sampled_from(["float32", "float64", "complex128"]),
    steps=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_optimizer_state_of_random_configurations_round_trips_and_resumes_exactly(
    mode: str,
    case: tuple[str, dict[str, Any]],
    shapes: list[tuple[int, int]],
    vectors: bool,
    dtype: str,
    steps: int,
    seed: int,
) -> None:
    name, kwargs = case
    if name in REAL_ONLY and dtype.startswith("complex"):
        dtype = "float64"
    if vectors and name not in MATRIX_ONLY | {"SparseAdam"}:
        shapes = [(rows * cols,) for rows, cols in shapes]  # also 1-D parameters
    event(name)
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(shape) for shape in shapes]
    if dtype.startswith("complex"):
        values = [v + 1j * rng.standard_normal(v.shape) for v in values]
    params = [Parameter(v.astype(dtype)) for v in values]
    opt = getattr(npoptim, name)(params, **kwargs)
    for _ in range(steps):
        _take_step(name, opt, params, rng)

    state = opt.state_dict()
    loaded = load_in(mode, to_bytes(state))
    assert_identical(loaded, state)

    twins = [Parameter(np.array(p)) for p in params]
    twin_opt = getattr(npoptim, name)(twins, **kwargs)
    twin_opt.load_state_dict(loaded)
    loaded_arrays = [v for entries in loaded["state"].values() for v in entries.values()
                     if isinstance(v, np.ndarray)]  # fmt: skip
    for entries in twin_opt.state.values():  # copies of the loaded (maybe mapped) arrays
        for value in entries.values():
            if isinstance(value, np.ndarray):
                assert value.flags.writeable
                assert not any(np.shares_memory(value, a) for a in loaded_arrays)
    after = rng.bit_generator.state
    _take_step(name, opt, params, rng)
    rng.bit_generator.state = after  # the same grads for the twin
    _take_step(name, twin_opt, twins, rng)
    for p, q in zip(params, twins, strict=True):
        np.testing.assert_array_equal(np.asarray(q), np.asarray(p), strict=True)
