"""cifarlin.store.helper under review: what a caller's folder, a refused or oversized request, a caller
that reads late and Ctrl-C while the command line is imported do to the helper and its children."""

from __future__ import annotations

import os
import select
import sys
from pathlib import Path

import pytest
from test_h5_hostile import slow

from cifarlin.store import h5safe, helper


def test_the_helper_imports_nothing_from_the_callers_folder(tmp_path):
    """Bug: the helper was started as `python -c`, which puts the current folder first on
    sys.path, and imported json from there before it set the command's own path: a json.py in
    the folder a command runs in (a user's script, a folder of downloads) was run by the helper,
    which the cifarlin console script itself never does (and every probe then came back 'lost':
    each file read without one). On Python 3.13.0 a deleted current folder made the same import
    fail, so that no helper could start at all."""
    marker = tmp_path / "imported"
    (tmp_path / "json.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise ImportError('not json')\n")
    helper.stop_helper()  # the next request starts a helper here
    try:
        assert h5safe.probe(tmp_path / "x.h5", slow, "model", seconds=10) == {"read": str(tmp_path / "x.h5")}
        assert not marker.exists()
    finally:
        helper.stop_helper()


def test_a_helper_starts_from_a_deleted_folder(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    here = os.getcwd()
    os.chdir(gone)
    gone.rmdir()
    helper.stop_helper()
    try:
        path = Path(sys.prefix)  # any absolute path: the read here only names it
        assert h5safe.probe(path, slow, "model", seconds=10) == {"read": str(path)}
    finally:
        os.chdir(here)
        helper.stop_helper()


class _Unloadable:
    """An argument the helper cannot unpickle (as a function it cannot import)."""

    def __reduce__(self):
        return (int, ("not a number",))


def test_a_refused_request_closes_the_descriptors_passed_with_it():
    """Bug: a request the helper could not unpickle was refused, but the descriptors passed with
    it stayed open in the helper for its whole life: a figure child's reply pipe never reached
    its end (the command waited drawer.REPLY_SECONDS for each figure before drawing it itself)."""
    r, w = os.pipe()
    try:
        child = helper.start(slow, _Unloadable(), helper.FDS, fds=(w,))
    finally:
        os.close(w)
    try:
        ended = child.wait(30)
        assert ended is not None and (ended.how, ended.code) == ("refused", 1)
        assert select.select([r], [], [], 10)[0], "the helper still holds the pipe's write end"
        assert os.read(r, 1) == b""
    finally:
        os.close(r)


PIPE_BYTES = 65536  # Linux's default pipe capacity


def fill_the_pipe(pid_file):
    """A result that, after the child's P record, leaves its pipe exactly full."""
    Path(pid_file).write_text(str(os.getpid()))
    return "x" * (PIPE_BYTES - len(b"P%d\n" % os.getpid()) - len(b'R""\n'))


def test_how_a_child_ended_reaches_a_caller_that_reads_late(tmp_path):
    """Bug: the helper wrote its end record without blocking and dropped it when the caller's
    pipe was full (a result of 64 KB or more, a caller slow to read: a run thread of --setting
    all, the run listing of `cifarlin runs` on a busy machine). A child that had finished
    then came back 'lost', and its result was thrown away (the probe passed as no probe)."""
    import fcntl
    import time

    child = helper.start(fill_the_pipe, str(tmp_path / "pid"), seconds=30)
    try:
        if fcntl.fcntl(child._fd, fcntl.F_GETPIPE_SZ) != PIPE_BYTES:
            child.kill()
            pytest.skip("a pipe of another capacity")
        deadline = time.monotonic() + 30
        while not (tmp_path / "pid").exists() or Path("/proc", (tmp_path / "pid").read_text()).exists():
            assert time.monotonic() < deadline, "the child did not end"  # (and be reaped)
            time.sleep(0.01)
        time.sleep(0.2)  # the helper has written, or tried to write, how it ended
        ended = child.wait(30)
    finally:
        child.kill()
    assert ended is not None and (ended.how, ended.code) == ("exit", 0)
    assert isinstance(ended.result, str) and len(ended.result) > PIPE_BYTES - 100


def test_a_request_too_large_to_send_leaves_the_helper_and_other_children_alone(tmp_path):
    """Bug: any error sending a request stopped the helper (to start it again), though only a
    helper that has gone needs that: a request larger than a datagram (EMSGSIZE: the run
    listing of `cifarlin runs` over several thousand run folders) killed every child of the
    other callers (their probes came back 'lost': files read without one), and failed again."""
    other = helper.start(slow, "other", 1.0, seconds=30)
    assert other.started(30) is not None
    proc, _ = helper._helper
    try:
        big = helper.start(slow, "x" * (4 << 20), 0.0, seconds=30)
    except OSError:
        pass  # too large for the helper: the caller reads without a child
    else:
        big.wait(30)
    ended = other.wait(30)
    assert ended is not None and (ended.how, ended.result) == ("exit", {"read": "other"})
    assert helper._helper[0] is proc and proc.poll() is None


SIGNAL_AT_IMPORT = """\
import os, signal, sys


class _SignalAtImport:
    def find_spec(self, name, path=None, target=None):
        if name == "typer":  # the command line is being imported
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIG{name})
        return None


sys.meta_path.insert(0, _SignalAtImport())
"""


@pytest.mark.parametrize(("name", "code"), [("INT", 130), ("TERM", 143)])
def test_a_stop_signal_while_python_m_cifarlin_is_imported_is_one_line(tmp_path, name, code):
    """Bug: the handler that notes a Ctrl-C or SIGTERM during the command line's import was
    installed only for the console script: under `python -m cifarlin`, sys.argv[0] is '-m'
    while the package is imported, so such a signal ended the command with a traceback (or
    death by SIGTERM) instead of one line and exit 130 (143)."""
    import subprocess

    (tmp_path / "sitecustomize.py").write_text(SIGNAL_AT_IMPORT.replace("{name}", name))
    repo = Path(__file__).resolve().parents[2]  # the cifarlin under test
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(repo)])}
    p = subprocess.run(
        [sys.executable, "-m", "cifarlin", "runs", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode == code, p.stderr
    assert "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("Error: ")


@pytest.fixture
def many_descriptors_open():
    """This process with descriptors above select()'s limit of 1024 in use (a program with many
    files or sockets open; the soft limit is often far higher than 1024)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.skip("a limit of open descriptors below 1200")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        yield
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_children_are_waited_for_with_descriptors_above_1024(tmp_path, many_descriptors_open):
    """Bug: a child's pipe was waited on with select(), which refuses a descriptor of 1024 or
    more (ValueError): every probe then failed as an unexpected error, and the figure child's
    close raised it."""
    from cifarlin.figures.drawer import FigureDrawer

    assert h5safe.probe(tmp_path / "x.h5", slow, "model", seconds=10) == {"read": str(tmp_path / "x.h5")}
    drawer = FigureDrawer()
    assert drawer.child is not None and drawer.pid is not None
    drawer.close()


def test_a_helper_starts_with_something_else_than_text_on_sys_path(tmp_path, monkeypatch):
    """Bug: the command's sys.path was handed to the helper as JSON, which fails on an entry that
    is not text (a pathlib.Path appended by a program that imports cifarlin; Python's imports
    skip such entries): every probe then raised TypeError instead of running."""
    monkeypatch.setattr(sys, "path", [*sys.path, tmp_path])
    helper.stop_helper()
    try:
        assert h5safe.probe(tmp_path / "x.h5", slow, "model", seconds=10) == {"read": str(tmp_path / "x.h5")}
    finally:
        helper.stop_helper()


def test_the_exception_of_a_library_log_record_is_made_printable():
    """Bug: a library's log record was made printable but for its exception (logger.exception,
    exc_info=): the exception's message, which may quote a file (a class name, a path), reached
    the terminal with its escapes raw."""
    import io
    import logging

    from cifarlin.cli.display import no_escapes_from_libraries

    stream = io.StringIO()
    log = logging.getLogger("cifarlin-review")
    handler = logging.StreamHandler(stream)
    log.addHandler(handler)
    try:
        with no_escapes_from_libraries():
            try:
                raise ValueError("class \x1b]0;a title\x07 name")
            except ValueError:
                log.exception("a task failed")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert "\x1b" not in text and "\x07" not in text, text
    assert "ValueError: class \\x1b]0;a title\\x07 name" in text


def test_a_command_goes_on_when_no_helper_can_be_started(tmp_path, monkeypatch):
    """Bug: the early start of the helper (for commands that read files, so that its start
    overlaps theirs) let its OSError through: where no helper can be started (no interpreter
    at sys.executable in an embedded Python, no process left under the user's limit), every
    such command failed as 'unexpected ... this is a bug', though its reads go on without a
    child (h5safe.probe) as documented."""
    from typer.testing import CliRunner

    from cifarlin.cli import app

    helper.stop_helper()
    with monkeypatch.context() as m:
        m.setattr(sys, "executable", str(tmp_path / "no-python"))
        r = CliRunner().invoke(app, ["runs", str(tmp_path)])
    assert "unexpected" not in r.output and r.exit_code == 0, r.output
