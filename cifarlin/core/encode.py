"""Extraction: the features of images under a :class:`~cifarlin.core.kmeans.FeatureMap`.

Per image, every p x p x 3 patch (stride 1: P x P positions, P = 33 - p) is normalised and
whitened, encoded against the map's k atoms, and the codes are summed over a pool x pool grid
of the positions:

- "triangle": f_j = max(0, mean_i(z_i) - z_j), z_j = |w - c_j| (Coates, Lee and Ng 2011);
- "relu": f_j = max(0, w . d_j - alpha); "split": that and max(0, -w . d_j - alpha), the two
  polarities (Coates and Ng 2011's soft threshold): 2 k codes a position.

The cells of the grid: rows (and columns) [floor(i P / g), ceil((i + 1) P / g)), which the
mirror maps onto each other (for P = 27, g = 2: 0-13 and 13-26, the middle one in both), but
for 2 x 2 without the mirror: quadrants split 14 + 13 (Coates' round(27 / 2)), as the first
format's maps. The
features are ordered (grid row, grid column, polarity, atom). With ``mirror`` the features of
atom j < k/2 in cell (r, c) are the mean of its own and those of its mirror atom j + k/2 in
cell (r, g - 1 - c): the image's and its mirror image's features averaged.

Cost: one float32 GEMM per block of images (2 P^2 x 3p^2 x k flops an image, the whitening
folded into it for relu and split; for the triangle a second, small one whitens), and a few
elementwise passes over the (P^2 n, k) block, which is sized to stay in cache. Blocks run on
several threads, one BLAS thread each.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from cifarlin.core.kmeans import FeatureMap, Progress, _check_images, all_patches, normalise_patches
from cifarlin.core.normalize import empty_rows
from cifarlin.errors import bad_value, check_stop

BLOCK_BYTES = 6 << 20  # the (positions, k) code block of one extraction step
PASS_BYTES = 1 << 20  # relu and split: a pass's two (positions, atoms) blocks, in a core's L2


def cells(fmap: FeatureMap) -> list[tuple[int, int]]:
    """The pooling grid's [start, stop) rows (the same for columns)."""
    P, g = fmap.positions, fmap.pool
    if g == 2 and not fmap.mirror:  # the first format's quadrants
        h = (P + 1) // 2
        return [(0, h), (h, P)]
    return [(i * P // g, -(-(i + 1) * P // g)) for i in range(g)]


def _pool(z: np.ndarray, n: int, P: int, edges: list[tuple[int, int]], out: np.ndarray) -> None:
    """Sums of codes z (n P^2, c) over the grid's cells into out (n, g, g, c)."""
    c = z.shape[1]
    rows = z.reshape(n, P, P * c)
    for i, (a, b) in enumerate(edges):
        band = rows[:, a:b].sum(axis=1).reshape(n, P, c)  # (n, P, c)
        for j, (lo, hi) in enumerate(edges):
            out[:, i, j] = band[:, lo:hi].sum(axis=1)


def extract_block(fmap: FeatureMap, images: np.ndarray) -> np.ndarray:
    """Features (n, n_features) float32 of a few images (n, 3072) uint8: the whole pipeline on
    one block (a pure function of its arguments: one task of a scheduler, e.g. a Dask delayed call)."""
    images = _check_images(images)
    n, p, P, k, g = len(images), fmap.patch, fmap.positions, fmap.k, fmap.pool
    edges = cells(fmap)
    zero = np.zeros(k, dtype=np.float32)  # NumPy's maximum is ~3x faster against a row than a scalar
    v = normalise_patches(all_patches(images, p), fmap.norm_eps)  # (n P^2, 3p^2)
    if fmap.encoder == "triangle":
        zca, shift, right = fmap._plan
        x = np.empty((len(v), v.shape[1] + 2), dtype=np.float32)  # [whitened v, |v|^2, 1]
        w = x[:, :-2]
        np.matmul(v, zca, out=w)
        w -= shift
        x[:, -2] = np.einsum("ij,ij->i", w, w)
        x[:, -1] = 1.0
        z = x @ right  # (n P^2, k) squared distances
        np.maximum(z, zero, out=z)  # rounding can leave -1e-6 where a patch sits on a centroid
        np.sqrt(z, out=z)
        mu = z.mean(axis=1, keepdims=True)  # (n P^2, 1)
        np.subtract(mu, z, out=z)
        np.maximum(z, zero, out=z)  # triangle activation
        out = np.empty((n, g, g, 1, k), dtype=np.float32)
        _pool(z, n, P, edges, out[:, :, :, 0])
    else:
        M, bias, _ = fmap._plan  # (3p^2, k), (k,)
        pols = 2 if fmap.encoder == "split" else 1
        out = np.empty((n, g, g, pols, k), dtype=np.float32)
        step = atoms_per_pass(len(v), k)
        buf = np.empty(2 * len(v) * step, dtype=np.float32)  # two (n P^2, step) blocks, reused
        for j in range(0, k, step):  # a few atoms at a time: their codes stay in cache
            m = min(step, k - j)
            z = buf[: len(v) * m].reshape(len(v), m)
            t = buf[len(v) * step : len(v) * (step + m)].reshape(len(v), m)
            np.matmul(v, M[:, j : j + m], out=z)  # (n P^2, m): w . d_j + bias_j
            np.subtract(z, bias[j : j + m] + np.float32(fmap.alpha), out=t)  # w . d - alpha
            np.maximum(t, zero[:m], out=t)
            _pool(t, n, P, edges, out[:, :, :, 0, j : j + m])
            if pols == 2:
                np.subtract(bias[j : j + m] - np.float32(fmap.alpha), z, out=t)  # -w . d - alpha
                np.maximum(t, zero[:m], out=t)
                _pool(t, n, P, edges, out[:, :, :, 1, j : j + m])
    if fmap.mirror:
        h = k // 2
        out = (out[..., :h] + out[:, :, ::-1, :, h:]) * np.float32(0.5)
    return out.reshape(n, fmap.n_features)


def atoms_per_pass(rows: int, k: int) -> int:
    """Atoms whose codes the relu and split encoders compute in one pass over ``rows`` patch
    positions: two (rows, atoms) float32 blocks within :data:`PASS_BYTES` (a core's L2 cache), in
    multiples of 16 (the GEMM kernel's width), at least 16."""
    return min(k, max(16, PASS_BYTES // (8 * rows) // 16 * 16))


def block_size(fmap: FeatureMap) -> int:
    """Images per extraction block: the (positions, k) codes (two of them for relu and split)
    within :data:`BLOCK_BYTES`."""
    blocks = 1 if fmap.encoder == "triangle" else 2
    return max(1, BLOCK_BYTES // (4 * blocks * fmap.positions**2 * fmap.k))


def extract(
    fmap: FeatureMap,
    images: np.ndarray,
    chunk: int | None = None,
    workers: int = 2,
    out: np.ndarray | None = None,
    on_rows: Progress | None = None,
) -> np.ndarray:
    """Features (N, n_features) float32 of images (N, 3072) uint8, ``chunk`` images at a time
    (default :func:`block_size`), written into ``out`` when given (e.g. a memory map).

    Blocks run on ``workers`` threads with one BLAS thread each: NumPy releases the GIL in the
    GEMM and in the elementwise passes, and small GEMMs use a second BLAS thread poorly. Each
    block is computed alone, so the bits do not depend on ``workers`` or the machine's cores
    (another ``chunk`` may change the last bit: BLAS picks its kernels by matrix size). Memory
    beyond the output: a (P^2 chunk, k) float32 block and its patches per block in flight (at
    most 2 per worker). ``on_rows(done, N)`` reports progress from the calling thread; Ctrl-C
    cancels the blocks not started."""
    from threadpoolctl import threadpool_limits

    images = _check_images(images)
    N = len(images)
    if out is None:
        out = empty_rows((N, fmap.n_features), np.float32)
    elif out.shape != (N, fmap.n_features) or out.dtype != np.float32:
        raise bad_value("out", out.shape, f"expected ({N}, {fmap.n_features}) float32")
    chunk = chunk or block_size(fmap)
    if not 1 <= workers <= 64 or chunk < 1:
        raise bad_value("workers", workers, "use 1 to 64 workers and chunks of at least 1 image")

    def run(s: int) -> int:
        out[s : s + chunk] = extract_block(fmap, images[s : s + chunk])
        return min(chunk, N - s)

    done, pending = 0, deque()
    fmap._plan  # noqa: B018 - computed once here rather than racing in the threads
    with (
        threadpool_limits(limits=1, user_api="blas"),
        ThreadPoolExecutor(workers, "cifarlin-features") as pool,
    ):
        try:
            for s in [*range(0, N, chunk), None]:
                if s is not None:
                    pending.append(pool.submit(run, s))
                while pending and (s is None or len(pending) > 2 * workers):
                    done += pending.popleft().result()
                    check_stop()
                    if on_rows is not None:
                        on_rows(done, N)
        except BaseException:
            for f in pending:
                f.cancel()
            raise
    return out
