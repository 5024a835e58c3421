"""Coates and Ng's single-layer unsupervised features (AISTATS 2011, ICML 2011): learning the
map, for one linear layer on top.

A :class:`FeatureMap` holds what turns an image (3072,) uint8 into features:

1. every p x p x 3 patch (p = 6, stride 1: 27 x 27 = 729 positions), a row of 108 values in the
   order (channel, row, column), as the image row itself;
2. brightness and contrast normalised per patch: (v - mean(v)) / sqrt(var(v) + norm_eps), var
   with n - 1 (Coates' code, on pixel values 0..255, norm_eps = 10);
3. ZCA-whitened: (v - zca_mean) @ zca, zca = V diag(1 / sqrt(e + zca_eps)) V^T from the
   covariance V diag(e) V^T of the training patches (zca_eps = 0.1);
4. encoded against a dictionary of k atoms: k-means centroids of whitened patches, or whitened
   patches drawn at random; by the "triangle" f_j = max(0, mean_i(z_i) - z_j), z_j = |v - c_j|,
   or the soft threshold max(0, d_j . v - alpha), with its other polarity for "split";
5. summed over a grid of the positions (the paper: the four quadrants, 4 k features).

:func:`fit` learns a map from training images; extraction is :mod:`cifarlin.core.encode`.
:class:`FeatureStats` standardises the features as the paper does ((f - mean) / sqrt(var +
0.01), statistics of the training features).

Pure NumPy, no files: a map's HDF5 format is :mod:`cifarlin.store.featuremap`, the cache of
extracted features :mod:`cifarlin.features.cache`, a run's data as features
:mod:`cifarlin.features.prepare`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from cifarlin.core.normalize import empty_rows
from cifarlin.errors import bad_value

SIDE, CHANNELS = 32, 3
D = SIDE * SIDE * CHANNELS
CENTROID_CHOICES = (400, 1600, 4000)
MAX_CENTROIDS = 16384
MAX_PATCH = 16
MAX_POOL = 9
DICTIONARIES = ("kmeans", "patches")
ENCODERS = ("triangle", "relu", "split")
Progress = Callable[[int, int], None]  # (done, total)
Rounds = Callable[[int, int, float], None]  # (round, rounds, mean squared distance)


@dataclass(frozen=True, eq=False)
class FeatureMap:
    """What turns an image into features: whitening and dictionary, how they were learnt, and
    how patches are encoded against the dictionary and pooled (see :mod:`cifarlin.core.encode`).

    ``dictionary``: "kmeans" (centroids of whitened patches) or "patches" (whitened patches drawn
    at random). ``encoder``: "triangle" (Coates, Lee and Ng 2011: max(0, mean_j z_j - z_j),
    z_j = |v - c_j|), "relu" (max(0, d_j . v - alpha), unit-length atoms d_j) or "split" (that and
    max(0, -d_j . v - alpha): two features an atom). ``pool``: the features are summed over a
    pool x pool grid of the positions. ``mirror``: the dictionary is closed under the left-right
    mirror (atoms k/2.. are the mirrors of atoms ..k/2) and an image's features are the mean of
    its own and its mirror image's, computed from the same distances: half the features, and a
    linear layer on them is the one trained on both images and averaging both at test time."""

    centroids: np.ndarray  # (k, 3 p^2) float32, in whitened patch space: the dictionary's atoms
    zca_mean: np.ndarray  # (3 p^2,) float64, mean of the normalised training patches
    zca: np.ndarray  # (3 p^2, 3 p^2) float64, symmetric whitening matrix
    patch: int = 6
    norm_eps: float = 10.0
    zca_eps: float = 0.1
    seed: int = 0
    iterations: int = 20
    n_patches: int = 200_000
    dictionary: str = "kmeans"
    encoder: str = "triangle"
    alpha: float = 0.0
    pool: int = 2
    mirror: bool = False

    @property
    def k(self) -> int:
        return len(self.centroids)

    @property
    def channels(self) -> int:
        """Features per pooling cell: one an atom (a mirrored pair with ``mirror``), two with "split"."""
        return (2 if self.encoder == "split" else 1) * (self.k // 2 if self.mirror else self.k)

    @property
    def n_features(self) -> int:
        return self.pool * self.pool * self.channels

    @property
    def positions(self) -> int:
        return SIDE - self.patch + 1

    def params(self) -> dict[str, Any]:
        """The choices behind the map, those of the first format only where they differ from
        its fixed ones (so a map of the first format keeps its checksum)."""
        out = {f: getattr(self, f) for f in LEARNT}
        return out | {f: getattr(self, f) for f, v in LEGACY.items() if getattr(self, f) != v}

    @cached_property
    def checksum(self) -> str:
        """SHA-256 of the parameters and the arrays (little-endian): the map's identity."""
        h = hashlib.sha256(json.dumps(self.params(), sort_keys=True).encode())
        for a, dt in ((self.centroids, "<f4"), (self.zca_mean, "<f8"), (self.zca, "<f8")):
            h.update(np.ascontiguousarray(a, dtype=dt).tobytes())
        return h.hexdigest()

    @cached_property
    def _plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The encoder's products, in float32 (:mod:`cifarlin.core.encode`), for normalised
        patches v: "triangle": zca (3p^2, 3p^2), zca_mean @ zca (3p^2,) and the distances' right
        factor (3p^2 + 2, k), rows -2 c^T, then 1, then |c|^2, so that [w, |w|^2, 1] @ it =
        |w - c|^2 for the whitened patch w. Otherwise zca @ D^T (3p^2, k) and
        (zca_mean @ zca) @ D^T (k,): the whitening and the atoms' products in one,
        w . d = (v @ zca @ D^T - shift @ D^T)."""
        shift = self.zca_mean @ self.zca  # (3p^2,)
        c = self.centroids.astype(np.float64)  # (k, 3p^2)
        if self.encoder == "triangle":
            right = np.vstack([-2.0 * c.T, np.ones((1, self.k)), (c * c).sum(axis=1)[None]])
            return self.zca.astype(np.float32), shift.astype(np.float32), right.astype(np.float32)
        return (self.zca @ c.T).astype(np.float32), (shift @ c.T).astype(np.float32), np.empty(0, np.float32)

    def describe(self) -> str:
        """One line: e.g. '1600 k-means centroids, triangle encoder, 2x2 sums'."""
        what = "k-means centroids" if self.dictionary == "kmeans" else "random patches"
        atoms = f"{self.k} {what}" + (f" ({self.k // 2} and their mirrors)" if self.mirror else "")
        enc = f"{self.encoder} encoder" + ("" if self.encoder == "triangle" else f" (alpha {self.alpha:g})")
        return f"{atoms}, {enc}, {self.pool}x{self.pool} sums"


LEARNT = ("patch", "norm_eps", "zca_eps", "seed", "iterations", "n_patches")
#: The choices the first format fixed: a map with these is read and checked as before.
LEGACY: dict[str, Any] = {
    "dictionary": "kmeans",
    "encoder": "triangle",
    "alpha": 0.0,
    "pool": 2,
    "mirror": False,
}


def check_choices(dictionary: str, encoder: str, alpha: float, pool: int, mirror: bool, k: int) -> None:
    """:func:`cifarlin.errors.bad_value` naming the first choice a map cannot have."""
    if dictionary not in DICTIONARIES:
        raise bad_value("dictionary", dictionary, f"use one of {', '.join(DICTIONARIES)}")
    if encoder not in ENCODERS:
        raise bad_value("encoder", encoder, f"use one of {', '.join(ENCODERS)}")
    if not (np.isfinite(alpha) and 0 <= alpha <= 100) or (encoder == "triangle" and alpha != 0):
        raise bad_value(
            "alpha", alpha, "use 0 to 100 with the relu and split encoders (the triangle has none)"
        )
    if type(pool) is not int or not 1 <= pool <= MAX_POOL:
        raise bad_value("pool", pool, f"use 1 to {MAX_POOL} (a pool x pool grid of sums; the paper: 2)")
    if mirror and k % 2:
        raise bad_value("centroids", k, "a mirrored dictionary holds pairs: use an even number")


# ---------------------------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------------------------


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != D:
        raise bad_value("images", f"{images.dtype} {images.shape}", f"expected (n, {D}) uint8 rows")
    return images


def all_patches(images: np.ndarray, patch: int) -> np.ndarray:
    """Every patch of every image, stride 1: (n P^2, 3 p^2) float32, image-major, then row and
    column of the position (P = 33 - p); each row in the order (channel, row, column)."""
    n = len(images)
    cube = images.reshape(n, CHANNELS, SIDE, SIDE)
    win = np.lib.stride_tricks.sliding_window_view(cube, (patch, patch), axis=(2, 3))  # (n,3,P,P,p,p)
    win = win.transpose(0, 2, 3, 1, 4, 5)  # (n, P, P, 3, p, p)
    return win.reshape(-1, CHANNELS * patch * patch).astype(np.float32)


def normalise_patches(v: np.ndarray, eps: float) -> np.ndarray:
    """(v - mean) / sqrt(var + eps) per row, var with n - 1; in place on float32 rows (m, 3p^2)."""
    mean = v.mean(axis=1, keepdims=True)  # (m, 1)
    v -= mean
    var = np.einsum("ij,ij->i", v, v)[:, None] / (v.shape[1] - 1)  # (m, 1)
    v /= np.sqrt(var + eps)
    return v


def random_patches(images: np.ndarray, n: int, patch: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` patches at uniformly drawn (image, row, column): (n, 3 p^2) float32."""
    P = SIDE - patch + 1
    img = rng.integers(0, len(images), n)
    r, c = rng.integers(0, P, n), rng.integers(0, P, n)
    ch, dy, dx = np.meshgrid(np.arange(CHANNELS), np.arange(patch), np.arange(patch), indexing="ij")
    offset = ((ch * SIDE + dy) * SIDE + dx).ravel()  # (3 p^2,)
    out = np.empty((n, offset.size), dtype=np.float32)
    flat = images.reshape(-1)
    for s in range(0, n, 65536):
        base = img[s : s + 65536] * D + r[s : s + 65536] * SIDE + c[s : s + 65536]
        out[s : s + 65536] = flat[base[:, None] + offset]
    return out


# ---------------------------------------------------------------------------------------------
# Learning the map
# ---------------------------------------------------------------------------------------------


def mirror_index(patch: int) -> np.ndarray:
    """(3 p^2,) the left-right mirror of a patch row in the order (channel, row, column)."""
    return np.arange(CHANNELS * patch * patch).reshape(CHANNELS, patch, patch)[:, :, ::-1].ravel()


def zca_whitening(
    v: np.ndarray, eps: float, mirror: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and ZCA matrix (d, d) of rows v (m, d), in float64: V diag(1/sqrt(e+eps)) V^T.
    With ``mirror`` (a permutation of the d values, :func:`mirror_index`) the statistics are
    those of the rows and their mirrors together, so the whitening commutes with the mirror."""
    mean = v.mean(axis=0, dtype=np.float64)
    cov = np.zeros((v.shape[1], v.shape[1]))
    for s in range(0, len(v), 65536):
        x = v[s : s + 65536].astype(np.float64) - mean
        cov += x.T @ x
    cov /= len(v) - 1
    if mirror is not None:  # of the 2 m rows: the mirrored rows' moments are the permuted ones
        m, dm = len(v), mean[mirror] - mean  # (d,) the two halves' means are mean +- dm / 2
        cov = ((m - 1) * (cov + cov[np.ix_(mirror, mirror)]) + np.outer(dm, dm) * (m / 2)) / (2 * m - 1)
        mean = (mean + mean[mirror]) / 2
    e, V = np.linalg.eigh(cov)
    return mean, (V / np.sqrt(np.maximum(e, 0.0) + eps)) @ V.T


def kmeans(
    v: np.ndarray, k: int, iterations: int, rng: np.random.Generator, on_iteration: Rounds | None = None
) -> np.ndarray:
    """Lloyd's k-means on rows v (m, d) float32: centroids (k, d) float32.

    Starts from k distinct rows drawn from ``rng``; a centroid left without rows is moved onto a
    row drawn from ``rng`` (Coates' code sets it to zero). Assignment is the largest
    c . v - |c|^2 / 2, one GEMM per block; sums are taken per block in float64.

    ``on_iteration(round, rounds, objective)`` follows each round; the objective is the mean
    squared distance of the rows to the centroids they were assigned to in that round (before
    the update), mean |v|^2 - 2 mean(max c . v - |c|^2 / 2): read from the assignment's own
    scores, so it costs no pass more and changes nothing of the fit."""
    m, d = v.shape
    if not 1 <= k <= m:
        raise bad_value("centroids", k, f"need 1 to {m} centroids for {m} patches")
    c = v[np.sort(rng.choice(m, k, replace=False))].astype(np.float32)  # (k, d)
    block = 16384
    xa = np.empty((min(block, m), d + 1), dtype=np.float32)  # [v, 1]: the bias inside the GEMM
    xa[:, d] = 1.0
    if on_iteration is not None:  # |v|^2 summed once (the rows do not change)
        squares = float(
            sum(
                np.einsum("ij,ij->", v[s : s + block], v[s : s + block], dtype=np.float64)
                for s in range(0, m, block)
            )
        )
    for it in range(iterations):
        best = 0.0  # the sum of each row's largest score
        right = np.vstack([c.T, -0.5 * (c.astype(np.float64) ** 2).sum(axis=1)[None]]).astype(np.float32)
        sums, counts = np.zeros((k, d)), np.zeros(k, dtype=np.int64)
        for s in range(0, m, block):
            x = v[s : s + block]  # (b, d)
            xa[: len(x), :d] = x
            scores = xa[: len(x)] @ right  # (b, k) c.v - |c|^2/2
            lab = scores.argmax(axis=1)  # (b,) the largest
            if on_iteration is not None:
                best += float(np.take_along_axis(scores, lab[:, None], axis=1).sum(dtype=np.float64))
            order = np.argsort(lab, kind="stable")
            cnt = np.bincount(lab, minlength=k)
            starts = np.cumsum(cnt) - cnt
            used = np.flatnonzero(cnt)
            sums[used] += np.add.reduceat(x[order].astype(np.float64), starts[used], axis=0)
            counts += cnt
        empty = np.flatnonzero(counts == 0)
        c = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        if len(empty):
            c[empty] = v[rng.integers(0, m, len(empty))]
        if on_iteration is not None:
            on_iteration(it + 1, iterations, max(squares - 2.0 * best, 0.0) / m)
    return c


def fit(
    images: np.ndarray,
    k: int,
    seed: int = 0,
    n_patches: int = 200_000,
    iterations: int = 20,
    patch: int = 6,
    norm_eps: float = 10.0,
    zca_eps: float = 0.1,
    on_iteration: Rounds | None = None,
    dictionary: str = "kmeans",
    encoder: str = "triangle",
    alpha: float = 0.0,
    pool: int = 2,
    mirror: bool = False,
) -> FeatureMap:
    """Learn a feature map from training images (n, 3072) uint8: ``n_patches`` random patches
    normalised and whitened; a dictionary of ``k`` atoms from them: ``iterations`` rounds of
    k-means, or (``dictionary="patches"``) patches drawn at random. With ``mirror`` k / 2 atoms
    are learnt from whitening that commutes with the mirror, and their mirrors follow them. The
    relu and split encoders take the atoms scaled to unit length. All randomness from
    ``np.random.default_rng(seed)``: patches first, then the dictionary's.

    Coates' code uses 400,000 patches and 50 rounds; 200,000 and 20 gave the same accuracy
    here (0.673 against 0.671 with 400 centroids, ridge on 20,000 images) in a fifth of the time."""
    images = _check_images(images)
    if type(k) is not int or not 1 <= k <= MAX_CENTROIDS:
        raise bad_value("centroids", k, f"use 1 to {MAX_CENTROIDS} (the paper: 400, 1600, 4000)")
    check_choices(dictionary, encoder, alpha, pool, mirror, k)
    if not 1 <= patch <= MAX_PATCH:
        raise bad_value("patch", patch, f"use 1 to {MAX_PATCH} pixels")
    if not k <= n_patches <= 10_000_000:
        raise bad_value("n_patches", n_patches, f"use {k} (the centroids) to 10000000")
    if not 0 <= iterations <= 10_000:
        raise bad_value("iterations", iterations, "use 0 to 10000")
    if dictionary == "patches":
        iterations = 0  # nothing is clustered
    rng = np.random.default_rng(seed)
    v = normalise_patches(random_patches(images, n_patches, patch, rng), norm_eps)  # (m, 3p^2)
    flip = mirror_index(patch) if mirror else None
    mean, zca = zca_whitening(v, zca_eps, flip)
    v -= mean.astype(np.float32)
    v = v @ zca.astype(np.float32)
    h = k // 2 if mirror else k  # atoms learnt
    if dictionary == "kmeans":
        c = kmeans(v, h, iterations, rng, on_iteration)
    else:
        c = v[np.sort(rng.choice(len(v), h, replace=False))]
    if encoder != "triangle":
        norm = np.sqrt((c.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
        c = (c / np.maximum(norm, 1e-12)).astype(np.float32)
    if flip is not None:
        c = np.vstack([c, c[:, flip]])
    return FeatureMap(
        np.ascontiguousarray(c, dtype=np.float32),
        mean,
        zca,
        patch,
        float(norm_eps),
        float(zca_eps),
        seed,
        iterations,
        n_patches,
        dictionary,
        encoder,
        float(alpha),
        pool,
        bool(mirror),
    )


# ---------------------------------------------------------------------------------------------
# Standardising the features
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """f -> (f - mean) / std per feature, std = sqrt(var + eps) (the paper: eps = 0.01)."""

    mean: np.ndarray  # (4k,) float64
    std: np.ndarray  # (4k,) float64

    @classmethod
    def fit(cls, F: np.ndarray, eps: float = 0.01, block: int = 2048) -> FeatureStats:
        """Mean and std of feature rows F (n, 4k), accumulated in float64 by blocks."""
        n = len(F)
        if F.ndim != 2 or n == 0:
            raise bad_value("features", F.shape, "expected (n, 4k) rows, n > 0")
        s1, s2 = np.zeros(F.shape[1]), np.zeros(F.shape[1])
        for s in range(0, n, block):
            x = F[s : s + block].astype(np.float64)
            s1 += x.sum(axis=0)
            s2 += np.einsum("ij,ij->j", x, x)
        mean = s1 / n
        var = np.maximum(s2 / n - mean * mean, 0.0)
        return cls(mean, np.sqrt(var + eps))

    def apply(self, F: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Standardised rows in float32, in place when ``out is F``."""
        if F.ndim != 2 or F.shape[1] != len(self.mean):
            raise bad_value("features", F.shape, f"expected (n, {len(self.mean)}) rows")
        if out is None:
            out = empty_rows(F.shape, np.float32)
        np.subtract(F, self.mean.astype(np.float32), out=out, dtype=np.float32)
        np.divide(out, self.std.astype(np.float32), out=out)
        return out


def centroid_images(fmap: FeatureMap) -> np.ndarray:
    """The centroids as (k, p, p, 3) RGB patches in [0, 1], each scaled on its own (the
    paper's figure of whitened centroids)."""
    p = fmap.patch
    imgs = fmap.centroids.astype(np.float64).reshape(-1, CHANNELS, p, p).transpose(0, 2, 3, 1)
    lo = imgs.min(axis=(1, 2, 3), keepdims=True)
    span = imgs.max(axis=(1, 2, 3), keepdims=True) - lo
    return (imgs - lo) / np.where(span > 0, span, 1.0)
