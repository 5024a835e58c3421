"""How far apart two computations of the same numbers may land, derived from the arithmetic.

These are the tolerances of the tests that compare floats computed two different ways: by
another code path, on matrices of another shape (another batch size, another block of rows),
on another number of threads, or in another summation order. OpenBLAS picks its kernel, and
with it the order in which a product's terms are added, by CPU and by matrix shape; the
float32 result of a (n, 3072) x (3072, K) product moves in its last bits from one to another.
Comparisons that repeat the same operations on the same shapes on the same number of threads
(a resumed run against an uninterrupted one, two runs from one seed) are exact instead, with
``np.array_equal``, and stay so: nothing here is for them.

The model of the arithmetic (Higham, *Accuracy and Stability of Numerical Algorithms*, 2002,
section 2.2): every basic operation (+, -, *, /, sqrt) returns the exact result of its rounded
operands times (1 + delta), |delta| <= u, with the unit roundoff u = 2^-24 for float32 and
2^-53 for float64. ``exp`` and ``log`` are allowed ``ELEMENTARY_ULPS`` units in the last place.

Sums and dot products. A sum of n terms t_i (a dot product x . w: its n products; plus one term
for a bias) computed in *any* order, as whatever tree of additions a BLAS kernel, its block
sizes or its threads make, is off by at most

    gamma_n * sum_i |t_i|,    gamma_n = n u / (1 - n u)          (Higham, Lemma 3.1, eq. 3.4)

For float32 and d = 3072 inputs that worst case (1.8e-4 of sum|t_i|) is too coarse to tell a
missing bias from rounding. Its errors are sums of n independent roundings of either sign,
though: each rounding error delta_k in [-u, u] multiplies a partial sum no larger than
sum|t_i|, so by Hoeffding's inequality, to first order in u,

    P(|error| > lam sqrt(n) u sum|t_i|) <= 2 exp(-lam^2 / 2)

which is Higham and Mary's probabilistic bound (SIAM J. Sci. Comput. 41, 2019, A2815),
gamma~_n(lam) = exp(lam sqrt(n) u + n u^2 / (1 - u)) - 1, valid for any order of summation.
``LAMBDA`` = 6 puts the chance that one compared number legitimately falls outside at 3e-8.
:func:`sum_error` takes the smaller of the two bounds (the deterministic one for n <= 36).

Through the model's outputs. If every score of a row is off by at most e:

    softmax: each probability by a factor within exp(+-2e)   (numerator and denominator move
             by exp(+-e) each)
    sigmoid: by a factor within exp(+-e)
    log-sum-exp and the score of one class: by at most e each, so a cross-entropy by 2e

The floats that compute these from the scores add their own few roundings (:func:`softmax_rounding`).
"""

from __future__ import annotations

import math

import numpy as np

U32 = 2.0**-24  # unit roundoff of float32
U64 = 2.0**-53  # unit roundoff of float64
LAMBDA = 6.0  # standard deviations of the probabilistic bound: 2 exp(-18) = 3e-8 per number
# exp and log: within 4 ulp (glibc's are within 1; NumPy's SIMD float64 versions within 4)
ELEMENTARY_ULPS = 4


def unit_roundoff(dtype: np.dtype | type) -> float:
    """u of a float dtype: half the distance from 1 to the next float."""
    return float(np.finfo(dtype).eps) / 2


def gamma(n: int, u: float) -> float:
    """The worst case of n roundings compounded, n u / (1 - n u) (needs n u < 1)."""
    assert n * u < 1
    return n * u / (1 - n * u)


def gamma_tilde(n: int, u: float, lam: float = LAMBDA) -> float:
    """Higham and Mary's probabilistic counterpart of :func:`gamma`: lam sqrt(n) u (to first order)."""
    return math.expm1(lam * math.sqrt(n) * u + n * u * u / (1 - u))


def sum_error(n: int, u: float) -> float:
    """Bound on |computed - exact| / sum|t_i| of a sum of n terms, in any order."""
    return min(gamma(n, u), gamma_tilde(n, u))


def product_error(A: np.ndarray, B: np.ndarray, u: float, bias: np.ndarray | None = None) -> np.ndarray:
    """Entry by entry, a bound on |fl(A @ B + bias) - (A @ B + bias)| for a product computed with
    unit roundoff ``u`` in any order (any BLAS kernel, block or thread count): sum_error(n) times
    |A| @ |B| + |bias|, n the inner dimension (plus one term for the bias). The magnitudes are
    taken in float64; their own rounding (a relative 1e-13) is far below the bound's precision."""
    A, B = np.abs(np.asarray(A, np.float64)), np.abs(np.asarray(B, np.float64))
    mag = A @ B
    n = A.shape[-1]
    if bias is not None:
        mag += np.abs(np.asarray(bias, np.float64))
        n += 1
    return sum_error(n, u) * mag


def normalised_error(x: np.ndarray, offset: np.ndarray, u: float) -> np.ndarray:
    """Bound on the error of inputs normalised as data.Normalizer.apply does in precision ``u``:
    x = (v - h) / c for exact v (uint8 pixels), with h = scale mean and c = scale std rounded to
    that precision first (each within u + u64: a float64 product, then a cast). The subtraction and
    the division add one rounding each, so |x^ - x| <= gamma_3 |x| + (u + u64)(1 + gamma_3) |h / c|,
    ``offset`` = h / c = mean / std."""
    g = gamma(3, u + U64)
    return g * np.abs(x) + (u + U64) * (1 + g) * np.abs(offset)


def softmax_rounding(S: np.ndarray, u: float = U64) -> np.ndarray:
    """Relative error one float evaluation of softmax(S) adds to each probability, S (N, K), to
    first order:
    s - max (u |s - max|, which exp turns into a relative error), exp (ELEMENTARY_ULPS u), the
    K-term sum of the denominator (gamma_{K-1}, plus its terms' own errors), the division (u)."""
    A = np.abs(S - S.max(axis=-1, keepdims=True))
    k = S.shape[-1]
    return u * (A + A.max(axis=-1, keepdims=True) + 2 * ELEMENTARY_ULPS + 1) + gamma(k - 1, u)


def softmax_error(E: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Relative bound (N, K) between two float64 softmax evaluations of scores within E (N, K) of
    each other, S (N, K) either of them: the scores move each probability by a factor within
    exp(+-2 max_k E), and each evaluation by (1 +- rho) of its own (:func:`softmax_rounding`), so
    p / p' lies within exp(2e) (1 + rho) / (1 - rho)."""
    rho = softmax_rounding(S)
    return np.expm1(2 * E.max(axis=-1, keepdims=True) + np.log1p(rho) - np.log1p(-rho))


def sigmoid_error(E: np.ndarray) -> np.ndarray:
    """Relative bound between two float64 sigmoids of scores within E of each other:
    sigma(s + e) / sigma(s) = (1 + exp(-s)) / (1 + exp(-s - e)) lies within exp(+-|e|); each
    evaluation adds its own roundings, rho = (ELEMENTARY_ULPS + 3) u64 (exp, an addition, a
    division, a product)."""
    rho = (ELEMENTARY_ULPS + 3) * U64
    return np.expm1(E + math.log1p(rho) - math.log1p(-rho))


def assert_within(got, want, bound, what: str = "values") -> float:
    """|got - want| <= bound entry by entry (arrays broadcast); returns the largest ratio of the
    difference to its bound, and says where and by how much it fails."""
    got, want, bound = (np.asarray(a, dtype=np.float64) for a in (got, want, bound))
    diff = np.abs(got - want)
    ratio = np.divide(diff, bound, out=np.where(diff > 0, np.inf, 0.0), where=bound > 0)
    worst = float(ratio.max()) if ratio.size else 0.0
    if worst > 1:
        i = np.unravel_index(int(ratio.argmax()), ratio.shape)
        raise AssertionError(
            f"{what}: {np.count_nonzero(ratio > 1)} of {ratio.size} outside the bound; at {i}: got "
            f"{float(got[i])!r}, want {float(want[i])!r}, off by {float(diff[i]):.3g} = {worst:.3g} x the "
            f"bound {float(np.broadcast_to(bound, ratio.shape)[i]):.3g}"
        )
    return worst


def outside(got, want, bound) -> bool:
    """Whether some entry of ``got`` is further from ``want`` than ``bound``: a bug the tolerance
    must still see (used to show a test keeps its teeth)."""
    got, want, bound = (np.asarray(a, dtype=np.float64) for a in (got, want, bound))
    return bool((np.abs(got - want) > bound).any())


def assert_ranked(order: np.ndarray, scores: np.ndarray, E: np.ndarray, what: str = "ranking") -> None:
    """``order`` (N, r) ranks each row of the exact ``scores`` (N, K) best first, as well as scores
    within E (N, K) of them can: the j-th class listed has an exact score within 2 max E of the
    row's j-th largest (a ranking is 1-Lipschitz in the largest error, and the listed class's own
    score is off by E too). Where the scores' gaps exceed that, this is the exact ranking."""
    best = -np.sort(-scores, axis=1)[:, : order.shape[1]]
    listed = np.take_along_axis(scores, order, axis=1)
    assert_within(listed, best, 2 * E.max(axis=1, keepdims=True), what)


def min_gap(scores: np.ndarray, ranks: int = 2) -> np.ndarray:
    """Per row, the smallest gap between consecutive scores among the ``ranks`` largest."""
    top = -np.sort(-scores, axis=1)[:, :ranks]
    return (top[:, :-1] - top[:, 1:]).min(axis=1)
