"""Plain, loop-by-loop versions of the model's math: slow, obvious, and the tests' oracles."""

from __future__ import annotations

import numpy as np

from cifarlin.core import model


def cost_naive(W, b, X, y, lam):
    """J sample by sample, without any shifting tricks; works for complex W and b too."""
    total = 0.0
    for x, label in zip(X, y, strict=True):
        s = W @ x + b  # (K,)
        e = np.exp(s)
        total += -np.log(e[label] / e.sum())
    return total / len(y) + lam * np.sum(W * W)


def gradients_naive(W, b, X, y, lam):
    """dJ/dW, dJ/db accumulated sample by sample from p - onehot(y)."""
    dW = np.zeros_like(W, dtype=np.float64)
    db = np.zeros_like(b, dtype=np.float64)
    for x, label in zip(X, y, strict=True):
        s = W @ x + b
        p = np.exp(s - s.max())
        p /= p.sum()
        p[label] -= 1
        dW += np.outer(p, x)
        db += p
    return dW / len(y) + 2 * lam * W, db / len(y)


def numerical_gradients_loop(W, b, X, y, lam, h=1e-6):
    """Centred differences, one parameter at a time, through model.cost: the oracle for the
    vectorised numerical gradients (and the per-parameter loop the benchmark times)."""
    gW, gb = np.zeros_like(W), np.zeros_like(b)
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            old = W[i, j]
            W[i, j] = old + h
            c1 = model.cost(W, b, X, y, lam)
            W[i, j] = old - h
            c2 = model.cost(W, b, X, y, lam)
            W[i, j] = old
            gW[i, j] = (c1 - c2) / (2 * h)
        old = b[i]
        b[i] = old + h
        c1 = model.cost(W, b, X, y, lam)
        b[i] = old - h
        c2 = model.cost(W, b, X, y, lam)
        b[i] = old
        gb[i] = (c1 - c2) / (2 * h)
    return gW, gb


def complex_step_loop(W, b, X, y, lam, h=1e-20):
    """Im J(theta + i h) / h, one parameter at a time, through cost_naive."""
    gW, gb = np.zeros(W.shape), np.zeros(b.shape)
    Wc, bc = W.astype(complex), b.astype(complex)
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            Wc[i, j] += 1j * h
            gW[i, j] = cost_naive(Wc, bc, X, y, lam).imag / h
            Wc[i, j] = W[i, j]
        bc[i] += 1j * h
        gb[i] = cost_naive(Wc, bc, X, y, lam).imag / h
        bc[i] = b[i]
    return gW, gb


def hinge_naive(W, b, X, y, lam):
    """The multi-class SVM cost, sample by sample and class by class, as the bonus defines it."""
    total = 0.0
    for x, label in zip(X, y, strict=True):
        s = W @ x + b
        for j in range(len(s)):
            if j != label:
                total += max(0.0, s[j] - s[label] + 1)
    return total / len(y) + lam * np.sum(W * W)


def hinge_gradients_naive(W, b, X, y, lam):
    """The hinge's subgradient with [margin > 0] (a margin of exactly 0 is inactive)."""
    dW = np.zeros(W.shape)
    db = np.zeros(b.shape)
    for x, label in zip(X, y, strict=True):
        s = W @ x + b
        for j in range(len(s)):
            if j != label and s[j] - s[label] + 1 > 0:
                dW[j] += x
                db[j] += 1
                dW[label] -= x
                db[label] -= 1
    return dW / len(y) + 2 * lam * W, db / len(y)


def bce_naive(W, b, X, y, lam):
    """Multiple binary cross-entropy, literally: -(1/K) sum_k [(1-y_k) log(1-sigma) + y_k log sigma]
    (fine for moderate scores, where the literal form does not overflow)."""
    total = 0.0
    for x, label in zip(X, y, strict=True):
        s = W @ x + b
        p = 1 / (1 + np.exp(-s))
        t = np.zeros(len(s))
        t[label] = 1
        total += -np.mean((1 - t) * np.log(1 - p) + t * np.log(p))
    return total / len(y) + lam * np.sum(W * W)


def bce_gradients_naive(W, b, X, y, lam):
    """dl/ds_k = (sigma(s_k) - y_k) / K, accumulated sample by sample."""
    dW = np.zeros(W.shape)
    db = np.zeros(b.shape)
    for x, label in zip(X, y, strict=True):
        s = W @ x + b
        g = 1 / (1 + np.exp(-s))
        g[label] -= 1
        g /= len(s)
        dW += np.outer(g, x)
        db += g
    return dW / len(y) + 2 * lam * W, db / len(y)


def mse_naive(W, b, X, y, lam):
    """Squared error to the one-hot labels, literally, one sample at a time."""
    total = 0.0
    for x, label in zip(X, y, strict=True):
        s = W @ x + b
        t = np.zeros(len(s))
        t[label] = 1
        total += np.sum((s - t) ** 2)
    return total / len(y) + lam * np.sum(W * W)


def mse_gradients_naive(W, b, X, y, lam):
    """dl/ds = 2 (s - t), accumulated sample by sample."""
    dW = np.zeros(W.shape)
    db = np.zeros(b.shape)
    for x, label in zip(X, y, strict=True):
        g = 2 * (W @ x + b)
        g[label] -= 2
        dW += np.outer(g, x)
        db += g
    return dW / len(y) + 2 * lam * W, db / len(y)


def l2svm_naive(W, b, X, y, lam):
    """One-vs-rest squared hinge, literally: each class a binary SVM with target +1 or -1."""
    total = 0.0
    for x, label in zip(X, y, strict=True):
        s = W @ x + b
        for k in range(len(s)):
            t = 1.0 if k == label else -1.0
            total += max(0.0, 1.0 - t * s[k]) ** 2
    return total / len(y) + lam * np.sum(W * W)


def l2svm_gradients_naive(W, b, X, y, lam):
    """dl/ds_k = -2 t_k max(0, 1 - t_k s_k), accumulated sample by sample and class by class."""
    dW = np.zeros(W.shape)
    db = np.zeros(b.shape)
    for x, label in zip(X, y, strict=True):
        s = W @ x + b
        for k in range(len(s)):
            t = 1.0 if k == label else -1.0
            g = -2.0 * t * max(0.0, 1.0 - t * s[k])
            dW[k] += g * x
            db[k] += g
    return dW / len(y) + 2 * lam * W, db / len(y)


NAIVE = {
    "ce": (cost_naive, gradients_naive),
    "svm": (hinge_naive, hinge_gradients_naive),
    "bce": (bce_naive, bce_gradients_naive),
    "mse": (mse_naive, mse_gradients_naive),
    "l2svm": (l2svm_naive, l2svm_gradients_naive),
}


def numerical_gradients_loop_loss(W, b, X, y, lam, loss, h=1e-6):
    """Centred differences one parameter at a time through the naive cost of ``loss``."""
    cost = NAIVE[loss][0]
    gW, gb = np.zeros_like(W), np.zeros_like(b)
    for P, G in ((W, gW), (b, gb)):
        for idx in np.ndindex(P.shape):
            old = P[idx]
            P[idx] = old + h
            c1 = cost(W, b, X, y, lam)
            P[idx] = old - h
            c2 = cost(W, b, X, y, lam)
            P[idx] = old
            G[idx] = (c1 - c2) / (2 * h)
    return gW, gb
