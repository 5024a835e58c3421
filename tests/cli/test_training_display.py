"""The live display of training on a terminal: its table's header comes with the first run's
epochs, below what the command printed before them (loading CIFAR-10 ..., the run's line); the
results printed meanwhile start on a line of their own."""

from __future__ import annotations

import io
import re
import sys

import pytest
from rich.console import Console

from cifarlin.cli import display


def test_the_epoch_header_prints_after_the_lines_before_the_first_epoch(monkeypatch):
    """Catches the header printed as the display starts, above the 'loading CIFAR-10' line."""
    monkeypatch.setattr(display, "plain", lambda: False)
    out = io.StringIO()
    c = Console(file=out, width=80, force_terminal=True, color_system=None)
    with display.training_display(c, quiet=False) as d:
        run = d.run
        c.print("loading CIFAR-10 from DIR: train data_batch_1")
        c.print("run: lambda=0, eta=0.001")
        with run("run", 2, 0, 100, 10):
            pass
        with run("run", 2, 0, 100, 10):  # a second run of the same display: no second header
            pass
    text = out.getvalue()
    assert text.count("train cost") == 1
    assert text.index("loading CIFAR-10") < text.index("run: lambda") < text.index("train cost")


@pytest.mark.slow
def test_a_runs_results_on_a_terminal_start_on_a_line_of_their_own(tiny_py, tmp_path):
    """Caught: on a terminal the run's summary (stdout) was written under the live bars (stderr)
    and glued to the last one ('... 0:00:00/tmp/run: 3 epochs'), the finished bars left on the
    screen; with --setting all a restarted display erased result lines."""
    from processes import run_in_pty

    out = tmp_path / "r"
    env = {"TERM": "xterm", "COLUMNS": "100", "CIFARLIN_DATA_DIR": str(tiny_py)}
    args = ["train", "--out", str(out), "--epochs", "3", "--batch-size", "10", "--no-plots"]
    text = run_in_pty([sys.executable, "-m", "cifarlin", *args], env)
    assert "batches" in text  # the live bars were drawn
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)  # colours and bold off: what stays is the layout
    at = plain.index(f"{out}: 3 epochs")
    assert plain[at - 1] in "\n\rK", repr(plain[at - 80 : at + 20])  # a new line, or one just erased
    assert "test accuracy" in plain[at:] and f"wrote {out}" in plain[at:]
