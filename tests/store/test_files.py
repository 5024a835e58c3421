"""Atomic writes: all or nothing, and failures as one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cifarlin.errors import WriteError
from cifarlin.store import files


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "x.txt"
    files.write_text(target, "old")
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]  # no temporary file left
    files.write_text(target, "new")
    assert target.read_text() == "new" and oct(target.stat().st_mode & 0o777) != "0o600"


def test_write_failures_are_one_line_naming_the_file(tmp_path):
    hdf5_style = OSError(
        "Can't close file (file write failed: time = now ,\n filename = 'x', errno = 28, "
        "error message = 'No space left on device', buf = 0x1)"
    )
    err = files._write_error(Path("/data/model.h5"), hdf5_style)
    expected = (
        "/data/model.h5: cannot be written (No space left on device); any earlier version of it is unchanged"
    )
    assert str(err) == expected
    with pytest.raises(WriteError, match="cannot be written"), files.atomic_path(tmp_path / "missing" / "x"):
        pass
