"""The one-layer softmax classifier: pure NumPy functions, no I/O, no printing, no global state.

Shapes used throughout (K classes, d inputs, N samples in a batch):

    X  (N, d)  one contiguous row per image, already normalised
    y  (N,)    integer labels in 0..K-1
    W  (K, d)  weights;  b (K,)  biases
    S  (N, K)  scores  S = X W^T + b        (s = W x + b for one image)
    P  (N, K)  softmax(S)

    J(W, b) = mean_n -log P[n, y_n]  +  lam * sum(W**2)

The functions work in the dtype of their inputs (float32 for fast training, float64 for the
gradient check); reductions that produce a reported number are accumulated in float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

K = 10  # classes
D = 3072  # inputs: 32 x 32 pixels x 3 channels

Method = Literal["centred", "complex"]


def init_params(
    rng: np.random.Generator,
    K: int = K,
    d: int = D,
    std: float = 0.01,
    dtype: np.dtype | type = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """W (K, d) and b (K,) drawn from N(0, std**2), W first, from ``rng``."""
    W = rng.normal(0.0, std, size=(K, d))  # (K, d)
    b = rng.normal(0.0, std, size=K)  # (K,)
    return W.astype(dtype, copy=False), b.astype(dtype, copy=False)


def scores(W: np.ndarray, b: np.ndarray, X: np.ndarray) -> np.ndarray:
    """S = X W^T + b, (N, K).

    W^T is handed to BLAS as a contiguous (d, K') block with K padded by zero columns to a
    multiple of 8: OpenBLAS's kernels run 10 columns slower than 16 (about 10% of a training
    epoch here). The padding columns are sliced off; S is a view of the (N, K') product.
    """
    k, d = W.shape
    Wt = np.zeros((d, -(-k // 8) * 8), dtype=W.dtype)  # (d, K')
    Wt[:, :k] = W.T
    S = (X @ Wt)[:, :k]  # (N, K)
    S += b
    return S


def softmax(S: np.ndarray) -> np.ndarray:
    """Row-wise softmax of scores (N, K); shifting by the row maximum keeps exp() finite."""
    P = S - S.max(axis=1, keepdims=True)  # (N, K), entries <= 0
    np.exp(P, out=P)
    P /= P.sum(axis=1, keepdims=True)
    return P


def cross_entropy(S: np.ndarray, y: np.ndarray) -> float:
    """Mean of -log softmax(S)[n, y_n] over the N rows of S (N, K); computed in float64."""
    S = np.asarray(S, dtype=np.float64)
    m = S.max(axis=1)  # (N,)
    lse = m + np.log(np.exp(S - m[:, None]).sum(axis=1))  # (N,) log sum_k exp S[n, k]
    return float((lse - S[np.arange(len(y)), y]).mean())


def penalty(W: np.ndarray, lam: float) -> float:
    """lam * sum(W**2), accumulated in float64."""
    w = W.ravel().astype(np.float64, copy=False)
    return float(lam * (w @ w))


def loss(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy, without the penalty."""
    return cross_entropy(scores(W, b, X), y)


def cost(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, lam: float) -> float:
    """J = mean cross-entropy + lam * sum(W**2)."""
    return loss(W, b, X, y) + penalty(W, lam)


def predict(W: np.ndarray, b: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Predicted class per row, (N,)."""
    return scores(W, b, X).argmax(axis=1)


def accuracy(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    """Fraction of rows whose highest score is the true class."""
    return float((predict(W, b, X) == y).mean())


@dataclass(frozen=True)
class Metrics:
    """Cost, loss and accuracy of a model on one set of images."""

    cost: float
    loss: float
    accuracy: float


def metrics(S: np.ndarray, y: np.ndarray, W: np.ndarray, lam: float) -> Metrics:
    """Cost, loss and accuracy of scores S (N, K) for labels y (N,); W only for the penalty."""
    ce = cross_entropy(S, y)
    acc = float((S.argmax(axis=1) == y).mean())
    return Metrics(cost=ce + penalty(W, lam), loss=ce, accuracy=acc)


def evaluate(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, lam: float) -> Metrics:
    """Cost, loss and accuracy from a single pass of scores over X (N, d)."""
    return metrics(scores(W, b, X), y, W, lam)


def gradients(
    W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """Analytic gradients of J on a batch.

    With G = (P - Y) / N, where Y (N, K) is the one-hot of y:
    dJ/dW = G^T X + 2 lam W  (K, d);   dJ/db = sum_n G[n]  (K,).
    """
    N = X.shape[0]
    G = softmax(scores(W, b, X))  # (N, K), becomes P - Y then (P - Y) / N
    G[np.arange(N), y] -= 1
    G /= N
    dW = G.T @ X  # (K, d)
    if lam:
        dW += (2 * lam) * W
    db = G.sum(axis=0)  # (K,)
    return dW, db


def relative_error(ga: np.ndarray, gn: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Elementwise |ga - gn| / max(eps, |ga| + |gn|)."""
    return np.abs(ga - gn) / np.maximum(eps, np.abs(ga) + np.abs(gn))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, K: int = K) -> np.ndarray:
    """C (K, K) with C[i, j] = number of images of class i predicted as class j."""
    return np.bincount(K * y_true + y_pred, minlength=K * K).reshape(K, K)


# ---------------------------------------------------------------------------------------------
# Numerical gradients
#
# Perturbing W[i, j] by t changes only column i of the scores, by t * X[:, j]; perturbing b[i]
# changes it by t. So every perturbed cost follows from S and one column of X:
#
#   J(W + t E_ij) = mean_n [ lse(S_n + t X_nj e_i) - S_n,y_n - t X_nj [y_n = i] ]
#                   + lam * (|W|^2 + 2 t W_ij + t^2)
#   lse(S_n + u e_i) = m_n + log( sum_{k != i} exp(S_nk - m_n) + exp(S_ni - m_n + u) )
#
# with m_n the row maximum (the sum over the other classes is kept scaled, see _others). All 2 x K x (d + 1) perturbed costs are array expressions over
# (N, K, columns), evaluated in column chunks to bound memory: no Python loop over parameters.
# J(theta + h) - J(theta - h) is taken as the mean over samples of the per-sample loss
# differences (the same number, summed in another order), so the terms common to both, m_n and
# S_n,y_n, cancel exactly instead of adding rounding error to the difference.
# ---------------------------------------------------------------------------------------------


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
        raise ValueError(f"unknown method {method!r}: use 'centred' or 'complex'")
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
