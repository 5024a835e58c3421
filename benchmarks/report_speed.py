"""Time `cifarlin report DIR -o X.html` on an outputs folder like the assignment's, cold and warm.

    python benchmarks/report_speed.py [DIR] [--data-dir DIR] [--repeats 5] [--keep]

DIR is an outputs folder, only read: the report runs on copies of it. Without DIR, one is built in a
temporary folder from the data folder (a few minutes on 2 cores): `train --setting all`, setting 2
with seeds 1 and 2, setting 3 with `--loss svm` and `--loss bce`, `--setting bonus`, `--solver
ridge`, a 4-trial sweep (lambda 0, 0.1 x eta 0.001, 0.01, 10 epochs) and `gradcheck --lam 0.1`
for ce and svm (their outputs/gradcheck-LOSS.json).

Each repeat times two whole processes (start-up, imports and reading the runs included), in
alternating order so that a drifting machine favours neither:

1. cold: a fresh copy from which every figure the report draws from the test images
   (probs-test.png, confusion-test.png, samples-test.png) has been deleted: it draws them again;
2. warm: a copy in which every figure is present (drawn once before the first repeat).

It prints the medians and ranges of the wall times, the peak resident memory of the report
process (its own ``ru_maxrss`` from ``os.wait4``, what ``/usr/bin/time -v`` reports) and the
size of the HTML page. The issue's target for such a folder: under 5 s and under 10 MB.
No timing is asserted anywhere: the figures go to benchmarks/README.md by hand, with the machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import default_data_dir

DRAWN = ("probs-test.png", "confusion-test.png", "samples-test.png")  # what the report draws itself
TIMEOUT = 1800  # seconds for one command; a build or a report taking longer is a failure


def run(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one whole process, which must succeed."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        deadline = t0 + TIMEOUT
        while True:  # os.wait4 has no timeout: poll it
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if p.returncode != 0:
            out.seek(0)
            text = out.read().decode("utf-8", "replace")
            raise SystemExit(f"{' '.join(cmd)} failed (exit {p.returncode}):\n{text[-2000:]}")
    return wall, usage.ru_maxrss / 1024  # kilobytes on Linux


def build(root: Path, env: dict[str, str]) -> Path:
    """An outputs folder like the assignment's, trained on the data folder of ``env``."""
    out = root / "outputs"
    cifarlin = [sys.executable, "-m", "cifarlin"]
    commands = [
        ["train", "--setting", "all", "-o", str(out)],
        ["train", "--setting", "2", "--seed", "1", "-o", str(out / "setting-2-seed-1")],
        ["train", "--setting", "2", "--seed", "2", "-o", str(out / "setting-2-seed-2")],
        ["train", "--setting", "3", "--loss", "svm", "-o", str(out / "svm")],
        ["train", "--setting", "3", "--loss", "bce", "-o", str(out / "bce")],
        ["train", "--setting", "bonus", "-o", str(out / "setting-bonus")],
        ["train", "--solver", "ridge", "-o", str(out / "ridge")],
        ["sweep", "--lam", "0,0.1", "--eta", "0.001,0.01", "--epochs", "10", "-o", str(out / "sweep")],
        ["gradcheck", "--lam", "0.1", "--out", str(out / "gradcheck-ce.json")],
        ["gradcheck", "--lam", "0.1", "--loss", "svm", "--out", str(out / "gradcheck-svm.json")],
    ]
    for args in commands:
        t0 = time.perf_counter()
        run([*cifarlin, *args, "-q"], env)
        print(f"  cifarlin {' '.join(args)}: {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def copy(src: Path, dst: Path, cold: bool) -> Path:
    """A copy of the outputs folder ``src`` at ``dst``; cold: without the figures the report draws."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, symlinks=True)
    if cold:
        for name in DRAWN:
            for f in dst.rglob(name):
                f.unlink()
    return dst


def spread(xs: list[float], unit: str, digits: int = 2) -> str:
    return (
        f"median {statistics.median(xs):.{digits}f} {unit} (range {min(xs):.{digits}f}-{max(xs):.{digits}f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", metavar="DIR", help="an outputs folder (default: build one)")
    ap.add_argument("--data-dir", default=str(default_data_dir()))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (and say where)")
    a = ap.parse_args()
    env = {**os.environ, "CIFARLIN_DATA_DIR": a.data_dir}
    tmp = Path(tempfile.mkdtemp(prefix="cifarlin-report-bench-"))
    try:
        print(f"{os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.2f}", flush=True)
        if a.folder is None:
            print(f"building an outputs folder from {a.data_dir}:", flush=True)
            source = build(tmp / "built", env)
        else:
            source = Path(a.folder)
            if not source.is_dir():
                raise SystemExit(f"{source}: no such folder")
        report = [sys.executable, "-m", "cifarlin", "report", "-q"]
        warm = copy(source, tmp / "warm", cold=False)
        run([*report, str(warm), "-o", str(tmp / "warm.html")], env, cwd=tmp)  # draws what is missing
        times: dict[str, list[float]] = {"cold": [], "warm": []}
        rss: dict[str, list[float]] = {"cold": [], "warm": []}
        sizes, drawn = [], []
        for i in range(a.repeats):
            cold = copy(source, tmp / "cold", cold=True)  # outside the timing
            missing = sum(1 for name in DRAWN for _ in cold.rglob(name))
            jobs = [("cold", cold), ("warm", warm)]
            for name, folder in jobs if i % 2 == 0 else jobs[::-1]:
                page = tmp / f"{name}.html"
                wall, peak = run([*report, str(folder), "-o", str(page)], env, cwd=tmp)
                times[name].append(wall)
                rss[name].append(peak)
                sizes.append(page.stat().st_size / 1e6)
                load = os.getloadavg()[0]
                print(
                    f"repeat {i + 1}: {name} {wall:.2f} s, peak RSS {peak:.0f} MB (load {load:.1f})",
                    flush=True,
                )
            drawn.append(sum(1 for name in DRAWN for _ in cold.rglob(name)) - missing)
        print(f"load average at end {os.getloadavg()[0]:.2f}")
        print(f"cifarlin report {source} -o X.html, whole processes, {a.repeats} repeats:")
        for name in times:
            print(f"  {name}: {spread(times[name], 's')}; peak RSS {spread(rss[name], 'MB', 0)}")
        print(f"  cold runs drew {statistics.median(drawn):.0f} figures each")
        print(f"  HTML page: {spread(sizes, 'MB')}")
        slow = max(statistics.median(t) for t in times.values())
        print(f"  target (under 5 s, under 10 MB): {'met' if slow < 5 and max(sizes) < 10 else 'NOT met'}")
    finally:
        if a.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
