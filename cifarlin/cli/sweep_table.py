"""The table of a sweep's trials (``cifarlin sweep``'s live table and its final one), fitted to the
terminal's width: shorter headers first, then the less important columns dropped, never a number
cut. What does not fit even then is a line per trial (live) or the table at its natural width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.text import Text

from cifarlin.cli.display import add_row, fmt_cost, table
from cifarlin.errors import printable
from cifarlin.search.space import show

if TYPE_CHECKING:
    from cifarlin.search.plan import TrialResult

#: The columns after the swept parameters: (full header, short header), in the table's order.
COLUMNS = {
    "status": ("status", "status"),
    "epochs": ("epochs", "epochs"),
    "val acc": ("val acc", "val acc"),
    "best val acc": ("best val acc", "best"),
    "val cost": ("val cost", "cost"),
    "seconds": ("seconds", "sec"),
}
#: The order they go when the terminal is too narrow (status and val acc always stay).
DROPPED = ("val cost", "best val acc", "seconds", "epochs")


def fmt(x: float | None, digits: int = 4) -> str:
    return "" if x is None or x != x else f"{x:.{digits}f}"


def header(field: str) -> str:
    """A swept field's column: named as its option is, without the dashes (``batch-size``)."""
    return field.replace("_", "-")


def params_text(r: TrialResult, names: Sequence[str]) -> str:
    """``lam=0.01, eta=0.001``: in the library's words (the command line turns them into flags)."""
    return ", ".join(f"{n}={show(n, getattr(r.trial.config, n))}" for n in names)


def _cells(r: TrialResult) -> dict[str, str]:
    return {
        "status": r.status,
        "epochs": f"{r.epochs_trained}/{r.trial.config.epochs}",
        "val acc": fmt(r.val_accuracy),
        "best val acc": fmt(r.best_val_accuracy),
        "val cost": "" if r.final_val_cost is None else fmt_cost(r.final_val_cost),
        "seconds": "" if r.seconds is None else f"{r.seconds:.1f}",
    }


def _layouts() -> list[tuple[list[str], bool]]:
    """(columns, short headers), widest first."""
    every = list(COLUMNS)
    out = [(every, False), (every, True)]
    for i in range(1, len(DROPPED) + 1):
        out.append(([c for c in every if c not in DROPPED[:i]], True))
    return out


def _table(
    trials: Sequence[TrialResult], swept: Sequence[str], best: Any, columns: list[str], short: bool
) -> Any:
    heads = [COLUMNS[c][short] for c in columns]
    t = table("trial", *(header(n) for n in swept), *heads, left=("trial", "status"))
    for r in trials:
        mark = " *" if best is not None and r is best else ""
        cells = _cells(r)
        add_row(
            t,
            r.trial.name + mark,
            *(show(n, getattr(r.trial.config, n)) for n in swept),
            *(cells[c] for c in columns),
        )
    return t


def natural_width(c: Console, renderable: Any) -> int:
    return c.measure(renderable, options=c.options.update(max_width=10_000)).maximum


def status_table(
    c: Console, trials: Sequence[TrialResult], swept: Sequence[str], best: Any, width: int | None = None
) -> tuple[Any, bool]:
    """The widest table of the trials that fits ``width`` (default: the console's), and whether it
    fits; when none does, the narrowest."""
    width = c.width if width is None else width
    t = None
    for columns, short in _layouts():
        t = _table(trials, swept, best, columns, short)
        if natural_width(c, t) <= width:
            return t, True
    return t, False


def trial_lines(
    trials: Sequence[TrialResult], swept: Sequence[str], best: Any, words: Callable[[str], str]
) -> Any:
    """A line per trial, wrapped at spaces: the live table of a terminal too narrow for it."""
    lines = []
    for r in trials:
        cells = _cells(r)
        parts = [
            r.trial.name + (" *" if best is not None and r is best else ""),
            words(params_text(r, swept)),
        ]
        parts.append(f"{r.status} {cells['epochs']}")
        if cells["val acc"]:
            parts.append(f"val acc {cells['val acc']}")
        lines.append(Text(printable(", ".join(parts))))
    return Group(*lines)
