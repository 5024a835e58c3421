"""Time the full gradient check (n = 20, all 30,730 parameters) beside the per-parameter loop.

    python benchmarks/gradcheck_speed.py [--data-dir DIR] [--skip-loop]

Uses the first 20 CIFAR-10 training images when the data are found (else random inputs), W and b
initialised as in training, lambda = 0.1. Prints the wall time of the vectorised centred
differences, of the complex step, and of the plain loop oracle from tests/oracles.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cifarlin.core import config, numgrad
from cifarlin.data import cifar as data
from cifarlin.errors import DataNotFoundError
from cifarlin.work import gradcheck
from cifarlin.work.prepare import training_sample
from oracles import numerical_gradients_loop


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--skip-loop", action="store_true", help="do not time the ~15 s loop oracle")
    args = ap.parse_args()

    cfg = gradcheck.GradcheckConfig(n=20, lam=0.1)
    try:
        source = data.find(args.data_dir)
        X, y, _ = training_sample(source, config.SplitSpec(), cfg.n)
        W, b, _ = gradcheck.initial_params(cfg)
        where = str(source.folder)
    except DataNotFoundError:
        W, b, X, y = gradcheck.random_problem(cfg)
        where = "random inputs (no CIFAR-10 found)"
    print(
        f"gradient check, n={cfg.n}, d={X.shape[1]}, lambda={cfg.lam}, {W.size + b.size} parameters; "
        f"data: {where}"
    )

    full = best_of(lambda: gradcheck.check(W, b, X, y, cfg, where), 5)
    cent = best_of(lambda: numgrad.numerical_gradients(W, b, X, y, cfg.lam, h=1e-6), 5)
    cplx = best_of(lambda: numgrad.numerical_gradients(W, b, X, y, cfg.lam, h=1e-20, method="complex"), 5)
    report = gradcheck.check(W, b, X, y, cfg, where)
    print(f"  vectorised centred differences   {cent:8.3f} s")
    print(f"  vectorised complex step          {cplx:8.3f} s")
    print(f"  whole check (analytic + centred) {full:8.3f} s   {'PASS' if report.passed else 'FAIL'}")
    if not args.skip_loop:
        t0 = time.perf_counter()
        gW, gb = numerical_gradients_loop(W.copy(), b.copy(), X, y, cfg.lam, h=1e-6)
        loop = time.perf_counter() - t0
        vW, vb = numgrad.numerical_gradients(W, b, X, y, cfg.lam, h=1e-6)
        diff = max(np.abs(gW - vW).max(), np.abs(gb - vb).max())
        print(
            f"  per-parameter loop (oracle)      {loop:8.3f} s   {loop / cent:,.0f}x slower; "
            f"max |loop - vectorised| = {diff:.1e}"
        )


if __name__ == "__main__":
    main()
