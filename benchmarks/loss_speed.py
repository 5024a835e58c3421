"""The three losses: seconds per epoch, and accuracy beside an independent plain implementation.

    python benchmarks/loss_speed.py [--data-dir DIR] [--repeats 5] [--epochs 40]

1. Speed: one training epoch (10,000 images, batch 100, the per-epoch metrics on the training
   and validation sets) with each loss, the losses run alternately, median of ``--repeats``.
2. Accuracy (with ``--epochs``): for each loss and setting 2-4 (and bce at eta 0.01), cifarlin's
   test accuracy beside a plain course-style float64 NumPy loop written from the definitions
   here, independently of cifarlin's code (same data, same initial W and b, same batches).

Without CIFAR-10 it uses random images, which gives speeds but meaningless accuracies.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from common import default_data_dir

from cifarlin.core import config, model, threads, train
from cifarlin.core.config import TrainConfig
from cifarlin.core.normalize import Normalizer
from cifarlin.core.prepared import Prepared
from cifarlin.data import cifar as data
from cifarlin.errors import DataNotFoundError
from cifarlin.work.prepare import prepare


def synthetic(n: int = 10000) -> Prepared:
    rng = np.random.default_rng(0)
    raw = {
        s: (rng.integers(0, 256, (n, model.D), dtype=np.uint8), rng.integers(0, 10, n))
        for s in ("train", "val", "test")
    }
    norm = Normalizer.fit([raw["train"][0]])
    X = {s: norm.apply(im) for s, (im, _) in raw.items()}
    y = {s: lab for s, (_, lab) in raw.items()}
    names = [str(i) for i in range(10)]
    return Prepared(X, y, norm, names, data.Dataset(Path("-"), "python"), config.SplitSpec(), {})


def epoch_seconds(p: Prepared, loss: str) -> float:
    cfg = TrainConfig(epochs=1, loss=loss, lam=0.1)
    t0 = time.perf_counter()
    train.fit(cfg, p, train.init_state(cfg))
    return time.perf_counter() - t0


def plain_loop(p: Prepared, cfg: TrainConfig) -> float:
    """Test accuracy of mini-batch gradient descent on the loss's definition, written out plainly:
    X (d, N) float64, scores (K, n) = W X + b; returns the test accuracy."""
    X = p.X["train"].T.astype(np.float64)  # (d, N)
    y = p.y["train"]
    rng = np.random.default_rng(cfg.seed)
    W = rng.normal(0, cfg.init_std, (10, model.D))
    b = rng.normal(0, cfg.init_std, (10, 1))
    n = X.shape[1]
    for _ in range(cfg.epochs):
        for j in range(0, n, cfg.batch_size):
            Xb, yb = X[:, j : j + cfg.batch_size], y[j : j + cfg.batch_size]
            m = Xb.shape[1]
            s = W @ Xb + b  # (K, m)
            Y = np.zeros_like(s)
            Y[yb, np.arange(m)] = 1
            if cfg.loss == "svm":  # l = sum_{j != y} max(0, s_j - s_y + 1)
                margin = s - s[yb, np.arange(m)] + 1
                active = (margin > 0) & (Y == 0)
                G = active.astype(float)
                G[yb, np.arange(m)] = -active.sum(axis=0)
            elif cfg.loss == "bce":  # l = -(1/K) sum_k [(1 - y_k) log(1 - sig) + y_k log sig]
                G = (1 / (1 + np.exp(-s)) - Y) / s.shape[0]
            else:  # l = -log softmax(s)_y
                e = np.exp(s - s.max(axis=0))
                G = e / e.sum(axis=0) - Y
            W -= cfg.eta * (G @ Xb.T / m + 2 * cfg.lam * W)
            b -= cfg.eta * G.sum(axis=1, keepdims=True) / m
    s_test = W @ p.X["test"].T.astype(np.float64) + b
    return float(np.mean(s_test.argmax(axis=0) == p.y["test"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=str(default_data_dir()))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=0, help="also compare accuracies after this many epochs")
    args = ap.parse_args()
    try:
        dataset = data.find(args.data_dir)
        p = prepare(dataset, config.SplitSpec())
        where = str(dataset.folder)
    except DataNotFoundError:
        p, where = synthetic(), "random images (no CIFAR-10 found)"
    print(f"data: {where}")
    times: dict[str, list[float]] = {loss: [] for loss in config.LOSS_NAMES}
    for _ in range(args.repeats):
        for loss in config.LOSS_NAMES:  # alternately, so drift on a shared machine hits all alike
            times[loss].append(epoch_seconds(p, loss))
    ce = statistics.median(times["ce"])
    for loss, ts in times.items():
        med = statistics.median(ts)
        print(f"  {loss:4} epoch {1000 * med:6.1f} ms (median of {len(ts)}), {med / ce:.2f}x the ce epoch")
    if args.epochs:
        print(f"test accuracy after {args.epochs} epochs, seed 0: cifarlin | plain loop")
        rows = [(loss, s, None) for loss in config.LOSS_NAMES for s in (2, 3, 4)]
        rows += [("bce", s, 0.01) for s in (2, 3, 4)]
        for loss, s, eta in rows:
            cfg = TrainConfig.for_setting(s, loss=loss, epochs=args.epochs, **({"eta": eta} if eta else {}))
            ours = train.fit(cfg, p, train.init_state(cfg))
            with threads.one_blas_thread():
                acc = model.evaluate(ours.W, ours.b, p.X["test"], p.y["test"], cfg.lam, loss).accuracy
            plain = plain_loop(p, cfg)
            print(
                f"  {loss:4} setting {s} eta {cfg.eta:<6g} {acc:.4f} | {plain:.4f}  "
                f"({100 * (acc - plain):+.2f} pt)"
            )


if __name__ == "__main__":
    main()
