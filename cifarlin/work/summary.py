"""What a finished run reports (:class:`RunSummary`): the printed summary of ``train``, the
comparison of ``train --setting all`` and its ``summary.json`` read its named fields, and
:meth:`RunSummary.to_json` is the one place its JSON (``train --json``) is made.

This module imports nothing heavy (no NumPy): it is the seam between a run and its readers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cifarlin.core.config import TrainConfig
    from cifarlin.core.history import History
    from cifarlin.core.model import Metrics
    from cifarlin.core.ridge import LambdaScore


@dataclass(frozen=True)
class RunSummary:
    """A finished run, as :meth:`cifarlin.work.runs.Outcome.summary` reports it."""

    setting: int | str | None
    run_dir: Path
    config: TrainConfig
    epochs: int  # the epochs trained
    resumed_from_epoch: int  # 0: trained from the start
    train: Metrics  # of the last epoch
    val: Metrics  # of the last epoch
    test: Metrics  # of the model in model.h5
    best_epoch: int  # by validation accuracy (the earliest on ties)
    model_epoch: int  # the epoch whose weights model.h5 holds (the last, or the best one kept)
    stopped_early: bool  # by --patience, before config.epochs
    best_val_accuracy: float | None
    lambda_search: tuple[LambdaScore, ...]  # ridge: each candidate's validation accuracy
    reference_test_accuracy: float | None  # the original work's, for a reference setting
    comparable_to_reference: bool  # exactly one of the original work's settings
    training_seconds: float  # the training loop: epochs, their metrics, the test evaluation
    checkpoint_seconds: float  # writing checkpoint.h5 (not in training_seconds)
    epoch_seconds: float  # the epochs alone, summed from the history
    model_file: Path
    checkpoint_file: Path
    history_file: Path
    reused: bool  # a complete run found in its folder, not trained again
    warnings: tuple[str, ...]
    history: History
    figures: tuple[str, ...] | None = None  # the figures drawn after the run
    stale_figures: tuple[str, ...] | None = None  # figures not redrawn (--no-plots) that show an older run

    def to_json(self) -> dict[str, Any]:
        """The run in ``train --json`` and ``summary.json`` (its keys in this order)."""
        h = self.history
        out: dict[str, Any] = {
            "setting": self.setting,
            "run_dir": str(self.run_dir),
            "config": self.config.to_dict(),
            "epochs": self.epochs,
            "resumed_from_epoch": self.resumed_from_epoch,
            **{
                name: {"cost": m.cost, "loss": m.loss, "accuracy": m.accuracy}
                for name, m in (("train", self.train), ("val", self.val), ("test", self.test))
            },
            "best_epoch": self.best_epoch,
            "model_epoch": self.model_epoch,
            "stopped_early": self.stopped_early,
            "best_val_accuracy": self.best_val_accuracy,
            "lambda_search": [
                {"lam": c.lam, "val_accuracy": c.val_acc, "objective": c.objective}
                for c in self.lambda_search
            ],
            "reference_test_accuracy": self.reference_test_accuracy,
            "comparable_to_reference": self.comparable_to_reference,
            "seconds": {
                "training": self.training_seconds,
                "checkpoints": self.checkpoint_seconds,
                "epochs": self.epoch_seconds,
            },
            "files": {
                "model": str(self.model_file),
                "checkpoint": str(self.checkpoint_file),
                "history": str(self.history_file),
            },
            "reused": self.reused,
            "warnings": list(self.warnings),
            "history": {"initial": h.initial, **h.columns},
        }
        if self.figures is not None:
            out["figures"] = list(self.figures)
        if self.stale_figures is not None:
            out["stale_figures"] = list(self.stale_figures)
        return out
