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
# exp and log: assumed within 4 ulp (glibc's are within 1 ulp; NumPy's SIMD versions within a few)
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
    """Bound on the error of inputs normalised as core.normalize.Normalizer.apply does in precision ``u``:
    x = (v - h) / c for exact v (uint8 pixels), with h = scale mean and c = scale std rounded to
    that precision first (each within u + u64: a float64 product, then a cast). The subtraction and
    the division add one rounding each, so |x^ - x| <= gamma_3 |x| + (u + u64)(1 + gamma_3) |h / c|,
    ``offset`` = h / c = mean / std."""
    g = gamma(3, u + U64)
    return g * np.abs(x) + (u + U64) * (1 + g) * np.abs(offset)


def pixel_statistics_error(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds (d,) on |Normalizer.fit's mean - x.mean(0)| and on its std against x.std(0), for
    x = pixels / 255 (n, d) float64. fit divides exact integer sums: one rounding for the mean,
    three for the std (a division, the square root's half and its own). NumPy's x is rounded once
    per entry; its mean sums n of them (sum_error(n)) and divides (u); its variance sums n squares
    of x - mean (sum_error(n), and 2 u of each square for the subtraction and the product), whose
    first-order change in the mean cancels (the deviations sum to 0), while x's own rounding
    moves it by 2 u mean(|x - mean| |x|) and the division by u; the square root halves that, + u."""
    n = len(x)
    mean, std = x.mean(axis=0), x.std(axis=0)
    mean_error = (sum_error(n, U64) + 3 * U64) * np.abs(x).mean(axis=0)
    d = x - mean
    dvar = (sum_error(n, U64) + 3 * U64) * std**2 + 2 * U64 * (np.abs(d) * np.abs(x)).mean(axis=0)
    return mean_error, dvar / (2 * np.where(std > 0, std, 1.0)) + 3 * U64 * std


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


# ---------------------------------------------------------------------------------------------
# The cost and its gradients, against the loop oracles (tests/oracles.py)
# ---------------------------------------------------------------------------------------------
#
# Each bound below covers *one* computation, cifarlin's vectorised one or the oracle's loop:
# the two differ by at most twice it. First order in u throughout (the neglected terms are
# u times smaller). K is the number of classes, N of samples.


def _row_max(E: np.ndarray) -> np.ndarray:
    return E.max(axis=1)


def loss_change(loss: str, S: np.ndarray, y: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Bound (N,) on how much each sample's loss moves when its scores (N, K) move by at most
    e (N,), by the mean value theorem: e times the largest sum_k |dl/ds_k| between the two points.

    ce     dl/ds = p - y: sum |p_k - y_k| = 2 (1 - p_y) = 2 sum_{k != y} p_k, and each p_k grows by
           at most exp(2e) on the way: 2 e exp(2e) sum_{k != y} p_k (small where the model is sure)
    bce    (1/K) sum_k |sigmoid(s_k) - y_k|, each within exp(e): (e / K) exp(e) sum_k sigmoid(-t_k s_k)
    svm    each of the K - 1 margins s_j - s_y moves by 2e, and max(0, .) is 1-Lipschitz
    mse, l2svm  sum_k 2 r_k e + e^2, r_k the residual |s_k - y_k| or the violated margin
           max(0, 1 - t_k s_k) (t_k = +1 for the true class, -1 for the others)."""
    k = S.shape[1]
    T = np.where(np.arange(k) == np.asarray(y)[:, None], 1.0, -1.0)
    if loss == "ce":
        P = np.exp(S - S.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        return 2 * e * np.exp(2 * e) * np.where(T < 0, P, 0).sum(axis=1)
    if loss == "bce":
        from cifarlin.core.losses import sigmoid

        return e * np.exp(e) * sigmoid(-T * S).sum(axis=1) / k
    if loss == "svm":
        return 2 * (k - 1) * e
    R = _residuals(loss, S, y)
    return 2 * R.sum(axis=1) * e + k * e * e


def _residuals(loss: str, S: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|s - y| (mse) or max(0, 1 - t s) (l2svm), (N, K)."""
    T = np.where(np.arange(S.shape[1]) == np.asarray(y)[:, None], 1.0, -1.0)
    if loss == "mse":
        return np.abs(S - (T + 1) / 2)
    return np.maximum(1 - T * S, 0)


def loss_rounding(loss: str, S: np.ndarray, y: np.ndarray, u: float, literal: bool = True) -> np.ndarray:
    """Bound (N,) on the rounding of evaluating each sample's loss from its scores, by
    cifarlin.core.losses or (``literal``) by the oracles' literal formulas too (the larger of the
    two), c = ELEMENTARY_ULPS:

    ce     m + log(sum exp(s - m)) - s_y, or -log(e_y / sum e): K - 1 additions, K exps, a log,
           a division and two subtractions, whose operands are at most M = max|s| + |l| + 1:
           (K + 3c + 4) u M.
    svm    each margin s_j - s_y + 1 (two roundings of at most |s_j| + |s_y| + 1) and their
           sum: u sum_j 2 (|s_j| + |s_y| + 1) + gamma_{K-1} l.
    bce    softplus and its sum: (2c + K + 2)(max|s| + 1) u, plus u l; the literal
           log(1 - sigmoid(s)) loses a relative u e^s to the subtraction: (2c + 3)(1 + e^{max s}) u.
    mse, l2svm  a subtraction, a square (3 roundings of r^2) and a K-term sum: (K + 2) u l.
    """
    k = S.shape[1]
    c = ELEMENTARY_ULPS
    from cifarlin.core.losses import LOSSES

    l = np.abs(LOSSES[loss].losses(S, y))  # noqa: E741 - the loss, as the docstring names it
    big = np.abs(S).max(axis=1)
    if loss == "ce":
        return (k + 3 * c + 4) * u * (big + l + 1)
    if loss == "svm":
        sy = np.abs(S[np.arange(len(y)), y])
        return u * 2 * (np.abs(S).sum(axis=1) + k * (sy + 1)) + gamma(k - 1, u) * l
    if loss == "bce":
        lit = (2 * c + 3) * (1 + np.exp(S.max(axis=1))) if literal else 0
        return u * ((2 * c + k + 2) * (big + 1) + lit + l)
    return (k + 2) * u * l


def cost_rounding(loss: str, W, b, X, y, lam: float, u: float, products: float | None = None) -> float:
    """Bound on |computed J - J| for J = mean_n l(x_n W^T + b, y_n) + lam |W|^2 computed with unit
    roundoff u by cifarlin.core.model.cost or by the oracles' loops (a float32 model's scores are
    float32 products, ``products`` = U32, and the rest float64): the scores' products
    (:func:`product_error`) moving each loss (:func:`loss_change`), each loss's evaluation
    (:func:`loss_rounding`), the mean over N samples (a running total of up to N K terms in the
    loops: gamma_{NK} + u of the mean |l|), the penalty (a sum of K d squares: sum_error + 2u of
    lam |W|^2), and the final addition (u of the cost)."""
    from cifarlin.core.losses import LOSSES

    W, b, X = (np.asarray(a, np.float64) for a in (W, b, X))
    S = X @ W.T + b
    e = _row_max(product_error(X, W.T, products or u, b))
    l = np.abs(LOSSES[loss].losses(S, y))  # noqa: E741
    n, k = S.shape
    per_sample = (loss_change(loss, S, y, e) + loss_rounding(loss, S, y, u)).mean()
    pen = lam * float((W * W).sum())
    mean = per_sample + (gamma(n * k, u) + u) * l.mean()
    return float(mean + (sum_error(W.size, u) + 2 * u) * pen + u * (l.mean() + pen))


def score_gradient_error(loss: str, S: np.ndarray, y: np.ndarray, e: np.ndarray, u: float) -> np.ndarray:
    """Bound (N, K) on the error of dl/dS computed from scores within e (N,) of S, by
    cifarlin.core.losses or the oracles, its rounding included (and the division by N's):

    ce     softmax's factor exp(+-2e) and its rounding (:func:`softmax_rounding`) of p
    bce    sigmoid's factor exp(+-e) and its (c + 3) u, of sigma / K
    mse, l2svm  2e: the residual moves by e, the gradient is twice it
    svm    0, but where a margin s_j - s_y + 1 lies within 2e (plus its rounding) of 0: there
           the indicator may flip, by 1 (and the true class's count with it)
    and 3 u |G| for the subtraction of the target, the division by K or N."""
    from cifarlin.core.losses import LOSSES, sigmoid

    G = np.abs(LOSSES[loss].grad(np.array(S, np.float64), y))
    k = S.shape[1]
    e = e[:, None]
    rows = np.arange(len(y))
    if loss == "ce":
        P = np.exp(S - S.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        D = P * (np.expm1(2 * e) + softmax_rounding(S, u))
    elif loss == "bce":
        D = sigmoid(S) * (np.expm1(e) + (ELEMENTARY_ULPS + 3) * u) / k
    elif loss in ("mse", "l2svm"):
        D = 2 * e * np.ones_like(S)
    else:
        sy = S[rows, y][:, None]
        near = np.abs(S - sy + 1) <= 2 * e + 4 * u * (np.abs(S) + np.abs(sy) + 1)
        near[rows, y] = False
        D = near.astype(np.float64)
        D[rows, y] = near.sum(axis=1)
    return D + 3 * u * G


def gradient_error(loss: str, W, b, X, y, lam: float, u: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounds (K, d) and (K,) on the error of dJ/dW = G^T X / N + 2 lam W and dJ/db = sum_n G_n / N
    computed with unit roundoff u by cifarlin.core.model.gradients or an oracle's loop over samples:
    the score gradient's own error (:func:`score_gradient_error`) through |X|, the N-term sums
    (sum_error(N) of |G|^T |X|), and the roundings of the division by N and of adding 2 lam W."""
    from cifarlin.core.losses import LOSSES

    W, b, X = (np.asarray(a, np.float64) for a in (W, b, X))
    n = len(X)
    S = X @ W.T + b
    e = _row_max(product_error(X, W.T, u, b))
    G = np.abs(LOSSES[loss].grad(S.copy(), y))  # (N, K)
    D = score_gradient_error(loss, S, y, e, u)
    s = sum_error(n, u)
    GX = G.T @ np.abs(X) / n  # (K, d) the magnitude of G^T X / N
    pen = 2 * lam * np.abs(W)  # (K, d)
    dW = (D.T @ np.abs(X)) / n + (s + u) * GX + u * (GX + pen) + 2 * u * pen
    db = D.sum(axis=0) / n + (s + u) * G.sum(axis=0) / n
    return dW, db


def complex_step_error(loss: str, W, b, X, y, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounds (K, d), (K,) on the rounding of complex-step gradients Im J(theta + i h) / h in
    float64 (cifarlin.core.numgrad or the oracles' complex loop). With h ~ 1e-20 the imaginary parts
    are the forward-mode derivative of J, operation by operation: a complex product's imaginary
    part a b' + a' b rounds like the product rule's two terms; exp, log and a complex division
    each round theirs by at most (2c + 6) u (the real function's c ulps twice, the cos and sin
    or atan2 with it, and Smith's division's few products). So they carry the errors of the
    analytic gradient's sums (:func:`gradient_error`) with u scaled by 2c + 6."""
    return gradient_error(loss, W, b, X, y, lam, (2 * ELEMENTARY_ULPS + 6) * U64)


# ---------------------------------------------------------------------------------------------
# The ridge solution
# ---------------------------------------------------------------------------------------------


def ridge_error(
    Z: np.ndarray, Y: np.ndarray, lam: float, W: np.ndarray, u: float = U64
) -> tuple[float, float]:
    """(eW, eJ): first-order bounds on how far a computed ridge solution W (K, d) of inputs Z
    (n, d) and one-hot targets Y (n, K) lies from the exact W* = argmin |Z W^T + b - Y|^2 / n +
    lam |W|^2 (eW, for every entry: a 2-norm bound), and its objective from the exact minimum (eJ).

    Any backward-stable method (cifarlin.core.ridge's eigendecomposition of A = Zc^T Zc / n, lstsq's
    SVD of the stacked system) returns the exact solution of (A + dA + lam I) W^T = B + dB,
    B = Zc^T Yc / n (Zc, Yc centred), with
        |dA| <= 2 (n + d) u (| |Zc|^T |Zc| | / n + lam),  |dB| <= 2 (n + d) u | |Zc|^T |Yc| | / n:
    the sums over n rows, and the factorisation's backward error p(d) u |A| (LAPACK's "modestly
    growing" p(d) taken as d), twice for lstsq's squared system. Applying the factors (products
    with d orthonormal columns) adds 2 sum_error(d) d |(A + lam I)^+| |B| to W. Then
        eW = |(A + lam I)^+| (|dA| |W| + |dB|) + that,
    with the pseudo-inverse (the minimum-norm solution where lam = 0 leaves A singular), and,
    the objective being stationary in W at the optimum (its derivatives in A and B are W^T W
    and -2 W), eJ = |dA| |W|_F^2 + 2 |dB| |W|_F, plus the evaluation's cancellation
    (sum_error(d) + 2u of the target term |Yc|^2 / n).
    """
    n, d = Z.shape
    Zc, Yc = np.abs(Z - Z.mean(axis=0)), np.abs(Y - Y.mean(axis=0))
    c = 2 * (n + d) * u
    dA = c * (np.linalg.norm(Zc.T @ Zc / n, 2) + lam)
    dB = c * np.linalg.norm(Zc.T @ Yc / n, 2)
    Zs = Z - Z.mean(axis=0)
    e = np.linalg.eigvalsh(Zs.T @ Zs / n) + lam
    inv = 1 / e[e > e.max() * d * np.finfo(np.float64).eps].min()
    nW = np.linalg.norm(W, 2)
    eW = inv * (dA * nW + dB) + 2 * sum_error(d, u) * d * inv * np.linalg.norm(
        (Zs.T @ (Y - Y.mean(axis=0))) / n, 2
    )
    fW = np.linalg.norm(W)
    eJ = dA * fW**2 + 2 * dB * fW + (sum_error(d, u) + 2 * u) * float((Yc * Yc).sum() / n)
    return float(eW), float(eJ)
