"""Atomic writes exercised for real: a write interrupted part-way, inside the real save
functions, leaves the previous file whole and no temporary file behind. Each test's docstring
names the bug it catches."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from cifarlin.core import config, train
from cifarlin.core.config import TrainConfig
from cifarlin.data import cifar as data
from cifarlin.store import checkpoint, files
from cifarlin.work import runs
from cifarlin.work.prepare import prepare


@pytest.fixture(scope="module")
def prepared(tiny_py):
    return prepare(data.Dataset(tiny_py, "python"), config.SplitSpec())


def interrupt_at_std(monkeypatch, on_write: int = 1, after: bool = False) -> list[str]:
    """Make the ``on_write``-th model or checkpoint write (and with ``after`` every later one)
    raise KeyboardInterrupt while it creates its 'std' dataset: after W, b and mean are already
    in the file being written. Returns the names of the datasets created, in order."""
    created: list[str] = []
    real = h5py.Group.create_dataset

    def create_dataset(self, name, *args, **kwargs):
        created.append(name)
        writes = created.count("W")
        if name == "std" and (writes == on_write or (after and writes > on_write)):
            raise KeyboardInterrupt
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", create_dataset)
    return created


def test_an_interrupted_snapshot_write_keeps_the_previous_file(prepared, tmp_path, monkeypatch):
    """Catches: atomic_h5 (or atomic_path) writing straight to the final file name, which an
    interruption leaves torn (here: W, b and mean but no std), and a temporary file left behind
    by an interrupted write."""
    c = TrainConfig(epochs=2, batch_size=10, eta=0.01)
    first = train.fit(c.replace(epochs=1), prepared, train.init_state(c))
    second = train.fit(c, prepared, first)
    assert not np.array_equal(first.W, second.W)

    def snap(st):
        info = checkpoint.DataInfo("d", "python", {})
        return checkpoint.Snapshot(c, st, prepared.normalizer, prepared.class_names, info, kind="checkpoint")

    path = tmp_path / "checkpoint.h5"
    checkpoint.save_snapshot(path, snap(first))
    before = path.read_bytes()
    created = interrupt_at_std(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_snapshot(path, snap(second))
    assert created == ["W", "b", "mean", "std"]  # interrupted part-way through a real write
    monkeypatch.undo()
    back = checkpoint.load_snapshot(path)
    assert back.state.epoch == 1 and np.array_equal(back.state.W, first.W)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.h5"]  # no temporary file


def test_ctrl_c_inside_a_real_checkpoint_write_keeps_the_last_epoch(prepared, tmp_path, monkeypatch):
    """Catches: a checkpoint written in place (Ctrl-C during epoch 3's write, and again during
    the save on stop, would leave a torn checkpoint.h5 instead of epoch 2's), and temporary
    files left in the run folder."""
    out = tmp_path / "run"
    saved = []
    interrupt_at_std(monkeypatch, on_write=3, after=True)
    with pytest.raises(runs.Interrupted, match="checkpoint.h5 holds epoch 2"):
        runs.run(TrainConfig(epochs=5, batch_size=10, eta=0.01), out, prepared, on_epoch=saved.append)
    monkeypatch.undo()
    assert [st.epoch for st in saved] == [1, 2]
    snap = checkpoint.load_snapshot(out / "checkpoint.h5")
    assert snap.state.epoch == 2 and np.array_equal(snap.state.W, saved[-1].W)
    hist = checkpoint.load_history(out / "history.h5")
    assert hist.status == "interrupted" and len(hist.history) == 2
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.h5", "history.h5"]  # no temporary file


def test_an_interrupted_text_write_keeps_the_previous_text(tmp_path):
    """Catches: write_text writing straight to the final file (open() empties it before the
    failing write), and a temporary file left behind.

    A lone surrogate cannot be encoded in UTF-8: the real write fails after the file is open.
    """
    target = tmp_path / "summary.md"
    files.write_text(target, "old table\n")
    with pytest.raises(UnicodeEncodeError):
        files.write_text(target, "new table\n" * 1000 + "\ud800")
    assert target.read_text() == "old table\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.md"]


def test_one_ctrl_c_inside_a_checkpoint_write_still_saves_that_epoch(prepared, tmp_path, monkeypatch):
    """Catches: a stop that lands during a routine checkpoint write giving up the epoch being
    written (with a checkpoint once a second, possibly every epoch of a short run)."""
    out = tmp_path / "run"
    interrupt_at_std(monkeypatch, on_write=3)
    with pytest.raises(runs.Interrupted, match=r"in epoch 4; .*checkpoint.h5 holds epoch 3"):
        runs.run(TrainConfig(epochs=5, batch_size=10, eta=0.01), out, prepared)
    monkeypatch.undo()
    assert checkpoint.load_snapshot(out / "checkpoint.h5").state.epoch == 3
    assert len(checkpoint.load_history(out / "history.h5").history) == 3


# Stop signals at the worst moments of atomic_path itself, with the command line's own handler.
# A second SIGTERM 5 ms after the first, on a loaded machine, left `.checkpoint.h5.*.tmp` behind
# (test_signals, in CI): it landed while the first one's handler was removing the file.


@pytest.fixture
def cli_stop_handlers():
    import signal

    from cifarlin import cli, errors

    errors.reset_stop()
    cli._reporting[0] = False  # as a command starts (an earlier in-process command left it set)
    previous = {s: signal.signal(s, cli._stop) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in previous.items():
        signal.signal(s, handler)
    errors.reset_stop()


def _signal_self(sig) -> None:
    import os

    os.kill(os.getpid(), sig)
    for _ in range(3):  # a backward jump and calls: where Python runs the handler
        len([])


def _temporaries(folder) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_stop_while_the_temporary_file_is_made_leaves_nothing(tmp_path, monkeypatch, cli_stop_handlers):
    """Caught: a Ctrl-C landing in mkstemp after it made the file but before its name reached
    atomic_path left the file behind."""
    import signal
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        made = real(*args, **kwargs)
        _signal_self(signal.SIGINT)
        return made

    def write():
        with files.atomic_path(tmp_path / "model.h5") as tmp:
            tmp.write_bytes(b"x")

    e = _ending(write, monkeypatch, mkstemp=mkstemp)
    assert type(e) is KeyboardInterrupt, repr(e)
    assert _temporaries(tmp_path) == [] and not (tmp_path / "model.h5").exists()


@pytest.mark.parametrize("second", ["SIGINT", "SIGTERM"])
def test_a_second_stop_while_the_first_removes_the_file_leaves_nothing(
    tmp_path, monkeypatch, cli_stop_handlers, second
):
    """Caught: the second of two quick signals raised inside the first one's clean-up, before the
    temporary file was removed. The first signal still decides how the command ends."""
    import os
    import signal

    from cifarlin import errors

    real = os.unlink

    def unlink(name, *args, **kwargs):
        _signal_self(getattr(signal, second))
        return real(name, *args, **kwargs)

    def write():
        with files.atomic_path(tmp_path / "checkpoint.h5") as tmp:
            tmp.write_bytes(b"half")
            _signal_self(signal.SIGINT)

    (tmp_path / "checkpoint.h5").write_bytes(b"previous")
    e = _ending(write, monkeypatch, unlink=unlink)
    assert isinstance(e, KeyboardInterrupt), repr(e)
    assert _temporaries(tmp_path) == []
    assert (tmp_path / "checkpoint.h5").read_bytes() == b"previous"
    assert errors.stopped(e) == ("interrupted", 130)


def test_a_stop_in_fsync_and_one_in_the_removal_leave_the_old_file(tmp_path, monkeypatch, cli_stop_handlers):
    """A SIGTERM while the data is flushed to disk, a Ctrl-C while the file is removed: the old
    file is whole, no temporary file, and the command ends as terminated (the first signal)."""
    import os
    import signal

    from cifarlin import errors

    real_fsync, real_unlink = os.fsync, os.unlink

    def fsync(fd):
        real_fsync(fd)
        _signal_self(signal.SIGTERM)

    def unlink(name, *args, **kwargs):
        _signal_self(signal.SIGINT)
        return real_unlink(name, *args, **kwargs)

    def write():
        with files.atomic_path(tmp_path / "history.h5") as tmp:
            tmp.write_bytes(b"new")

    (tmp_path / "history.h5").write_bytes(b"previous")
    e = _ending(write, monkeypatch, fsync=fsync, unlink=unlink)
    assert isinstance(e, errors.Terminated), repr(e)
    assert _temporaries(tmp_path) == [] and (tmp_path / "history.h5").read_bytes() == b"previous"
    assert errors.stopped(e) == ("terminated (SIGTERM)", 143)


def test_a_stop_during_a_failed_writes_removal_leaves_nothing(tmp_path, monkeypatch, cli_stop_handlers):
    """A full disk, then a Ctrl-C while the temporary file is removed: the file is gone and the
    write error is still the one reported (the signal is noted: stopped() knows of it)."""
    import errno
    import os
    import signal

    from cifarlin import errors

    real = os.unlink

    def unlink(name, *args, **kwargs):
        _signal_self(signal.SIGINT)
        return real(name, *args, **kwargs)

    def write():
        with files.atomic_path(tmp_path / "model.h5") as tmp:
            tmp.write_bytes(b"x")
            raise OSError(errno.ENOSPC, "No space left on device")

    e = _ending(write, monkeypatch, unlink=unlink)
    assert isinstance(e, errors.WriteError) and "model.h5" in str(e), repr(e)
    assert _temporaries(tmp_path) == [] and not (tmp_path / "model.h5").exists()
    assert errors._received == [False] and not errors.terminated()


def _ending(block, monkeypatch, **patches) -> BaseException | None:
    """What ``block`` raised (KeyboardInterrupt included: caught here, not by pytest), with
    ``patches`` on os (or tempfile, for mkstemp) only while it runs."""
    import tempfile

    with monkeypatch.context() as m:
        for name, fake in patches.items():
            m.setattr(tempfile if name == "mkstemp" else files.os, name, fake)
        try:
            block()
        except BaseException as e:  # the outcome under test
            return e
    return None
