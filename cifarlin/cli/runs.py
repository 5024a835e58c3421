"""``cifarlin runs``: the run folders under a folder, one row each, to filter, sort, group and
compare (the work is :mod:`cifarlin.work.query`'s; this module formats)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from cifarlin.cli.common import JsonOpt, QuietOpt, flag, option
from cifarlin.cli.display import (
    add_row,
    console,
    emit_json,
    print_table,
    results,
    say,
    table,
    table_width,
)
from cifarlin.errors import ConfigError

MAX_DEPTH = 4  # cifarlin.work.catalog.MAX_DEPTH (not imported here: it needs NumPy and h5py)


def runs(
    folder: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="The folder to search, and its folders below. Default: outputs."),
    ] = Path("outputs"),
    depth: Annotated[
        int, option("--depth", metavar="N", help="How many folders below DIR to search.", default=MAX_DEPTH)
    ] = MAX_DEPTH,
    filters: Annotated[
        list[str] | None,
        option(
            "--filter",
            metavar="COLUMN OP VALUE",
            help="Only the runs where this holds, OP one of = != < <= > >= (e.g. 'loss=ce', "
            "'test_acc>0.4', 'seed<=2'); on any column or setting; repeat for several.",
        ),
    ] = None,
    sort: Annotated[
        str | None,
        option(
            "--sort",
            metavar="COLUMN",
            help="Sort by this column or setting (lam, test_acc, started...); -COLUMN or --desc "
            "for the highest first; several separated by commas.",
        ),
    ] = None,
    desc: Annotated[bool, flag("--desc", help="With --sort: the highest first.")] = False,
    group_by: Annotated[
        list[str] | None,
        option(
            "--group-by",
            metavar="COLUMNS",
            help="One row per distinct value of these columns (e.g. lam,eta): its number of runs "
            "and the mean ± standard deviation of their accuracies (over seeds).",
        ),
    ] = None,
    diff: Annotated[
        bool, flag("--diff", help="Show only the settings that differ between the runs listed.")
    ] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List the runs under a folder: when each started, settings, epochs, validation accuracy of
    the saved model, test accuracy, status.

    Status: complete, interrupted (Ctrl-C), diverged, running-or-stopped (a checkpoint but no
    model yet: training, or killed), stashed-overwrite (an --overwrite stopped before its first
    epoch; the next train on the folder puts the old run back) or damaged (with the reason).
    Symbolic links to folders are not followed. The columns of --filter, --sort and --group-by:
    those of --json's runs (folder, status, lam, eta, loss, val_acc, best_val_acc, test_acc,
    started...) or any setting of the run (seed, keep, augment...).

    **Example:** cifarlin runs outputs --filter loss=ce --sort=-test_acc
    """
    from cifarlin.work import query
    from cifarlin.work.catalog import list_runs

    if desc and sort is None:
        raise ConfigError("--desc sorts nothing alone: give the column too, e.g. --sort test_acc --desc")
    by = query.group_columns(group_by) if group_by else []  # bad options fail before the search
    if sort is not None:
        query.sort_keys(sort, desc)
    for f in filters or []:
        query.parse_filter(f)
    catalog = list_runs(folder, depth)
    c = console()
    if catalog.truncated and not quiet:
        say(c, f"note: stopped searching {folder} after 10000 folders; give a smaller folder or --depth")
    rows = query.filtered([r.summary() for r in catalog.runs], filters or [])
    if sort is not None:
        rows = query.sorted_rows(rows, sort, desc)
    out = results(json_out)
    doc: dict[str, Any] = {"root": str(folder), "runs": rows}
    if not rows:
        which = "matching the filters " if filters else ""
        say(out, f"no run folders {which}in {folder} (searched {depth} folders down)")
    elif by:
        doc["group_by"], doc["groups"] = by, query.grouped(rows, by)
        _print_groups(out, by, doc["groups"])
    else:
        differ = query.differing(rows) if diff else None
        if differ is not None:
            doc["differ"] = differ
        _print_runs(out, folder, rows, differ)
    if json_out:
        emit_json(doc)


# ---------------------------------------------------------------------------------------------
# The tables, fitted to the terminal
# ---------------------------------------------------------------------------------------------


@dataclass
class Col:
    """A column of a table: its heading (and a shorter one), its cells, and when it goes as the
    terminal narrows (``drop``: 1 first, 0 never)."""

    header: str
    cells: list[str]
    left: bool = False
    short: str | None = None
    drop: int = 0
    same: bool = False  # dropped (and said once) when it holds one value in every row


def _num(x: Any, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _text(x: Any) -> str:
    """A setting's value as typed on the command line."""
    if x is None:
        return "-"
    if isinstance(x, float):
        return format(x, "g")
    if isinstance(x, list):
        return ",".join(map(str, x))
    return str(x)


def _times(stamps: list[str | None]) -> list[str]:
    """Start times in local time, without the year when they are all in this one."""
    local = [None if s is None else datetime.fromisoformat(s).astimezone() for s in stamps]
    year = datetime.now().astimezone().year
    fmt = "%m-%d %H:%M" if all(t is None or t.year == year for t in local) else "%Y-%m-%d %H:%M"
    return ["-" if t is None else t.strftime(fmt) for t in local]


def _relative(folder: Path, runs: list[str]) -> list[str]:
    """The runs' folders below ``folder`` ('.' for the folder itself)."""
    out = []
    for r in runs:
        try:
            out.append(str(Path(r).relative_to(folder)))
        except ValueError:
            out.append(r)
    return out


def _fitted(out: Any, cols: list[Col], shorter_runs: list[str] | None = None) -> tuple[Any, list[str]]:
    """The table of ``cols`` narrowed until it fits the terminal, and the notes that say what
    columns of one value left: paths relative to DIR, short headings, empty columns gone, the
    least useful ones, the ``same`` ones of one value, last the run's path shortened in the
    middle. A number is never cut and a row never wraps (when even the numbers are too wide, the
    table is printed at its width: the terminal wraps, nothing is lost)."""

    def build(cs: list[Col]) -> Any:
        t = table(*(c.header for c in cs), left=tuple(c.header for c in cs if c.left))
        for row in zip(*(c.cells for c in cs), strict=True):
            add_row(t, *row)
        return t

    def fits(cs: list[Col]) -> bool:
        return table_width(out, build(cs)) <= out.width

    steps = []
    if shorter_runs is not None:
        steps.append(lambda cs: [replace(cs[0], cells=shorter_runs), *cs[1:]])
    steps.append(lambda cs: [replace(c, header=c.short or c.header) for c in cs])
    steps.append(lambda cs: [c for c in cs if c.drop == 0 or any(x != "-" for x in c.cells)])
    for n in sorted({c.drop for c in cols if c.drop}):
        steps.append(lambda cs, n=n: [c for c in cs if c.drop != n])
    notes = []

    def one_value(cs: list[Col]) -> list[Col]:
        gone = [c for c in cs if c.same and len(set(c.cells)) == 1]
        notes.extend(f"{c.header}: {c.cells[0]} for every run" for c in gone)
        return [c for c in cs if c not in gone]

    steps.append(one_value)
    for step in steps:
        if fits(cols):
            break
        cols = step(cols)
    if not fits(cols):  # the run's path, in the middle
        over = table_width(out, build(cols)) - out.width
        run = cols[0]
        room = max(len(run.header), max(map(len, run.cells)) - over, 8)
        cols = [replace(run, cells=[_tail(x, room) for x in run.cells]), *cols[1:]]
    return build(cols), notes


def _tail(path: str, room: int) -> str:
    """``path`` in ``room`` characters: its start and its end around '…' (the names of runs
    differ at either: lam0-eta0.01-seed1)."""
    if len(path) <= room:
        return path
    head = (room - 1) // 2
    return path[:head] + "…" + path[len(path) - (room - 1 - head) :]


def _epochs(r: dict[str, Any]) -> str:
    """Epochs done of those planned."""
    return "-" if r["epochs_done"] is None else f"{r['epochs_done']}/{r['epochs']}"


def _run_cols(folder: Path, rows: list[dict[str, Any]], settings: list[str] | None) -> list[Col]:
    """The columns of the listing; with ``settings`` (--diff), those settings instead of the usual."""
    runs = [r["folder"] for r in rows]
    cols = [Col("run", runs, left=True), Col("started", _times([r["started"] for r in rows]), drop=4)]
    if settings is not None:
        cfg = [r["config"] or {} for r in rows]
        cols += [
            Col(s, [_text(c.get(s)) for c in cfg], left=not _numbers(c.get(s) for c in cfg)) for s in settings
        ]
    else:
        cols += [
            Col("setting", [_num(r["setting"], "") for r in rows], short="set", drop=2),
            Col("loss", [r["loss"] or "-" for r in rows], left=True, same=True),
            Col("lambda", [_num(r["lam"], "g") for r in rows], short="lam"),
            Col("eta", [_num(r["eta"], "g") for r in rows]),
            Col("batch", [_num(r["batch_size"], "d") for r in rows], short="bs", drop=1),
            Col("epochs", [_epochs(r) for r in rows], short="ep", drop=3),
        ]
    cols += [
        Col("val", [_num(r["val_acc"], ".4f") for r in rows]),
        Col("test", [_num(r["test_acc"], ".4f") for r in rows]),
        Col("status", [r["status"] for r in rows], left=True, same=True),
    ]
    return cols


def _print_runs(out: Any, folder: Path, rows: list[dict[str, Any]], settings: list[str] | None) -> None:
    cols = _run_cols(folder, rows, settings)
    t, notes = _fitted(out, cols, _relative(folder.expanduser(), cols[0].cells))
    if settings and table_width(out, t) > out.width:  # --diff of many settings: a line a run
        names = _relative(folder.expanduser(), cols[0].cells)
        for i, name in enumerate(names):  # wrapped at spaces: a value is never split
            values = "  ".join(f"{c.header}={c.cells[i]}" for c in cols[2:] if c.header in settings)
            say(out, f"{name}: {values}  val {cols[-3].cells[i]}  test {cols[-2].cells[i]}")
        notes = []
    else:
        print_table(out, t)
    for note in notes:
        say(out, note)
    if settings == []:
        say(out, f"the {len(rows)} runs listed have the same settings")
    for r in rows:
        if r["reason"]:
            say(out, f"{r['folder']}: {r['status']}: {r['reason']}")


def _numbers(values: Any) -> bool:
    return all(isinstance(v, int | float) for v in values)


def _mean_sd(m: dict[str, Any]) -> str:
    if m["mean"] is None:
        return "-"
    return f"{m['mean']:.4f}" if m["sd"] is None else f"{m['mean']:.4f} ± {m['sd']:.4f}"


def _print_groups(out: Any, by: list[str], groups: list[dict[str, Any]]) -> None:
    cols = [
        Col(name, [_text(g["by"][name]) for g in groups], left=not _numbers(g["by"][name] for g in groups))
        for name in by
    ]
    cols += [
        Col("runs", [str(g["count"]) for g in groups]),
        Col("val", [_mean_sd(g["val_acc"]) for g in groups]),
        Col("test", [_mean_sd(g["test_acc"]) for g in groups]),
        Col("best val", [_mean_sd(g["best_val_acc"]) for g in groups], short="best", drop=1),
    ]
    t, notes = _fitted(out, cols)
    print_table(out, t)
    for note in notes:
        say(out, note)
