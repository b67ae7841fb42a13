"""What the mixed-layout step costs, against what reading a transposed gradient costs.

    python benchmarks/mixed_layout.py              # 40 rounds
    python benchmarks/mixed_layout.py --rounds 100

One process, 2 threads, by turns, ``--rounds`` times each (medians):

- the compiled (``fused=True``) Adam step on a 2,000 x 2,000 float32 parameter with matching
  layouts (all C-ordered), and on a Fortran-ordered one with a C-ordered gradient;
- the compiled path's copy of that gradient alone, tile by tile as the strided kernel copies
  it (runs of 512 bytes a row apart), on two threads;
- reading the same 16 MB in order, on two threads.

The mixed step reads the gradient against its layout instead of in order, and does nothing
else more, so "matched - read in order + transposed copy" estimates the mixed step from the
memory's two speeds: the ratio the strided kernel can reach on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

import npoptim
from npoptim._kernels import compiled

N = 2000


@numba.njit(nogil=True)
def _copy_tiles(addresses: Any, strides: Any, tiles: Any, buffer: Any) -> None:
    for k in range(tiles.shape[0]):
        compiled._copy_tile(addresses, strides, tiles[k], buffer, True)


@numba.njit(nogil=True)
def _read_rows(a: Any, first: int, last: int, buffer: Any) -> None:
    for i in range(first, last):
        row = a[i]
        for k in range(row.size):
            buffer[k] = row[k]


def _on_two_threads(
    f: Callable[..., None], first: tuple[Any, ...], second: tuple[Any, ...]
) -> None:
    helper = threading.Thread(target=f, args=first)
    helper.start()
    f(*second)
    helper.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    npoptim.set_num_threads(2)
    npoptim.compile_kernels(["Adam"], dtypes=[np.float32])
    rng = np.random.default_rng(0)
    optimizers = {}
    for layout in ("matched", "mixed"):
        data = rng.standard_normal((N, N)).astype(np.float32)
        w = npoptim.Parameter(np.asfortranarray(data) if layout == "mixed" else data)
        w.grad = rng.standard_normal((N, N)).astype(np.float32)
        optimizers[layout] = npoptim.Adam([w], fused=True)
    gradient = rng.standard_normal((N, N)).astype(np.float32)
    height = compiled._TILE_ROW_BYTES // gradient.itemsize
    # the gradient seen in the Fortran-ordered parameter's order: rows of stride 1, columns of N
    tiles = np.array([(0, a, min(a + height, N), 0, N) for a in range(0, N, height)], np.int64)
    addresses = np.array([gradient.ctypes.data], np.int64)
    strides = np.array([[1, N]], np.int64)
    width = compiled._TILE_COLUMNS + compiled._PADDING
    buffers = [np.empty((height, width), np.float32) for _ in range(2)]
    rows = [np.empty(N, np.float32) for _ in range(2)]
    half = len(tiles) // 2
    work: dict[str, Callable[[], object]] = {
        "matched step": optimizers["matched"].step,
        "mixed step": optimizers["mixed"].step,
        "transposed copy of 16 MB": lambda: _on_two_threads(
            _copy_tiles,
            (addresses, strides, tiles[:half], buffers[0]),
            (addresses, strides, tiles[half:], buffers[1]),
        ),
        "read of 16 MB in order": lambda: _on_two_threads(
            _read_rows, (gradient, 0, N // 2, rows[0]), (gradient, N // 2, N, rows[1])
        ),
    }
    for f in work.values():  # compiled, warmed up
        f()
    times: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(args.rounds):
        for name, f in work.items():
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    for name, value in ms.items():
        print(f"{name:26} {value:6.2f} ms")
    matched = ms["matched step"]
    estimate = matched - ms["read of 16 MB in order"] + ms["transposed copy of 16 MB"]
    print(f"mixed / matched: {ms['mixed step'] / matched:.2f}")
    print(
        f"matched - read in order + transposed copy: {estimate:.2f} ms, "
        f"{estimate / matched:.2f} x the matched step"
    )


if __name__ == "__main__":
    main()
