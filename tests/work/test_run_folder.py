"""The run folder: its files and what they hold, a folder that holds a run (reused, refused, resumed,
overwritten), one writer at a time, what a failed run leaves, and the default folder names."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from cifarlin.cli import app
from cifarlin.core import history
from cifarlin.errors import DivergenceError, RunExistsError
from cifarlin.store import checkpoint
from cifarlin.work import folder, runs
from cli_helpers import TINY
from tiny_runs import cfg, read_arrays


def test_files_and_layout(prepared, tmp_path):
    c = cfg(lam=0.1)
    out = tmp_path / "run"
    o = runs.run(c, out, prepared)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.h5", "history.h5", "model.h5"]
    with h5py.File(out / "model.h5", "r") as f:
        assert f["W"].shape == (10, 3072) and f["b"].shape == (10,)
        assert f["mean"].shape == (3072,) and f["std"].shape == (3072,)
        assert f.attrs["lam"] == 0.1 and f.attrs["eta"] == 0.01 and f.attrs["batch_size"] == 10
        assert f.attrs["epoch"] == 4 and f.attrs["seed"] == 0 and f.attrs["kind"] == "model"
        assert list(f.attrs["class_names"])[:2] == ["airplane", "automobile"]
        assert f.attrs["cifarlin_version"] and f.attrs["data_dir"] == str(prepared.dataset.folder)
        assert dict(f["data_files"].attrs) == prepared.checksums
        assert json.loads(f.attrs["rng_state"])["bit_generator"] == "PCG64"
    with h5py.File(out / "history.h5", "r") as f:
        for k in history.HISTORY_KEYS:
            assert f[k].shape == (4,)
        assert f.attrs["status"] == "complete" and f.attrs["test_acc"] == o.test.accuracy
    assert not list(out.glob(".*tmp"))


def test_divergence_keeps_the_last_good_checkpoint(prepared, tmp_path):
    out = tmp_path / "d"
    c = cfg(epochs=3)
    runs.run(c, out, prepared)
    before = read_arrays(out / "checkpoint.h5")
    state = checkpoint.load_snapshot(out / "checkpoint.h5").state
    bad = c.replace(eta=1e38, epochs=5)
    with pytest.raises(DivergenceError, match="epoch 4.*checkpoint.h5 holds epoch 3"):
        runs.run(bad, out, prepared, start=checkpoint.load_snapshot(out / "checkpoint.h5"))
    after = read_arrays(out / "checkpoint.h5")
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert checkpoint.load_snapshot(out / "checkpoint.h5").state.epoch == state.epoch == 3
    assert checkpoint.load_history(out / "history.h5").status == "diverged"


def test_cli_refuses_a_folder_with_a_run_then_resume_and_overwrite(runner, tiny_py, tmp_path):
    args = [
        "train",
        "--out",
        str(tmp_path / "r"),
        "--data-dir",
        str(tiny_py),
        *TINY,
        "--epochs",
        "1",
        "--quiet",
    ]
    assert runner.invoke(app, args).exit_code == 0
    before = (tmp_path / "r" / "model.h5").stat().st_mtime_ns
    r = runner.invoke(app, args)  # the same parameters: the complete run is reused, nothing rewritten
    assert r.exit_code == 0 and "holds a complete run with these parameters: reusing it" in r.stderr
    assert (tmp_path / "r" / "model.h5").stat().st_mtime_ns == before
    r = runner.invoke(app, [*args, "--eta", "0.5"])  # other parameters: refused, naming them
    assert r.exit_code == 1 and r.stderr.strip() == (
        f"Error: {tmp_path / 'r'} already holds a run with other settings (--eta 0.001 there, 0.5 asked): "
        "--overwrite replaces it, or --out DIR trains this one in another folder"
    )  # (--resume would not help: that run is complete, and keeps its eta)
    r = runner.invoke(app, [*args[:-2], "2", "--quiet"])  # more epochs: --resume trains it on
    assert r.exit_code == 1 and r.stderr.strip() == (
        f"Error: {tmp_path / 'r'} already holds a run with other settings (--epochs 1 there, 2 asked): "
        "--resume trains it on to 2 epochs, --overwrite replaces it, or --out DIR trains this one in "
        "another folder"
    )
    r = runner.invoke(app, [*args, "--resume", "--epochs", "2", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["resumed_from_epoch"] == 1
    r = runner.invoke(app, [*args, "--overwrite", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["epochs"] == 1
    r = runner.invoke(app, [*args, "--overwrite", "--resume"])
    assert r.exit_code == 2


def test_overwrite_keeps_the_old_run_until_the_new_one_saved_something(prepared, tmp_path):
    out = tmp_path / "run"
    runs.run(cfg(epochs=1), out, prepared)
    (out / "curves.png").write_bytes(b"old figure")
    old = read_arrays(out / "model.h5")
    with pytest.raises(DivergenceError, match="nothing was saved"):
        runs.run(cfg(eta=1e38), out, prepared, overwrite=True)
    assert np.array_equal(read_arrays(out / "model.h5")["W"], old["W"])  # put back
    assert (out / "curves.png").read_bytes() == b"old figure"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.h5", "curves.png", "history.h5", "model.h5"]
    runs.run(cfg(epochs=2, seed=3), out, prepared, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.h5", "history.h5", "model.h5"]
    assert not np.array_equal(read_arrays(out / "model.h5")["W"], old["W"])


def test_a_failed_fresh_run_leaves_no_folder(prepared, tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(DivergenceError):
        runs.run(cfg(eta=1e38), out, prepared)
    assert not out.exists()


def test_one_writer_per_run_folder(prepared, tmp_path):
    out = tmp_path / "run"
    with folder.RunFolder(out), pytest.raises(RunExistsError, match="another cifarlin is training"):
        runs.run(cfg(epochs=1), out, prepared)
    runs.run(cfg(epochs=1), out, prepared)  # free again
    assert not (out / folder.LOCK).exists()


def test_unwritable_folder_fails_before_training(prepared, tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(folder.tempfile, "NamedTemporaryFile", refuse)
    calls = []
    with pytest.raises(runs.WriteError, match="cannot write the run there"):
        runs.run(cfg(epochs=1), tmp_path / "run", prepared, on_batch=lambda *a: calls.append(a))
    assert calls == []  # refused before any training


def test_a_failed_checkpoint_write_says_what_is_kept(prepared, tmp_path, monkeypatch):
    real = checkpoint.save_snapshot
    calls = []

    def full_disk_at_third(path, snap):
        calls.append(path)
        if len(calls) == 3:
            raise runs.WriteError(f"{path}: cannot be written (No space left on device)")
        real(path, snap)

    monkeypatch.setattr(runs, "save_snapshot", full_disk_at_third)
    with pytest.raises(runs.WriteError, match="No space left on device.*checkpoint.h5 holds epoch 2"):
        runs.run(cfg(epochs=5), tmp_path / "run", prepared)


def test_default_run_folders_are_unique(tmp_path):
    c = cfg()
    a = folder.default_out(c, tmp_path)
    a.mkdir()
    b = folder.default_out(c, tmp_path)
    assert a != b and b.name.startswith(a.name)


def test_held_reads_the_lock_table_and_takes_no_lock(tmp_path, monkeypatch):
    """``held`` (the report skips folders being written) sees a cifarlin's lock without taking
    one: a train starting at that moment must never find the folder locked by the report."""
    import fcntl
    import os

    from cifarlin.work.folder import LOCK, folder_lock, held

    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).touch()  # a lock file left behind, held by nobody
    assert not held(out)
    taken = []
    real = fcntl.flock
    monkeypatch.setattr(fcntl, "flock", lambda fd, op: taken.append(op) or real(fd, op))
    with folder_lock(out):
        taken.clear()
        assert held(out)
        if os.path.exists("/proc/locks"):
            assert taken == []
    assert not held(out)
