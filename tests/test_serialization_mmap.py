"""Checkpoint format 2: memory-mapped loading, aligned array data, streamed saving, old files.

The rest of the specification of ``save`` / ``load`` is in test_serialization.py; the fuzz
properties (both load modes) in test_serialization_properties.py.
"""

from __future__ import annotations

import copy
import io
import mmap
import pathlib
import struct
import tracemalloc
import zipfile
from typing import Any

import numpy as np
import pytest

import npoptim
from npoptim import Parameter, serialization
from npoptim.parameter import SparseGrad
from npoptim.serialization import CheckpointError, load, save
from test_serialization import assert_identical

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def data_offsets(path: pathlib.Path) -> dict[str, int]:
    """Where each member's bytes start in the file, from the zip headers (not from npoptim)."""
    raw = path.read_bytes()
    offsets = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            local = raw[info.header_offset : info.header_offset + 30]
            assert local[:4] == b"PK\x03\x04"
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            offsets[info.filename] = info.header_offset + 30 + name_length + extra_length
    return offsets


def npy_header_length(path: pathlib.Path, offset: int) -> int:
    raw = path.read_bytes()
    assert raw[offset : offset + 6] == b"\x93NUMPY"
    if raw[offset + 6] == 1:
        return 10 + struct.unpack("<H", raw[offset + 8 : offset + 10])[0]
    return 12 + struct.unpack("<I", raw[offset + 8 : offset + 12])[0]


def mapped_base(array: np.ndarray) -> Any:
    base: Any = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base.obj if isinstance(base, memoryview) else base


EVERYTHING = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
    "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    "strided": np.arange(20, dtype=np.int64)[::3],
    "big_endian": np.arange(5, dtype=">f8"),
    "bools": np.array([True, False, True]),
    "complex": np.array([1 + 2j, -3j], dtype=np.complex128),
    "empty": np.zeros((0, 4), dtype=np.float16),
    "scalar": np.float32(1.5),
    "sparse": SparseGrad(np.array([3, 1]), np.ones((2, 2), dtype=np.float32), (5, 2)),
    "python": [1, 2.5, "lr", None, True, (3,)],
}


# --- layout --------------------------------------------------------------------------------
def test_array_values_start_at_multiples_of_64_bytes_in_the_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ckpt.npz"
    save({"a": np.ones(3, dtype=np.float32), "b": np.ones((7, 5)), "name": "x" * 37}, path)
    offsets = data_offsets(path)
    assert set(offsets) == {"__manifest__.npy", "arr_0.npy", "arr_1.npy"}
    for offset in offsets.values():
        assert (offset + npy_header_length(path, offset)) % 64 == 0


def test_saving_into_a_file_object_at_an_odd_position_keeps_the_values_aligned() -> None:
    buffer = io.BytesIO(b"x" * 13)
    buffer.seek(13)
    save({"a": np.arange(9.0)}, buffer)
    buffer.seek(13)
    assert load(buffer)["a"].tolist() == list(np.arange(9.0))


def test_a_checkpoint_written_by_format_1_still_loads_in_both_modes() -> None:
    """tests/fixtures/checkpoint_v1.npz was written by npoptim's format-1 ``save`` (before
    arrays were aligned) from the object built here with literals."""
    expected = {
        "optimizer": {
            "state": {
                0: {"step": 3.0, "exp_avg": np.arange(12, dtype=np.float32).reshape(3, 4) / 8,
                    "exp_avg_sq": np.full((3, 4), 0.25, dtype=np.float32)},
                1: {"step": 3.0, "exp_avg": np.array([-1.5, 2.0], dtype=np.float64),
                    "exp_avg_sq": np.array([4.0, 0.0], dtype=np.float64)},
            },
            "param_groups": [{"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-08,
                              "amsgrad": False, "maximize": False, "foreach": None,
                              "params": [0, 1]}],
        },
        "big_int": -(2**70) + 5,
        "floats": [float("nan"), float("-inf"), -0.0, 1e-310],
        "text": "µ-step",
        "scalar": np.float16(0.5),
        "flags": np.array([True, False, True]),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
        "complex": np.array([1 + 2j, -3j], dtype=np.complex64),
        "empty": np.zeros((0, 5), dtype=np.uint8),
    }  # fmt: skip
    path = FIXTURES / "checkpoint_v1.npz"
    with zipfile.ZipFile(path) as zf, zf.open("__manifest__.npy") as member:
        assert b'"version":1' in member.read()
    for loaded in (load(path), load(path, mmap=True)):
        sparse = loaded.pop("sparse")
        assert_identical(loaded, expected)
        assert sparse.shape == (4, 3) and sparse.indices.tolist() == [2, 0]
        assert_identical(sparse.values, np.ones((2, 3), dtype=np.float32))


# --- mmap ----------------------------------------------------------------------------------
def test_mmap_load_returns_the_same_object_with_read_only_arrays_mapped_from_the_file(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "ckpt.npz"
    save(EVERYTHING, path)
    loaded = load(path, mmap=True)
    assert_identical(loaded["python"], EVERYTHING["python"])
    for key in ("f32", "fortran", "strided", "big_endian", "bools", "complex", "empty"):
        assert_identical(loaded[key], EVERYTHING[key])
        assert not loaded[key].flags.writeable
    assert loaded["fortran"].flags.f_contiguous
    for key in ("f32", "fortran", "complex"):  # little-endian data: views of the map itself
        assert isinstance(mapped_base(loaded[key]), mmap.mmap)
        assert loaded[key].flags.aligned
    with pytest.raises(ValueError, match="read-only"):
        loaded["f32"][0, 0] = 1.0
    assert_identical(loaded["sparse"].values, EVERYTHING["sparse"].values)


def test_mmap_arrays_see_no_later_save_over_the_same_path(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ckpt.npz"
    save({"w": np.zeros(4)}, path)
    loaded = load(path, mmap=True)
    save({"w": np.ones(4)}, path)  # a new file renamed over the old one
    assert loaded["w"].tolist() == [0.0] * 4
    assert load(path, mmap=True)["w"].tolist() == [1.0] * 4


def test_mmap_needs_a_path() -> None:
    buffer = io.BytesIO()
    save({"w": np.zeros(2)}, buffer)
    buffer.seek(0)
    with pytest.raises(ValueError, match=r"mmap=True\) needs f to be a path"):
        load(buffer, mmap=True)


def test_mmap_of_an_empty_file_raises_checkpoint_error(tmp_path: pathlib.Path) -> None:
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load(tmp_path / "empty.npz", mmap=True)


@pytest.mark.parametrize("mode", ["plain", "mmap"])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9, 0.99])
def test_a_truncated_file_raises_checkpoint_error_in_both_modes(
    tmp_path: pathlib.Path, mode: str, keep: float
) -> None:
    path = tmp_path / "ckpt.npz"
    save({"w": np.arange(5000.0), "v": np.arange(3.0)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError):
        load(path, mmap=mode == "mmap")


@pytest.mark.parametrize("mode", ["plain", "mmap"])
def test_a_local_header_pointing_past_the_end_of_the_file_is_refused_before_mapping(
    tmp_path: pathlib.Path, mode: str
) -> None:
    path = tmp_path / "ckpt.npz"
    save({"w": np.arange(1000.0)}, path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        header = zf.getinfo("arr_0.npy").header_offset
    data[header + 28 : header + 30] = struct.pack("<H", 0xFFFF)  # a huge extra field
    path.write_bytes(bytes(data))
    assert header + 30 + 0xFFFF > len(data)  # the array would start beyond the end
    with pytest.raises(CheckpointError, match="arr_0.npy"):
        load(path, mmap=mode == "mmap")


def test_a_changed_value_is_caught_by_the_crc_in_plain_mode_and_mapped_as_is_with_mmap(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "ckpt.npz"
    save({"w": np.zeros(64)}, path)
    data = bytearray(path.read_bytes())
    start = data_offsets(path)["arr_0.npy"] + npy_header_length(
        path, data_offsets(path)["arr_0.npy"]
    )
    data[start] = 0x3F
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="CRC-32"):
        load(path)
    assert load(path, mmap=True)["w"][0] != 0.0  # documented: mmap checks structure only


def flip_first_value(path: pathlib.Path) -> None:
    data = bytearray(path.read_bytes())
    offset = data_offsets(path)["arr_0.npy"]
    data[offset + npy_header_length(path, offset)] ^= 0x40
    path.write_bytes(bytes(data))


def test_verify_false_loads_a_changed_value_as_it_is_and_still_checks_the_structure(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "ckpt.npz"
    save({"w": np.zeros(64)}, path)
    flip_first_value(path)
    loaded = load(path, verify=False)["w"]
    assert loaded[0] != 0.0 and loaded.flags.writeable  # what torch.load does always
    assert np.all(loaded[1:] == 0.0)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError):
        load(truncated, verify=False)


@pytest.mark.parametrize("big", [False, True], ids=["one piece", "pieces in the thread"])
def test_verify_true_with_mmap_checks_the_crc_of_the_mapped_values(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, big: bool
) -> None:
    if big:
        monkeypatch.setattr(serialization, "_CHUNK", 1024)
        monkeypatch.setattr(serialization, "_THREADED", 512)
    path = tmp_path / "ckpt.npz"
    values = {"w": np.arange(2048.0), "empty": np.zeros((0, 3))}
    save(values, path)
    assert_identical(load(path, mmap=True, verify=True), values)
    flip_first_value(path)
    with pytest.raises(CheckpointError, match="arr_0.npy fails its CRC-32 check"):
        load(path, mmap=True, verify=True)
    assert load(path, mmap=True)["w"][0] != 0.0  # the default with mmap: structure only


def test_verify_true_with_mmap_checks_the_header_of_an_empty_array(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "ckpt.npz"
    save({"empty": np.zeros((0, 3))}, path)
    data = bytearray(path.read_bytes())
    offset = data_offsets(path)["arr_0.npy"]
    end = offset + npy_header_length(path, offset) - 1  # the padding before the header's "\n"
    assert data[end] == ord("\n") and data[end - 1] == ord(" ")
    data[end - 1] = ord("\t")  # still a valid header, with other bytes
    path.write_bytes(bytes(data))
    assert load(path, mmap=True)["empty"].shape == (0, 3)
    with pytest.raises(CheckpointError, match="arr_0.npy fails its CRC-32 check"):
        load(path, mmap=True, verify=True)


# --- loading into an optimizer ---------------------------------------------------------------
def test_load_state_dict_from_a_mapped_checkpoint_copies_into_writeable_state(
    tmp_path: pathlib.Path,
) -> None:
    params = [Parameter(np.linspace(-1, 1, 6).reshape(2, 3)), Parameter(np.ones(4))]
    opt = npoptim.Adam(params, lr=0.1)
    for _ in range(3):
        for p in params:
            p.grad = np.cos(np.asarray(p))
        opt.step()
    save({"optimizer": opt.state_dict()}, tmp_path / "ckpt.npz")
    mapped = load(tmp_path / "ckpt.npz", mmap=True)["optimizer"]
    twins = [Parameter(np.array(p)) for p in params]
    twin_opt = npoptim.Adam(twins, lr=0.1)
    twin_opt.load_state_dict(mapped)
    for p, q in zip(params, twins, strict=True):
        for key in ("exp_avg", "exp_avg_sq"):
            assert twin_opt.state[q][key].flags.writeable
            assert mapped_base(twin_opt.state[q][key]) is not mapped_base(mapped["state"][0][key])
            np.testing.assert_array_equal(twin_opt.state[q][key], opt.state[p][key])
    for group in (params, twins):
        for p in group:
            p.grad = np.sin(np.asarray(p))
    opt.step()
    twin_opt.step()
    for p, q in zip(params, twins, strict=True):
        assert np.asarray(p).tobytes() == np.asarray(q).tobytes()


def test_a_state_dict_of_read_only_views_saves_and_its_deepcopy_is_writeable(
    tmp_path: pathlib.Path,
) -> None:
    (p,) = params = [Parameter(np.arange(5.0))]
    p.grad = np.ones(5)
    opt = npoptim.Adam(params, lr=0.1)
    opt.step()
    sd = opt.state_dict()
    save(sd, tmp_path / "ckpt.npz")
    assert_identical(load(tmp_path / "ckpt.npz"), sd)
    snapshot = copy.deepcopy(sd)
    assert snapshot["state"][0]["exp_avg"].flags.writeable


# --- save streams: bounded memory ----------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: np.ones(4_000_000),  # C order: written from its own memory
        lambda: np.asfortranarray(np.ones((2000, 2000))),  # F order: the same
        lambda: np.ones((4000, 2000))[:, ::2],  # strided: through a small buffer
        lambda: np.ones(4_000_000, dtype=">f8"),  # big-endian: byte-swapped in pieces
    ],
    ids=["c-order", "f-order", "strided", "big-endian"],
)
def test_save_needs_a_few_mib_whatever_the_size_of_the_arrays(
    tmp_path: pathlib.Path, make: Any
) -> None:
    arrays = {"a": make(), "b": make()}  # 64 MB
    tracemalloc.start()  # NumPy reports its array buffers to tracemalloc
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        save(arrays, tmp_path / "ckpt.npz")
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20, peak
    loaded = load(tmp_path / "ckpt.npz")
    np.testing.assert_array_equal(loaded["a"], arrays["a"], strict=False)
