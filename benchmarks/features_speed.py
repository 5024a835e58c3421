"""Coates-Ng k-means features end to end on the real data: what `features fit` and
`train --features FILE` will do, with the time of each step.

    python benchmarks/features_speed.py --centroids 400 [--flip] [--solver ridge|gd|both]
        [--data-dir DIR] [--val-size 1000] [--workers 2] [--cache DIR] [--map FILE] [--save-map FILE]
        [--n-patches 200000] [--iterations 20] [--seed 0]
        [--loss ce] [--etas 0.04,0.004] [--epochs 60,20] [--lam 0] [--batch-size 100] [--json]

1. fit: k-means on random patches of the training images (the validation images excluded);
   the map is saved and read back as `features fit` / `train --features` would (``--map``
   loads an existing one instead).
2. extract: the features of the 50,000 training and 10,000 test images, and with ``--flip``
   of the mirrored training images too (``--cache DIR`` reuses features an earlier run stored).
3. standardise (the training rows' statistics) and train the linear layer, choosing on the
   validation images only: ``ridge`` (closed form, lambda from a grid) and/or ``gd``
   (cifarlin.core.train.fit in stages, one learning rate per stage, shuffled, the epoch with the
   best validation accuracy kept).

Prints the time split, the accuracies, and the peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

T_START = time.perf_counter()

import numpy as np  # noqa: E402
from common import default_data_dir  # noqa: E402

from cifarlin.core import (  # noqa: E402
    augment,
    encode,
    kmeans,
    ridge,
    train,
)
from cifarlin.core.config import SplitSpec, TrainConfig  # noqa: E402
from cifarlin.core.normalize import Normalizer  # noqa: E402
from cifarlin.core.prepared import Prepared  # noqa: E402
from cifarlin.data import cifar as data  # noqa: E402
from cifarlin.features.cache import FeatureCache  # noqa: E402
from cifarlin.store import featuremap  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=default_data_dir())
    ap.add_argument("--centroids", type=int, default=400)
    ap.add_argument("--n-patches", type=int, default=200_000)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-size", type=int, default=1000)
    ap.add_argument("--solver", choices=("ridge", "gd", "both"), default="both")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--map", type=Path, default=None)
    ap.add_argument("--save-map", type=Path, default=None)
    ap.add_argument("--flip", action="store_true", help="train also on the mirrored training images")
    ap.add_argument("--loss", default="ce")
    ap.add_argument("--etas", default="0.04,0.004", help="learning rate of each stage")
    ap.add_argument("--epochs", default="60,20", help="epochs of each stage")
    ap.add_argument("--lam", type=float, default=0.0)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    times: dict[str, float] = {}
    result: dict[str, object] = {
        "centroids": args.centroids,
        "seed": args.seed,
        "val_size": args.val_size,
        "flip": args.flip,
        "workers": args.workers,
    }

    t0 = time.perf_counter()
    reader = data.Reader(data.find(args.data_dir))
    batches, n_train = reader.train_batches(SplitSpec((1, 2, 3, 4, 5), args.val_size))
    test = reader.batch("test")
    labels = np.concatenate([b.labels for b in batches])
    times["read"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if args.map is not None:
        fmap = featuremap.load(args.map)
    else:
        train_images = np.concatenate([b.images for b in batches])[:n_train]
        fmap = kmeans.fit(train_images, args.centroids, args.seed, args.n_patches, args.iterations)
        del train_images
        with tempfile.TemporaryDirectory() as tmp:
            featuremap.save(Path(tmp) / "map.h5", fmap)
            fmap = featuremap.load(Path(tmp) / "map.h5")
        if args.save_map is not None:
            featuremap.save(args.save_map, fmap)
    times["fit"] = time.perf_counter() - t0
    result |= {"n_patches": fmap.n_patches, "iterations": fmap.iterations, "n_features": fmap.n_features}

    t0 = time.perf_counter()
    n_val = len(labels) - n_train
    copies = 2 if args.flip else 1
    F = np.empty((copies * n_train + n_val, fmap.n_features), dtype=np.float32)  # train (+ mirrored), val
    cache = FeatureCache(args.cache) if args.cache else None
    hits = 0

    def feats(b: data.Batch, view: str = "") -> np.ndarray:
        nonlocal hits
        images = b.images
        if view == "flip":
            images = augment.apply(images, np.ones(len(images), bool), np.zeros((len(images), 2), int))
        if cache is None:
            return encode.extract(fmap, images, workers=args.workers)
        Fb, hit = cache.features(fmap, b.md5, images, view, workers=args.workers)
        hits += hit
        return Fb

    n_fit, row = copies * n_train, 0
    for b in batches:  # images row .. row + 10000 of the 50000; the first n_train of them train
        Fb = feats(b)
        n_tr = max(0, min(len(Fb), n_train - row))  # a batch may straddle the train/val boundary
        F[row : row + n_tr] = Fb[:n_tr]
        F[n_fit + row + n_tr - n_train : n_fit + row + len(Fb) - n_train] = Fb[n_tr:]
        if args.flip and n_tr:
            F[n_train + row : n_train + row + n_tr] = feats(b, "flip")[:n_tr]
        row += len(Fb)
        del Fb
    F_test = feats(test)
    del batches
    times["extract"] = time.perf_counter() - t0
    result["cache_hits"] = hits

    t0 = time.perf_counter()
    stats = kmeans.FeatureStats.fit(F[:n_fit])
    stats.apply(F, out=F)
    stats.apply(F_test, out=F_test)
    X = {"train": F[:n_fit], "val": F[n_fit:], "test": F_test}
    y = {"train": np.tile(labels[:n_train], copies), "val": labels[n_train:], "test": test.labels}
    times["standardise"] = time.perf_counter() - t0

    def acc(W: np.ndarray, b: np.ndarray, split: str) -> float:
        return float(((X[split] @ W.T.astype(np.float32) + b).argmax(axis=1) == y[split]).mean())

    if args.solver in ("ridge", "both"):
        t0 = time.perf_counter()
        m = ridge.moments([(X["train"], y["train"])])
        rp = ridge.path(m, np.zeros(fmap.n_features), np.ones(fmap.n_features))
        del m
        lam, table = ridge.choose_lambda(rp, X["val"], y["val"], ridge.lambda_grid(1e-5, 1e2, 4))
        W, b = rp.solve(lam)
        del rp
        times["ridge"] = time.perf_counter() - t0
        result["ridge"] = {
            "lam": lam,
            "val_acc": acc(W, b, "val"),
            "test_acc": acc(W, b, "test"),
            "val_acc_by_lam": {f"{s.lam:.4g}": s.val_acc for s in table},
        }

    if args.solver in ("gd", "both"):
        t0 = time.perf_counter()
        prepared = Prepared(X, y, Normalizer(np.zeros(1), np.ones(1)), [], reader.dataset, SplitSpec(), {})
        etas = [float(v) for v in args.etas.split(",")]
        stages = [int(v) for v in args.epochs.split(",")]
        best: dict = {"val_acc": -1.0}

        def keep(state: train.TrainState) -> None:  # early stopping on the validation set
            val_acc = state.history.columns["val_acc"][-1]
            if val_acc > best["val_acc"]:
                best.update(val_acc=val_acc, state=state)

        state, done = None, 0
        for eta, epochs in zip(etas, stages, strict=True):  # a step schedule: one fit per stage
            done += epochs
            cfg = TrainConfig(
                lam=args.lam,
                eta=eta,
                epochs=done,
                batch_size=args.batch_size,
                seed=args.seed,
                shuffle=True,
                loss=args.loss,
                train_batches=(1, 2, 3, 4, 5),
                val_size=args.val_size,
            )
            state = train.fit(cfg, prepared, state or train.init_state(cfg, d=fmap.n_features), on_epoch=keep)
        s = best["state"]
        times["gd"] = time.perf_counter() - t0
        result["gd"] = {
            "loss": args.loss,
            "etas": etas,
            "epochs": stages,
            "lam": args.lam,
            "batch_size": args.batch_size,
            "best_epoch": s.epoch,
            "val_acc": best["val_acc"],
            "test_acc": acc(s.W, s.b, "test"),
            "final_test_acc": acc(state.W, state.b, "test"),
        }

    result["seconds"] = {k: round(v, 2) for k, v in times.items()}
    result["total_seconds"] = round(time.perf_counter() - T_START, 2)
    result["peak_rss_mb"] = round(peak_mb())
    if args.json:
        print(json.dumps(result))
        return
    print(f"k-means features: {fmap.k} centroids, {fmap.n_features} features; seed {args.seed}")
    for solver in ("ridge", "gd"):
        if solver in result:
            r = result[solver]
            print(f"{solver}: lambda {r['lam']:g}, val acc {r['val_acc']:.4f}, test acc {r['test_acc']:.4f}")
    print(
        "time: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
        + f"; total {result['total_seconds']} s"
    )
    print(f"peak RSS {result['peak_rss_mb']} MB; NumPy {np.__version__}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
