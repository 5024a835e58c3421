"""Time `cifarlin train --setting 2` beside a plain course-style NumPy loop, in the same run.

    python benchmarks/train_speed.py [--data-dir DIR] [--skip-reference] [--skip-cli]

1. cifarlin's training loop in-process (40 epochs, batch 100, per-epoch cost/loss/accuracy on the
   training and validation sets, then the test set): seconds per epoch and images per second.
2. The same training written as in the course: data as (d, N) float64 columns, one-hot labels,
   column slices per batch, ComputeCost/ComputeAccuracy-style metrics; and, when PyTorch is
   installed, written plainly in PyTorch on the CPU.
3. The real command, `python -m cifarlin train --setting 2`, in a subprocess: its reported loop
   time and its peak resident memory (ru_maxrss).

Without CIFAR-10 (see the README's data folder rule) it uses random images of the same shape.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cifarlin import config, data, model, train
from cifarlin.config import TrainConfig
from cifarlin.errors import DataNotFoundError


def synthetic(n: int = 10000) -> data.Prepared:
    rng = np.random.default_rng(0)
    raw = {
        s: (rng.integers(0, 256, (n, model.D), dtype=np.uint8), rng.integers(0, 10, n))
        for s in ("train", "val", "test")
    }
    norm = data.Normalizer.fit([raw["train"][0]])
    X = {s: norm.apply(im) for s, (im, _) in raw.items()}
    y = {s: lab for s, (_, lab) in raw.items()}
    return data.Prepared(
        X, y, norm, [str(i) for i in range(10)], data.Dataset(Path("-"), "python"), config.SplitSpec(), {}
    )


def reference_loop(p: data.Prepared, cfg: TrainConfig) -> tuple[float, float]:
    """The course's way: X (d, N) float64, Y one-hot (K, N), W (K, d); returns (seconds, test acc)."""

    def cols(name):
        X = p.X[name].T.astype(np.float64)  # (d, N)
        Y = np.eye(10)[p.y[name]].T  # (K, N)
        return X, Y, p.y[name]

    (Xtr, Ytr, ytr), (Xva, Yva, yva), (Xte, _, yte) = cols("train"), cols("val"), cols("test")
    rng = np.random.default_rng(cfg.seed)
    W = rng.normal(0, 0.01, (10, model.D))
    b = rng.normal(0, 0.01, (10, 1))

    def evaluate_classifier(X, W, b):
        s = W @ X + b
        e = np.exp(s - s.max(axis=0))
        return e / e.sum(axis=0)

    def compute_cost(X, Y, W, b, lam):
        P = evaluate_classifier(X, W, b)
        return -np.sum(Y * np.log(P)) / X.shape[1] + lam * np.sum(W**2)

    def compute_accuracy(X, y, W, b):
        return np.mean(np.argmax(evaluate_classifier(X, W, b), axis=0) == y)

    t0 = time.perf_counter()
    n = Xtr.shape[1]
    for _ in range(cfg.epochs):
        for j in range(0, n, cfg.batch_size):
            Xb, Yb = Xtr[:, j : j + cfg.batch_size], Ytr[:, j : j + cfg.batch_size]
            G = -(Yb - evaluate_classifier(Xb, W, b))
            W -= cfg.eta * (G @ Xb.T / Xb.shape[1] + 2 * cfg.lam * W)
            b -= cfg.eta * G.sum(axis=1, keepdims=True) / Xb.shape[1]
        for X, Y, yy in ((Xtr, Ytr, ytr), (Xva, Yva, yva)):
            compute_cost(X, Y, W, b, cfg.lam), compute_accuracy(X, yy, W, b)
    acc = compute_accuracy(Xte, yte, W, b)
    return time.perf_counter() - t0, acc


def torch_loop(p: data.Prepared, cfg: TrainConfig) -> tuple[float, float] | None:
    """The same training written plainly in PyTorch (CPU), when PyTorch is installed."""
    try:
        import torch
    except ImportError:
        return None
    X = {k: torch.from_numpy(v) for k, v in p.X.items()}
    Y = {k: torch.from_numpy(v) for k, v in p.y.items()}
    g = torch.Generator().manual_seed(cfg.seed)
    W = (torch.randn(10, model.D, generator=g) * 0.01).requires_grad_()
    b = (torch.randn(10, generator=g) * 0.01).requires_grad_()

    def metrics(name: str) -> tuple[float, float]:
        with torch.no_grad():
            S = X[name] @ W.T + b
            loss = torch.nn.functional.cross_entropy(S.double(), Y[name])
            return float(loss + cfg.lam * (W.double() ** 2).sum()), float(
                (S.argmax(1) == Y[name]).float().mean()
            )

    t0 = time.perf_counter()
    n = len(p.y["train"])
    for _ in range(cfg.epochs):
        for j in range(0, n, cfg.batch_size):
            S = X["train"][j : j + cfg.batch_size] @ W.T + b
            J = (
                torch.nn.functional.cross_entropy(S, Y["train"][j : j + cfg.batch_size])
                + cfg.lam * (W**2).sum()
            )
            gW, gb = torch.autograd.grad(J, (W, b))
            with torch.no_grad():
                W -= cfg.eta * gW
                b -= cfg.eta * gb
        metrics("train"), metrics("val")
    acc = metrics("test")[1]
    return time.perf_counter() - t0, acc


def run_command(source: data.Dataset) -> None:
    """The real command in a subprocess: its loop time and peak memory."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "cifarlin",
            "train",
            "--setting",
            "2",
            "--out",
            f"{tmp}/run",
            "--quiet",
            "--json",
            "--data-dir",
            str(source.folder),
        ]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ})
        wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    s = json.loads(out.stdout)
    sec = s["seconds"]
    print(
        f"  `cifarlin train --setting 2`: training loop {sec['training']:.2f} s "
        f"(+ {sec['checkpoints']:.2f} s writing checkpoints), whole command {wall:.2f} s, "
        f"peak RSS {peak:.0f} MB, test acc {s['test']['accuracy']:.4f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--skip-reference", action="store_true", help="do not time the ~10 s course-style loop")
    ap.add_argument("--skip-cli", action="store_true", help="do not run the command in a subprocess")
    args = ap.parse_args()

    cfg = TrainConfig.for_setting(2)
    try:
        source: data.Dataset | None = data.find(args.data_dir)
    except DataNotFoundError:
        source = None
    where = str(source.folder) if source else "random images (no CIFAR-10 found)"
    print(f"setting 2: {cfg.describe()}; data: {where}")
    if not args.skip_cli and source is not None:
        run_command(
            source
        )  # first, while this process is small: a child's ru_maxrss counts what it forked with

    p = data.prepare(source, cfg.split) if source else synthetic()
    n_train = len(p.y["train"])
    t0 = time.perf_counter()
    st = train.fit(cfg, p, train.init_state(cfg))
    test = model.evaluate(st.W, st.b, p.X["test"], p.y["test"], cfg.lam)
    loop = time.perf_counter() - t0
    print(
        f"  cifarlin loop     {loop:6.2f} s  {1000 * loop / cfg.epochs:6.1f} ms/epoch  "
        f"{cfg.epochs * n_train / loop:9,.0f} training images/s  test acc {test.accuracy:.4f}"
    )
    tl = torch_loop(p, cfg)
    if tl is not None:
        print(
            f"  PyTorch loop      {tl[0]:6.2f} s  {1000 * tl[0] / cfg.epochs:6.1f} ms/epoch  "
            f"{cfg.epochs * n_train / tl[0]:9,.0f} training images/s  test acc {tl[1]:.4f}  "
            f"({tl[0] / loop:.1f}x slower)"
        )
    if not args.skip_reference:
        ref, acc = reference_loop(p, cfg)
        print(
            f"  course-style loop {ref:6.2f} s  {1000 * ref / cfg.epochs:6.1f} ms/epoch  "
            f"{cfg.epochs * n_train / ref:9,.0f} training images/s  test acc {acc:.4f}  "
            f"({ref / loop:.1f}x slower)"
        )


if __name__ == "__main__":
    main()
