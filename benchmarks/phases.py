"""In-process phases of `cifarlin train --setting 2`: loading and normalising the data, the
training loop, and drawing the two figures train draws. Medians of --repeats, wall and CPU time.

    python benchmarks/phases.py [--data-dir DIR] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import default_data_dir

from cifarlin import config, data, train
from cifarlin.config import TrainConfig


def clock(f):
    w, c = time.perf_counter(), time.process_time()
    r = f()
    return r, time.perf_counter() - w, time.process_time() - c


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
        p, w, c = clock(lambda: data.prepare(ds, config.SplitSpec()))
        load.append((w, c))
        st, w, c = clock(lambda p=p: train.fit(cfg, p, train.init_state(cfg)))
        loop.append((w, c))

        def draw(st=st, p=p) -> None:
            from cifarlin import plots

            plots.save(plots.curves(st.history, cfg), out / "curves.png")
            plots.save(plots.montage(st.W, p.class_names, plots.run_title(cfg)), out / "montage.png")

        _, w, c = clock(draw)
        figs.append((w, c))
    for name, xs in (
        ("load + normalise 3 batches", load),
        ("training loop (40 epochs)", loop),
        ("curves + montage", figs),
    ):
        wall = statistics.median(x[0] for x in xs)
        cpu = statistics.median(x[1] for x in xs)
        print(f"  {name:28} {wall:6.3f} s wall, {cpu:6.3f} s CPU")


if __name__ == "__main__":
    main()
