"""cifarlin.helper under review: what a caller's folder, a refused or oversized request, a caller
that reads late and Ctrl-C while the command line is imported do to the helper and its children."""

from __future__ import annotations

import os
import select
import sys
from pathlib import Path

from test_h5_hostile import slow

from cifarlin import h5safe, helper


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
