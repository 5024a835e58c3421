"""What a choice made on validation data must give, computed here with plain NumPy in float64
(not with cifarlin's code), and the checks that a dataset makes such a choice testable.

A test of a choice compares cifarlin's pick with :func:`best_lambda` or :func:`best_epoch` of
the validation counts computed here, and first asserts :func:`assert_disagree` (the candidate
best on test is another one: a choice made on the test split fails the test) and
:func:`assert_clear` (no image is so close to a tie between two classes that float32 rounding in
cifarlin could change a count: the counts here are the counts cifarlin must find).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cifarlin.data import cifar as data

K = 10
#: Every image's two highest scores differ by more than this times the size of the terms they
#: sum: float32 inputs (relative error about 6e-8) cannot change which class wins.
CLEAR = 1e-6
#: The ridge solver's candidates: 1e-5 to 1e3, four per decade (the README's 33 values).
LAMBDAS = np.logspace(-5, 3, 33)


def batch(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The images (n, 3072) uint8 and labels (n,) of one batch file of a python-version folder."""
    b = data.read_batch(folder / name, "python")
    return b.images, np.asarray(b.labels)


class Standardise:
    """x -> (x / scale - mean) / sqrt(var + eps) per input with the training rows' mean and
    population variance, in float64: pixels (scale 255, eps 0, a constant pixel only centred) as
    cifarlin's normaliser is documented, or features (scale 1, eps 0.01, the paper's)."""

    def __init__(self, rows: np.ndarray, scale: float = 255.0, eps: float = 0.0):
        x = np.asarray(rows, dtype=np.float64) / scale
        self.scale, self.mean = scale, x.mean(axis=0)
        var = x.var(axis=0) + eps
        var[var == 0] = 1.0
        self.std = np.sqrt(var)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return (np.asarray(rows, dtype=np.float64) / self.scale - self.mean) / self.std


def scored(Z: np.ndarray, W: np.ndarray, b: np.ndarray, y: np.ndarray) -> tuple[int, float]:
    """The number of rows of Z (n, d) whose top class under W (K, d), b (K,) is their label y,
    and the smallest gap between a row's two top scores relative to the size of the terms they
    sum (see :data:`CLEAR`)."""
    W, b = np.asarray(W, dtype=np.float64), np.asarray(b, dtype=np.float64)
    S = Z @ W.T + b  # (n, K)
    size = np.abs(Z) @ np.abs(W).T + np.abs(b)  # (n, K)
    order = np.argsort(S, axis=1)
    first, second = order[:, -1:], order[:, -2:-1]
    gap = np.take_along_axis(S, first, 1) - np.take_along_axis(S, second, 1)
    scale = np.maximum(np.take_along_axis(size, first, 1), np.take_along_axis(size, second, 1))
    return int((order[:, -1] == y).sum()), float((gap / scale).min())


def cost(Z: np.ndarray, W: np.ndarray, b: np.ndarray, y: np.ndarray, lam: float = 0.0) -> float:
    """Mean cross-entropy of softmax(W z + b) plus lam ||W||^2."""
    W, b = np.asarray(W, dtype=np.float64), np.asarray(b, dtype=np.float64)
    S = Z @ W.T + b
    top = S.max(axis=1, keepdims=True)
    log_p = S - top - np.log(np.exp(S - top).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean() + lam * (W * W).sum())


def ridge_solutions(
    Z: np.ndarray, y: np.ndarray, lams: Sequence[float]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """W (K, d), b (K,) minimising ||Z W^T + 1 b^T - Y||^2 / n + lam ||W||^2 (one-hot Y, b not
    penalised) for each lam, through the n x n dual system W^T = Zc^T (Zc Zc^T / n + lam I)^-1
    Yc / n of the centred rows: another route than cifarlin's d x d eigendecomposition."""
    n = len(Z)
    zbar = Z.mean(axis=0)
    Zc = Z - zbar
    Y = np.eye(K)[y]
    ybar = Y.mean(axis=0)
    G = Zc @ Zc.T / n  # (n, n)
    out = []
    for lam in lams:
        Wt = Zc.T @ np.linalg.solve(G + lam * np.eye(n), Y - ybar) / n  # (d, K)
        out.append((Wt.T, ybar - zbar @ Wt))
    return out


def best_lambda(counts: Sequence[int]) -> int:
    """The ridge solver's rule: the candidate with the most correct validation images, the
    largest lambda (the last index) on ties."""
    top = max(counts)
    return max(i for i, c in enumerate(counts) if c == top)


def best_epoch(counts: Sequence[int]) -> int:
    """``--keep best``'s rule, 0-based: the epoch with the most correct validation images, the
    earliest on ties."""
    return int(np.argmax(counts))


def patience_stop(counts: Sequence[int], patience: int) -> int:
    """The number of epochs a run with ``--patience`` trains: it stops after the first epoch that
    is ``patience`` epochs past the best so far (an equal count is no improvement)."""
    best = 0
    for e, c in enumerate(counts):
        if c > counts[best]:
            best = e
        if e - best >= patience:
            return e + 1
    return len(counts)


def refine_box(etas: Sequence[float], low: float, high: float) -> tuple[float, float]:
    """The round-2 box of a range LOW..HIGH as the sweep documents it, around the values
    ``etas`` of round 1's best quarter: their span in log space, widened on each side by a
    quarter of it or a tenth of the whole range, whichever is more, kept inside the range."""
    logs = [math.log(v) for v in etas]
    pad = max(0.25 * (max(logs) - min(logs)), 0.1 * (math.log(high) - math.log(low)))
    return max(low, math.exp(min(logs) - pad)), min(high, math.exp(max(logs) + pad))


def assert_clear(gaps: Sequence[float]) -> None:
    assert min(gaps) > CLEAR, (
        f"an image is within {min(gaps):.1e} of a tie between two classes: cifarlin's float32 "
        "rounding could change a count; the fixture no longer makes a clean test"
    )


def assert_disagree(
    val: Sequence[float], test: Sequence[float], pick: Callable[[Sequence[float]], int]
) -> None:
    """The fixture must make the choice matter: the candidate picked by validation scores fewer
    on test than the candidate the same rule would pick on test, and the reverse. Otherwise a
    choice made on the test split would pass (issue 25: on tiny_py every candidate ties)."""
    v, t = pick(val), pick(test)
    assert v != t and test[v] < test[t] and val[t] < val[v], (
        f"validation and test agree on this fixture (validation picks {v}, test picks {t}; "
        f"validation {list(val)}, test {list(test)}): a choice made on the test split would pass"
    )
