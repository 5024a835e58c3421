"""The search behind `cifarlin train --setting bonus`, on validation accuracy alone.

    python benchmarks/bonus_search.py GRID.json OUT.jsonl [--data-dir DIR] [--val-size 5000]

GRID.json is a list of TrainConfig overrides (e.g. [{"augment": "flip,translate:1", "epochs": 20,
"schedule": "cosine", "lam": 0.001, "eta": 0.01}, ...]); every trial trains on data_batches 1-5
but the last ``--val-size`` images, shuffled, and appends its final and best validation accuracy
to OUT.jsonl. The data are read once for all trials. The test set is never looked at: the
README's table of the search comes from these files. ``cifarlin sweep`` runs the same trials
(bit for bit) on a Dask cluster; this script keeps them in one process for a laptop.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import default_data_dir

from cifarlin.core import config, train
from cifarlin.data import cifar as data
from cifarlin.work.prepare import prepare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--data-dir", default=str(default_data_dir()))
    ap.add_argument("--val-size", type=int, default=5000)
    args = ap.parse_args()
    batches = (1, 2, 3, 4, 5)
    prepared = prepare(
        data.find(Path(args.data_dir)), config.SplitSpec(batches, args.val_size), keep_raw=True
    )
    with args.out.open("a") as out:
        for combo in json.loads(args.grid.read_text()):
            cfg = config.TrainConfig(train_batches=batches, val_size=args.val_size, shuffle=True, **combo)
            t0 = time.perf_counter()
            h = train.fit(cfg, prepared, train.init_state(cfg)).history
            row = {
                **combo,
                "final_val": h.columns["val_acc"][-1],
                "best_val": h.best_val_acc,
                "best_epoch": h.best_epoch,
                "seconds": time.perf_counter() - t0,
            }
            print(json.dumps(row), file=out, flush=True)


if __name__ == "__main__":
    main()
