"""checkpoint.h5 at most once per runs.CHECKPOINT_SECONDS, and always where it matters: after the
last epoch, when early stopping or the ridge solver ends a run, and when a run stops (Ctrl-C,
divergence) with epochs trained since the last write. Each test's docstring names the bug."""

from __future__ import annotations

import time
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from cifarlin.core import config, train
from cifarlin.core.config import TrainConfig
from cifarlin.data import cifar as data
from cifarlin.errors import DivergenceError
from cifarlin.store import checkpoint
from cifarlin.work import runs
from cifarlin.work.prepare import prepare, prepare_run


@pytest.fixture(scope="module")
def prepared(tiny_py):
    return prepare(data.Dataset(tiny_py, "python"), config.SplitSpec(), keep_raw=True)


@pytest.fixture
def writes(monkeypatch):
    """The epochs of the checkpoints written, in order; the pace one write an hour."""
    monkeypatch.setattr(runs, "CHECKPOINT_SECONDS", 3600.0)
    epochs: list[int] = []
    real = runs.save_snapshot

    def save(path, snap):
        if snap.kind == "checkpoint":
            epochs.append(snap.state.epoch)
        real(path, snap)

    monkeypatch.setattr(runs, "save_snapshot", save)
    return epochs


def cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 6, "batch_size": 10, "eta": 0.01, **kw})


def saved_epoch(out) -> int:
    return checkpoint.load_snapshot(out / "checkpoint.h5").state.epoch


def test_a_run_writes_its_checkpoint_at_the_pace_and_after_the_last_epoch(
    prepared, tmp_path, writes, monkeypatch
):
    """Catches: a checkpoint after every epoch whatever the pace (a tenth of a short run), or none
    after the last epoch (a longer resume would start from an older one)."""
    runs.run(cfg(), tmp_path / "slow", prepared)
    assert writes == [6] and saved_epoch(tmp_path / "slow") == 6
    writes.clear()
    monkeypatch.setattr(runs, "CHECKPOINT_SECONDS", 0.0)
    runs.run(cfg(), tmp_path / "every", prepared)
    assert writes == [1, 2, 3, 4, 5, 6]
    writes.clear()
    runs.run(cfg(), tmp_path / "every-too", prepared, checkpoint_seconds=0)  # the sweep's trials
    assert writes == [1, 2, 3, 4, 5, 6]


def test_the_pace_counts_from_the_last_write(prepared, tmp_path, writes, monkeypatch):
    """Catches: the time measured from the start instead of the last write (a checkpoint every
    epoch after the first second), or the pace ignored. Each epoch takes 0.4 s on a fake clock."""
    now = [0.0]
    clock = SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
    clock.monotonic = lambda: now[0]
    monkeypatch.setattr(runs, "time", clock)
    monkeypatch.setattr(runs, "CHECKPOINT_SECONDS", 1.0)

    def tick(st):
        now[0] += 0.4

    runs.run(cfg(epochs=9), tmp_path / "r", prepared, on_epoch=tick)
    # after epoch e the clock shows 0.4 (e - 1): 1.2 at epoch 4, then 1.2 s later at epoch 7
    assert writes == [4, 7, 9]


def test_ctrl_c_saves_the_last_finished_epoch_and_the_resume_is_exact(prepared, tmp_path, writes):
    """Catches: a stop losing the epochs trained since the last write (or saying the checkpoint
    holds an epoch it does not), and a resume from that save differing from an uninterrupted run."""
    c = cfg(shuffle=True, lam=0.05, augment="flip")
    runs.run(c, tmp_path / "whole", prepared)
    writes.clear()

    def stop_in_epoch_5(epoch, j, n):
        if epoch == 5 and j == 2:
            raise KeyboardInterrupt

    part = tmp_path / "part"
    with pytest.raises(runs.Interrupted, match=r"in epoch 5; .*checkpoint.h5 holds epoch 4: resume"):
        runs.run(c, part, prepared, on_batch=stop_in_epoch_5)
    assert writes == [4] and saved_epoch(part) == 4
    hist = checkpoint.load_history(part / "history.h5")
    assert hist.status == "interrupted" and len(hist.history) == 4
    c2, snap = runs.resume_point(part, {})
    runs.run(c2, part, prepared, start=snap)
    with h5py.File(tmp_path / "whole" / "model.h5") as a, h5py.File(part / "model.h5") as b:
        for k in ("W", "b"):
            assert np.array_equal(a[k][()], b[k][()]), k


def test_a_second_ctrl_c_while_saving_on_stop_reports_the_older_checkpoint(
    prepared, tmp_path, writes, monkeypatch
):
    """Catches: a message naming an epoch whose save was itself interrupted."""
    runs.run(cfg(epochs=2), tmp_path / "r", prepared)  # checkpoint.h5 of epoch 2
    real = runs.save_snapshot

    def interrupted(path, snap):
        if snap.kind == "checkpoint":
            raise KeyboardInterrupt  # the second Ctrl-C, inside the save on stop
        real(path, snap)

    def stop_in_epoch_4(epoch, j, n):
        if epoch == 4:
            monkeypatch.setattr(runs, "save_snapshot", interrupted)
            raise KeyboardInterrupt

    c2, snap = runs.resume_point(tmp_path / "r", {"epochs": 6})
    with pytest.raises(runs.Interrupted, match="in epoch 4; .*checkpoint.h5 holds epoch 2: resume"):
        runs.run(c2, tmp_path / "r", prepared, start=snap, on_batch=stop_in_epoch_4)
    assert saved_epoch(tmp_path / "r") == 2
    assert len(checkpoint.load_history(tmp_path / "r" / "history.h5").history) == 2


def test_divergence_saves_the_last_good_epoch(prepared, tmp_path, writes, monkeypatch):
    """Catches: a diverged run keeping an older checkpoint than its last finite epoch."""
    real = train.learning_rates

    def exploding(c, epoch, n):  # eta 1e38 from epoch 4 on
        return real(c, epoch, n) * (1e38 / c.eta if epoch >= 4 else 1.0)

    monkeypatch.setattr(train, "learning_rates", exploding)
    with pytest.raises(DivergenceError, match=r"epoch 4.*checkpoint.h5 holds epoch 3"):
        runs.run(cfg(epochs=8), tmp_path / "d", prepared)
    assert writes == [3] and saved_epoch(tmp_path / "d") == 3
    assert checkpoint.load_history(tmp_path / "d" / "history.h5").status == "diverged"


def test_early_stopping_and_the_ridge_solver_leave_their_last_epoch(prepared, tmp_path, writes):
    """Catches: a run that ends before cfg.epochs (patience, the solver's single epoch) without
    a checkpoint of where it ended."""
    out = runs.run(cfg(epochs=200, patience=1, eta=0.5), tmp_path / "p", prepared)
    assert (
        out.state.epoch < 200
        and writes == [out.state.epoch]
        and saved_epoch(tmp_path / "p") == out.state.epoch
    )
    writes.clear()
    ridge = TrainConfig(solver="ridge", loss="mse", lam=0.1, epochs=1)
    runs.run(ridge, tmp_path / "ridge", prepare_run(prepared.dataset, ridge))
    assert writes == [1] and saved_epoch(tmp_path / "ridge") == 1
