"""Numerical gradients of the cost for every entry of W and b at once, for the gradient check.

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

from cifarlin.errors import bad_value
from cifarlin.model import scores

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


def numerical_gradients(
    W: np.ndarray,
    b: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    lam: float,
    h: float = 1e-6,
    method: Method = "centred",
    max_elements: int = 1 << 22,
) -> tuple[np.ndarray, np.ndarray]:
    """Numerical gradients of J for every entry of W (K, d) and b (K,), in float64.

    ``centred``: (J(theta + h) - J(theta - h)) / 2h, from the costs at all 2 x K x (d + 1)
    perturbed parameter vectors. ``complex``: Im J(theta + i h) / h (use h ~ 1e-20), which has no
    cancellation error. ``max_elements`` caps the size of the (N, K, columns) work arrays.
    """
    if method not in ("centred", "complex"):
        raise bad_value("method", method, "use 'centred' or 'complex'")
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    N, d = X.shape
    k = W.shape[0]

    S = scores(W, b, X)  # (N, K)
    A0 = S - S.max(axis=1, keepdims=True)  # (N, K)
    m2, R = _others(A0)  # (N, K) each
    Y = (y[:, None] == np.arange(k)).astype(np.float64)[:, :, None]  # (N, K, 1) one-hot

    def column_grads(x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
        """Gradients of the parameters whose score shift is t * x[:, j]: weights w (K, c), or
        biases (w None, no penalty). x (N, c); returns (K, c)."""
        if method == "complex":  # Im J(theta + i h) / h
            T = (1j * h) * x[:, None, :]  # (N, 1, c)
            g = (_perturbed_lse(A0, m2, R, T[:, 0, :]).imag - Y * T.imag).mean(axis=0) / h
            return g if w is None else g + lam * ((w + 1j * h) ** 2).imag / h
        T = h * x[:, None, :]  # (N, 1, c)
        dL = _perturbed_lse(A0, m2, R, T[:, 0, :]) - _perturbed_lse(A0, m2, R, -T[:, 0, :])  # (N, K, c)
        dL -= 2 * Y * T  # the -t x [y = i] terms of the two losses
        dJ = dL.mean(axis=0)  # (K, c) = J(theta + h) - J(theta - h)
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
