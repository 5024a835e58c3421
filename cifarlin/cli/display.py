"""What the command line shows: the console, tables, progress displays and JSON on stdout.

Humans read stderr (progress, tables, notes), scripts read stdout (``--json``: one JSON document).
With ``NO_COLOR`` or a stderr that is not a terminal, output is plain text without escape codes.
This module reads no environment variable: :class:`Terminal` holds what ``NO_COLOR`` and ``COLUMNS``
say, as :class:`cifarlin.cli.common.Env` read them when the command began (:func:`start_command`).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cifarlin.errors import WriteError, printable
from cifarlin.store.files import json_ready


@dataclass(frozen=True)
class Terminal:
    """What the environment says of the output (read once per command, by common.Env)."""

    no_color: bool = False  # $NO_COLOR, not empty: no colours (live displays stay)
    columns: str | None = None  # $COLUMNS, not empty: rich sizes the consoles by it (else 120 in logs)


_terminal = [Terminal()]  # the running command's (start_command sets it)


def plain() -> bool:
    """No live display (progress bars, live tables): stderr is not a terminal. (NO_COLOR removes
    colours only.)"""
    return not sys.stderr.isatty()


def console() -> Console:
    """The stderr console for humans: no colours with NO_COLOR or off a terminal, 120 columns in
    logs."""
    term = _terminal[0]
    width = None
    if not sys.stderr.isatty() and not term.columns:
        width = 120  # CI logs: wide enough that no table wraps
    color = None if term.no_color or plain() else "auto"
    return Console(stderr=True, highlight=False, color_system=color, width=width)


def clean(text: object) -> str:
    """Text from a file, a path or the network, safe to print: control characters (terminal
    escape sequences among them) shown as escapes, rich markup shown as written."""
    return escape(printable(text))


@contextmanager
def no_escapes_from_libraries() -> Iterator[None]:
    """Warnings and log records of the libraries (matplotlib's "Glyph 27 missing", h5py's, Dask's)
    may quote text from files: while a command runs they reach the terminal with their control
    characters shown as escapes, never raw."""
    import logging
    import warnings

    show, factory = warnings.showwarning, logging.getLogRecordFactory()

    def show_clean(
        message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        show(printable(message, "\n"), category, filename, lineno, file, line)

    def record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        r = factory(*args, **kwargs)
        try:
            r.msg, r.args = printable(r.getMessage(), "\n"), None
            if r.exc_info and not r.exc_text:  # an exception's message may quote a file too
                r.exc_text = printable(logging.Formatter().formatException(r.exc_info), "\n")
            if r.stack_info:
                r.stack_info = printable(r.stack_info, "\n")
        except Exception:  # a record whose arguments do not format: logging reports it as usual
            pass
        return r

    warnings.showwarning = show_clean
    logging.setLogRecordFactory(record)
    try:
        yield
    finally:
        warnings.showwarning = show
        logging.setLogRecordFactory(factory)


def results(json_out: bool) -> Console:
    """Where a command's human-readable result goes: stdout (so ``> file`` and ``| grep`` work),
    or stderr when ``--json`` keeps stdout for the JSON document."""
    if json_out:
        return console()
    term, tty = _terminal[0], sys.stdout.isatty()
    width = None if tty or term.columns else 120
    color = None if term.no_color or not tty else "auto"
    return Console(file=sys.stdout, highlight=False, color_system=color, width=width)


def say(c: Console, text: str) -> None:
    """A line of plain text (no markup): wrapped at spaces on a terminal, never in a file or pipe
    (one line per message for grep)."""
    c.print(clean(text), soft_wrap=not c.is_terminal)


def add_row(t: Table, *cells: object) -> None:
    """A table row of plain text (cells cleaned as by :func:`clean`)."""
    t.add_row(*(clean(cell) for cell in cells))


def table(*columns: str, left: tuple[str, ...] = ()) -> Table:
    """A compact table (no vertical rules, so ten numeric columns fit in 80 terminal columns);
    ``left``: the columns aligned left, the others (numbers) right."""
    from rich import box

    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    for col in columns:
        t.add_column(clean(col), justify="left" if col in left else "right", no_wrap=True)
    return t


def table_width(c: Console, t: Table) -> int:
    """The width ``t`` takes on ``c`` with nothing wrapped or cut (to choose what fits)."""
    return c.measure(t, options=c.options.update(max_width=1000)).maximum


def print_table(c: Console, t: Table) -> None:
    """A table at its natural width even in a narrow terminal: numbers are never cut short."""
    natural = table_width(c, t)
    width = c.width
    c.width = max(width, natural)  # the terminal wraps an over-long line; rich would cut numbers
    try:
        c.print(t, crop=False)
    finally:
        c.width = width


def error_line(message: str) -> str:
    """One line on stderr, whatever the message holds; returns the line."""
    line = re.sub(r"\s*\n\s*", " ", message.strip())
    console().print(f"[bold red]Error:[/] {clean(line)}", soft_wrap=True)
    return line


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------


def fmt_cost(x: float) -> str:
    """A cost or loss: four decimals, or scientific notation when it is huge."""
    return f"{x:.4f}" if abs(x) < 1e6 else f"{x:.4e}"


def fmt_sci(x: float) -> str:
    return f"{x:.2e}"


def fmt_duration(seconds: float) -> str:
    """0:03, 1:05, 1:02:03."""
    s = round(max(seconds, 0))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def fmt_megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


# ---------------------------------------------------------------------------------------------
# JSON on stdout
# ---------------------------------------------------------------------------------------------


_emitted: list[bool] = []  # set once a JSON document went to stdout (a command emits one)


def json_written() -> bool:
    return bool(_emitted)


def start_command(terminal: Terminal) -> None:
    """A new command begins (several run in one process under a test runner), on ``terminal``."""
    _emitted.clear()
    _terminal[0] = terminal


def emit_json(obj: Any) -> None:
    """One JSON document on one line of stdout (NaN and infinities, which JSON lacks, as null)."""
    _emitted.append(True)
    try:
        sys.stdout.write(json.dumps(json_ready(obj), allow_nan=False, default=_json_default) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        raise WriteError(f"cannot write the result to stdout ({e.strerror or e})") from None


def _json_default(o: Any) -> Any:
    if hasattr(o, "item") and hasattr(o, "dtype"):  # a numpy scalar
        return json_ready(o.item())
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------


@contextmanager
def download_progress(quiet: bool) -> Iterator[Callable[[int, int | None], None] | None]:
    """A progress callback: a rich bar on a terminal, a plain line every 5 s otherwise."""
    if quiet:
        yield None
        return
    c = console()
    if not plain():
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=c,
            transient=True,
        ) as bar:
            task = bar.add_task("download", total=None)
            started = False

            def update(done: int, total: int | None) -> None:
                nonlocal started
                if not started:  # a resumed download starts part-way: no speed spike
                    started = True
                    bar.reset(task, completed=done, total=total)
                bar.update(task, completed=done, total=total)

            yield update
        return
    base: tuple[float, int] | None = None  # (time, bytes) of the last line, or the first report
    last = 0.0

    def plain_line(done: int, total: int | None) -> None:
        nonlocal base, last
        now = time.monotonic()
        if base is None:
            base = (now, done)
        if now - last >= 5 or (total is not None and done >= total):
            last = now
            rate = (done - base[1]) / max(now - base[0], 1e-9)  # since the last line: a stall shows
            base = (now, done)
            of = f" of {fmt_megabytes(total)} ({100 * done / total:.0f}%)" if total else ""
            say(c, f"downloaded {fmt_megabytes(done)}{of}, {fmt_megabytes(rate)}/s")

    yield plain_line


EPOCH_HEADER = (
    f"{'epoch':>5}  {'train cost':>10}  {'val cost':>10}  {'train acc':>9}  {'val acc':>9}  {'seconds':>7}"
)


def _epoch_row(epoch: int, h: dict[str, float]) -> str:
    return (
        f"{epoch:>5}  {fmt_cost(h['train_cost']):>10}  {fmt_cost(h['val_cost']):>10}  "
        f"{h['train_acc']:>9.4f}  {h['val_acc']:>9.4f}  {h['seconds']:>7.2f}"
    )


RunDisplay = Callable[[str, int, int, int, int], AbstractContextManager[tuple[Any, Any]]]


@dataclass(frozen=True)
class TrainingDisplay:
    """``run(label, epochs, first, n_train, batch)``: a run's (on_epoch, on_batch) callbacks.
    ``through(res)``: the console to print results on while the display is live: on a terminal
    its own (stderr), when stdout, where ``res`` writes, is that terminal too. Written to stdout
    under the live bars of stderr, the results were glued to the last bar, and the finished
    run's bars stayed on the screen (a rich console writes past rich's stdout redirection)."""

    run: RunDisplay
    through: Callable[[Console], Console] = lambda res: res


@contextmanager
def training_display(c: Console, quiet: bool, labelled: bool = False) -> Iterator[TrainingDisplay]:
    """Per-run displays (:class:`TrainingDisplay`): ``run(label, epochs, first, n_train, batch)``
    gives a context holding that run's (on_epoch, on_batch) callbacks. On a terminal, one live
    display holds a bar per running run (runs may train at the same time, in threads) and prints
    a row per epoch;
    otherwise a plain line per epoch, ending with the ETA; nothing with --quiet. ``labelled``
    starts each line with the run's label (several runs at once)."""
    if quiet:
        yield TrainingDisplay(lambda *a: nullcontext((None, None)))
        return
    if plain():

        @contextmanager
        def plain_run(
            label: str, epochs: int, first: int, n_train: int, batch: int
        ) -> Iterator[tuple[Any, Any]]:
            started = time.monotonic()
            prefix = f"{label}: " if labelled else ""

            def on_epoch(st: Any) -> None:
                h = st.history.last()
                rate = (time.monotonic() - started) / max(st.epoch - first, 1)
                say(
                    c,
                    f"{prefix}epoch {st.epoch}/{epochs}: train cost {fmt_cost(h['train_cost'])} "
                    f"acc {h['train_acc']:.4f}, val cost {fmt_cost(h['val_cost'])} acc {h['val_acc']:.4f}, "
                    f"{h['seconds']:.2f} s, ETA {fmt_duration(rate * (epochs - st.epoch))}",
                )

            yield on_epoch, None

        yield TrainingDisplay(plain_run)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    header = ("run          " if labelled else "") + EPOCH_HEADER
    headed: list[bool] = []  # the header goes above the first run's epochs, after its notes (loading...)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=c,
        transient=True,
    ) as bar:

        @contextmanager
        def live_run(
            label: str, epochs: int, first: int, n_train: int, batch: int
        ) -> Iterator[tuple[Any, Any]]:
            name = f"{label} " if labelled else ""
            if not headed:
                headed.append(True)
                bar.console.print(f"[bold]{header}[/]")
            ep = bar.add_task(f"{name}epochs ", total=epochs, completed=first, rate="")
            bt = bar.add_task(f"{name}batches", total=-(-n_train // batch), rate="")
            t0 = time.perf_counter()

            def on_batch(epoch: int, j: int, n: int) -> None:
                nonlocal t0
                if j == 1:
                    t0 = time.perf_counter()
                if j % 5 == 0 or j == n:
                    rate = min(j * batch, n_train) / max(time.perf_counter() - t0, 1e-9)
                    bar.update(bt, completed=j, total=n, rate=f"{rate:,.0f} img/s")

            def on_epoch(st: Any) -> None:
                bar.update(ep, completed=st.epoch)
                row = _epoch_row(st.epoch, st.history.last())
                bar.console.print(f"{clean(label):<12} {row}" if labelled else row)

            try:
                yield on_epoch, on_batch
            finally:
                bar.remove_task(ep)
                bar.remove_task(bt)

        def through(res: Console) -> Console:
            return bar.console if res.is_terminal and bar.console.is_terminal else res

        yield TrainingDisplay(live_run, through)
