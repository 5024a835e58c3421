"""What the benchmark scripts share (each runs as `python benchmarks/NAME.py`, beside this file)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def default_data_dir() -> Path:
    """$CIFARLIN_DATA_DIR, else the shared stand-in beside the checkout when present, else the
    default data folder ($XDG_CACHE_HOME/cifarlin)."""
    env = os.environ.get("CIFARLIN_DATA_DIR")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cifarlin"
    shared = Path(__file__).resolve().parents[2] / "shared" / "cifar-10-batches-py"
    return Path(env) if env else (shared if shared.is_dir() else cache)


def report_torch(import_torch: float, load: float, loop: float, test_accuracy: float) -> None:
    """The one JSON line a PyTorch comparison script prints for train_speed.py (seconds)."""
    print(
        json.dumps({"import_torch": import_torch, "load": load, "loop": loop, "test_accuracy": test_accuracy})
    )
