"""``cifarlin runs``: the run folders under a folder, one row each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cifarlin.cli.common import JsonOpt, QuietOpt, option
from cifarlin.cli.display import add_row, console, emit_json, print_table, results, say, table

MAX_DEPTH = 4  # cifarlin.work.catalog.MAX_DEPTH (not imported here: it needs NumPy and h5py)


def runs(
    folder: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="The folder to search, and its folders below. Default: outputs."),
    ] = Path("outputs"),
    depth: Annotated[
        int, option("--depth", metavar="N", help="How many folders below DIR to search.", default=MAX_DEPTH)
    ] = MAX_DEPTH,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List the runs under a folder: settings, epochs, best validation and test accuracy, status.

    Status: complete, interrupted (Ctrl-C), diverged, running-or-stopped (a checkpoint but no
    model yet: training, or killed), stashed-overwrite (an --overwrite stopped before its first
    epoch; the next train on the folder puts the old run back) or damaged (with the reason).
    Symbolic links to folders are not followed.

    **Example:** cifarlin runs outputs
    """
    from cifarlin.work.catalog import list_runs

    catalog = list_runs(folder, depth)
    c = console()
    if catalog.truncated and not quiet:
        say(c, f"note: stopped searching {folder} after 10000 folders; give a smaller folder or --depth")
    rows = [r.summary() for r in catalog.runs]
    out = results(json_out)
    if not rows:
        say(out, f"no run folders in {folder} (searched {depth} folders down)")
    else:
        _print(out, rows)
    if json_out:
        emit_json({"root": str(folder), "runs": rows})


def _num(x: Any, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _print(out: Any, rows: list[dict[str, Any]]) -> None:
    t = table(
        "run",
        "setting",
        "loss",
        "lambda",
        "eta",
        "batch",
        "epochs",
        "best val",
        "test",
        "status",
        left=("run", "setting", "loss", "status"),
    )
    for r in rows:
        done, planned = r["epochs_done"], r["epochs"]
        epochs = "-" if done is None else f"{done}/{planned}"
        add_row(
            t,
            r["folder"],
            _num(r["setting"], ""),
            r["loss"] or "-",
            _num(r["lam"], "g"),
            _num(r["eta"], "g"),
            _num(r["batch_size"], "d"),
            epochs,
            _num(r["best_val_acc"], ".4f"),
            _num(r["test_acc"], ".4f"),
            r["status"],
        )
    print_table(out, t)
    for r in rows:
        if r["reason"]:
            say(out, f"{r['folder']}: {r['status']}: {r['reason']}")
