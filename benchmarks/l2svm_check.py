"""Coates and Ng's own classifier on cifarlin's k-means features: is the classifier the limit?

    pip install scipy   # for L-BFGS; not a dependency of cifarlin
    cifarlin features fit --centroids 1600 --out k1600.h5
    cifarlin train --features k1600.h5 --solver ridge --train-batches 1-5 --val-size 1000 \\
        --augment flip -o ridge1600
    python benchmarks/l2svm_check.py k1600.h5 ridge1600/model.h5 --augment flip --lam 1e-5,1e-6,1e-7

A one-vs-rest L2-SVM (squared hinge, the paper's classifier): minimises
lam ||W||^2 + mean_n sum_k max(0, 1 - t_nk s_nk)^2, t = +1 for the true class and -1 for the
others, on the same standardised features `train --features` uses, by L-BFGS (300 iterations per
lambda, 20 corrections, warm-started from the ridge model's 2 W, 2 b - 1, then from the previous
lambda); the validation images choose lambda. Prints validation and test accuracy per lambda.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import default_data_dir
from threadpoolctl import threadpool_limits

from cifarlin.core.config import TrainConfig
from cifarlin.data import cifar as data
from cifarlin.store.checkpoint import load_snapshot
from cifarlin.work.prepare import prepare_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("features")
    ap.add_argument("ridge_model")
    ap.add_argument("--augment", default="flip")
    ap.add_argument("--lam", default="1e-5,1e-6,1e-7")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--data-dir", default=str(default_data_dir()))
    args = ap.parse_args()
    try:
        from scipy.optimize import minimize
    except ImportError:
        raise SystemExit("this check needs scipy (pip install scipy); cifarlin itself does not") from None
    cfg = TrainConfig(
        features=args.features, train_batches=(1, 2, 3, 4, 5), val_size=1000, augment=args.augment
    )
    p = prepare_run(data.find(Path(args.data_dir)), cfg)
    X, y = p.X["train"], p.y["train"]  # (N, d) float32, standardised (mirrored rows included)
    N, d = X.shape
    T = -np.ones((N, 10), np.float32)
    T[np.arange(N), y] = 1
    snap = load_snapshot(Path(args.ridge_model))

    def accuracy(W: np.ndarray, b: np.ndarray, split: str) -> float:
        S = p.X[split] @ W.T.astype(np.float32) + b.astype(np.float32)
        return float((S.argmax(1) == p.y[split]).mean())

    def objective(theta: np.ndarray, lam: float) -> tuple[float, np.ndarray]:
        W, b = theta[: 10 * d].reshape(10, d), theta[10 * d :]
        S = X @ W.T.astype(np.float32) + b.astype(np.float32)  # (N, 10)
        M = np.maximum(0, 1 - T * S)  # (N, 10) violated margins
        f = lam * float((W * W).sum()) + float((M.astype(np.float64) ** 2).sum()) / N
        G = (-2.0 / N) * T * M  # (N, 10) d(mean loss)/dS
        dW = 2 * lam * W + (G.T @ X).astype(np.float64)
        return f, np.concatenate([dW.ravel(), G.sum(0).astype(np.float64)])

    W, b = snap.state.W.astype(np.float64), snap.state.b.astype(np.float64)
    ridge = f"val {accuracy(W, b, 'val'):.4f} test {accuracy(W, b, 'test'):.4f}"
    print(f"{X.shape[0]} rows of {d} features; ridge: {ridge}")
    theta = np.concatenate([2 * W.ravel(), 2 * b - 1])
    with threadpool_limits(2):
        for lam in (float(v) for v in args.lam.split(",")):
            t = time.perf_counter()
            r = minimize(
                objective,
                theta,
                args=(lam,),
                jac=True,
                method="L-BFGS-B",
                options={"maxiter": args.iterations, "maxcor": 20},
            )
            theta = r.x
            W, b = theta[: 10 * d].reshape(10, d), theta[10 * d :]
            print(
                f"lambda {lam:g}: {r.nit} iterations, val {accuracy(W, b, 'val'):.4f} "
                f"test {accuracy(W, b, 'test'):.4f} ({time.perf_counter() - t:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
