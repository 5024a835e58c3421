"""In-process phases of `cifarlin train --setting 2`: loading and normalising the data, the
training loop, and drawing the two figures train draws. Medians of --repeats, wall and CPU time.

The loading is timed in a fresh process each time, as the command meets it: a process that has
already mapped and released that much memory gets it back faster (0.2 s against 0.25 s here).

    python benchmarks/phases.py [--data-dir DIR] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import default_data_dir

from cifarlin.core import config, train
from cifarlin.core.config import TrainConfig
from cifarlin.data import cifar as data
from cifarlin.work.prepare import prepare


def clock(f):
    w, c = time.perf_counter(), time.process_time()
    r = f()
    return r, time.perf_counter() - w, time.process_time() - c


FRESH = """
import sys, time
from pathlib import Path
from cifarlin.core import config
from cifarlin.data import cifar as data
ds = data.find(Path(sys.argv[1]))
w, c = time.perf_counter(), time.process_time()
prepare(ds, config.SplitSpec())
print(time.perf_counter() - w, time.process_time() - c)
"""


def fresh_load(folder: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of prepare of the three default batches in a new process."""
    out = subprocess.run(
        [sys.executable, "-c", FRESH, str(folder)], capture_output=True, text=True, check=True
    )
    wall, cpu = out.stdout.split()
    return float(wall), float(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(default_data_dir()))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    ds = data.find(Path(args.data_dir))
    cfg = TrainConfig.for_setting(2)
    load, loop, figs = [], [], []
    out = Path(tempfile.mkdtemp(prefix="cifarlin-phases-"))
    for _ in range(args.repeats):
        load.append(fresh_load(ds.folder))
        p = prepare(ds, config.SplitSpec())
        st, w, c = clock(lambda p=p: train.fit(cfg, p, train.init_state(cfg)))
        loop.append((w, c))

        def draw(st=st, p=p) -> None:
            from cifarlin.figures import common, images, plots

            common.save(plots.curves(st.history, cfg), out / "curves.png")
            common.save(images.montage(st.W, p.class_names, common.run_title(cfg)), out / "montage.png")

        _, w, c = clock(draw)
        figs.append((w, c))
    for name, xs in (
        ("load + normalise 3 batches, a fresh process", load),
        ("training loop (40 epochs)", loop),
        ("curves + montage", figs),
    ):
        wall = statistics.median(x[0] for x in xs)
        cpu = statistics.median(x[1] for x in xs)
        print(f"  {name:44} {wall:6.3f} s wall, {cpu:6.3f} s CPU")


if __name__ == "__main__":
    main()
