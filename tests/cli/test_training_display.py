"""The live display of training on a terminal: its table's header comes with the first run's
epochs, below what the command printed before them (loading CIFAR-10 ..., the run's line)."""

from __future__ import annotations

import io

from rich.console import Console

from cifarlin.cli import display


def test_the_epoch_header_prints_after_the_lines_before_the_first_epoch(monkeypatch):
    """Catches the header printed as the display starts, above the 'loading CIFAR-10' line."""
    monkeypatch.setattr(display, "plain", lambda: False)
    out = io.StringIO()
    c = Console(file=out, width=80, force_terminal=True, color_system=None)
    with display.training_display(c, quiet=False) as run:
        c.print("loading CIFAR-10 from DIR: train data_batch_1")
        c.print("run: lambda=0, eta=0.001")
        with run("run", 2, 0, 100, 10):
            pass
        with run("run", 2, 0, 100, 10):  # a second run of the same display: no second header
            pass
    text = out.getvalue()
    assert text.count("train cost") == 1
    assert text.index("loading CIFAR-10") < text.index("run: lambda") < text.index("train cost")
