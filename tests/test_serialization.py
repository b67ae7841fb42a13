"""Specification of npoptim.serialization: save / load of state_dicts without pickle."""

from __future__ import annotations

import collections
import contextlib
import enum
import io
import json
import os
import pathlib
import pickle
import struct
import sys
import threading
import time
import zipfile
from typing import Any

import numpy as np
import numpy.lib.format as npy
import pytest

from npoptim import serialization
from npoptim.parameter import SparseGrad
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


# --- helpers -------------------------------------------------------------------------------


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


def round_trip(obj: Any) -> Any:
    buffer = io.BytesIO()
    save(obj, buffer)
    buffer.seek(0)
    return load(buffer)


def to_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    save(obj, buffer)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def read_manifest(data: bytes) -> Any:
    with zipfile.ZipFile(io.BytesIO(data)) as zf, zf.open("__manifest__.npy") as member:
        return json.loads(npy.read_array(member).tobytes())


def build_archive(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    return buffer.getvalue()


def members_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def with_manifest(data: bytes, manifest: Any) -> bytes:
    members = members_of(data)
    text = json.dumps(manifest).encode()
    members["__manifest__.npy"] = npy_bytes(np.frombuffer(text, dtype=np.uint8))
    return build_archive(members)


def load_bytes(data: bytes) -> Any:
    return load(io.BytesIO(data))


def files_in(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class CreatesMarker:
    """Unpickling this runs open(path, "w"): proof that a loader executed pickled code."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [None, True, False, 0, -7, 2**64, -(2**200), 1.5, "", "lr", "é\u2603\ud800"]
)
def test_python_scalars_round_trip_with_their_type(value: Any) -> None:
    assert_identical(round_trip(value), value)


def test_bool_stays_bool_and_int_stays_int() -> None:
    result = round_trip([True, 1, False, 0])
    assert [type(x) for x in result] == [bool, int, bool, int]


def test_ints_beyond_the_decimal_digit_limit_round_trip() -> None:
    huge = 7**20000  # str(huge) would exceed Python's int max_str_digits
    assert round_trip({"step": huge, "neg": -huge}) == {"step": huge, "neg": -huge}


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 5e-324, 1.7976931348623157e308]
)
def test_special_floats_round_trip_bit_exactly(value: float) -> None:
    assert_identical(round_trip(value), value)


def test_nan_payload_and_sign_are_kept() -> None:
    odd_nan = struct.unpack(">d", bytes.fromhex("fff8000000000123"))[0]
    assert struct.pack(">d", round_trip(odd_nan)).hex() == "fff8000000000123"


def test_tuples_stay_tuples_and_lists_stay_lists() -> None:
    value = ([1, (2, [3, ()])], [], ((),))
    assert_identical(round_trip(value), value)


def test_int_and_str_keys_stay_distinct_and_in_order() -> None:
    value = {1: "int one", "1": "str one", -3: None, "": 0, 2**70: "big key"}
    assert_identical(round_trip(value), value)


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES)
def test_numpy_scalars_round_trip_as_the_same_scalar_type(dtype: str) -> None:
    value = np.ones((), dtype=dtype)[()]
    assert_identical(round_trip(value), value)


@pytest.mark.parametrize("dtype", NUMERIC_DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 0, 3), (2, 3, 4)])
def test_arrays_round_trip_with_dtype_shape_and_bytes(dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 100).astype(dtype)
    if np.dtype(dtype).kind == "c":
        array = array + 1j * np.asarray(rng.standard_normal(shape), dtype=dtype)
    assert_identical(round_trip(array), array)


def test_arrays_keep_nan_inf_and_negative_zero() -> None:
    array = np.array([np.nan, np.inf, -np.inf, -0.0], dtype=np.float16)
    assert_identical(round_trip(array), array)


def test_fortran_ordered_and_strided_arrays_round_trip() -> None:
    base = np.arange(24.0).reshape(4, 6)
    value = [base.T, base[::2, ::3], np.asfortranarray(base)]
    result = round_trip(value)
    assert_identical(result, value)
    assert result[0].flags.f_contiguous


def test_big_endian_arrays_load_in_native_byte_order() -> None:
    array = np.arange(5, dtype=">i4")
    result = round_trip(array)
    assert result.dtype == np.dtype("int32") and result.dtype.isnative
    assert result.tolist() == [0, 1, 2, 3, 4]


def test_loaded_arrays_are_writeable_and_not_shared() -> None:
    result = round_trip({"a": np.zeros(3), "b": np.zeros(3)})
    result["a"] += 1
    assert result["a"].flags.writeable and result["b"].tolist() == [0.0, 0.0, 0.0]


def test_ndarray_subclasses_are_saved_as_plain_arrays() -> None:
    from npoptim import Parameter

    param = Parameter(np.arange(3, dtype=np.float32))
    param.grad = np.ones(3, dtype=np.float32)
    result = round_trip({"param": param})
    assert type(result["param"]) is np.ndarray
    assert_identical(result["param"], np.arange(3, dtype=np.float32))


def test_optimizer_state_dict_round_trips() -> None:
    state_dict = {
        "state": {
            0: {"step": 10, "exp_avg": np.ones((2, 3), np.float32), "max_exp_avg_sq": None},
            1: {"step": 10.0, "momentum_buffer": np.zeros(4)},
        },
        "param_groups": [
            {
                "lr": 1e-3,
                "betas": (0.9, 0.999),
                "eps": 1e-8,
                "amsgrad": False,
                "maximize": False,
                "foreach": None,
                "params": [0, 1],
                "param_names": ["w", "b"],
            }
        ],
    }
    assert_identical(
        round_trip({"optimizer": state_dict, "epoch": 3}), {"optimizer": state_dict, "epoch": 3}
    )


def test_save_and_load_accept_str_and_pathlike_paths(tmp_path: pathlib.Path) -> None:
    value = {"x": np.arange(3), "y": (1.5, "z")}
    save(value, str(tmp_path / "a.npz"))
    save(value, tmp_path / "b.npz")
    assert_identical(load(tmp_path / "a.npz"), value)
    assert_identical(load(str(tmp_path / "b.npz")), value)


def test_save_and_load_accept_binary_file_objects(tmp_path: pathlib.Path) -> None:
    with open(tmp_path / "c.npz", "wb") as fh:
        save([np.eye(2)], fh)
    with open(tmp_path / "c.npz", "rb") as fh:
        assert_identical(load(fh), [np.eye(2)])


def test_load_accepts_a_non_seekable_stream() -> None:
    class Stream(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            return self.inner.readinto(b)

    assert_identical(load(Stream(to_bytes({"a": np.arange(2)}))), {"a": np.arange(2)})


def test_saving_twice_gives_identical_bytes() -> None:
    value = {"a": np.arange(4.0), "b": [1, 2.5]}
    assert to_bytes(value) == to_bytes(value)


def test_checkpoint_opens_with_numpy_alone(tmp_path: pathlib.Path) -> None:
    save({"w": np.arange(3.0)}, tmp_path / "ckpt.npz")
    with np.load(tmp_path / "ckpt.npz", allow_pickle=False) as archive:
        assert sorted(archive.files) == ["__manifest__", "arr_0"]
        manifest = json.loads(archive["__manifest__"].tobytes())
        assert archive["arr_0"].tolist() == [0.0, 1.0, 2.0]
    assert manifest["format"] == "npoptim-checkpoint" and manifest["version"] == 2


def test_save_replaces_an_existing_file(tmp_path: pathlib.Path) -> None:
    save({"old": 1}, tmp_path / "ckpt.npz")
    save({"new": 2}, tmp_path / "ckpt.npz")
    assert load(tmp_path / "ckpt.npz") == {"new": 2}
    assert files_in(tmp_path) == ["ckpt.npz"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_new_file_gets_default_permissions_and_replaced_file_keeps_its_own(
    tmp_path: pathlib.Path,
) -> None:
    umask = os.umask(0o022)
    try:
        save(1, tmp_path / "new.npz")
        assert (tmp_path / "new.npz").stat().st_mode & 0o777 == 0o644
        (tmp_path / "new.npz").chmod(0o600)
        save(2, tmp_path / "new.npz")
        assert (tmp_path / "new.npz").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(umask)


# --- unsupported values --------------------------------------------------------------------


def test_unsupported_value_raises_type_error_naming_its_key_path() -> None:
    def fn() -> None: ...

    with pytest.raises(TypeError) as info:
        to_bytes({"state": {3: {"fn": fn}}})
    assert str(info.value) == "cannot save value of type function at obj['state'][3]['fn']"


def test_key_path_counts_list_and_tuple_indices() -> None:
    with pytest.raises(TypeError, match=r"type set at obj\['groups'\]\[1\]\[0\]$"):
        to_bytes({"groups": [0, ({1},)]})


@pytest.mark.parametrize("key", [1.5, True, None, (1, 2), b"k"])
def test_dict_keys_other_than_int_or_str_are_refused(key: Any) -> None:
    with pytest.raises(TypeError, match=r"dict key .* at obj\['d'\] \(keys must be int or str\)"):
        to_bytes({"d": {key: 1}})


@pytest.mark.parametrize(
    "array",
    [
        np.array([None, 1], dtype=object),
        np.array(["a", "b"]),
        np.array([b"a"]),
        np.array(["2020-01-01"], dtype="datetime64[D]"),
        np.array([1], dtype="timedelta64[s]"),
        np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]),
        np.zeros(2, dtype=np.longdouble),
    ],
    ids=["object", "str", "bytes", "datetime", "timedelta", "structured", "longdouble"],
)
def test_arrays_of_non_numeric_dtypes_are_refused(array: np.ndarray) -> None:
    with pytest.raises(TypeError, match=r"cannot save array of dtype .* at obj\[0\]"):
        to_bytes([array])


@pytest.mark.parametrize(
    "value", [np.str_("a"), np.bytes_(b"a"), np.datetime64("2020"), np.longdouble(1)]
)
def test_numpy_scalars_of_non_numeric_dtypes_are_refused(value: Any) -> None:
    with pytest.raises(TypeError, match=r"cannot save value of type .* at obj\['x'\]"):
        to_bytes({"x": value})


class Color(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(
    "value",
    [
        collections.OrderedDict(a=1),
        collections.defaultdict(list),
        Color.RED,
        b"bytes",
        1j,
        {1, 2},
        object(),
    ],
    ids=["OrderedDict", "defaultdict", "IntEnum", "bytes", "complex", "set", "object"],
)
def test_other_types_including_container_subclasses_are_refused(value: Any) -> None:
    with pytest.raises(TypeError, match=rf"type {type(value).__name__} at obj\['v'\]$"):
        to_bytes({"v": value})


def test_a_container_that_contains_itself_is_refused() -> None:
    loop: list[Any] = [1]
    loop.append({"again": loop})
    with pytest.raises(ValueError, match=r"contains itself at obj\[1\]\['again'\]"):
        to_bytes(loop)


def test_shared_references_are_saved_as_separate_copies() -> None:
    shared = np.zeros(2)
    result = round_trip([shared, shared])
    assert result[0] is not result[1]
    assert_identical(result, [shared, shared])


def test_unsupported_value_leaves_previous_file_untouched(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "ckpt.npz"
    save({"good": np.arange(3)}, target)
    before = target.read_bytes()
    late = {"a": [np.zeros(1000)] * 50, "z": {"deep": [1, 2, lambda: None]}}
    with pytest.raises(TypeError, match=r"obj\['z'\]\['deep'\]\[2\]"):
        save(late, target)
    assert target.read_bytes() == before
    assert files_in(tmp_path) == ["ckpt.npz"]


def test_unsupported_value_writes_nothing_to_a_file_object() -> None:
    buffer = io.BytesIO()
    with pytest.raises(TypeError):
        save([np.zeros(3), object()], buffer)
    assert buffer.getvalue() == b""


# --- atomic writes -------------------------------------------------------------------------


@pytest.fixture
def existing(tmp_path: pathlib.Path) -> tuple[pathlib.Path, bytes]:
    target = tmp_path / "ckpt.npz"
    save({"version": "old", "w": np.arange(10.0)}, target)
    return target, target.read_bytes()


def assert_untouched(existing: tuple[pathlib.Path, bytes]) -> None:
    target, before = existing
    assert target.read_bytes() == before
    assert files_in(target.parent) == [target.name]


def test_failing_fsync_leaves_previous_file_and_no_temp_file(
    existing: tuple[pathlib.Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save({"version": "new", "w": np.ones(10)}, existing[0])
    assert_untouched(existing)


def test_exception_midway_through_writing_leaves_previous_file_and_no_temp_file(
    existing: tuple[pathlib.Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real_write_array = serialization._write_array

    def fail_on_second_member(fp: Any, array: Any) -> None:
        calls.append(array)
        if len(calls) == 2:
            fp.write(b"partial")
            raise RuntimeError("writer crashed")
        real_write_array(fp, array)

    synced: list[int] = []
    monkeypatch.setattr(serialization, "_write_array", fail_on_second_member)
    monkeypatch.setattr(os, "fsync", synced.append)
    with pytest.raises(RuntimeError, match="writer crashed"):
        save({"version": "new", "w": np.ones(10), "v": np.ones(3)}, existing[0])
    assert len(calls) == 2
    assert synced == []  # a failed save does not wait for the disk: its file is removed
    assert_untouched(existing)


def test_keyboard_interrupt_during_write_leaves_no_temp_file(
    existing: tuple[pathlib.Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(serialization, "_write_array", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save({"w": np.ones(10)}, existing[0])
    assert_untouched(existing)


def several_chunks() -> dict[str, Any]:
    """Members of several of save's pieces (one array not contiguous), and small ones."""
    rng = np.random.default_rng(7)
    return {
        "big": rng.standard_normal(3 * serialization._CHUNK // 8 + 5),
        "strided": rng.standard_normal((600, 4000))[:, ::3].astype(np.float32),
        "small": [np.arange(3), 2.5],
    }


@pytest.mark.parametrize("pwrite", [True, False], ids=["pwrite", "lseek+write"])
def test_a_file_saved_to_a_path_has_the_bytes_saved_to_a_file_object(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, pwrite: bool
) -> None:
    """A path is written by a second thread at each piece's offset (headers rewritten after
    their data); a file object in the calling thread, in order: the bytes must agree."""
    if not pwrite:  # as on Windows, which has no os.pwrite
        monkeypatch.delattr(os, "pwrite", raising=False)
    value = several_chunks()
    save(value, tmp_path / "ckpt.npz")
    assert (tmp_path / "ckpt.npz").read_bytes() == to_bytes(value)
    assert_identical(load(tmp_path / "ckpt.npz"), value)


@pytest.mark.skipif(not hasattr(os, "fdatasync"), reason="this system has no fdatasync")
def test_save_syncs_the_data_while_it_writes_and_fsyncs_at_the_end(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fdatasync, real_fsync = os.fdatasync, os.fsync
    monkeypatch.setattr(serialization, "_SYNC_BYTES", serialization._CHUNK)
    monkeypatch.setattr(os, "fdatasync", lambda fd: (events.append("sync"), real_fdatasync(fd)))
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    save(several_chunks(), tmp_path / "ckpt.npz")
    assert "sync" in events and events.index("fsync") > events.index("sync")


@pytest.mark.parametrize("failing", ["pwrite", "fdatasync"])
@pytest.mark.skipif(not hasattr(os, "fdatasync"), reason="this system has no fdatasync")
def test_a_write_or_sync_failing_in_the_background_leaves_previous_file_and_no_temp_file(
    existing: tuple[pathlib.Path, bytes], monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    real = getattr(os, failing)
    calls = []

    def disk_full(*args: Any) -> Any:
        """Fails the first sync (how many more start depends on the disk's pace), or the
        second write of a piece the writer thread takes."""
        if failing == "fdatasync" or len(args[1]) >= serialization._ASYNC_BYTES:
            calls.append(threading.current_thread())
            if len(calls) == (1 if failing == "fdatasync" else 2):
                raise OSError(28, "No space left on device")
        return real(*args)

    monkeypatch.setattr(serialization, "_SYNC_BYTES", serialization._CHUNK)
    monkeypatch.setattr(os, failing, disk_full)
    with pytest.raises(OSError, match="No space left"):
        save(several_chunks(), existing[0])
    assert calls and calls[-1] is not threading.main_thread()
    assert_untouched(existing)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_saving_over_a_checkpoint_leaves_no_file_open(tmp_path: pathlib.Path) -> None:
    """The replaced file is held open through the rename and closed by a thread after it
    (so that the rename does not wait for its blocks to be freed): then nothing is open."""

    def open_here() -> list[str]:
        """The files of tmp_path this process holds open (deleted ones included)."""
        found = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # an fd closed meanwhile
                target = os.readlink(f"/proc/self/fd/{fd}")
                if target.startswith(str(tmp_path)):
                    found.append(target)
        return found

    save({"w": np.ones(1000)}, tmp_path / "ckpt.npz")
    for _ in range(3):
        save({"w": np.zeros(1000)}, tmp_path / "ckpt.npz")
    for thread in threading.enumerate():
        if thread.name == "npoptim-free":
            thread.join()
    assert open_here() == []
    assert_identical(load(tmp_path / "ckpt.npz"), {"w": np.zeros(1000)})


def test_failing_rename_leaves_previous_file_and_no_temp_file(
    existing: tuple[pathlib.Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(src: Any, dst: Any) -> None:
        raise PermissionError("rename refused")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        save({"w": np.ones(10)}, existing[0])
    assert_untouched(existing)


def test_save_fsyncs_a_temp_file_in_the_target_folder_then_renames_it_and_fsyncs_the_folder(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", "")), real_fsync(fd)))
    monkeypatch.setattr(
        os, "replace", lambda src, dst: (events.append(("replace", src)), real_replace(src, dst))
    )
    save([1], tmp_path / "ckpt.npz")
    assert events[0] == ("fsync", "")  # the temporary file, before it is renamed
    assert events[1][0] == "replace" and os.path.dirname(events[1][1]) == str(tmp_path)
    if sys.platform != "win32":
        assert events[2:] == [("fsync", "")]  # the folder, so that the rename is durable


def test_save_to_a_missing_folder_raises_file_not_found_naming_the_target(
    tmp_path: pathlib.Path,
) -> None:
    target = tmp_path / "missing" / "ckpt.npz"
    with pytest.raises(FileNotFoundError) as caught:
        save(1, target)
    assert caught.value.filename == str(target)
    assert str(tmp_path / "missing") in str(caught.value) and "does not exist" in str(caught.value)
    assert ".tmp" not in str(caught.value)
    assert not (tmp_path / "missing").exists()


# --- no pickle -----------------------------------------------------------------------------


def test_the_marker_payload_used_below_does_run_code_when_unpickled(
    tmp_path: pathlib.Path,
) -> None:
    pickle.loads(pickle.dumps(CreatesMarker(tmp_path / "marker")))
    assert (tmp_path / "marker").exists()


def test_plain_pickle_file_is_refused_without_running_code(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "ckpt.npz"
    target.write_bytes(pickle.dumps({"state": CreatesMarker(tmp_path / "marker")}))
    with pytest.raises(CheckpointError):
        load(target)
    assert not (tmp_path / "marker").exists()


def test_npz_with_an_object_array_is_refused_without_running_code(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "ckpt.npz"
    payload = np.array([CreatesMarker(tmp_path / "marker")], dtype=object)
    np.savez(target, payload=payload)
    with pytest.raises(CheckpointError, match="no __manifest__"):
        load(target)
    assert not (tmp_path / "marker").exists()


def test_object_array_behind_a_valid_manifest_is_refused_without_running_code(
    tmp_path: pathlib.Path,
) -> None:
    members = members_of(to_bytes({"w": np.zeros(1)}))
    payload = np.array([CreatesMarker(tmp_path / "marker")], dtype=object)
    members["arr_0.npy"] = npy_bytes(payload, allow_pickle=True)
    with pytest.raises(CheckpointError, match=r"arr_0\.npy has dtype object"):
        load_bytes(build_archive(members))
    assert not (tmp_path / "marker").exists()


def test_manifest_naming_the_object_dtype_is_refused() -> None:
    data = to_bytes(np.zeros(1))
    manifest = read_manifest(data)
    manifest["root"]["dtype"] = "object"
    with pytest.raises(CheckpointError, match="unsupported dtype 'object'"):
        load_bytes(with_manifest(data, manifest))


# --- corrupted, truncated and foreign files ------------------------------------------------


def test_checkpoint_error_is_a_value_error() -> None:
    assert issubclass(CheckpointError, ValueError)


def test_missing_file_raises_file_not_found_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.npz")


@pytest.mark.parametrize("keep", [0, 1, 4, 30, 100, 0.5, -22, -1])
def test_truncated_file_raises_checkpoint_error(keep: float) -> None:
    data = to_bytes({"w": np.arange(20.0), "step": 3})
    cut = int(len(data) * keep) if isinstance(keep, float) else keep
    with pytest.raises(CheckpointError):
        load_bytes(data[:cut])


def test_random_bytes_raise_checkpoint_error() -> None:
    data = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(CheckpointError):
        load_bytes(data)


def test_a_plain_npy_file_raises_checkpoint_error() -> None:
    with pytest.raises(CheckpointError):
        load_bytes(npy_bytes(np.zeros(3)))


def test_flipped_byte_in_array_data_fails_the_checksum() -> None:
    data = bytearray(to_bytes(np.zeros(64)))
    start = data.index(b"\0" * 64)
    data[start + 10] ^= 0xFF
    with pytest.raises(CheckpointError, match="CRC"):
        load_bytes(bytes(data))


def crc_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("npoptim-crc32")]


@pytest.mark.parametrize("where", ["none", "first", "middle", "last"])
def test_pieces_checked_in_the_crc_thread_catch_a_flipped_byte_in_any_piece(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    # 1 KiB pieces, each handed to the CRC-32 thread: a 16 KiB array arrives in 16 of them
    monkeypatch.setattr(serialization, "_CHUNK", 1024)
    monkeypatch.setattr(serialization, "_THREADED", 512)
    values = np.arange(2048, dtype=np.float64)
    data = bytearray(to_bytes({"a": values, "b": values[::-1].copy()}))
    start = data.index(values.tobytes())  # the bytes of "a" in the file
    position = {"first": 3, "middle": 8 * 1024 + 5, "last": 16 * 1024 - 1}.get(where)
    if position is None:
        assert_identical(load_bytes(bytes(data)), {"a": values, "b": values[::-1].copy()})
    else:
        data[start + position] ^= 0x01
        with pytest.raises(CheckpointError, match="member arr_0.npy fails its CRC-32 check"):
            load_bytes(bytes(data))
    assert crc_threads() == []  # the worker is stopped, after an error too


def test_a_short_last_piece_is_checked_after_the_pieces_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a slow CRC-32 thread: the main thread reads the 8-byte last piece long before the
    # thread is done with the first, and the CRC-32 must still take the pieces in order
    monkeypatch.setattr(serialization, "_CHUNK", 1024)
    monkeypatch.setattr(serialization, "_THREADED", 512)
    update = serialization._Crc.update

    def slow_in_the_thread(self: Any, piece: memoryview) -> None:
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.01)
        update(self, piece)

    monkeypatch.setattr(serialization._Crc, "update", slow_in_the_thread)
    values = np.arange(129.0)  # 1032 bytes: pieces of 1024 and 8
    assert_identical(load_bytes(to_bytes([values, values + 1])), [values, values + 1])


def test_an_error_while_pieces_are_queued_stops_the_crc_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(serialization, "_CHUNK", 1024)
    monkeypatch.setattr(serialization, "_THREADED", 512)
    data = to_bytes({"a": np.arange(4096.0), "b": np.arange(4096.0)})
    second = data.index(b"'descr': '<f8'", data.index(b"arr_1.npy"))
    data = data[:second] + b"'descr': '<i8'" + data[second + 14 :]  # refused after "a" is read
    with pytest.raises(CheckpointError, match="arr_1.npy has dtype int64"):
        load_bytes(data)
    assert crc_threads() == []


def test_a_large_array_round_trips_through_the_crc_thread_with_the_default_pieces() -> None:
    values = np.random.default_rng(0).standard_normal(3 * (1 << 20) // 8 + 5)  # 3 MiB + 40 B
    assert values.nbytes > serialization._THREADED
    assert_identical(load_bytes(to_bytes([values, values[:7].copy()])), [values, values[:7]])


def test_manifest_that_is_not_json_raises_checkpoint_error() -> None:
    members = members_of(to_bytes(1))
    members["__manifest__.npy"] = npy_bytes(np.frombuffer(b'{"format": ', dtype=np.uint8))
    with pytest.raises(CheckpointError, match="JSONDecodeError"):
        load_bytes(build_archive(members))


def test_manifest_stored_with_another_dtype_raises_checkpoint_error() -> None:
    members = members_of(to_bytes(1))
    members["__manifest__.npy"] = npy_bytes(np.zeros(3, dtype=np.float32))
    with pytest.raises(CheckpointError, match=r"__manifest__\.npy has dtype float32"):
        load_bytes(build_archive(members))


def test_foreign_format_name_raises_checkpoint_error() -> None:
    data = to_bytes(1)
    manifest = read_manifest(data) | {"format": "other-tool"}
    with pytest.raises(CheckpointError, match="not an npoptim checkpoint"):
        load_bytes(with_manifest(data, manifest))


def test_newer_format_version_raises_checkpoint_error_saying_so() -> None:
    data = to_bytes(1)
    manifest = read_manifest(data) | {"version": 3}
    with pytest.raises(CheckpointError, match="version 3 is newer than this npoptim reads"):
        load_bytes(with_manifest(data, manifest))


@pytest.mark.parametrize("version", [0, -1, "1", 1.0, True, None])
def test_invalid_format_version_raises_checkpoint_error(version: Any) -> None:
    data = to_bytes(1)
    with pytest.raises(CheckpointError, match="version must be a positive int"):
        load_bytes(with_manifest(data, read_manifest(data) | {"version": version}))


def test_extra_manifest_keys_raise_checkpoint_error() -> None:
    data = to_bytes(1)
    with pytest.raises(CheckpointError, match="expected keys"):
        load_bytes(with_manifest(data, read_manifest(data) | {"extra": 1}))


def test_repeated_json_keys_raise_checkpoint_error() -> None:
    data = to_bytes(1)
    text = b'{"format": "npoptim-checkpoint", "version": 1, "version": 1, "root": {"t": "none"}}'
    members = members_of(data)
    members["__manifest__.npy"] = npy_bytes(np.frombuffer(text, dtype=np.uint8))
    with pytest.raises(CheckpointError, match="repeats a key"):
        load_bytes(build_archive(members))


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"t": "pickle", "v": "x"}, "known type tag"),
        ({"t": ["list"], "v": []}, "known type tag"),
        ({"t": "scalar", "dtype": ["float32"], "v": "0000803f"}, "unsupported dtype"),
        ({"t": "int", "v": 3}, "invalid value for a node of type int"),
        ({"t": "int", "v": "0x1_0"}, "invalid value for a node of type int"),
        ({"t": "float", "v": "3ff0"}, "invalid value for a node of type float"),
        ({"t": "bool", "v": 1}, "invalid value for a node of type bool"),
        ({"t": "none", "v": None}, "a node of type none has the keys"),
        (
            {"t": "dict", "v": [[{"t": "float", "v": "3ff0000000000000"}, {"t": "none"}]]},
            "is not an int or str",
        ),
        ({"t": "dict", "v": [[{"t": "int", "v": "0x1"}, {"t": "none"}]] * 2}, "is repeated"),
        ({"t": "dict", "v": [[{"t": "int", "v": "0x1"}]]}, r"\[key, value\] pairs"),
        ({"t": "scalar", "dtype": "float32", "v": "00"}, "invalid value for a node of type scalar"),
        ({"t": "scalar", "dtype": "bool", "v": "02"}, "invalid value for a node of type scalar"),
        ({"t": "list", "v": [{"t": "tuple", "v": {}}]}, r"at obj\[0\]: invalid value"),
    ],
)
def test_malformed_manifest_nodes_raise_checkpoint_error(node: Any, message: str) -> None:
    data = to_bytes(None)
    with pytest.raises(CheckpointError, match=message):
        load_bytes(with_manifest(data, read_manifest(data) | {"root": node}))


def test_manifest_nested_too_deeply_raises_checkpoint_error() -> None:
    depth = sys.getrecursionlimit() + 10
    root = '{"t":"list","v":[' * depth + '{"t":"none"}' + "]}" * depth
    text = '{"format":"npoptim-checkpoint","version":1,"root":' + root + "}"
    members = members_of(to_bytes(None))
    members["__manifest__.npy"] = npy_bytes(np.frombuffer(text.encode(), dtype=np.uint8))
    with pytest.raises(CheckpointError, match="nested too deeply"):
        load_bytes(build_archive(members))


def array_checkpoint() -> tuple[bytes, Any]:
    data = to_bytes({"w": np.arange(6.0).reshape(2, 3)})
    return data, read_manifest(data)


def test_reference_to_a_missing_array_raises_checkpoint_error() -> None:
    data, manifest = array_checkpoint()
    manifest["root"]["v"][0][1]["name"] = "arr_7"
    with pytest.raises(CheckpointError, match="'arr_7' names no unused array member"):
        load_bytes(with_manifest(data, manifest))


def test_two_references_to_one_array_raise_checkpoint_error() -> None:
    data, manifest = array_checkpoint()
    node = manifest["root"]["v"][0][1]
    manifest["root"] = {"t": "list", "v": [node, node]}
    with pytest.raises(CheckpointError, match="names no unused array member"):
        load_bytes(with_manifest(data, manifest))


def test_array_member_not_referenced_by_the_manifest_raises_checkpoint_error() -> None:
    data, _ = array_checkpoint()
    members = members_of(data) | {"arr_1.npy": npy_bytes(np.zeros(2))}
    with pytest.raises(CheckpointError, match=r"not referenced by the manifest: \['arr_1.npy'\]"):
        load_bytes(build_archive(members))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("dtype", "float32", "has dtype float64, the manifest says float32"),
        ("shape", [3, 2], r"has shape \(2, 3\), the manifest says \(3, 2\)"),
        ("shape", [2, -3], "non-negative ints"),
        ("name", "__manifest__", "names no unused array member"),
    ],
)
def test_array_node_disagreeing_with_its_member_raises_checkpoint_error(
    field: str, value: Any, message: str
) -> None:
    data, manifest = array_checkpoint()
    manifest["root"]["v"][0][1][field] = value
    with pytest.raises(CheckpointError, match=message):
        load_bytes(with_manifest(data, manifest))


def test_array_member_with_missing_data_raises_checkpoint_error() -> None:
    data, _ = array_checkpoint()
    members = members_of(data)
    members["arr_0.npy"] = members["arr_0.npy"][:-8]
    with pytest.raises(CheckpointError, match="does not hold exactly 6 values"):
        load_bytes(build_archive(members))


def test_member_claiming_more_bytes_than_the_archive_holds_is_refused_before_reading() -> None:
    data = bytearray(to_bytes(np.zeros(2)))
    entry = data.rindex(b"PK\x01\x02")  # the central directory entry of arr_0.npy
    assert data[entry + 46 : entry + 55] == b"arr_0.npy"
    data[entry + 24 : entry + 28] = struct.pack("<I", 2**31)  # its uncompressed size
    with pytest.raises(CheckpointError, match="claims 2147483648 bytes"):
        load_bytes(bytes(data))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"{[]: 1}", "malformed .npy header"),
        (b"(((", "malformed .npy header"),
        (b"{'descr': '<f8', 'fortran_order': False, 'shape': (True,)}", r"invalid shape \(True,\)"),
        (b"{'descr': '<f8', 'fortran_order': False, 'shape': (-1,)}", r"invalid shape \(-1,\)"),
        (b"{'descr': '|O', 'fortran_order': False, 'shape': (1,)}", "has dtype object"),
        (b"{'descr': '<f8', 'fortran_order': False, 'shape': 10**10}", "malformed .npy header"),
        (b"{'descr': (), 'fortran_order': False, 'shape': (1,)}", "malformed .npy header"),
    ],
)
def test_malformed_npy_headers_raise_checkpoint_error(header: bytes, message: str) -> None:
    members = members_of(to_bytes(np.zeros(1)))
    payload = members["arr_0.npy"]
    length = struct.unpack("<H", payload[8:10])[0]
    members["arr_0.npy"] = (
        payload[:8] + struct.pack("<H", len(header)) + header + payload[10 + length :]
    )
    with pytest.raises(CheckpointError, match=message):
        load_bytes(build_archive(members))


def test_bool_array_member_with_bytes_other_than_0_and_1_raises_checkpoint_error() -> None:
    members = members_of(to_bytes(np.array([True, False])))
    members["arr_0.npy"] = npy_bytes(np.array([1, 2], dtype=np.uint8)).replace(b"|u1", b"|b1")
    with pytest.raises(CheckpointError, match="bool values other than 0 and 1"):
        load_bytes(build_archive(members))


def test_compressed_members_raise_checkpoint_error() -> None:
    data, _ = array_checkpoint()
    recompressed = build_archive(members_of(data), compression=zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="compressed or encrypted"):
        load_bytes(recompressed)


def test_duplicate_member_names_raise_checkpoint_error() -> None:
    data, _ = array_checkpoint()
    members = members_of(data)
    buffer = io.BytesIO()
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(buffer, "w") as zf:
        for name, payload in [*members.items(), ("arr_0.npy", members["arr_0.npy"])]:
            zf.writestr(name, payload)
    with pytest.raises(CheckpointError, match="same name"):
        load_bytes(buffer.getvalue())


def test_sparse_gradients_round_trip(tmp_path: pathlib.Path) -> None:
    grad = SparseGrad(np.array([4, 1, 4]), np.arange(6.0).reshape(3, 2), (5, 2))
    save({"momentum_buffer": grad}, tmp_path / "sparse.npz")
    loaded = load(tmp_path / "sparse.npz")["momentum_buffer"]
    assert isinstance(loaded, SparseGrad) and loaded.shape == (5, 2)
    np.testing.assert_array_equal(loaded.indices, grad.indices)
    np.testing.assert_array_equal(loaded.values, grad.values)
    assert loaded.values.dtype == grad.values.dtype


def test_an_invalid_sparse_gradient_in_a_file_raises_checkpoint_error(
    tmp_path: pathlib.Path,
) -> None:
    # indices out of range for the shape: refused by SparseGrad, reported as a bad file
    path = tmp_path / "bad.npz"
    save({"g": SparseGrad(np.array([4]), np.ones((1, 2)), (5, 2))}, path)
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    manifest = json.loads(np.load(io.BytesIO(members["__manifest__.npy"])).tobytes())
    shape_node = manifest["root"]["v"][0][1]["v"][2]
    shape_node["v"][0] = {"t": "int", "v": hex(2)}
    text = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.save(buf, text)
    members["__manifest__.npy"] = buf.getvalue()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(CheckpointError, match="invalid sparse gradient"):
        load(path)
