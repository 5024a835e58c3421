"""Errors name what the user set, and no text from a file reaches the terminal raw."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from cifarlin.cli import app


@pytest.mark.parametrize("command", [["train", "--epochs", "1"], ["download"], ["gradcheck", "--n", "2"]])
def test_a_data_folder_from_the_environment_is_named_as_such(tmp_path, command):
    """Bug: CIFARLIN_DATA_DIR pointing to a file said `--data-dir '.../afile': is a file`, a flag
    the user never gave."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    r = CliRunner().invoke(app, command, env={"CIFARLIN_DATA_DIR": str(afile)})
    assert r.exit_code == 2, r.output
    assert r.stderr == f"Error: $CIFARLIN_DATA_DIR '{afile}': is a file, not a folder\n"
    r = CliRunner().invoke(
        app, [*command, "--data-dir", str(afile)], env={"CIFARLIN_DATA_DIR": str(tmp_path)}
    )
    assert r.exit_code == 2, r.output
    assert r.stderr == f"Error: --data-dir '{afile}': is a file, not a folder\n"


@pytest.mark.slow
def test_no_terminal_escape_from_class_names_reaches_the_terminal(tiny_py, tmp_path):
    """Bug: `visualize` on a model whose class names hold ESC and BEL printed them raw through
    matplotlib's "Glyph 27 missing from font" warning. Figures show them as escapes, and any
    warning or log line that quotes file content is made printable."""
    run = tmp_path / "run"
    r = CliRunner().invoke(
        app,
        ["train", "--data-dir", str(tiny_py), "--epochs", "1", "--batch-size", "10", "-o", str(run), "-q"],
    )
    assert r.exit_code == 0, r.output
    with h5py.File(run / "model.h5", "a") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["class_names"]]
        names[0] = "\x1b[31mair\x07plane\x1b]0;title\x07"
        f.attrs["class_names"] = np.array(names, dtype=h5py.string_dtype())
    args = ["visualize", str(run / "model.h5"), "-q", "--data-dir", str(tiny_py), "-o", str(tmp_path / "fig")]
    p = subprocess.run(
        [sys.executable, "-W", "always", "-m", "cifarlin", *args],
        capture_output=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    for stream in (p.stdout, p.stderr):
        assert b"\x1b" not in stream and b"\x07" not in stream, stream


def test_library_warnings_and_log_records_are_made_printable(caplog):
    import logging
    import warnings

    from cifarlin.cli.display import no_escapes_from_libraries

    with warnings.catch_warnings(record=True) as shown, no_escapes_from_libraries():
        warnings.simplefilter("always")
        warnings.warn("Glyph 27 (\x1b) missing\x07", UserWarning, stacklevel=1)
        logging.getLogger("cifarlin-test").warning("a name: %s", "\x1b[2Jgone")
    assert [str(w.message) for w in shown] == ["Glyph 27 (\\x1b) missing\\x07"]
    assert [r.getMessage() for r in caplog.records] == ["a name: \\x1b[2Jgone"]
