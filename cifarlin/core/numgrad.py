"""Numerical gradients of the cost for every entry of W and b at once, for the gradient check.

Written out for the cross-entropy below; the hinge, binary cross-entropy, squared and squared
hinge losses follow the same plan with their own per-sample changes (``_svm_delta``,
``_bce_delta``, ``_mse_delta``, ``_l2svm_delta``), simpler because moving one score changes
only the terms that hold it.

Perturbing W[i, j] by t changes only column i of the scores, by t * X[:, j]; perturbing b[i]
changes it by t. So every perturbed cost follows from S and one column of X:

  J(W + t E_ij) = mean_n [ lse(S_n + t X_nj e_i) - S_n,y_n - t X_nj [y_n = i] ]
                  + lam * (|W|^2 + 2 t W_ij + t^2)
  lse(S_n + u e_i) = m_n + log( sum_{k != i} exp(S_nk - m_n) + exp(S_ni - m_n + u) )

with m_n the row maximum (the sum over the other classes is kept scaled, see _others). All
2 x K x (d + 1) perturbed costs are array expressions over (N, K, columns), evaluated in column
chunks to bound memory: no Python loop over parameters. J(theta + h) - J(theta - h) is taken as
the mean over samples of the per-sample loss differences (the same number, summed in another
order), so the terms common to both, m_n and S_n,y_n, cancel exactly instead of adding rounding
error to the difference.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from cifarlin.core.losses import softplus
from cifarlin.core.model import scores
from cifarlin.errors import bad_value

Method = Literal["centred", "complex"]


def _others(A0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each sample n and class i, the scores of the other classes as (m2, R), both (N, K):
    m2[n, i] = max_{k != i} A0[n, k] and R[n, i] = sum_{k != i} exp(A0[n, k] - m2[n, i]) >= 1,
    summed directly (no subtraction) and scaled so that it cannot underflow."""
    N, k = A0.shape
    top = A0.argmax(axis=1)  # (N,) the class holding the row maximum (A0 = 0 there)
    others = np.ones((N, k), dtype=bool)
    others[np.arange(N), top] = False
    second = np.where(others, A0, -np.inf).max(axis=1) if k > 1 else np.zeros(N)  # (N,)
    m2 = np.zeros_like(A0)
    m2[np.arange(N), top] = second
    R = np.exp(A0) @ (1.0 - np.eye(k))  # (N, K): for i != top, m2 = 0
    R[np.arange(N), top] = np.exp(np.where(others, A0 - second[:, None], -np.inf)).sum(axis=1)
    return m2, R


def _perturbed_lse(A0: np.ndarray, m2: np.ndarray, R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """lse(S_n + T[n, j] e_i) - m_n for every sample n, class i, column j: (N, K, c).

    A0 (N, K) = S - m; m2, R (N, K) from :func:`_others`; T (N, c) the score shifts, real (t * x)
    or imaginary (i h x). Shifting by the larger of the moved score and the others' maximum keeps
    every exp() in [0, 1] and the sum >= 1, for shifts of any size.
    """
    Ar = A0[:, :, None] + T[:, None, :]  # (N, K, c) the moved score of class i
    M = np.maximum(Ar.real, m2[:, :, None])  # (N, K, c) the maximum of the moved row
    Z = np.exp(Ar - M)
    Z += R[:, :, None] * np.exp(m2[:, :, None] - M)
    L = np.log(Z)
    L += M
    return L


def _ce_delta(S: np.ndarray, Y: np.ndarray, T: np.ndarray, method: Method) -> np.ndarray:
    """Cross-entropy: per-sample loss changes (N, K, c) when score i moves by +-T[n, j] (centred:
    l(+T) - l(-T)) or by i T (complex: Im l(s + i T))."""
    A0 = S - S.max(axis=1, keepdims=True)  # (N, K)
    m2, R = _others(A0)  # (N, K) each
    if method == "complex":
        return _perturbed_lse(A0, m2, R, T).imag - Y * T.imag[:, None, :]
    dL = _perturbed_lse(A0, m2, R, T) - _perturbed_lse(A0, m2, R, -T)  # (N, K, c)
    dL -= 2 * Y * T[:, None, :]  # the -t [y = i] terms of the two losses
    return dL


def _bce_delta(S: np.ndarray, Y: np.ndarray, T: np.ndarray, method: Method) -> np.ndarray:
    """Binary cross-entropy: moving score i changes only its own term,
    (1/K) [softplus(s_i + u) - y_i u] (plus what does not depend on u)."""
    k = S.shape[1]
    Si, U = S[:, :, None], T[:, None, :]  # (N, K, 1), (N, 1, c)
    if method == "complex":
        return (softplus(Si + U).imag - Y * U.imag) / k
    return (softplus(Si + U) - softplus(Si - U) - 2 * Y * U) / k


def _svm_margins(S: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Margins s_j - s_y + 1 (N, K), with -inf for j = y (not a term of the loss)."""
    M = S - S[np.arange(len(y)), y][:, None] + 1
    M[np.arange(len(y)), y] = -np.inf
    return M


def _svm_delta(S: np.ndarray, Y: np.ndarray, T: np.ndarray, method: Method) -> np.ndarray:
    """Hinge: moving score i != y changes only max(0, m_i + u); moving s_y by u changes every
    term by -u, so its change is minus the sum of what moving each other score would do."""
    M = _svm_margins(S, Y[:, :, 0].argmax(axis=1))[:, :, None]  # (N, K, 1)
    U = T[:, None, :]  # (N, 1, c)
    # complex: Im max(0, m + iu) = u where the margin is active (m > 0), else 0;
    # centred: max(0, m + u) - max(0, m - u), 0 for j = y (m = -inf)
    A = np.where(M > 0, U.imag, 0.0) if method == "complex" else np.maximum(M + U, 0) - np.maximum(M - U, 0)
    return A - Y * A.sum(axis=1, keepdims=True)


def _mse_delta(S: np.ndarray, Y: np.ndarray, T: np.ndarray, method: Method) -> np.ndarray:
    """Squared error: moving score i by u changes only (s_i + u - y_i)^2; the centred difference
    of that is 4 u (s_i - y_i) exactly, the complex step's imaginary part 2 u (s_i - y_i)."""
    R, U = S[:, :, None] - Y, T[:, None, :]  # (N, K, 1), (N, 1, c)
    if method == "complex":
        return ((R + U) ** 2).imag
    return (R + U) ** 2 - (R - U) ** 2


def _l2svm_delta(S: np.ndarray, Y: np.ndarray, T: np.ndarray, method: Method) -> np.ndarray:
    """Squared hinge: moving score i by u changes only max(0, 1 - t_i (s_i + u))^2, t_i = +1 for
    the true class and -1 for the others. Complex: the square of the complex margin where the real
    margin is positive (analytic there), else 0."""
    t = 2 * Y - 1  # (N, K, 1)
    M, U = 1 - t * S[:, :, None], t * T[:, None, :]  # (N, K, 1), (N, K, c): margin m - t u
    if method == "complex":
        return np.where(M > 0, (M - U) ** 2, 0).imag
    return np.maximum(M - U, 0) ** 2 - np.maximum(M + U, 0) ** 2


_DELTAS = {"ce": _ce_delta, "bce": _bce_delta, "svm": _svm_delta, "mse": _mse_delta, "l2svm": _l2svm_delta}


def numerical_gradients(
    W: np.ndarray,
    b: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    lam: float,
    h: float = 1e-6,
    method: Method = "centred",
    loss: str = "ce",
    max_elements: int = 1 << 22,
) -> tuple[np.ndarray, np.ndarray]:
    """Numerical gradients of J for every entry of W (K, d) and b (K,), in float64.

    ``centred``: (J(theta + h) - J(theta - h)) / 2h, from the costs at all 2 x K x (d + 1)
    perturbed parameter vectors. ``complex``: Im J(theta + i h) / h (use h ~ 1e-20), which has no
    cancellation error. ``max_elements`` caps the size of the (N, K, columns) work arrays.
    """
    if method not in ("centred", "complex"):
        raise bad_value("method", method, "use 'centred' or 'complex'")
    if loss not in _DELTAS:
        raise bad_value("loss", loss, f"use one of {', '.join(_DELTAS)}")
    W, b, X = (np.asarray(a, dtype=np.float64) for a in (W, b, X))
    y = np.asarray(y)
    N, d = X.shape
    k = W.shape[0]
    S = scores(W, b, X)  # (N, K)
    Y = (y[:, None] == np.arange(k)).astype(np.float64)[:, :, None]  # (N, K, 1) one-hot
    delta = _DELTAS[loss]

    def column_grads(x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
        """Gradients of the parameters whose score shift is t * x[:, j]: weights w (K, c), or
        biases (w None, no penalty). x (N, c); returns (K, c)."""
        if method == "complex":  # Im J(theta + i h) / h
            g = delta(S, Y, (1j * h) * x, method).mean(axis=0) / h
            return g if w is None else g + lam * ((w + 1j * h) ** 2).imag / h
        dJ = delta(S, Y, h * x, method).mean(axis=0)  # (K, c) = J(theta + h) - J(theta - h)
        if w is not None:
            dJ += lam * ((w + h) ** 2 - (w - h) ** 2)
        return dJ / (2 * h)

    gW = np.empty((k, d))
    step = max(1, max_elements // (N * k))
    for j0 in range(0, d, step):
        j1 = min(d, j0 + step)
        gW[:, j0:j1] = column_grads(X[:, j0:j1], W[:, j0:j1])
    gb = column_grads(np.ones((N, 1)), None)[:, 0]
    return gW, gb


def kinks(
    W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, h: float, loss: str = "svm"
) -> tuple[np.ndarray, np.ndarray]:
    """Where the loss has no derivative within the step: boolean masks (K, d) and (K,) of the
    entries whose perturbation by +-h moves some margin across 0 (|margin| <= h |x|). Only the
    hinge loss has kinks; for the others both masks are all False.

    Perturbing W[i, j] moves margin i of sample n by h x_nj when i != y_n, and every margin of n
    by -h x_nj when i = y_n. A margin of exactly 0 is a kink too (the analytic subgradient calls
    it inactive; differences straddle it).
    """
    W, b, X = (np.asarray(a, dtype=np.float64) for a in (W, b, X))
    y = np.asarray(y)
    k, d = W.shape
    if loss != "svm":
        return np.zeros((k, d), dtype=bool), np.zeros(k, dtype=bool)
    M = np.abs(_svm_margins(scores(W, b, X), y))  # (N, K), inf for j = y
    closest = M.min(axis=1)  # (N,) the margin of each sample nearest to 0
    Y = (y[:, None] == np.arange(k)).astype(np.float64)  # (N, K)

    def hit(t: np.ndarray) -> np.ndarray:
        """t (N, c) = h |x|: (K, c) entries with a crossing."""
        other = (M[:, :, None] <= t[:, None, :]).any(axis=0)  # (K, c), i != y_n
        own = Y.T @ (closest[:, None] <= t).astype(np.float64) > 0  # (K, c), i = y_n
        return other | own

    kW = np.concatenate([hit(h * np.abs(X[:, j : j + 256])) for j in range(0, d, 256)], axis=1)
    kb = hit(np.full((len(y), 1), h))[:, 0]
    return kW, kb
