"""Stopping and continuing a run: an interrupted run resumed equals one never interrupted; a resume
refuses other settings or other data; a Ctrl-C during a checkpoint write keeps the files
consistent."""

from __future__ import annotations

import numpy as np
import pytest

from cifarlin.core import history
from cifarlin.errors import ConfigError, DataError
from cifarlin.store import checkpoint
from cifarlin.work import folder, runs
from tiny_runs import cfg, read_arrays


def test_interrupted_then_resumed_equals_uninterrupted(prepared, tmp_path):
    c = cfg(epochs=6, shuffle=True, lam=0.05)
    whole = tmp_path / "whole"
    full = runs.run(c, whole, prepared)

    part = tmp_path / "part"

    def stop_in_epoch_4(epoch, j, n):
        if epoch == 4 and j == 2:
            raise KeyboardInterrupt

    with pytest.raises(runs.Interrupted, match="resume with 'cifarlin train --out"):
        runs.run(c, part, prepared, on_batch=stop_in_epoch_4)
    assert checkpoint.load_snapshot(part / "checkpoint.h5").state.epoch == 3
    assert not (part / "model.h5").exists()
    folder.check_run_folder(part, resume=True, overwrite=False)
    c2, snap = runs.resume_point(part, {})
    assert c2 == c
    resumed = runs.run(c2, part, prepared, start=snap)
    a, b = read_arrays(whole / "model.h5"), read_arrays(part / "model.h5")
    for k in ("W", "b", "mean", "std"):
        assert np.array_equal(a[k], b[k]), k
    ha, hb = read_arrays(whole / "history.h5"), read_arrays(part / "history.h5")
    for k in history.HISTORY_KEYS:
        if k != "seconds":
            assert np.array_equal(ha[k], hb[k]), k
    assert resumed.test == full.test


def test_resume_refuses_changed_settings(prepared, tmp_path):
    out = tmp_path / "r"
    runs.run(cfg(), out, prepared)
    with pytest.raises(ConfigError, match="eta=0.5: the run in"):
        runs.resume_point(out, {"eta": 0.5})
    c, _ = runs.resume_point(out, {"eta": 0.01, "epochs": 9})
    assert c.epochs == 9
    with pytest.raises(ConfigError, match="epochs=2: "):
        runs.resume_point(out, {"epochs": 2})


def test_resume_refuses_other_data(prepared, tmp_path, tiny_py):
    out = tmp_path / "run"
    runs.run(cfg(epochs=1), out, prepared)
    _, snap = runs.resume_point(out, {})
    snap.data.checksums["data_batch_1"] = "0" * 32
    with pytest.raises(DataError, match="data_batch_1 differs from the file"):
        runs.run(cfg(epochs=2), out, prepared, start=snap)


@pytest.mark.parametrize("again", [False, True])
def test_interrupt_during_a_checkpoint_write_keeps_files_consistent(prepared, tmp_path, monkeypatch, again):
    """Ctrl-C while epoch 3's checkpoint is written: the save on stop writes it again, so
    checkpoint and history both end at epoch 3; with a second Ctrl-C during that save, both end
    at epoch 2."""
    out = tmp_path / "run"
    real = checkpoint.save_snapshot
    calls = []

    def interrupted_third(path, snap):
        calls.append(snap.state.epoch)
        if len(calls) == 3 or (again and len(calls) > 3 and snap.kind == "checkpoint"):
            raise KeyboardInterrupt
        real(path, snap)

    monkeypatch.setattr(runs, "save_snapshot", interrupted_third)
    with pytest.raises(runs.Interrupted):
        runs.run(cfg(epochs=5), out, prepared)
    snap = checkpoint.load_snapshot(out / "checkpoint.h5")
    hist = checkpoint.load_history(out / "history.h5")
    kept = 2 if again else 3
    assert calls[2:] == [3, 3]  # the interrupted write, then the save on stop
    assert snap.state.epoch == kept and len(snap.state.history) == kept and len(hist.history) == kept
