"""The losses of a score row, as pure functions of the scores S = X W^T + b (N, K).

    ce   softmax cross-entropy     l = -log p_y,  p = softmax(s)
    svm  multi-class hinge         l = sum_{j != y} max(0, s_j - s_y + 1)
    bce  binary cross-entropy      l = -(1/K) sum_k [(1 - y_k) log(1 - sigmoid(s_k))
         per class (y one-hot)                       + y_k log sigmoid(s_k)]
    mse  squared error to the      l = sum_k (s_k - y_k)^2
         one-hot labels            (with the penalty: the objective the ridge solver minimises
                                   exactly, :mod:`cifarlin.core.ridge`)
    l2svm  one-vs-rest squared     l = sum_k max(0, 1 - t_k s_k)^2, t_k = +1 for k = y, else -1
         hinge (the L2-SVM)        (Coates and Ng's classifier on their features)

Each loss gives the per-sample losses (N,), always in float64, and dl/dS (N, K), the gradient of
each sample's loss with respect to its scores, in the dtype of S; the model turns the latter into
dJ/dW and dJ/db (see :func:`cifarlin.core.model.gradients`). Every formula is written so that no
intermediate overflows for scores of any size: log-sum-exp shifted by the row maximum, and
log sigmoid(s) = -softplus(-s), log(1 - sigmoid(s)) = -softplus(s), with softplus(s) =
max(s, 0) + log1p(exp(-|s|)).

The hinge loss has kinks: its gradient is a subgradient, the indicator of margin > 0 (a margin
of exactly 0 counts as inactive). The squared hinge has none: its derivative is continuous.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

LOSS_NAMES = ("ce", "svm", "bce", "mse", "l2svm")


def softmax(S: np.ndarray) -> np.ndarray:
    """Row-wise softmax of scores (N, K); shifting by the row maximum keeps exp() finite."""
    P = S - S.max(axis=1, keepdims=True)  # (N, K), entries <= 0
    np.exp(P, out=P)
    P /= P.sum(axis=1, keepdims=True)
    return P


def sigmoid(S: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-S)), elementwise: exp(-|s|) never overflows, and for s < 0 the form
    e / (1 + e) keeps full relative precision where 1 / (1 + exp(-s)) would too."""
    E = np.exp(-np.abs(S))  # (N, K) in (0, 1]
    P = 1 / (1 + E)
    return np.where(S >= 0, P, E * P)


def softplus(S: np.ndarray) -> np.ndarray:
    """log(1 + exp(S)), elementwise, for scores of any size (real or complex)."""
    if np.iscomplexobj(S):  # analytic on both branches: what the complex-step check needs
        return np.where(S.real > 0, S + np.log1p(np.exp(-S)), np.log1p(np.exp(S)))
    return np.maximum(S, 0) + np.log1p(np.exp(-np.abs(S)))


def _rows(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(len(y)), np.asarray(y)


# ---------------------------------------------------------------------------------------------
# Per-sample losses (N,), float64
# ---------------------------------------------------------------------------------------------


def ce_losses(S: np.ndarray, y: np.ndarray) -> np.ndarray:
    """-log softmax(S)[n, y_n] = logsumexp(S_n) - S_n,y_n for each row."""
    S = np.asarray(S, dtype=np.float64)
    m = S.max(axis=1)  # (N,)
    lse = m + np.log(np.exp(S - m[:, None]).sum(axis=1))  # (N,)
    return lse - S[_rows(y)]


def svm_losses(S: np.ndarray, y: np.ndarray) -> np.ndarray:
    """sum_{j != y} max(0, s_j - s_y + 1) for each row."""
    S = np.asarray(S, dtype=np.float64)
    M = S - S[_rows(y)][:, None] + 1  # (N, K) margins
    M[_rows(y)] = 0
    return np.maximum(M, 0).sum(axis=1)


def bce_losses(S: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(1/K) sum_k [softplus(s_k) - y_k s_k] for each row (the definition, rewritten stably:
    -log sigmoid(s) = softplus(s) - s and -log(1 - sigmoid(s)) = softplus(s))."""
    S = np.asarray(S, dtype=np.float64)
    k = S.shape[1]
    return (softplus(S).sum(axis=1) - S[_rows(y)]) / k


def mse_losses(S: np.ndarray, y: np.ndarray) -> np.ndarray:
    """sum_k (s_k - y_k)^2 for each row, y_k the one-hot of y."""
    R = np.array(S, dtype=np.float64)  # (N, K) residuals, a copy
    R[_rows(y)] -= 1
    return (R * R).sum(axis=1)


def _signs(S: np.ndarray, y: np.ndarray) -> np.ndarray:
    """t (N, K): +1 for the true class, -1 for the others, in the dtype of S."""
    T = np.full(S.shape, -1, dtype=S.dtype)
    T[_rows(y)] = 1
    return T


def l2svm_losses(S: np.ndarray, y: np.ndarray) -> np.ndarray:
    """sum_k max(0, 1 - t_k s_k)^2 for each row (t = +1 for the true class, -1 for the others)."""
    S = np.asarray(S, dtype=np.float64)
    M = np.maximum(1 - _signs(S, y) * S, 0)  # (N, K) margins violated
    return (M * M).sum(axis=1)


# ---------------------------------------------------------------------------------------------
# dl/dS (N, K), in the dtype of S; S itself may be overwritten
# ---------------------------------------------------------------------------------------------


def ce_grad(S: np.ndarray, y: np.ndarray) -> np.ndarray:
    """softmax(S) - Y, Y the one-hot of y."""
    G = softmax(S)
    G[_rows(y)] -= 1
    return G


def svm_grad(S: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1[margin_j > 0] for j != y; minus their count for j = y."""
    rows = _rows(y)
    G = (S - S[rows][:, None] + 1 > 0).astype(S.dtype)  # (N, K) active margins (S_y's is 1 > 0)
    G[rows] = 0
    G[rows] = -G.sum(axis=1)
    return G


def bce_grad(S: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(sigmoid(S) - Y) / K."""
    G = sigmoid(S)
    G[_rows(y)] -= 1
    G /= S.shape[1]
    return G


def mse_grad(S: np.ndarray, y: np.ndarray) -> np.ndarray:
    """2 (S - Y)."""
    S[_rows(y)] -= 1
    S *= 2
    return S


def l2svm_grad(S: np.ndarray, y: np.ndarray) -> np.ndarray:
    """-2 t max(0, 1 - t S)."""
    T = _signs(S, y)  # (N, K)
    S *= T
    np.subtract(1, S, out=S)
    np.maximum(S, 0, out=S)
    S *= T
    S *= -2
    return S


# ---------------------------------------------------------------------------------------------
# The table the model, the loop, the gradient check and the display read
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loss:
    """One loss: its per-sample values, its score gradient, and the probabilities it models."""

    name: str
    label: str  # how tables and figures name it
    losses: Callable[[np.ndarray, np.ndarray], np.ndarray]
    grad: Callable[[np.ndarray, np.ndarray], np.ndarray]
    probs: Callable[[np.ndarray], np.ndarray] | None  # None: hinge and squared loss model none

    def mean(self, S: np.ndarray, y: np.ndarray) -> float:
        return float(self.losses(S, y).mean())


LOSSES: dict[str, Loss] = {
    "ce": Loss("ce", "cross-entropy loss", ce_losses, ce_grad, softmax),
    "svm": Loss("svm", "hinge loss", svm_losses, svm_grad, None),
    "bce": Loss("bce", "BCE loss", bce_losses, bce_grad, sigmoid),
    "mse": Loss("mse", "squared loss", mse_losses, mse_grad, None),
    "l2svm": Loss("l2svm", "squared hinge loss", l2svm_losses, l2svm_grad, None),
}
