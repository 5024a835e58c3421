"""Normalising the inputs: the training split's per-input mean and std (exact, from uint8 images),
and the memory the normalised splits are written into (:func:`empty_rows`).
"""

from __future__ import annotations

import errno
import mmap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cifarlin.core.model import D
from cifarlin.errors import CifarlinError

SMALL_PAGES_FROM = 16 << 20  # bytes: arrays this large are allocated by :func:`empty_rows`


def empty_rows(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """``np.empty(shape, dtype)`` for the large arrays a run fills once (the normalised splits),
    mapped with every page already in place (``MAP_POPULATE``), in the kernel's ordinary pages.

    NumPy's own allocation asks Linux for transparent huge pages for every array over 4 MB;
    where memory is fragmented (a full page cache: any machine that has been up a while) the
    kernel then compacts memory when the array is first written, and faults the pages in one by
    one otherwise. In a fresh process here, reading and normalising the three default batches
    took 0.21 s or 0.92 s that way (by luck), 0.39 s with ordinary pages faulted one by one,
    and 0.30 s populated in one call; the training loop reads them as fast.
    """
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    try:
        if n < SMALL_PAGES_FROM or not hasattr(mmap, "MAP_POPULATE"):
            return np.empty(shape, dtype=dtype)
        # anonymous and private: zero-filled, unmapped with the array's last view
        buf = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
    except (MemoryError, OSError) as e:
        if isinstance(e, OSError) and e.errno != errno.ENOMEM:
            raise
        raise CifarlinError(
            f"out of memory: cannot allocate {n / 2**20:,.0f} MB for {shape[0]:,} rows of {dtype}; "
            "free memory, or use less data (fewer --train-batches, fewer centroids)"
        ) from None
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


EXACT_ROWS = (2**32 - 1) // 255**2  # rows whose sums of squared pixels fit in uint32 (66,051)


@dataclass(frozen=True)
class Normalizer:
    """x -> (x / scale - mean) / std per input, with the training split's mean and std (d,):
    scale 255 for pixels (mean and std of x / 255, as the original work), 1 for features."""

    mean: np.ndarray
    std: np.ndarray
    scale: float = 255.0

    @classmethod
    def fit(cls, chunks: Sequence[np.ndarray]) -> Normalizer:
        """Exact per-input mean and (population) std of uint8 images given as row blocks (n, d).

        Sums of the pixel values and of their squares are exact integers, so the result does not
        depend on how the rows are split or summed. They are taken in the narrowest types that
        hold them (2.6 times faster than in int64): a square of a uint8 fits in uint16, the sums
        of up to ``EXACT_ROWS`` rows in uint32, and those go into int64 totals. A constant input
        gets std 1 (only centred).
        """
        N = sum(len(c) for c in chunks)
        s1 = np.zeros(D, dtype=np.int64)
        s2 = np.zeros(D, dtype=np.int64)
        sq = np.empty((256, D), dtype=np.uint16)  # reused: no fresh memory per block
        part1 = np.zeros(D, dtype=np.uint32)  # sums of at most EXACT_ROWS rows
        part2 = np.zeros(D, dtype=np.uint32)
        rows = 0
        for images in chunks:
            for i in range(0, len(images), len(sq)):
                block = images[i : i + len(sq)]
                if rows + len(block) > EXACT_ROWS:
                    s1 += part1
                    s2 += part2
                    part1[:] = part2[:] = rows = 0
                part1 += block.sum(axis=0, dtype=np.uint32)
                np.multiply(block, block, out=sq[: len(block)], dtype=np.uint16)
                part2 += sq[: len(block)].sum(axis=0, dtype=np.uint32)
                rows += len(block)
        s1 += part1
        s2 += part2
        mean = s1 / (255.0 * N)
        std = np.sqrt((s2 * N - s1 * s1) / (255.0 * N) ** 2)  # numerator exact in int64
        std[std == 0] = 1.0
        return cls(mean=mean, std=std)

    def apply(
        self, images: np.ndarray, dtype: np.dtype | type = np.float32, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Normalised images (N, d) in ``dtype``, written into ``out`` when given.

        Computed as (x - scale mean) / (scale std) in ``dtype`` (uint8 -> float is exact, so this
        equals (x/scale - mean) / std up to the rounding of the two constants), a block of rows at a time:
        each block is converted, shifted and scaled while it is in cache (3 passes over memory
        would cost three times as much, and the first touch of fresh memory more).
        """
        if out is None:
            out = empty_rows(images.shape, dtype)
        shift = (self.scale * self.mean).astype(out.dtype)
        scale = (self.scale * self.std).astype(out.dtype)
        rows = max(1, (1 << 21) // max(1, out.shape[1] * out.itemsize))  # about 2 MB per block
        for i in range(0, len(images), rows):
            block = out[i : i + rows]
            np.copyto(block, images[i : i + rows], casting="unsafe")
            block -= shift
            block /= scale
        return out
