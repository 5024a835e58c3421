"""One-hot ridge regression in closed form: the exact optimum of the linear layer in seconds.

    W, b = argmin_{W, b}  ||Z W^T + 1 b^T - Y||^2 / n  +  lam ||W||^2        (b not penalised)

Z (n, d) are the normalised training rows z = (x - shift) / scale, Y (n, K) the one-hot labels.
With the centred rows Zc = Z - 1 zbar^T and Yc = Y - 1 ybar^T, A = Zc^T Zc / n (d, d) and
B = Zc^T Yc / n (d, K):

    W^T = (A + lam I)^{-1} B,   b = ybar - W zbar.

Everything comes from sufficient statistics of the raw rows (:class:`Moments`: n, sum x, sum x x^T,
sum x y^T), streamed in blocks in float64. For uint8 pixels every product and every sum is an
integer below 2**53, so float64 GEMMs compute them exactly, whatever the blocking or the BLAS
threads; the centring (n G - s s^T) is then done in int64, also exactly.

Augmentation is folded into the statistics without making a single augmented image: a view is a
gather ``x[src]`` (:mod:`cifarlin.core.augment`), so its Gram matrix is ``G[src][:, src]``, its cross
term ``C[src]`` and its sum ``s[src]``; :func:`fold` sums them over every view. That is the
exact optimum over the augmented set, the expectation over the views gradient descent draws.

One eigendecomposition A = Q diag(e) Q^T (:func:`path`) then gives the solution for any lambda
in O(d^2 K) (milliseconds: :meth:`RidgePath.solve`), and the validation scores of a whole lambda
grid from one (n_val, d) x (d, r) product (:func:`choose_lambda`). When the views include the
flip and the normalisation is itself flip-symmetric, A commutes with the flip and B is
flip-invariant, so the solution lives in the flip-symmetric half of the input space: a
(d/2, d/2) eigenproblem, an eighth of the work, with the same W.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from cifarlin.core import augment
from cifarlin.core.augment import Augment
from cifarlin.core.normalize import Normalizer
from cifarlin.errors import bad_value

K = 10
BLOCK = 4096  # rows converted to float64 at a time: 100 MB for 3072 inputs
PANEL = 4096  # inputs per BLAS call of the Gram update (gram_update)


@dataclass(frozen=True)
class Moments:
    """Sufficient statistics of rows x (d,) with one-hot targets y (K,), in raw units.

    ``integer``: every entry is an exact integer (accumulated from uint8 rows). ``perm``: an
    involution of the inputs (the flip) under which the statistics are invariant, or None.
    """

    n: int
    sx: np.ndarray  # (d,)    sum_i x_i
    G: np.ndarray  # (d, d)  sum_i x_i x_i^T
    C: np.ndarray  # (d, K)  sum_i x_i y_i^T
    counts: np.ndarray  # (K,) sum_i y_i: rows per class
    integer: bool = False
    perm: np.ndarray | None = None

    @property
    def d(self) -> int:
        return len(self.sx)

    def __add__(self, other: Moments) -> Moments:
        """The statistics of both sets of rows (e.g. of two batch files computed apart, as
        scheduler tasks); add before :func:`fold`."""
        if self.G.shape != other.G.shape or self.C.shape != other.C.shape:
            raise bad_value("moments", other.G.shape, f"do not match {self.G.shape}")
        return Moments(
            self.n + other.n,
            self.sx + other.sx,
            self.G + other.G,
            self.C + other.C,
            self.counts + other.counts,
            self.integer and other.integer,
        )


def gram_update(G: np.ndarray, X: np.ndarray, panel: int | None = None) -> None:
    """G (d, d) += X^T X for rows X (m, d), in place, in panels of ``panel`` inputs (default
    :data:`PANEL`): a symmetric rank-m update (BLAS syrk, NumPy sees the transposed pair) of
    each diagonal panel, one product (gemm) for each panel above it, mirrored below.

    Up to ``panel`` inputs this is the one syrk it was; the panels keep every BLAS call at most
    ``panel`` wide: OpenBLAS 0.3.31's multithreaded syrk with its SkylakeX (AVX-512) kernels
    writes out of bounds at 16,000 inputs (a segfault, measured: 1,024 or 2,048 rows; fine at
    14,000, on one thread, or with the Haswell kernels)."""
    d = X.shape[1]
    panel = panel or PANEL
    for i in range(0, d, panel):
        Xi = X[:, i : i + panel]  # (m, p)
        G[i : i + panel, i : i + panel] += Xi.T @ Xi  # syrk
        for j in range(i + panel, d, panel):
            B = Xi.T @ X[:, j : j + panel]  # (p, q) gemm
            G[i : i + panel, j : j + panel] += B
            G[j : j + panel, i : i + panel] += B.T


def moments(chunks: Iterable[tuple[np.ndarray, np.ndarray]], k: int = K, block: int = BLOCK) -> Moments:
    """Moments of row blocks (rows (n, d): uint8 pixels or float features; labels (n,) in 0..k-1).

    The rows go to float64 ``block`` at a time; the Gram matrix gets a symmetric rank-``block``
    update per block, in place (:func:`gram_update`). Memory: the (d, d) sums and one float64
    block."""
    G = sx = C = None
    n, integer, counts = 0, True, np.zeros(k)
    for rows, labels in chunks:
        rows, labels = np.asarray(rows), np.asarray(labels)
        if rows.ndim != 2 or len(rows) != len(labels) or (G is not None and rows.shape[1] != len(sx)):
            raise bad_value("rows", rows.shape, f"expected (n, d) rows with n = {len(labels)} labels")
        if len(labels) and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= k):
            raise bad_value("labels", f"{labels.min()}..{labels.max()}", f"must be integers 0 to {k - 1}")
        if G is None:
            d = rows.shape[1]
            G, sx, C = np.zeros((d, d)), np.zeros(d), np.zeros((d, k))
        integer &= rows.dtype == np.uint8
        for start in range(0, len(rows), block):
            X = rows[start : start + block].astype(np.float64)  # (m, d)
            Y = np.zeros((len(X), k))
            Y[np.arange(len(X)), labels[start : start + block]] = 1.0  # (m, K) one-hot
            gram_update(G, X)  # (d, d) += X^T X
            C += X.T @ Y  # (d, K)
            sx += X.sum(axis=0)
        n += len(rows)
        counts += np.bincount(labels, minlength=k)
    if G is None or n == 0:
        raise bad_value("rows", 0, "no rows to learn from")
    return Moments(n, sx, G, C, counts, bool(integer))


def _check_pixels(m: Moments, what: str) -> None:
    if m.d != augment.D:
        raise bad_value("augment", what, f"pixel views need {augment.D} pixel inputs, not {m.d} (features?)")


def fold(m: Moments, aug: Augment) -> Moments:
    """The moments of every view of every row (:func:`augment.views`), from those of the rows.

    Views are summed group by group (a view is the flip, then the shift): with H the sum over
    flips, the total is sum over shifts s of H[s][:, s]. Exact for integer moments.
    """
    if not aug.active:
        return m
    _check_pixels(m, str(aug))
    G, C, sx = m.G, m.C, m.sx
    if aug.flip:
        f = augment.flip_index()
        G = G + G[np.ix_(f, f)]
        C, sx = C + C[f], sx + sx[f]
    if aug.translate:
        Gs, Cs, ss = np.zeros_like(G), np.zeros_like(C), np.zeros_like(sx)
        for dx, dy in augment.shifts(aug.translate):
            s = augment.shift_index(dx, dy)
            Gs += G[np.ix_(s, s)]
            Cs += C[s]
            ss += sx[s]
        G, C, sx = Gs, Cs, ss
    v = aug.n_views
    perm = augment.flip_index() if aug.flip else None
    return Moments(m.n * v, sx, G, C, m.counts * v, m.integer, perm)


def _centred(m: Moments) -> tuple[np.ndarray, np.ndarray]:
    """n^2 times the covariance (d, d) and the centred cross term (d, K): n G - s s^T and
    n C - s c^T, in int64 when the moments are integers (exact), else in float64."""
    if m.integer and m.n * float(m.G.max(initial=0)) < 2**62 and float(m.sx.max(initial=0)) ** 2 < 2**62:
        s, c = m.sx.astype(np.int64), m.counts.astype(np.int64)
        G = m.G.astype(np.int64)
        G *= m.n
        G -= np.multiply.outer(s, s)
        C = m.C.astype(np.int64) * m.n - np.multiply.outer(s, c)
        return G.astype(np.float64), C.astype(np.float64)
    return m.n * m.G - np.multiply.outer(m.sx, m.sx), m.n * m.C - np.multiply.outer(m.sx, m.counts)


def normalizer(m: Moments) -> Normalizer:
    """The pixel normaliser of the rows the moments describe (augmented ones included):
    x -> (x / 255 - mean) / std with their exact per-input mean and (population) std, as
    :meth:`Normalizer.fit` computes from the images themselves. A constant input gets std 1."""
    _check_pixels(m, "normalizer")
    n = m.n
    if m.integer:
        s = m.sx.astype(np.int64)
        num = (np.diagonal(m.G).astype(np.int64) * n - s * s).astype(np.float64)  # exact in int64
    else:
        num = np.diagonal(m.G) * n - m.sx * m.sx
    mean = m.sx / (255.0 * n)
    std = np.sqrt(np.maximum(num, 0.0) / (255.0 * n) ** 2)
    std[std == 0] = 1.0
    return Normalizer(mean=mean, std=std)


def pixel_affine(norm: Normalizer) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) of a normaliser: z = (x - shift) / scale for raw rows x (uint8 pixels, or
    features with scale 1)."""
    return norm.scale * norm.mean, norm.scale * norm.std


@dataclass(frozen=True)
class RidgePath:
    """The eigendecomposition of A and what the solution needs: W, b for any lambda."""

    evals: np.ndarray  # (r,)    eigenvalues of A (r = d, or d/2 in the flip-symmetric half)
    basis: np.ndarray  # (d, r)  their orthonormal eigenvectors, in the input space
    proj: np.ndarray  # (r, K)  basis^T B
    zbar: np.ndarray  # (d,)    mean normalised row
    ybar: np.ndarray  # (K,)    mean target (class frequencies)
    yy: float  # trace(Yc^T Yc) / n
    n: int

    @property
    def cutoff(self) -> float:
        """Eigenvalues (plus lambda) below this count as zero: the minimum-norm solution."""
        return max(float(self.evals.max(initial=0.0)), 1e-300) * len(self.zbar) * np.finfo(np.float64).eps

    def _gain(self, lam: float) -> np.ndarray:
        """1 / (e + lam) per eigenvalue (r,), 0 where e + lam is numerically 0."""
        if not (np.isfinite(lam) and lam >= 0):
            raise bad_value("lam", lam, "the penalty weight must be a finite number >= 0")
        den = self.evals + lam
        keep = den > self.cutoff
        out = np.zeros_like(den)
        out[keep] = 1.0 / den[keep]
        return out

    def solve(self, lam: float) -> tuple[np.ndarray, np.ndarray]:
        """W (K, d) and b (K,), float64, in the normalised input space."""
        Wt = self.basis @ (self.proj * self._gain(lam)[:, None])  # (d, K)
        W = np.ascontiguousarray(Wt.T)  # (K, d)
        return W, self.ybar - W @ self.zbar

    def objective(self, lam: float) -> float:
        """The training objective at the optimum, ||Z W^T + b - Y||^2 / n + lam ||W||^2, without
        a pass over the data: yy - sum_i |proj_i|^2 / (e_i + lam)."""
        return float(self.yy - (self._gain(lam) * (self.proj**2).sum(axis=1)).sum())


def path(m: Moments, shift: np.ndarray, scale: np.ndarray, overwrite: bool = False) -> RidgePath:
    """Eigendecompose A for inputs normalised as z = (x - shift) / scale (both (d,)).

    Uses the flip-symmetric half when ``m.perm`` is set and ``scale`` is invariant under it
    (exactly: e.g. the normaliser of the augmented set, :func:`normalizer`); otherwise the whole
    (d, d) problem, which gives the same solution more slowly.

    With ``overwrite`` the moments' Gram sums ``m.G`` (of float rows) become A in place, a band
    of rows at a time, the same operations on each entry: no other (d, d) array is made before
    the eigendecomposition, which itself holds four (a copy, the eigenvectors, a workspace of
    two); 16,000 features: 10 GB instead of 14. ``m`` is spent."""
    d, n = m.d, m.n
    shift = np.asarray(shift, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    if shift.shape != (d,) or scale.shape != (d,) or not (scale > 0).all():
        raise bad_value("scale", scale.shape, f"shift and scale must be ({d},), scale > 0")
    if overwrite and not m.integer:
        Gc, Cc = m.G, m.n * m.C - np.multiply.outer(m.sx, m.counts)
        for i in range(0, d, BLOCK):  # as _centred and the division below, by bands of rows
            rows = Gc[i : i + BLOCK]  # (b, d)
            rows *= n
            rows -= np.multiply.outer(m.sx[i : i + BLOCK], m.sx)
            rows /= np.multiply.outer(scale[i : i + BLOCK], scale) * (float(n) * n)
    else:
        Gc, Cc = _centred(m)  # n^2 A scale scale^T (d, d), n^2 B scale (d, K)
        Gc /= np.multiply.outer(scale, scale) * (float(n) * n)  # A (d, d)
    Cc /= scale[:, None] * (float(n) * n)  # B (d, K)
    zbar = (m.sx / n - shift) / scale  # (d,)
    ybar = m.counts / n  # (K,)
    yy = float(1.0 - ybar @ ybar)  # one-hot rows: |y|^2 = 1
    p = m.perm
    if p is not None and np.array_equal(scale, scale[p]) and not (p == np.arange(d)).any():
        reps = np.flatnonzero(np.arange(d) < p)  # (d/2,) one input of each pair
        A = (
            Gc[np.ix_(reps, reps)] + Gc[np.ix_(reps, p[reps])]
        )  # U^T A U (d/2, d/2), U = (e_i + e_p(i))/sqrt 2
        B = np.sqrt(2.0) * Cc[reps]  # U^T B: B is flip-invariant
        del Gc
        evals, Q = np.linalg.eigh(A)  # (d/2,), (d/2, d/2)
        basis = np.empty((d, len(reps)))
        basis[reps] = Q / np.sqrt(2.0)
        basis[p[reps]] = Q / np.sqrt(2.0)
        proj = Q.T @ B
    else:
        evals, basis = np.linalg.eigh(Gc)  # (d,), (d, d)
        proj = basis.T @ Cc
    return RidgePath(np.maximum(evals, 0.0), basis, proj, zbar, ybar, yy, n)


@dataclass(frozen=True)
class LambdaScore:
    """One candidate of the validation search."""

    lam: float
    val_acc: float
    objective: float  # training objective at the optimum (MSE + penalty)


def lambda_grid(lo: float = 1e-5, hi: float = 1e3, per_decade: int = 4) -> np.ndarray:
    """Log-spaced candidates from ``lo`` to ``hi``, ``per_decade`` per factor of ten."""
    n = round(np.log10(hi / lo) * per_decade) + 1
    return np.logspace(np.log10(lo), np.log10(hi), n)


def choose_lambda(
    rp: RidgePath, X_val: np.ndarray, y_val: np.ndarray, candidates: Sequence[float] | np.ndarray
) -> tuple[float, list[LambdaScore]]:
    """The candidate with the highest validation accuracy (the largest lambda on ties: the
    smoothest of the equals), and the accuracy of every candidate. ``X_val`` (n, d) is normalised
    as the training rows were. One (n, d) x (d, r) product serves every candidate."""
    X_val = np.asarray(X_val)
    y_val = np.asarray(y_val)
    if X_val.ndim != 2 or X_val.shape[1] != len(rp.zbar) or len(X_val) != len(y_val) or not len(y_val):
        raise bad_value("X_val", X_val.shape, f"expected (n, {len(rp.zbar)}) rows with n = {len(y_val)} > 0")
    if len(candidates) == 0:
        raise bad_value("lam", "[]", "no candidate values")
    T = (X_val.astype(np.float64) - rp.zbar) @ rp.basis  # (n, r)
    table = []
    for lam in candidates:
        S = T @ (rp.proj * rp._gain(float(lam))[:, None]) + rp.ybar  # (n, K)
        acc = float((S.argmax(axis=1) == y_val).mean())
        table.append(LambdaScore(float(lam), acc, rp.objective(float(lam))))
    best = max(table, key=lambda s: (s.val_acc, s.lam))
    return best.lam, table


def fit_pixels(
    chunks: Iterable[tuple[np.ndarray, np.ndarray]], aug: Augment = Augment(), norm: Normalizer | None = None
) -> tuple[RidgePath, Normalizer]:
    """The path of uint8 image blocks (images (n, 3072), labels (n,)) folded over ``aug``'s
    views. ``norm`` defaults to the normaliser of the (augmented) training set itself, which is
    flip-symmetric and so halves the eigenproblem when ``aug.flip``."""
    m = fold(moments(chunks), aug)
    norm = normalizer(m) if norm is None else norm
    return path(m, *pixel_affine(norm)), norm
