"""The one-layer softmax classifier: pure NumPy functions, no I/O, no printing, no global state.

Shapes used throughout (K classes, d inputs, N samples in a batch):

    X  (N, d)  one contiguous row per image, already normalised
    y  (N,)    integer labels in 0..K-1
    W  (K, d)  weights;  b (K,)  biases
    S  (N, K)  scores  S = X W^T + b        (s = W x + b for one image)
    P  (N, K)  softmax(S)

    J(W, b) = mean_n -log P[n, y_n]  +  lam * sum(W**2)

The assignment's loss is the cross-entropy above; its bonus swaps in the multi-class hinge
(``loss="svm"``), a binary cross-entropy per class (``loss="bce"``), the squared error to the
one-hot labels (``loss="mse"``, what the ridge solver minimises exactly) or a one-vs-rest squared
hinge (``loss="l2svm"``, Coates and Ng's classifier), defined beside this file
in :mod:`cifarlin.core.losses`. Everything here takes the loss by name.

The functions work in the dtype of their inputs (float32 for fast training, float64 for the
gradient check); reductions that produce a reported number are accumulated in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cifarlin.core.config import D, K  # 10 classes, 3072 inputs (32 x 32 pixels x 3 channels)
from cifarlin.core.losses import LOSSES
from cifarlin.core.losses import softmax as softmax  # P = softmax(S), here for the reader of this file


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


SCORE_ROWS = 512  # rows of X per product in :func:`scores`


def scores(W: np.ndarray, b: np.ndarray, X: np.ndarray) -> np.ndarray:
    """S = X W^T + b, (N, K).

    W^T is handed to BLAS as a contiguous (d, K') block with K padded by zero columns to a
    multiple of 8: OpenBLAS's kernels run 10 columns slower than 16 (about 10% of a training
    epoch here). The product runs ``SCORE_ROWS`` rows of X at a time: 14.4 ms instead of 19 ms
    for 10,000 images on one core here. The padding columns are sliced off; S is a view of the
    (N, K') product.
    """
    k = W.shape[0]
    Wt = forward_matrix(W, narrow=True)  # (d, K')
    P = np.empty((X.shape[0], Wt.shape[1]), dtype=np.result_type(X, Wt))  # (N, K')
    for s in range(0, X.shape[0], SCORE_ROWS):
        np.matmul(X[s : s + SCORE_ROWS], Wt, out=P[s : s + SCORE_ROWS])
    S = P[:, :k]  # (N, K)
    S += b
    return S


def cross_entropy(S: np.ndarray, y: np.ndarray) -> float:
    """Mean of -log softmax(S)[n, y_n] over the N rows of S (N, K); computed in float64."""
    return LOSSES["ce"].mean(S, y)


def penalty(W: np.ndarray, lam: float) -> float:
    """lam * sum(W**2), accumulated in float64."""
    w = W.ravel().astype(np.float64, copy=False)
    return float(lam * (w @ w))


def loss(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, loss: str = "ce") -> float:
    """Mean loss over the rows of X, without the penalty."""
    return LOSSES[loss].mean(scores(W, b, X), y)


def cost(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, lam: float, loss: str = "ce") -> float:
    """J = mean loss + lam * sum(W**2)."""
    return LOSSES[loss].mean(scores(W, b, X), y) + penalty(W, lam)


def predict(W: np.ndarray, b: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Predicted class per row, (N,): the highest score, whatever the loss."""
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


def metrics(S: np.ndarray, y: np.ndarray, W: np.ndarray, lam: float, loss: str = "ce") -> Metrics:
    """Cost, loss and accuracy of scores S (N, K) for labels y (N,); W only for the penalty."""
    value = LOSSES[loss].mean(S, y)
    acc = float((S.argmax(axis=1) == y).mean())
    return Metrics(cost=value + penalty(W, lam), loss=value, accuracy=acc)


def evaluate(
    W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, lam: float, loss: str = "ce"
) -> Metrics:
    """Cost, loss and accuracy from a single pass of scores over X (N, d)."""
    return metrics(scores(W, b, X), y, W, lam, loss)


def forward_matrix(W: np.ndarray, narrow: bool = False) -> np.ndarray:
    """Wt = [W^T | 0] (d, 2K): the matrix a training step multiplies a batch by; with ``narrow``,
    [W^T | 0] padded to 16 columns only (a multiple of 8), as :func:`scores` multiplies by: 20%
    fewer flops. The training loop fills the zero columns with other weights' W'^T to score them
    in the same product (:mod:`cifarlin.core.speed`).

    2K = 20 columns, not padded: OpenBLAS takes the first 16 in one block for any width from 16
    to 23, so the step's own columns get the bits of the 16-column product (checked for batches
    of 2 to 300 rows; a 1-row batch takes another path; 24 columns would change them); one
    20-column product costs what the 16 + 8 columns of two did minus 10%."""
    k, d = W.shape
    Wt = np.zeros((d, -(-k // 8) * 8 if narrow else 2 * k), dtype=W.dtype)  # (d, 16) or (d, 2K)
    Wt[:, :k] = W.T
    return Wt


def step_scores(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """S = X W^T + b (N, K) as a training step computes it: one product by [W^T | 0] (d, 2K)
    (:func:`forward_matrix`). A GEMM's column depends on its own column's values only, for a
    given shape, so the training loop's product by [W^T | W'^T] gives these bits too."""
    k = W.shape[0]
    P = X @ forward_matrix(W)  # (N, 2K): [S - b | 0]
    return P[:, :k] + b


def backward(
    X: np.ndarray, y: np.ndarray, S: np.ndarray, W: np.ndarray, lam: float, loss: str = "ce"
) -> tuple[np.ndarray, np.ndarray]:
    """dJ/dW (K, d) and dJ/db (K,) on a batch X (N, d), y (N,) from its scores S (N, K) (the
    assignment's ComputeGradients, which takes P = softmax(S)); S may be overwritten.

    With G = dl/dS / N (N, K), the loss's score gradient averaged over the batch (for the
    cross-entropy G = (P - Y) / N, Y (N, K) the one-hot of y; see :mod:`cifarlin.core.losses`):
    dJ/dW = G^T X + 2 lam W  (K, d);   dJ/db = sum_n G[n]  (K,).
    """
    G = LOSSES[loss].grad(S, y)  # (N, K)
    G /= X.shape[0]
    dW = G.T @ X  # (K, d)
    if lam:
        dW += (2 * lam) * W
    db = G.sum(axis=0)  # (K,)
    return dW, db


def step(
    X: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, lam: float, eta: float, loss: str = "ce"
) -> None:
    """One update of mini-batch gradient descent on a batch X (N, d), y (N,), in place:
    W -= eta dW, b -= eta db, in the operations of :func:`cifarlin.core.train.fit` (``eta`` a
    Python float: the update stays in the data's dtype)."""
    dW, db = backward(X, y, step_scores(X, W, b), W, lam, loss)  # (K, d), (K,)
    dW *= eta  # in place: W -= eta * dW without a temporary
    W -= dW
    db *= eta
    b -= db


def gradients(
    W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, lam: float, loss: str = "ce"
) -> tuple[np.ndarray, np.ndarray]:
    """Analytic gradients of J on a batch: dJ/dW (K, d) and dJ/db (K,) (see :func:`backward`)."""
    return backward(X, y, step_scores(X, W, b), W, lam, loss)
