"""The whole `cifarlin train --setting 2`, phase by phase, beside a plain PyTorch loop.

    python benchmarks/train_speed.py [--data-dir DIR] [--repeats 5] [--torch-python PYTHON]
                                      [--skip-torch] [--skip-all] [--skip-49k]

Everything is measured as whole processes (what a user waits for), the commands alternating in
one run so that a shared machine's drift hits all alike; medians of ``--repeats``:

1. `cifarlin --help`, `cifarlin train --help`;
2. `cifarlin train --setting 2` (with its figures) and the same with `--no-plots`; the phases the
   command reports (training loop, checkpoints) and its peak resident memory;
3. the same work in PyTorch on the CPU (when a Python with torch is given or this one has it), and
   the ratios: `benchmarks/torch_plain.py` as the tutorials write it (DataLoader, nn.Linear,
   optim.SGD, its own loading) and `benchmarks/torch_loop.py` hand-tuned (cifarlin's loader,
   slices, autograd.grad);
4. in-process phases: reading and normalising the three default batches (`work.prepare.prepare`), and
   drawing and saving the two figures train draws;
5. `cifarlin train --setting all`, two runs at a time (the default) against one after another;
6. 49,000 training images (`--train-batches 1-5 --val-size 1000`, 3 epochs): images per second
   and peak memory, with and without `--augment flip,translate:2`.

No timing is asserted anywhere: the figures go to benchmarks/README.md by hand, with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import default_data_dir

HERE = Path(__file__).resolve().parent


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, stdout) of a whole process, through /usr/bin/time -v."""
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    rss = next(int(line.split()[-1]) for line in r.stderr.splitlines() if "Maximum resident" in line) / 1024
    return wall, rss, r.stdout


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):6.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(default_data_dir()))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--torch-python", default=sys.executable, help="a Python that can import torch")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-all", action="store_true", help="skip --setting all")
    ap.add_argument("--skip-49k", action="store_true")
    args = ap.parse_args()
    cifarlin = [sys.executable, "-m", "cifarlin"]
    env = {**os.environ, "CIFARLIN_DATA_DIR": args.data_dir}
    has_torch = (
        not args.skip_torch
        and subprocess.run([args.torch_python, "-c", "import torch"], capture_output=True).returncode == 0
    )
    tmp = Path(tempfile.mkdtemp(prefix="cifarlin-bench-"))
    rows: dict[str, list[float]] = {
        k: [] for k in ("help", "train-help", "train", "train-no-plots", "torch", "torch-plain")
    }
    loop, ckpt, rss, torch_loop, torch_import = [], [], [], [], []
    for i in range(args.repeats):  # alternately
        rows["help"].append(timed([*cifarlin, "--help"], env)[0])
        rows["train-help"].append(timed([*cifarlin, "train", "--help"], env)[0])
        wall, peak, out = timed(
            [*cifarlin, "train", "--setting", "2", "-q", "--json", "-o", str(tmp / f"a{i}")], env
        )
        s = json.loads(out)
        rows["train"].append(wall)
        loop.append(s["seconds"]["training"])
        ckpt.append(s["seconds"]["checkpoints"])
        rss.append(peak)
        wall, _, _ = timed(
            [*cifarlin, "train", "--setting", "2", "-q", "--no-plots", "-o", str(tmp / f"b{i}")], env
        )
        rows["train-no-plots"].append(wall)
        if has_torch:
            wall, _, out = timed(
                [args.torch_python, str(HERE / "torch_loop.py"), "--data-dir", args.data_dir], env
            )
            rows["torch"].append(wall)
            t = json.loads(out)
            torch_loop.append(t["loop"])
            torch_import.append(t["import_torch"])
            wall, _, _ = timed(
                [args.torch_python, str(HERE / "torch_plain.py"), "--data-dir", args.data_dir], env
            )
            rows["torch-plain"].append(wall)
    print(f"whole processes, medians of {args.repeats} (seconds), data {args.data_dir}:")
    print(f"  cifarlin --help                         {med(rows['help'])}")
    print(f"  cifarlin train --help                   {med(rows['train-help'])}")
    print(f"  cifarlin train --setting 2              {med(rows['train'])}   (peak RSS {med(rss)} MB)")
    print(f"    of which the training loop            {med(loop)}   (+{med(ckpt)} s writing checkpoints)")
    print(f"  cifarlin train --setting 2 --no-plots   {med(rows['train-no-plots'])}")
    if rows["torch"]:
        ratio = statistics.median(rows["train"]) / statistics.median(rows["torch"])
        print(
            f"  PyTorch loop (benchmarks/torch_loop.py) {med(rows['torch'])}   (its loop {med(torch_loop)}, "
            f"import torch {med(torch_import)})"
        )
        print(f"  cifarlin / PyTorch (tuned)              {ratio:6.2f}")
        plain = statistics.median(rows["train"]) / statistics.median(rows["torch-plain"])
        print(f"  idiomatic PyTorch (torch_plain.py)      {med(rows['torch-plain'])}")
        print(f"  cifarlin / PyTorch (idiomatic)          {plain:6.2f}")
    print("in-process phases:", flush=True)
    phases = subprocess.run(
        [
            sys.executable,
            str(HERE / "phases.py"),
            "--data-dir",
            args.data_dir,
            "--repeats",
            str(args.repeats),
        ],
        capture_output=True,
        text=True,
    )
    print(phases.stdout.rstrip() or phases.stderr[-2000:])
    if not args.skip_all:
        par, seq = [], []
        for i in range(max(1, args.repeats // 2)):
            base = [*cifarlin, "train", "--setting", "all", "-q", "--no-plots"]
            par.append(timed([*base, "-o", str(tmp / f"p{i}")], env)[0])
            seq.append(timed([*base, "--workers", "1", "-o", str(tmp / f"s{i}")], env)[0])
        print(f"  --setting all, two at a time           {med(par)}")
        print(
            f"  --setting all, one after another       {med(seq)}   "
            f"(ratio {statistics.median(par) / statistics.median(seq):.2f})"
        )
    if not args.skip_49k:
        for aug in ("none", "flip,translate:2"):
            wall, peak, out = timed(
                [
                    *cifarlin,
                    "train",
                    "--train-batches",
                    "1-5",
                    "--val-size",
                    "1000",
                    "--epochs",
                    "3",
                    "--augment",
                    aug,
                    "-q",
                    "--json",
                    "--no-plots",
                    "-o",
                    str(tmp / f"k{aug}"),
                ],
                env,
            )
            s = json.loads(out)
            per_epoch = statistics.median(s["history"]["seconds"])
            print(
                f"  49,000 images, augment {aug:17} {per_epoch:5.2f} s/epoch, "
                f"{49000 / per_epoch:9,.0f} images/s, peak RSS {peak:.0f} MB, whole process {wall:.1f} s"
            )


if __name__ == "__main__":
    main()
