"""The best epoch: the highest validation accuracy, the earliest on ties, never the training
accuracy. Each test's docstring names the bug it catches."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from cifarlin.core import history
from cifarlin.core.config import TrainConfig
from cifarlin.core.history import History
from cifarlin.core.model import Metrics
from cifarlin.store import checkpoint

# Training accuracy climbs to the last epoch; validation accuracy peaks at epoch 3, ties it at
# epoch 5 and falls between: the three rules (max of val, earliest on ties, not train) disagree.
TRAIN_ACC = [0.30, 0.40, 0.45, 0.50, 0.55, 0.60]
VAL_ACC = [0.28, 0.33, 0.37, 0.35, 0.37, 0.34]


def curves(train_acc, val_acc) -> History:
    h = History()
    for i, (ta, va) in enumerate(zip(train_acc, val_acc, strict=True)):
        h.append(Metrics(2.0 - i / 10, 1.9 - i / 10, ta), Metrics(2.1 - i / 10, 2.0 - i / 10, va), 0.5, 0.001)
    return h


@pytest.mark.parametrize(
    "val_acc, best",
    [
        ([0.1], 1),
        ([0.1, 0.3, 0.2], 2),
        ([0.5, 0.4, 0.3], 1),  # the first epoch
        ([0.1, 0.2, 0.3], 3),  # the last epoch
        ([0.2, 0.5, 0.5, 0.4], 2),  # a tie: the earliest
        ([0.4, 0.4, 0.4], 1),  # all equal: the first
        ([], 0),
    ],
)
def test_best_epoch_is_the_earliest_highest_validation_accuracy(val_acc, best):
    """Catches: an off-by-one (0-based) epoch, the latest instead of the earliest of tied
    epochs, the lowest instead of the highest accuracy, and a crash on an empty history."""
    assert history.best_epoch(val_acc) == best
    assert history.best_epoch(np.asarray(val_acc, dtype=np.float64)) == best


def test_best_epoch_of_a_history_follows_validation_not_training():
    """Catches: History.best_epoch taken from the training accuracy (epoch 6 here), or from the
    last epoch, and best_val_acc read from another column or epoch."""
    h = curves(TRAIN_ACC, VAL_ACC)
    assert int(np.argmax(TRAIN_ACC)) + 1 == 6  # training says 6: the curves disagree
    assert h.best_epoch == 3
    assert h.best_val_acc == 0.37
    assert History().best_epoch == 0 and History().best_val_acc is None


def test_best_epoch_survives_the_history_file(tmp_path):
    """Catches: history.h5's best_epoch or best_val_acc attributes written from the training
    curve or from the last epoch."""
    h = curves(TRAIN_ACC, VAL_ACC)
    names = [f"c{i}" for i in range(10)]
    checkpoint.save_history(tmp_path / "history.h5", h, TrainConfig(epochs=6), names, "complete")
    with h5py.File(tmp_path / "history.h5", "r") as f:
        assert f.attrs["best_epoch"] == 3 and f.attrs["best_val_acc"] == 0.37
        assert f["val_acc"][()].tolist() == VAL_ACC and f["train_acc"][()].tolist() == TRAIN_ACC
