"""No fork of a process that may have threads, whatever the command (issue: `train --setting all`
after `train --setting 2` refused a good checkpoint 3 times in 4 on AVX-512 machines: the probe
forked the command while its run pool, metrics, MD5 or views thread held a lock).

Every child process comes from cifarlin.store.helper's helper, a single-threaded process of its own:
here the command's own os.fork is made to fail the test, DeprecationWarnings (Python 3.12+'s
"multi-threaded, use of fork()") are errors, and the documented flow runs many times in fresh
folders."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cifarlin.cli import app
from cifarlin.store import helper

FAST = ["--epochs", "2", "--batch-size", "10", "-q"]


@pytest.fixture
def no_fork(monkeypatch):
    def fork():
        raise AssertionError("cifarlin forked the command's own process")

    monkeypatch.setattr(os, "fork", fork)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        yield


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(4))
def test_setting_all_after_setting_2_in_fresh_folders(tiny_py, tmp_path, no_fork, attempt):
    """The flow that failed 3 times in 4: --setting all reuses setting 2's complete run (probing
    its files while the other settings train on threads) and draws every figure."""
    runner = CliRunner()
    data = ["--data-dir", str(tiny_py)]
    r = runner.invoke(app, ["train", "--setting", "2", *FAST, *data], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", "--setting", "all", *FAST, *data, "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    for s in (1, 2, 3, 4):
        assert (Path("outputs") / f"setting-{s}" / "curves.png").is_file()
    assert (Path("outputs") / "settings.png").is_file()
    r = runner.invoke(app, ["runs", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["evaluate", "outputs/setting-3", *data, "-q"], catch_exceptions=False)
    assert r.exit_code == 0, r.output


def test_a_helper_that_dies_is_started_again(tmp_path):
    """A helper killed between two probes (OOM killer, a stray kill) costs nothing but a restart."""
    from test_h5_hostile import slow

    from cifarlin.store import h5safe

    assert h5safe.probe(tmp_path / "x.h5", slow, "model", seconds=5) is not None
    proc, _ = helper._helper
    proc.kill()
    proc.wait()
    assert h5safe.probe(tmp_path / "x.h5", slow, "model", seconds=5) == {"read": str(tmp_path / "x.h5")}
    assert helper._helper[0].pid != proc.pid


def test_concurrent_callers_each_get_their_own_answer(tmp_path):
    """Several threads asking at once (runs of --setting all probing their files) never get
    each other's results or wait for each other's deadlines."""
    import threading

    from test_h5_hostile import hang, slow

    from cifarlin.store import h5safe

    got, errors = {}, []

    def ask(i):
        try:
            got[i] = h5safe.probe(tmp_path / f"{i}.h5", slow, "model", seconds=10)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    with pytest.raises(Exception, match="did not finish reading it in 0.5 s"):
        h5safe.probe(tmp_path / "hang.h5", hang, "model", seconds=0.5)
    for t in threads:
        t.join()
    assert errors == []
    assert got == {i: {"read": str(tmp_path / f"{i}.h5")} for i in range(6)}


def test_a_command_killed_outright_leaves_no_helper_or_child_behind(tmp_path):
    """`kill -9` of a command (no atexit, no finally): its helper sees the socket close, kills
    the children it still runs (a probe stuck in the HDF5 library, say) and leaves."""
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from cifarlin.store import helper;"
        "from test_h5_hostile import hang; c = helper.start(hang, 'x', seconds=600);"
        "print(helper._helper[0].pid, c.started(60), flush=True); time.sleep(600)"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(Path(__file__).parent)], stdout=subprocess.PIPE, text=True
    )
    try:
        helper_pid, child_pid = (int(x) for x in p.stdout.readline().split())
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as f:  # a zombie awaiting its parent's wait is gone too
            return f.read().split(") ", 1)[1].startswith("Z")

    deadline = time.monotonic() + 10
    while not (gone(helper_pid) and gone(child_pid)):
        assert time.monotonic() < deadline, "the helper or its child outlived the command"
        time.sleep(0.02)
