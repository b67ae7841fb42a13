"""Save and load optimizer checkpoints without pickle, at the speed of the disk.

A checkpoint is an ordinary ``.npz`` archive: a zip file of uncompressed ``.npy`` members that
``np.load(path, allow_pickle=False)`` opens. The member ``__manifest__.npy`` is a 1-d ``uint8``
array holding UTF-8 JSON::

    {"format": "npoptim-checkpoint", "version": 2, "root": <node>}

and every array of the saved object is a member ``arr_<i>.npy``. A node is a JSON object whose
``"t"`` names its type:

=========  ===========================================================================
``none``   ``{"t": "none"}``
``bool``   ``{"t": "bool", "v": true}``
``int``    ``{"t": "int", "v": "-0x1f"}``: ``hex()`` of the int, so any size is exact
``float``  ``{"t": "float", "v": "3ff0000000000000"}``: the IEEE-754 bits, big-endian hex
``str``    ``{"t": "str", "v": "lr"}``
``list``   ``{"t": "list", "v": [<node>, ...]}``; ``tuple`` the same with ``"t": "tuple"``
``dict``   ``{"t": "dict", "v": [[<int or str node>, <node>], ...]}``, in insertion order
``scalar`` ``{"t": "scalar", "dtype": "float32", "v": "0000803f"}``: little-endian bytes
``array``  ``{"t": "array", "dtype": "float32", "shape": [3, 4], "name": "arr_0"}``
``sparse`` ``{"t": "sparse", "v": [<indices>, <values>, <shape tuple>]}``: a ``SparseGrad``
=========  ===========================================================================

Format version 2 (this one) differs from version 1 only in where the bytes lie: the values of
every ``.npy`` member start at a multiple of 64 bytes from the start of the file (the local
zip header of each member is padded with an extra field, id ``0xD935``, as Android's
``zipalign`` does), so that they can be memory-mapped in place. Both versions load.

Supported dtypes are bool, int8-64, uint8-64, float16/32/64 and complex64/128. Arrays are
stored little-endian and loaded in native byte order; ``np.ndarray`` subclasses (such as
``npoptim.Parameter``) are saved as plain arrays. Containers and Python scalars must be of the
exact types above (an ``OrderedDict`` or an ``IntEnum`` is refused rather than silently changed),
and objects reached twice are saved twice. NumPy scalar types are identified by dtype, so a
platform alias such as ``np.longlong`` comes back as ``np.int64``.

Errors:

* ``save`` raises ``TypeError`` naming the key path of an unsupported value, where the root is
  called ``obj`` (``cannot save value of type function at obj['state'][3]['fn']``), and
  ``ValueError`` for a container that contains itself. It checks the whole object before it
  opens any file.
* ``load`` raises :class:`CheckpointError` (a ``ValueError``) for anything that is not a valid
  checkpoint: truncated, corrupted, foreign, pickled or newer-format files. It never unpickles
  and is strict: every member must be referenced exactly once and match its manifest entry.
  Errors from opening the file, such as ``FileNotFoundError``, propagate unchanged.

Speed and memory:

* ``save`` streams each array's buffer into the file (a C- or Fortran-ordered array is
  written from its own memory; any other one, or a big-endian one, through 1 MiB copies),
  so its extra memory is bounded whatever the size of the state. The zip CRC-32 of a member
  is computed on each 4 MiB piece while a second thread writes the piece before it, and a
  third ``fdatasync``-s the file every 32 MiB, so that the disk takes the data while the rest
  is produced: saving to a path costs about ``max(CRC-32, write, disk)`` rather than their
  sum (a file object is written in the calling thread).
* ``load`` reads each array straight into its final buffer in 4 MiB pieces and hands each
  piece to a second thread, which extends the member's CRC-32 while the next piece is read:
  one pass over the bytes, costing about ``max(read, CRC-32)`` where a core is free
  (``verify=False`` skips the CRC-32s).
* ``load(path, mmap=True)`` reads only the zip directory, the manifest and the ``.npy``
  headers, and returns arrays that are read-only views of a memory map of the file. It checks
  the structure (every member, header and array lies within the file and agrees with the
  manifest, so that no array reaches past the end of the file) but not the CRC-32s, which
  would mean reading every byte (``verify=True`` does that). Truncating the file while its
  arrays are alive is not allowed (the operating system kills a process that reads a mapped
  page past the end).

Saving to a path is atomic and durable: the archive is written to a temporary file in the same
folder, flushed, ``fsync``-ed and renamed over the target, and the folder is ``fsync``-ed, so a
failure, a crash or a power loss leaves either the old file or the new one, and no temporary
file behind. A symlink target is followed; a replaced file keeps its permission bits and a
new one gets ``0o666`` less the umask. The replaced file is held open through the rename and
closed by a thread afterwards, so that freeing its blocks does not hold up the save. Saving to
a file object writes at its current position and is not atomic.

Example:
    >>> import io, numpy as np
    >>> buf = io.BytesIO()
    >>> save({"state": {0: {"step": 3, "exp_avg": np.zeros(2)}}, "lr": 1e-3}, buf)
    >>> _ = buf.seek(0)
    >>> load(buf)
    {'state': {0: {'step': 3, 'exp_avg': array([0., 0.])}}, 'lr': 0.001}
"""

from __future__ import annotations

__all__ = ["CheckpointError", "load", "save"]

import collections
import contextlib
import io
import json
import math
import mmap as memory_map
import os
import re
import reprlib
import stat
import struct
import tempfile
import threading
import types
import zipfile
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any, Literal, NoReturn, cast

import numpy as np
import numpy.lib.format as npy

from .parameter import SparseGrad

FORMAT = "npoptim-checkpoint"
#: The format name of a sharded checkpoint's manifest (``npoptim.distributed.save_sharded``):
#: the same file layout, refused by :func:`load`.
SHARDED_FORMAT = "npoptim-sharded-checkpoint"
VERSION = 2  # 2: the values of every .npy member are aligned to _ALIGN bytes in the file
_ALIGN = 64
_PADDING_ID = 0xD935  # the zip extra field that pads a local header (as zipalign's)
_CHUNK = 1 << 22  # bytes per write or read: bounds the extra memory of save
_THREADED = 1 << 16  # members of at least this many bytes have their CRC-32 computed in a thread
_IN_FLIGHT = _CHUNK  # most bytes a save hands to its writer thread before it waits
_ASYNC_BYTES = 1 << 16  # smaller writes of a save are made in the calling thread
_SYNC_BYTES = 1 << 25  # a save fdatasyncs its file each time this many more bytes are written
_HEADER_MAX = 1 << 16  # .npy headers longer than this are refused (NumPy writes < 10000)
_MANIFEST = "__manifest__.npy"
_DTYPES = {
    name: np.dtype(name)
    for name in [
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
}
_FIELDS = {
    "none": {"t"},
    "bool": {"t", "v"},
    "int": {"t", "v"},
    "float": {"t", "v"},
    "str": {"t", "v"},
    "list": {"t", "v"},
    "tuple": {"t", "v"},
    "dict": {"t", "v"},
    "scalar": {"t", "dtype", "v"},
    "array": {"t", "dtype", "shape", "name"},
    "sparse": {"t", "v"},
}
# The .npy 1.0 header as NumPy (and save) writes it, parsed without NumPy's literal_eval
# (a tenth of the time, which counts for mmap loads of many arrays); any other header goes
# through NumPy's parser.
_NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|][a-z][0-9]+)', 'fortran_order': (False|True), "
    rb"'shape': \(([0-9]+,|[0-9]+(?:, [0-9]+)+|)\), \} *\n"
)
_NPY_DESCRS = {
    dtype.str.encode(): dtype
    for dtype in [d.newbyteorder(order) for d in _DTYPES.values() for order in ("<", ">")]
}
_INT = re.compile(r"-?0x[0-9a-f]+")
_FLOAT = re.compile(r"[0-9a-f]{16}")
_HEX = re.compile(r"(?:[0-9a-f]{2})+")
# Errors that the zip, .npy and JSON readers raise on malformed input.
_READ_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    ValueError,
    RuntimeError,
    NotImplementedError,
    OverflowError,
    struct.error,
    zlib.error,
)

PathOrFile = str | os.PathLike[str] | IO[bytes]


class CheckpointError(ValueError):
    """The file is not a valid npoptim checkpoint (truncated, corrupted, foreign or newer)."""


def _format_path(path: tuple[object, ...]) -> str:
    return "obj" + "".join(f"[{key!r}]" for key in path)


def _dtype_name(dtype: np.dtype[Any]) -> str | None:
    name = dtype.name
    return name if _DTYPES.get(name) == dtype.newbyteorder("=") else None


class _Encoder:
    """Turns an object into a JSON manifest node plus a list of arrays to store."""

    def __init__(self) -> None:
        self.arrays: list[np.ndarray[Any, Any]] = []
        self._open: set[int] = set()  # ids of the containers being encoded, to catch cycles

    def encode(self, x: object, path: tuple[object, ...]) -> dict[str, Any]:
        kind = type(x)
        if isinstance(x, np.ndarray):
            name = _dtype_name(x.dtype)
            if name is None:
                raise TypeError(f"cannot save array of dtype {x.dtype} at {_format_path(path)}")
            self.arrays.append(np.asarray(x))  # byte order is fixed when written
            return {
                "t": "array",
                "dtype": name,
                "shape": list(x.shape),
                "name": f"arr_{len(self.arrays) - 1}",
            }
        if isinstance(x, np.generic):
            name = _dtype_name(x.dtype)
            if name is None:
                raise TypeError(
                    f"cannot save value of type {kind.__name__} at {_format_path(path)}"
                )
            raw = np.asarray(x).astype(x.dtype.newbyteorder("<")).tobytes()
            return {"t": "scalar", "dtype": name, "v": raw.hex()}
        if isinstance(x, SparseGrad):
            parts = (x.indices, x.values, tuple(x.shape))
            return {"t": "sparse", "v": [self.encode(v, path) for v in parts]}
        if x is None:
            return {"t": "none"}
        if kind is bool or kind is str:
            return {"t": kind.__name__, "v": x}
        if isinstance(x, int) and kind is int:
            return {"t": "int", "v": hex(x)}
        if kind is float:
            return {"t": "float", "v": struct.pack(">d", x).hex()}
        if kind is list or kind is tuple or kind is dict:
            if id(x) in self._open:
                raise ValueError(
                    f"cannot save a container that contains itself at {_format_path(path)}"
                )
            self._open.add(id(x))
            try:
                return {"t": kind.__name__, "v": self._encode_items(x, path)}
            finally:
                self._open.discard(id(x))
        raise TypeError(f"cannot save value of type {kind.__name__} at {_format_path(path)}")

    def _encode_items(self, x: Any, path: tuple[object, ...]) -> list[Any]:
        if type(x) is not dict:
            return [self.encode(item, (*path, i)) for i, item in enumerate(x)]
        items = []
        for key, value in x.items():
            if type(key) is not int and type(key) is not str:
                raise TypeError(
                    f"cannot save dict key {key!r} of type {type(key).__name__} at "
                    f"{_format_path(path)} (keys must be int or str)"
                )
            items.append([self.encode(key, path), self.encode(value, (*path, key))])
        return items


def save(obj: object, f: PathOrFile) -> None:
    """Save a nested structure of containers, scalars and NumPy arrays without pickle.

    Arrays are streamed into the file from their own memory: saving a state of any size
    needs no more than a few MiB of extra memory.

    Args:
        obj: dicts (int or str keys), lists, tuples, ``None``, bool, int, float, str, NumPy
            scalars and arrays of a supported dtype, nested in any way; a ``state_dict``.
        f: a path (written atomically and durably) or a binary file object (written at its
            position, neither atomically nor fsync-ed).

    Raises:
        TypeError: a value, dict key or array dtype is not supported; the message names its
            key path from ``obj``. Nothing has been written.
        ValueError: a list, tuple or dict contains itself. Nothing has been written.
        OSError: writing failed; a file at the path ``f`` is left as it was. A missing
            folder raises ``FileNotFoundError`` naming the path ``f``.

    Example:
        >>> save({"optimizer": {"state": {}, "param_groups": []}}, "ckpt.npz")  # doctest: +SKIP
    """
    _save(obj, f, FORMAT)


def _save(obj: object, f: PathOrFile, fmt: str) -> None:
    """:func:`save` with the manifest's format name ``fmt``."""
    encoder = _Encoder()
    root = encoder.encode(obj, ())
    manifest = {"format": fmt, "version": VERSION, "root": root}
    text = json.dumps(manifest, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    members = [(_MANIFEST, np.frombuffer(text.encode("ascii"), dtype=np.uint8))]
    members += [(f"arr_{i}.npy", a) for i, a in enumerate(encoder.arrays)]
    if not isinstance(f, (str, os.PathLike)):
        _write_archive(f, members)
        return
    target = os.path.realpath(os.fsdecode(os.fspath(f)))
    folder = os.path.dirname(target)
    try:
        fd, tmp = tempfile.mkstemp(
            dir=folder, prefix=f".{os.path.basename(target)}.", suffix=".tmp"
        )
    except OSError as error:  # name the file asked for, not the temporary one
        problem = "does not exist" if isinstance(error, FileNotFoundError) else error.strerror
        raise type(error)(
            error.errno, f"cannot save: the folder {folder!r} {problem}", os.fspath(f)
        ) from error
    replaced = None
    try:
        with _DurableFile(fd) as fh:
            _write_archive(cast(IO[bytes], fh), members)
        os.chmod(tmp, _mode_for(target))
        replaced = _hold(target)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if replaced is not None:
            os.close(replaced)
        raise
    with contextlib.suppress(OSError):  # some systems can't open or fsync a directory
        dir_fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    if replaced is not None:
        threading.Thread(target=os.close, args=(replaced,), name="npoptim-free").start()


def _hold(target: str) -> int | None:
    """The file a save replaces, held open (POSIX), so that the rename does not free its
    blocks (tens of milliseconds for a checkpoint of hundreds of MB): a thread closes it after
    the save, and the system frees them then. None where there is no such file, or where an
    open file cannot be renamed over (Windows)."""
    if os.name != "posix":
        return None
    try:
        return os.open(target, os.O_RDONLY)
    except OSError:
        return None


class _DurableFile(io.RawIOBase):
    """The temporary file of a save, written on a second thread while the caller goes on.

    zipfile computes each member's CRC-32 in the calling thread, piece by piece, before it
    writes the piece: here each large piece (``_ASYNC_BYTES`` or more) is handed to one writer
    thread, which copies it into the page cache (``os.pwrite`` at the piece's offset in the
    file) while the caller computes the CRC-32 of the next piece; both release the GIL. Small
    writes (zip headers, small arrays) are made at once in the calling thread, where handing
    them over would cost more than they take; one that overlaps a piece still waiting (the
    local header zipfile rewrites after its member's data never does) waits for it first.
    Every ``_SYNC_BYTES`` written, a third thread ``fdatasync``-s what is written so far, so
    the disk takes the data while the rest is produced and the final ``fsync`` has little
    left to do. A save then costs about ``max(CRC-32, copy, disk)`` instead of their sum.
    Without ``os.pwrite`` (Windows) every write is made in the calling thread.

    The pieces are not copied (zipfile hands over views of the arrays being saved, which the
    save holds); at most ``_IN_FLIGHT`` bytes wait for the writer, so a piece that is a copy
    (a non-contiguous array's) adds a bounded amount of memory. An error of the writer or of
    a sync is raised by a later write, seek or the close; :meth:`close` waits for every
    write, fsyncs the file and closes it, and raises the first error."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd, self.position = fd, 0
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="npoptim-write")
        self.syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="npoptim-sync")
        # the writes handed to the writer: (future, offset, size), oldest first
        self.pending: collections.deque[tuple[Future[None], int, int]] = collections.deque()
        self.waiting = 0  # their bytes
        self.unsynced = 0
        self.sync: Future[None] | None = None
        # the writer thread and the calling thread (small writes) both count and start syncs
        self.sync_lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET:
            raise io.UnsupportedOperation("a checkpoint being saved is sought from its start")
        self._collect(self.waiting)  # no wait: each write carries its offset
        self.position = offset
        return offset

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        start, size = self.position, view.nbytes
        self.position += size
        if size >= _ASYNC_BYTES and hasattr(os, "pwrite"):
            self._collect(_IN_FLIGHT - size)
            self.pending.append((self.writer.submit(self._write_at, view, start), start, size))
            self.waiting += size
            return size
        overlaps = any(start < at + n and at < start + size for _, at, n in self.pending)
        self._collect(0 if overlaps else self.waiting)
        self._write_at(view, start)
        return size

    def _write_at(self, view: memoryview, offset: int) -> None:
        size = len(view)
        while view:
            if hasattr(os, "pwrite"):
                written = os.pwrite(self.fd, view, offset)
            else:  # Windows: every write is made in the calling thread, one after the other
                os.lseek(self.fd, offset, os.SEEK_SET)
                written = os.write(self.fd, view)
            view, offset = view[written:], offset + written
        with self.sync_lock:  # else both threads could start a sync, and one's error be lost
            self.unsynced += size
            if self.unsynced >= _SYNC_BYTES and (self.sync is None or self.sync.done()):
                if self.sync is not None:
                    self.sync.result()  # raises the error of the last sync, if it failed
                self.unsynced = 0
                self.sync = self.syncer.submit(getattr(os, "fdatasync", os.fsync), self.fd)

    def _collect(self, limit: int) -> None:
        """Waits until at most ``limit`` bytes wait for the writer (and raises the writer's
        error); the writes that are done are checked on the way."""
        while self.pending and (self.waiting > limit or self.pending[0][0].done()):
            future, _, size = self.pending.popleft()
            self.waiting -= size
            future.result()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._collect(0)
            self.writer.shutdown()
            if self.sync is not None:
                self.sync.result()
            os.fsync(self.fd)
        finally:
            self._abandon()

    def _abandon(self) -> None:
        """Closes the file without writing what waits or syncing it (after an error: the
        file is removed); the write or sync under way ends first."""
        self.writer.shutdown(cancel_futures=True)
        self.syncer.shutdown(cancel_futures=True)
        if not self.closed:
            os.close(self.fd)
            super().close()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:  # the save failed: no point in waiting for the disk
            self._abandon()


def _mode_for(target: str) -> int:
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        umask = os.umask(0o077)  # a restrictive placeholder: other threads can't gain access
        os.umask(umask)
        return 0o666 & ~umask


def _write_archive(fh: IO[bytes], members: list[tuple[str, np.ndarray[Any, Any]]]) -> None:
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
            info.external_attr = 0o644 << 16
            _align(info, zf.start_dir)
            with zf.open(info, "w", force_zip64=True) as member:
                _write_array(member, array)


def _align(info: zipfile.ZipInfo, offset: int) -> None:
    """Pads the local header that will be written at ``offset`` so that the member's data,
    and with it the values after the 64-byte-multiple ``.npy`` header, start at a multiple
    of ``_ALIGN``. An extra field has 4 bytes of id and length, so a padding is 4 or more."""
    info.CRC = 0  # zipfile fills in the CRC and sizes after the data; the length is the same
    pad = -(offset + len(info.FileHeader(zip64=True))) % _ALIGN
    if pad:
        pad += _ALIGN if pad < 4 else 0
        info.extra = struct.pack("<HH", _PADDING_ID, pad - 4) + bytes(pad - 4)


def _write_array(member: IO[bytes], array: np.ndarray[Any, Any]) -> None:
    """Writes ``array`` as ``.npy`` (little-endian) without copying it whole.

    A C- or Fortran-contiguous little-endian array is written from its own memory in
    ``_CHUNK`` pieces; any other goes through a buffer of ``_CHUNK`` bytes.
    """
    dtype = array.dtype.newbyteorder("<")
    fortran = bool(array.flags.f_contiguous and not array.flags.c_contiguous)
    header = {"descr": npy.dtype_to_descr(dtype), "fortran_order": fortran, "shape": array.shape}
    try:
        npy.write_array_header_1_0(member, header)
    except ValueError:  # a header longer than version 1.0 allows
        npy.write_array_header_2_0(member, header)
    values = array.T if fortran else array
    if values.flags.c_contiguous and values.dtype == dtype:
        raw = values.reshape(-1).view(np.uint8)
        for start in range(0, raw.size, _CHUNK):
            member.write(raw[start : start + _CHUNK].data)
        return
    for piece in np.nditer(
        values,
        flags=["external_loop", "buffered", "zerosize_ok"],
        op_dtypes=[dtype],
        casting="equiv",
        buffersize=max(1, _CHUNK // 4 // dtype.itemsize),  # copies: see _DurableFile
        order="C",
    ):
        # a copy: the iterator reuses its buffer, and the piece may be written later
        member.write(np.array(piece, order="C").view(np.uint8).data)


def load(f: PathOrFile, *, mmap: bool = False, verify: bool | None = None) -> Any:
    """Load an object written by :func:`save`; never unpickles.

    Args:
        f: a path or a binary file object positioned at the start of a checkpoint.
        mmap: memory-map the file instead of reading it (``f`` must be a path): the arrays
            are read-only views of the file, read from disk only when used, and the load
            takes the time of reading the manifest. ``load_state_dict`` copies from them.
        verify: check every array's CRC-32. By default (``None``) on for a plain load (in
            the same pass as the reading, in a second thread) and off with ``mmap=True``
            (which would have to read every byte). ``False`` skips the check of a plain load
            (a damaged value then loads as it is, as with ``torch.load``); ``True`` with
            ``mmap=True`` reads the mapped file once to check it. The structure (every
            member, header and array within the file and as the manifest says) is always
            checked.

    Returns:
        The saved object, with the same types, dict key order, dtypes, shapes and values.
        Arrays are writeable and own their memory, or with ``mmap=True`` are read-only.

    Raises:
        CheckpointError: the file is truncated, corrupted, not a checkpoint (for example a
            pickle, or an ``.npz`` holding object arrays) or from a newer format version.
        FileNotFoundError: ``f`` is a path that does not exist (other ``OSError`` from opening
            the path propagate too).
        ValueError: ``mmap=True`` with a file object.

    Example:
        >>> state_dict = load("ckpt.npz")["optimizer"]  # doctest: +SKIP
        >>> state_dict = load("ckpt.npz", mmap=True)["optimizer"]  # doctest: +SKIP
    """
    return _load(f, mmap, FORMAT, not mmap if verify is None else verify)


def _load(f: PathOrFile, mmap: bool, fmt: str, verify: bool = True) -> Any:
    """:func:`load` of a file whose manifest's format name must be ``fmt``."""
    if isinstance(f, (str, os.PathLike)):
        with open(f, "rb") as fh:
            return _read_archive(fh, _map(fh) if mmap else None, fmt, verify)
    if mmap:
        raise ValueError("load(f, mmap=True) needs f to be a path, got a file object")
    if not getattr(f, "seekable", lambda: False)():
        return _read_archive(io.BytesIO(f.read()), None, fmt, verify)
    return _read_archive(f, None, fmt, verify)


def _map(fh: IO[bytes]) -> memory_map.mmap:
    size = os.fstat(fh.fileno()).st_size
    if size == 0:  # mmap refuses an empty file
        _fail("invalid checkpoint: the file is empty")
    return memory_map.mmap(fh.fileno(), size, access=memory_map.ACCESS_READ)


def _fail(message: str) -> NoReturn:
    raise CheckpointError(message)


def _read_archive(fh: IO[bytes], mapped: memory_map.mmap | None, fmt: str, verify: bool) -> Any:
    try:
        start = fh.tell()
        size = fh.seek(0, io.SEEK_END)  # members can't reach beyond the end of the file
        fh.seek(start)
        with zipfile.ZipFile(fh) as zf:
            infos = zf.infolist()
            reader = _Members(fh, mapped, size, verify)
            try:
                return _decode_archive(reader, infos, fmt)
            finally:
                reader.checksums.close()
    except CheckpointError:
        raise
    except RecursionError as e:
        raise CheckpointError("invalid checkpoint: nested too deeply") from e
    except _READ_ERRORS as e:
        raise CheckpointError(f"invalid checkpoint: {type(e).__name__}: {e}") from e


def _decode_archive(reader: _Members, infos: list[zipfile.ZipInfo], fmt: str) -> Any:
    decoder = _Decoder(reader, {i.filename: i for i in infos})
    if len(decoder.members) != len(infos):
        _fail("archive has two members with the same name")
    if _MANIFEST not in decoder.members:
        _fail(f"not an npoptim checkpoint: archive has no {_MANIFEST}")
    text = decoder.read_member(_MANIFEST, _DTYPES["uint8"], None).tobytes()
    reader.checksums.verify()  # the manifest's bytes are checked before they are parsed
    manifest = json.loads(text.decode("utf-8"), object_pairs_hook=_unique_keys)
    _check_header(manifest, fmt)
    obj = decoder.decode(manifest["root"], ())
    reader.checksums.verify()
    unused = sorted(set(decoder.members) - decoder.used)
    if unused:
        _fail(f"archive members not referenced by the manifest: {unused}")
    return obj


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        _fail("invalid manifest: a JSON object repeats a key")
    return result


def _check_header(manifest: Any, fmt: str) -> None:
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if found == SHARDED_FORMAT and fmt != SHARDED_FORMAT:
        _fail(
            "this is the manifest of a sharded checkpoint (format 'npoptim-sharded-checkpoint'): "
            "load it with npoptim.distributed.load_sharded(optimizer, path)"
        )
    if found != fmt:
        _fail(f"not an npoptim checkpoint: manifest format is not {fmt!r}")
    version = manifest.get("version")
    if type(version) is not int or version < 1:
        _fail(f"invalid manifest: version must be a positive int, got {version!r}")
    if version > VERSION:
        _fail(
            f"checkpoint format version {version} is newer than this npoptim reads "
            f"({VERSION}); upgrade npoptim to load it"
        )
    if manifest.keys() != {"format", "version", "root"}:
        _fail(f"invalid manifest: expected keys format, version, root, got {sorted(manifest)}")


def _parse_npy_header(
    head: bytes,
) -> tuple[tuple[int, ...], bool, np.dtype[Any], int] | None:
    """Shape, Fortran order, dtype and length of a canonical .npy 1.0 header; None for any
    other header (NumPy's parser then decides)."""
    if head[:8] != b"\x93NUMPY\x01\x00" or len(head) < 10:
        return None
    length = 10 + int.from_bytes(head[8:10], "little")
    match = _NPY_HEADER.fullmatch(head[10:length])
    if match is None or match[1] not in _NPY_DESCRS or len(head) < length:
        return None
    shape = tuple(int(n) for n in match[3].split(b",") if n)
    return shape, match[2] == b"True", _NPY_DESCRS[match[1]], length


class _Members:
    """Reads the ``.npy`` members of a stored (uncompressed) zip archive in place.

    zipfile parses the central directory; the local header of each member is read here to
    find where its bytes start, and every offset and length is checked against the size of
    the file before anything is read or mapped.
    """

    def __init__(
        self, fh: IO[bytes], mapped: memory_map.mmap | None, size: int, verify: bool
    ) -> None:
        self.fh, self.mapped, self.size = fh, mapped, size
        self.checksums = _Checksums(verify)

    def _read_at(self, offset: int, length: int) -> bytes:
        if self.mapped is not None:
            return self.mapped[offset : offset + length]
        self.fh.seek(offset)
        return self.fh.read(length)

    def _locate(self, info: zipfile.ZipInfo) -> int:
        """The offset in the file of the first byte of the member ``info``."""
        name = info.filename
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            _fail(f"member {name} is compressed or encrypted; checkpoints store members as is")
        if info.file_size != info.compress_size or info.file_size > self.size:
            _fail(f"member {name} claims {info.file_size} bytes, more than the archive holds")
        local = self._read_at(info.header_offset, 30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            _fail(f"member {name} has no local zip header where the directory says")
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"
        if self._read_at(info.header_offset + 30, name_length) != name.encode(encoding):
            _fail(f"member {name} has another name in its local zip header")
        offset: int = info.header_offset + 30 + name_length + extra_length
        if offset + info.file_size > self.size:
            _fail(f"member {name} reaches beyond the end of the file")
        return offset

    def read(
        self, info: zipfile.ZipInfo, dtype: np.dtype[Any], shape: tuple[int, ...] | None
    ) -> np.ndarray[Any, Any]:
        """The array of the ``.npy`` member ``info``, checked against ``dtype`` and ``shape``;
        read (CRC-32 checked on the way) or mapped."""
        name, offset = info.filename, self._locate(info)
        head = self._read_at(offset, min(info.file_size, _HEADER_MAX))
        parsed = _parse_npy_header(head)
        if parsed is not None:
            header_shape, fortran, header_dtype, header_size = parsed
        else:
            stream = io.BytesIO(head)
            version = npy.read_magic(stream)
            if version not in ((1, 0), (2, 0)):
                _fail(f"member {name} has unsupported .npy version {version}")
            header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            try:
                header_shape, fortran, header_dtype = header(stream)
            except Exception as e:  # numpy's parser raises many types on a hostile header
                _fail(f"member {name} has a malformed .npy header: {e}")
            header_size = stream.tell()
        if header_dtype.fields is not None or header_dtype.newbyteorder("=") != dtype:
            _fail(f"member {name} has dtype {header_dtype}, the manifest says {dtype}")
        if not all(type(n) is int and n >= 0 for n in header_shape):
            _fail(f"member {name} has an invalid shape {header_shape}")
        if shape not in (None, header_shape) or (shape is None and len(header_shape) != 1):
            _fail(f"member {name} has shape {header_shape}, the manifest says {shape}")
        count = math.prod(header_shape)
        if count * dtype.itemsize != info.file_size - header_size:
            _fail(f"member {name} does not hold exactly {count} values of {dtype}")
        if self.mapped is not None and count:
            flat = np.frombuffer(self.mapped, header_dtype, count, offset + header_size)
        else:
            flat = np.empty(count, dtype=header_dtype)
            if self.mapped is None:
                self._read_into(flat.view(np.uint8), offset + header_size, info, head[:header_size])
        if self.mapped is not None and self.checksums.enabled:
            self._check_mapped(flat.view(np.uint8), info, head[:header_size])
        if dtype.kind == "b" and np.any(flat.view(np.uint8) > 1):
            _fail(f"member {name} holds bool values other than 0 and 1")
        order: Literal["C", "F"] = "F" if fortran else "C"
        array = flat.astype(dtype, copy=False).reshape(header_shape, order=order)
        if self.mapped is not None:
            array.flags.writeable = False
        return array

    def _read_into(
        self, buffer: np.ndarray[Any, Any], offset: int, info: zipfile.ZipInfo, header: bytes
    ) -> None:
        """Fills ``buffer`` with the bytes at ``offset``, handing each piece to the CRC-32 of
        the member as it arrives (:class:`_Checksums` checks it while the next is read)."""
        view, done = buffer.data, 0
        crc = self.checksums.start(info, header)
        self.fh.seek(offset)
        readinto = cast(io.BufferedIOBase, self.fh).readinto
        while done < len(view):
            n = readinto(view[done : done + _CHUNK])
            if not n:
                _fail(f"member {info.filename} is truncated")
            self.checksums.update(crc, view[done : done + n])
            done += n

    def _check_mapped(
        self, values: np.ndarray[Any, Any], info: zipfile.ZipInfo, header: bytes
    ) -> None:
        """Hands the mapped ``values`` of a member to its CRC-32, piece by piece."""
        view, crc = values.data, self.checksums.start(info, header)
        for start in range(0, len(view), _CHUNK):
            self.checksums.update(crc, view[start : start + _CHUNK])


class _Crc:
    """The running CRC-32 of one member and the value its zip directory entry expects."""

    def __init__(self, info: zipfile.ZipInfo, header: bytes) -> None:
        self.name, self.expected, self.value = info.filename, info.CRC, zlib.crc32(header)
        self.threaded = info.file_size >= _THREADED  # all its pieces in one thread, in order

    def update(self, piece: memoryview) -> None:
        self.value = zlib.crc32(piece, self.value)


class _Checksums:
    """Checks the CRC-32 of every member read, in a second thread, while the main thread reads
    on: the pieces of all members queue up for one worker, which extends each member's running
    CRC-32 by its pieces in order. ``zlib.crc32`` releases the GIL on large buffers, as
    ``readinto`` does, so a load costs about ``max(read, CRC-32)`` instead of their sum.
    Members smaller than ``_THREADED`` bytes are checked in the calling thread (handing them
    over would cost more). :meth:`verify` waits for the worker and raises for the first
    member, in the order read, whose CRC-32 differs from the directory's; :meth:`close` stops
    the worker (after an error, without checking the pieces still queued)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.members: list[_Crc] = []
        self.worker: ThreadPoolExecutor | None = None

    def start(self, info: zipfile.ZipInfo, header: bytes) -> _Crc:
        crc = _Crc(info, header)
        self.members.append(crc)
        return crc

    def update(self, crc: _Crc, piece: memoryview) -> None:
        if not self.enabled:
            return
        if not crc.threaded:
            crc.update(piece)
            return
        if self.worker is None:
            self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="npoptim-crc32")
        self.worker.submit(crc.update, piece)  # one worker: the pieces are taken in order

    def verify(self) -> None:
        self.close(wait_for_all=True)
        members, self.members = self.members, []
        for crc in members if self.enabled else ():
            if crc.value != crc.expected:
                _fail(f"member {crc.name} fails its CRC-32 check: the file is corrupted")

    def close(self, wait_for_all: bool = False) -> None:
        if self.worker is not None:
            self.worker.shutdown(wait=True, cancel_futures=not wait_for_all)
            self.worker = None


class _Decoder:
    """Rebuilds an object from manifest nodes, reading each referenced member exactly once."""

    def __init__(self, reader: _Members, members: dict[str, zipfile.ZipInfo]) -> None:
        self.reader, self.members = reader, members
        self.used: set[str] = set()

    def decode(self, node: Any, path: tuple[object, ...]) -> Any:
        def bad(problem: str) -> NoReturn:
            _fail(f"invalid manifest at {_format_path(path)}: {problem}")

        if not isinstance(node, dict) or type(node.get("t")) is not str or node["t"] not in _FIELDS:
            bad(f"expected a node with a known type tag, got {reprlib.repr(node)}")
        tag, value = node["t"], node.get("v")
        if node.keys() != _FIELDS[tag]:
            bad(f"a node of type {tag} has the keys {sorted(_FIELDS[tag])}, got {sorted(node)}")
        if tag == "none":
            return None
        if (tag == "bool" and type(value) is bool) or (tag == "str" and type(value) is str):
            return value
        if tag == "int" and type(value) is str and _INT.fullmatch(value):
            return int(value, 16)
        if tag == "float" and type(value) is str and _FLOAT.fullmatch(value):
            return struct.unpack(">d", bytes.fromhex(value))[0]
        if tag in ("list", "tuple") and type(value) is list:
            items = [self.decode(item, (*path, i)) for i, item in enumerate(value)]
            return items if tag == "list" else tuple(items)
        if tag == "dict" and type(value) is list:
            result: dict[int | str, Any] = {}
            for item in value:
                if type(item) is not list or len(item) != 2:
                    bad("dict items must be [key, value] pairs")
                key = self.decode(item[0], path)
                if (type(key) is not int and type(key) is not str) or key in result:
                    bad(f"dict key {reprlib.repr(key)} is not an int or str, or is repeated")
                result[key] = self.decode(item[1], (*path, key))
            return result
        if tag == "sparse" and type(value) is list and len(value) == 3:
            indices, values, shape = (self.decode(v, path) for v in value)
            if not (isinstance(indices, np.ndarray) and isinstance(values, np.ndarray)):
                bad("a sparse gradient needs index and value arrays")
            if type(shape) is not tuple or not all(type(n) is int for n in shape):
                bad(f"a sparse gradient's shape must be a tuple of ints, got {reprlib.repr(shape)}")
            try:
                return SparseGrad(indices, values, shape)
            except (ValueError, TypeError, IndexError) as error:
                bad(f"invalid sparse gradient: {error}")
        if tag in ("scalar", "array"):
            dtype = _DTYPES.get(node["dtype"]) if type(node["dtype"]) is str else None
            if dtype is None:
                bad(f"unsupported dtype {reprlib.repr(node['dtype'])}")
            if tag == "array":
                shape, name = node["shape"], node["name"]
                if type(shape) is not list or not all(type(n) is int and n >= 0 for n in shape):
                    bad(f"shape must be a list of non-negative ints, got {reprlib.repr(shape)}")
                member = f"{name}.npy" if type(name) is str else ""
                if member not in self.members or member == _MANIFEST or member in self.used:
                    bad(f"{reprlib.repr(name)} names no unused array member of the archive")
                return self.read_member(member, dtype, tuple(shape))
            if type(value) is str and _HEX.fullmatch(value):
                raw = bytes.fromhex(value)
                if len(raw) == dtype.itemsize and (dtype.kind != "b" or raw in (b"\0", b"\1")):
                    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)[0]
        bad(f"invalid value for a node of type {tag}: {reprlib.repr(value)}")

    def read_member(
        self, name: str, dtype: np.dtype[Any], shape: tuple[int, ...] | None
    ) -> np.ndarray[Any, Any]:
        """Reads the ``.npy`` member ``name``, checking it against ``dtype`` and ``shape``."""
        self.used.add(name)
        return self.reader.read(self.members[name], dtype, shape)
