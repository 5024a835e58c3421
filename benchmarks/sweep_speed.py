"""Time `cifarlin sweep` on a local Dask cluster beside the same trials run one after another.

    python benchmarks/sweep_speed.py [--data-dir DIR] [--repeats 3] [--workers 2] [--epochs 40]

CPU seconds (user + system, worker processes included) are printed beside the wall times: on a
machine that other work shares, they show what the same job costs on an idle one.

The grid is lambda in {0, 0.01, 0.1, 1} x eta in {0.001, 0.01}: 8 trials of 40 epochs on
data_batch_1 (batch 100). Each repeat times, as whole processes (start-up, data loading and file
writing included), in alternating order so that a drifting machine favours neither:

1. `cifarlin sweep --workers N` over the grid;
2. the 8 trials as 8 `cifarlin train` commands one after another;
3. with --one-worker, also `cifarlin sweep --workers 1` (the sweep's own overhead).

Then it checks that every trial of the sweep equals its `cifarlin train` run bit for bit (W, b and
every history column, np.array_equal) and prints the medians and the ratio sweep / sequential.
Needs CIFAR-10 (the README's data folder rule, or --data-dir).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

LAMS = ("0", "0.01", "0.1", "1")
ETAS = ("0.001", "0.01")


CPU: dict[str, list[float]] = {}  # CPU seconds (user + system) of each job, its worker processes included


def cpu_of_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def cifarlin(*args: str) -> float:
    """Wall time of one `cifarlin` command (a new Python process), which must succeed."""
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "cifarlin", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"cifarlin {' '.join(args)} failed:\n{r.stderr}")
    return seconds


def arrays(run: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(run / "model.h5", "r") as f:
        out["W"], out["b"] = f["W"][()], f["b"][()]
    with h5py.File(run / "history.h5", "r") as f:
        out.update({f"history/{k}": f[k][()] for k in f if k not in ("seconds",)})
    return out


def same_bits(a: Path, b: Path) -> bool:
    x, y = arrays(a), arrays(b)
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--one-worker", action="store_true", help="also time the sweep with one worker")
    a = ap.parse_args()
    data = ["--data-dir", a.data_dir] if a.data_dir else []
    common = ["--epochs", str(a.epochs), "--no-plots", "--quiet", *data]
    times: dict[str, list[float]] = {"sweep": [], "sequential": [], "sweep-1": []}
    print(f"{os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(a.repeats):

            def sweep(n: int, i: int = i) -> float:
                out = root / f"sweep-{n}-{i}"
                grid = ["--lam", ",".join(LAMS), "--eta", ",".join(ETAS)]
                return cifarlin("sweep", *grid, "--workers", str(n), "--out", str(out), *common)

            def sequential(i: int = i) -> float:
                return sum(
                    cifarlin(
                        "train",
                        "--lam",
                        lam,
                        "--eta",
                        eta,
                        "--out",
                        str(root / f"train-{i}-{lam}-{eta}"),
                        *common,
                    )
                    for lam in LAMS
                    for eta in ETAS
                )

            jobs = [("sweep", lambda: sweep(a.workers)), ("sequential", sequential)]
            if a.one_worker:
                jobs.append(("sweep-1", lambda: sweep(1)))
            for name, job in jobs if i % 2 == 0 else jobs[::-1]:
                cpu = cpu_of_children()
                times[name].append(job())
                CPU.setdefault(name, []).append(cpu_of_children() - cpu)
                wall, cpu, load = times[name][-1], CPU[name][-1], os.getloadavg()[0]
                print(f"repeat {i + 1}: {name} {wall:.1f} s, {cpu:.1f} CPU s (load {load:.1f})", flush=True)
        trials = sorted((root / f"sweep-{a.workers}-0").glob("trial-*"))
        pairs = [
            (t, root / f"train-0-{lam}-{eta}")
            for t, (lam, eta) in zip(trials, [(x, y) for x in LAMS for y in ETAS], strict=True)
        ]
        equal = [same_bits(t, r) for t, r in pairs]
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    for name, ts in times.items():
        if ts:
            each = ", ".join(f"{t:.1f}" for t in ts)
            cpu = statistics.median(CPU[name])
            print(
                f"{name:>10}: median {statistics.median(ts):.1f} s over {len(ts)} ({each}); {cpu:.1f} CPU s"
            )
    ratio = statistics.median(times["sweep"]) / statistics.median(times["sequential"])
    print(f"sweep with {a.workers} workers / sequential train commands: {ratio:.2f}")
    print(f"bit for bit equal to cifarlin train: {sum(equal)} of {len(equal)} trials")


if __name__ == "__main__":
    main()
