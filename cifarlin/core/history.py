"""What a run remembers: the metrics per epoch (:class:`History`) and the state to continue
from (:class:`TrainState`). Shared by the loop, the files, the run folders and the figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cifarlin.core.model import Metrics

HISTORY_KEYS = ("train_cost", "train_loss", "train_acc", "val_cost", "val_loss", "val_acc", "seconds", "eta")
#: Metrics files written before the learning-rate schedules lack; read as the constant eta.
OPTIONAL_KEYS = ("eta",)


def best_epoch(val_acc: list[float] | np.ndarray) -> int:
    """1-based epoch with the highest validation accuracy (the earliest on ties); 0 if empty."""
    return int(np.argmax(val_acc)) + 1 if len(val_acc) else 0


#: The metrics of the initial weights (before the first update), kept beside the epochs.
INITIAL_KEYS = ("train_cost", "train_loss", "train_acc", "val_cost", "val_loss", "val_acc")


def _metrics_row(train: Metrics, val: Metrics) -> dict[str, float]:
    """train_cost ... val_acc: the :data:`INITIAL_KEYS` of one evaluation of both sets."""
    return {
        f"{split}_{name}": getattr(m, attr)
        for split, m in (("train", train), ("val", val))
        for name, attr in (("cost", "cost"), ("loss", "loss"), ("acc", "accuracy"))
    }


@dataclass
class History:
    """One value per epoch for each of :data:`HISTORY_KEYS`, and the metrics of the initial
    weights (``initial``: :data:`INITIAL_KEYS`, None when not known)."""

    columns: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in HISTORY_KEYS})
    initial: dict[str, float] | None = None

    def set_initial(self, train: Metrics, val: Metrics) -> None:
        self.initial = _metrics_row(train, val)

    def __len__(self) -> int:
        return len(self.columns["train_cost"])

    def append(self, train: Metrics, val: Metrics, seconds: float, eta: float) -> None:
        row = {**_metrics_row(train, val), "seconds": seconds, "eta": eta}
        for k in HISTORY_KEYS:
            self.columns[k].append(float(row[k]))

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.float64) for k, v in self.columns.items()}

    def last(self) -> dict[str, float]:
        return {k: v[-1] for k, v in self.columns.items()}

    @property
    def best_epoch(self) -> int:
        """1-based epoch with the highest validation accuracy (the earliest on ties); 0 if empty."""
        return best_epoch(self.columns["val_acc"])

    @property
    def best_val_acc(self) -> float | None:
        return self.columns["val_acc"][self.best_epoch - 1] if len(self) else None

    def copy(self) -> History:
        return History(
            {k: list(v) for k, v in self.columns.items()}, dict(self.initial) if self.initial else None
        )

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], initial: dict[str, float] | None = None) -> History:
        return cls({k: [float(x) for x in arrays[k]] for k in HISTORY_KEYS}, initial)


def history_metrics(history: History, keep: str = "last") -> dict[str, Any]:
    """The validation metrics of a history; ``val_*`` those of the epoch whose model a run with
    this ``keep`` saves (the last, or the best): what a sweep ranks by and ``cifarlin runs`` shows."""
    h = history.columns
    if not len(history):
        return {}
    saved = history.best_epoch - 1 if keep == "best" else -1
    return {
        "val_accuracy": h["val_acc"][saved],
        "val_cost": h["val_cost"][saved],
        "final_val_accuracy": h["val_acc"][-1],
        "final_val_cost": h["val_cost"][-1],
        "best_val_accuracy": history.best_val_acc,
        "best_val_cost": min(h["val_cost"]),
        "best_epoch": history.best_epoch,
        "epochs_trained": len(history),
    }


@dataclass
class Kept:
    """The weights of one epoch kept aside (``keep="best"``: the best by validation accuracy)."""

    W: np.ndarray  # (K, d)
    b: np.ndarray  # (K,)
    epoch: int


@dataclass
class TrainState:
    """Everything needed to continue a run: parameters, epochs done, history, RNG state, and
    the best epoch's weights when the run keeps them."""

    W: np.ndarray  # (K, d)
    b: np.ndarray  # (K,)
    epoch: int
    history: History
    rng_state: dict[str, Any]
    best: Kept | None = None
