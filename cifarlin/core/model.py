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


def forward_matrix(W: np.ndarray, other: np.ndarray | None = None, narrow: bool = False) -> np.ndarray:
    """Wt = [W^T | W'^T] (d, 2K): the matrix :func:`step` multiplies a batch by, W' = ``other``
    (zeros without it); with ``narrow`` (no W'), [W^T | 0] padded to 16 columns only, for a
    run that never scores other weights (a loop on augmented views): 20% fewer flops.

    2K = 20 columns, not padded: OpenBLAS takes the first 16 in one block for any width from 16
    to 23, so the step's own columns get the bits of the 16-column product (checked for batches
    of 2 to 300 rows; a 1-row batch takes another path; 24 columns would change them); one
    20-column product costs what the 16 + 8 columns of two did minus 10%."""
    k, d = W.shape
    if narrow and other is not None:
        raise ValueError("a narrow forward matrix has no room for other weights")
    Wt = np.zeros((d, -(-k // 8) * 8 if narrow else 2 * k), dtype=W.dtype)  # (d, 16) or (d, 2K)
    Wt[:, :k] = W.T
    if other is not None:
        Wt[:, k : 2 * k] = other.T
    return Wt


def step(
    W: np.ndarray,
    b: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    lam: float,
    loss: str = "ce",
    also: tuple[np.ndarray, np.ndarray] | None = None,
    Wt: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Analytic gradients of J on a batch, and the batch's scores under other weights ``also``
    = (W', b') while X is in cache (None without ``also``).

    With G = dl/dS / N (N, K), the loss's score gradient averaged over the batch (for the
    cross-entropy G = (P - Y) / N, Y (N, K) the one-hot of y; see :mod:`cifarlin.core.losses`):
    dJ/dW = G^T X + 2 lam W  (K, d);   dJ/db = sum_n G[n]  (K,).

    The forward pass is one product by [W^T | W'^T] (d, 2K) (:func:`forward_matrix`), with
    or without W' (zeros then): a GEMM's column depends on its own column's values only, for a
    given shape, so the step's numbers are the same either way, and W''s scores are those of
    :func:`scores_of_step`. A training loop passes ``Wt``, that matrix kept from batch to batch
    with W'^T already in place (W' is fixed for an epoch): the step writes W^T into its first K
    columns, no new (d, 2K) matrix per batch.
    """
    N = X.shape[0]
    k = W.shape[0]
    if Wt is None:
        Wt = forward_matrix(W, None if also is None else also[0])
    else:
        if also is not None and Wt.shape[1] < 2 * k:
            raise ValueError("Wt has no columns for the other weights")
        Wt[:, :k] = W.T
    P = X @ Wt  # (N, 2K): [S - b | S' - b']
    G = LOSSES[loss].grad(P[:, :k] + b, y)  # (N, K)
    G /= N
    dW = G.T @ X  # (K, d)
    if lam:
        dW += (2 * lam) * W
    db = G.sum(axis=0)  # (K,)
    return dW, db, (None if also is None else P[:, k : 2 * k] + also[1])


def scores_of_step(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The scores (N, K) :func:`step` gives for ``also=(W, b)``, bit for bit, computed on their
    own (the step's own columns zero)."""
    Wt = forward_matrix(np.zeros_like(W), W)
    return (X @ Wt)[:, len(W) : 2 * len(W)] + b


def gradients(
    W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, lam: float, loss: str = "ce"
) -> tuple[np.ndarray, np.ndarray]:
    """Analytic gradients of J on a batch: dJ/dW (K, d) and dJ/db (K,) (see :func:`step`)."""
    dW, db, _ = step(W, b, X, y, lam, loss)
    return dW, db
