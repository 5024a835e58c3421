"""Small runs on the tiny data for tests: their configuration, and the arrays their files hold."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from cifarlin.core.config import TrainConfig


def cfg(**kw):
    """Four epochs of batch 10 at eta 0.01 (and ``kw``): a run of seconds on the tiny data."""
    return TrainConfig(**{"epochs": 4, "batch_size": 10, "eta": 0.01, **kw})


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file of a run (and of its history group, as history/NAME)."""
    with h5py.File(path, "r") as f:
        out = {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}
        if "history" in f:
            out.update({f"history/{k}": f["history"][k][()] for k in f["history"]})
        return out
