"""The closed-form ridge solver end to end on the real data: what `train --solver ridge` will do.

    python benchmarks/ridge_speed.py [--data-dir DIR] [--augment flip,translate:1] [--val-size 1000]
                                     [--lam L] [--norm augmented|images] [--json]

Reads data_batch_1..5 (the last ``--val-size`` images validate) and test_batch with cifarlin's
loader, accumulates the exact statistics of the training images, folds the augmented views in
(:func:`cifarlin.core.ridge.fold`), eigendecomposes once and picks lambda on the validation images
only (unless ``--lam``), then reports the test accuracy, the time of each step and the peak
resident memory. ``--norm images`` normalises by the plain training images' statistics (as
gradient descent does today) instead of the augmented set's, which costs the full (d, d)
eigenproblem instead of the flip-symmetric half. Run it under ``/usr/bin/time -v`` for the
whole process's wall time (Python's start and imports included).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

T_START = time.perf_counter()

import numpy as np  # noqa: E402
from common import default_data_dir  # noqa: E402

from cifarlin.core import ridge  # noqa: E402
from cifarlin.core.augment import parse_augment  # noqa: E402
from cifarlin.core.config import SplitSpec  # noqa: E402
from cifarlin.core.normalize import Normalizer  # noqa: E402
from cifarlin.data import cifar as data  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=default_data_dir())
    ap.add_argument("--augment", default="flip,translate:1")
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--lam", type=float, default=None)
    ap.add_argument("--norm", choices=("augmented", "images"), default="augmented")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    aug = parse_augment(args.augment)
    times: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        t = time.perf_counter()
        times[name] = t - t0
        return t

    t = time.perf_counter()
    times["imports"] = t - T_START
    dataset = data.find(args.data_dir)
    reader = data.Reader(dataset)
    batches, n_train = reader.train_batches(SplitSpec((1, 2, 3, 4, 5), args.val_size))
    test = reader.batch("test")
    images = np.concatenate([b.images for b in batches])  # (50000, 3072) uint8
    labels = np.concatenate([b.labels for b in batches])
    del batches
    t = lap("read", t)

    chunks = [
        (images[i : min(i + 10000, n_train)], labels[i : min(i + 10000, n_train)])
        for i in range(0, n_train, 10000)
    ]
    m = ridge.moments(chunks)
    t = lap("moments", t)
    m = ridge.fold(m, aug)
    t = lap("fold", t)
    norm = ridge.normalizer(m) if args.norm == "augmented" else Normalizer.fit([images[:n_train]])
    rp = ridge.path(m, *ridge.pixel_affine(norm))
    del m
    t = lap("eigh", t)

    X_val = norm.apply(images[n_train:], np.float64)
    if args.lam is None:
        lam, table = ridge.choose_lambda(rp, X_val, labels[n_train:], ridge.lambda_grid())
    else:
        lam, table = ridge.choose_lambda(rp, X_val, labels[n_train:], [args.lam])
    W, b = rp.solve(lam)
    t = lap("lambda", t)
    X_test = norm.apply(test.images, np.float64)
    test_acc = float(((X_test @ W.T + b).argmax(axis=1) == test.labels).mean())
    val_acc = next(s.val_acc for s in table if s.lam == lam)
    lap("test", t)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = time.perf_counter() - T_START
    result = {
        "augment": str(aug),
        "views": aug.n_views,
        "norm": args.norm,
        "eigenproblem": rp.basis.shape[1],
        "n_train": n_train,
        "lam": lam,
        "val_acc": val_acc,
        "test_acc": test_acc,
        "seconds": {k: round(v, 3) for k, v in times.items()},
        "total_seconds_in_python": round(total, 3),
        "peak_rss_mb": round(peak_mb),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"ridge, augment={aug} ({aug.n_views} views of {n_train} images), normaliser of the {args.norm}")
    for s in table:
        mark = " <- chosen" if s.lam == lam else ""
        print(f"  lambda {s.lam:10.4g}: val acc {s.val_acc:.4f}, train objective {s.objective:.5f}{mark}")
    print(f"lambda {lam:g} (on validation only): val acc {val_acc:.4f}, test acc {test_acc:.4f}")
    split = ", ".join(f"{k} {v:.2f} s" for k, v in times.items())
    print(f"time: {split}; {total:.2f} s in Python; peak RSS {peak_mb:.0f} MB")
    print(
        f"eigenproblem of size {rp.basis.shape[1]}; NumPy {np.__version__}, {os.cpu_count()} cores",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
