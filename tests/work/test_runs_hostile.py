"""Runs that get killed, folders that get tampered with, and odd values on the command line.

Each test names the bug it would catch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cifar_files import NAMES, py2_pickle, write_python_dataset
from cifarlin.cli import app
from cifarlin.core import config
from cifarlin.core.config import TrainConfig
from cifarlin.data import cifar as data
from cifarlin.errors import RunError
from cifarlin.store import checkpoint
from cifarlin.work import folder, runs
from cifarlin.work.prepare import prepare
from cli_helpers import TINY

SLOW_TRAIN = """
import sys, time, cifarlin.core.train as t
orig = t.model.backward
def slow(*a):
    time.sleep(0.02)
    return orig(*a)
t.model.backward = slow
from cifarlin.cli import main
main()
"""


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_TRAIN, *args],
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate, p: subprocess.Popen, seconds: float = 60) -> None:
    t0 = time.monotonic()
    while not predicate():
        assert p.poll() is None, p.stderr.read()
        assert time.monotonic() - t0 < seconds
        time.sleep(0.02)


@pytest.mark.slow
def test_sigterm_is_handled_like_ctrl_c(tiny_py, tmp_path):
    """Bug: SIGTERM (what a scheduler or `kill` sends) killed the run without marking its history
    or saying how to resume; it must keep the checkpoint and exit 143 with a message."""
    out = tmp_path / "run"
    p = start(["train", "--out", str(out), "--epochs", "100", *TINY], {"CIFARLIN_DATA_DIR": str(tiny_py)})
    wait_for(lambda: (out / "checkpoint.h5").exists(), p)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    last = err.strip().splitlines()[-1]
    assert "terminated (SIGTERM) in epoch" in last and "--resume" in last
    assert checkpoint.load_history(out / "history.h5").status == "interrupted"
    assert checkpoint.load_snapshot(out / "checkpoint.h5").state.epoch >= 1
    assert not list(out.glob(".*tmp"))


@pytest.mark.slow
def test_overwrite_killed_in_its_first_epoch_is_put_back(runner, tiny_py, tmp_path):
    """Bug: --overwrite killed by SIGKILL in its first epoch left the previous run hidden in
    .previous-run-*, and --resume then said there was no checkpoint."""
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--data-dir", str(tiny_py), "--epochs", "2", *TINY, "--quiet"]
    assert runner.invoke(app, args).exit_code == 0
    old_w = checkpoint.load_snapshot(out / "model.h5").state.W
    p = start(
        ["train", "--out", str(out), "--epochs", "50", "--seed", "5", "--overwrite", *TINY],
        {"CIFARLIN_DATA_DIR": str(tiny_py)},
    )
    wait_for(lambda: folder.stashes(out) and not (out / "checkpoint.h5").exists(), p)
    p.kill()
    p.wait(timeout=30)
    stash = folder.stashes(out)[0]
    assert not (out / "model.h5").exists() and (stash / "model.h5").exists()
    # a command that only reads says exactly where the run is
    r = runner.invoke(app, ["evaluate", str(out), "--data-dir", str(tiny_py)])
    assert r.exit_code == 1 and str(stash) in r.stderr and r.stderr.count("\n") == 1
    # the next train on the folder puts it back, then resumes it as asked
    r = runner.invoke(app, [*args, "--resume"])
    assert r.exit_code == 0, r.output
    assert f"put back the previous run from {stash}" in r.stderr
    assert np.array_equal(checkpoint.load_snapshot(out / "model.h5").state.W, old_w)
    assert folder.stashes(out) == []


def test_recover_removes_a_stash_once_the_new_run_saved(tmp_path):
    """Bug: a stash left by a kill after the new run's first checkpoint is kept forever (or worse,
    put back over the new run)."""
    out = tmp_path / "run"
    (out / ".previous-run-abc").mkdir(parents=True)
    (out / ".previous-run-abc" / "model.h5").write_bytes(b"old")
    (out / "checkpoint.h5").write_bytes(b"new")
    assert folder.recover(out) is None
    assert folder.stashes(out) == [] and (out / "checkpoint.h5").read_bytes() == b"new"
    assert not (out / "model.h5").exists()


def test_recover_waits_for_a_running_overwrite(tmp_path):
    """Bug: a second command puts the old run back while the overwrite that set it aside is still
    running (its lock is held), corrupting both."""
    out = tmp_path / "run"
    (out / ".previous-run-abc").mkdir(parents=True)
    (out / ".previous-run-abc" / "model.h5").write_bytes(b"old")
    with folder.folder_lock(out):
        assert folder.recover(out) is None
    assert (out / ".previous-run-abc" / "model.h5").exists() and not (out / "model.h5").exists()


def test_stale_temporary_files_are_removed_when_a_run_continues(tiny_py, tmp_path):
    """Bug: temp files of a killed write (.checkpoint.h5.*.tmp, .history.h5.*.tmp) stayed forever,
    also after a successful resume."""
    prepared = prepare(data.Dataset(tiny_py, "python"), config.SplitSpec())
    out = tmp_path / "run"
    c = TrainConfig(epochs=1, batch_size=10, eta=0.01)
    runs.run(c, out, prepared)
    left = [out / ".checkpoint.h5.x1.tmp", out / ".history.h5.x2.tmp", out / ".model.h5.x3.tmp"]
    old_figure = out / ".curves.png.x4.tmp"
    new_figure = out / ".montage.png.x5.tmp"  # perhaps a visualize running right now
    for p in [*left, old_figure, new_figure]:
        p.write_bytes(b"partial")
    hour_ago = time.time() - 2 * folder.STALE_SECONDS
    os.utime(old_figure, (hour_ago, hour_ago))
    cfg, snap = runs.resume_point(out, {"epochs": 2})
    runs.run(cfg, out, prepared, start=snap)
    assert [p for p in [*left, old_figure] if p.exists()] == []
    assert new_figure.exists()


def test_a_symlink_at_the_lock_is_refused_not_followed(tiny_py, tmp_path):
    """Bug: a dangling symlink planted at the lock file made cifarlin create its target outside
    the run folder."""
    prepared = prepare(data.Dataset(tiny_py, "python"), config.SplitSpec())
    out = tmp_path / "run"
    out.mkdir()
    target = tmp_path / "elsewhere" / "created-by-cifarlin"
    target.parent.mkdir()
    (out / folder.LOCK).symlink_to(target)
    with pytest.raises(RunError, match="is a symbolic link"):
        runs.run(TrainConfig(epochs=1, batch_size=10), out, prepared)
    assert not target.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--out", ""], "--out '': an empty path"),
        (["--out="], "--out '': an empty path"),
        (["--data-dir", ""], "--data-dir '': an empty path"),
        (["--out", "x" * 5000], "--out 'xxx"),
        (["--out", "a/" + "y" * 300 + "/b"], "cannot be used as a folder here (a name over 255 bytes)"),
    ],
)
def test_unusable_paths_are_usage_errors(runner, tiny_py, tmp_path, args, message):
    """Bug: --out '' trained into the current folder, and paths beyond the system's limits ended in
    an unexpected OSError."""
    r = runner.invoke(app, ["train", "--data-dir", str(tiny_py), *TINY, "--epochs", "1", *args])
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and message in r.stderr
    assert list(Path.cwd().iterdir()) == []  # nothing created (the test runs in an empty folder)


def test_json_with_stdout_closed_is_a_usage_error(tmp_path):
    """Bug: --json with stdout closed ended in an unexpected AttributeError after all the work."""
    r = subprocess.run(
        f"{sys.executable} -m cifarlin gradcheck --random --dims 10 --json >&-",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "--json: stdout is closed" in r.stderr


def hostile_names_dataset(folder: Path, names: list[str]) -> Path:
    write_python_dataset(folder)
    meta = {b"num_cases_per_batch": 50, b"label_names": [n.encode() for n in names], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return folder


def test_text_from_files_is_printed_as_text(runner, tmp_path):
    """Bug: a class name `[/bold]` from batches.meta crashed evaluate (rich markup); names with
    terminal escape sequences reached the terminal raw; a folder named `[bold]r` printed as `r`."""
    names = ["[/bold]", "\x1b]0;pwned\x07cat", "[red]x", *NAMES[3:]]
    data_dir = hostile_names_dataset(tmp_path / "d" / "cifar-10-batches-py", names)
    out = tmp_path / "[bold]r"
    r = runner.invoke(app, ["train", "--out", str(out), "--data-dir", str(data_dir), *TINY, "--epochs", "1"])
    assert r.exit_code == 0, r.output
    assert "[bold]r" in r.stderr
    r = runner.invoke(app, ["evaluate", str(out), "--data-dir", str(data_dir)])
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "\\x1b]0;pwned\\x07cat" in r.stdout  # the report is on stdout
    assert "[/bold]" in r.stdout and "[red]x" in r.stdout
    r = runner.invoke(app, ["evaluate", str(out), "--data-dir", str(data_dir), "--json", "--quiet"])
    assert json.loads(r.stdout)["class_names"][:3] == names[:3]  # JSON carries them exactly
