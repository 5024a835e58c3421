"""``cifarlin report``: the assignment's report from an outputs folder, in one page (the work is
:mod:`cifarlin.report`'s; this module parses and says what was written)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cifarlin.cli.common import DataDirOpt, JsonOpt, QuietOpt, ensure_data, env, flag, option
from cifarlin.cli.display import console, emit_json, results, say
from cifarlin.errors import bad_value

FORMATS = ("html", "md", "pdf")


def report(
    ctx: typer.Context,
    folder: Annotated[
        Path,
        typer.Argument(
            metavar="DIR", help="The outputs folder: every run, sweep and gradient check under it."
        ),
    ] = Path("outputs"),
    out: Annotated[
        Path | None,
        option(
            "--out",
            "-o",
            metavar="FILE",
            help="Where to write the report.",
            default="report.html (report.md, report.pdf) in the current folder",
        ),
    ] = None,
    format: Annotated[
        str | None,
        option(
            "--format",
            metavar="FORMAT",
            help="One self-contained HTML page (figures inline), Markdown with an images/ folder beside "
            "it, or a PDF printed by a headless Chromium. Default: from --out's suffix, else html.",
            choices=FORMATS,
        ),
    ] = None,
    title: Annotated[
        str,
        option("--title", metavar="TEXT", help="The report's title.", default="CIFAR-10, one linear layer"),
    ] = "CIFAR-10, one linear layer",
    no_draw: Annotated[
        bool, flag("--no-draw", help="Use only the figures already in the run folders; draw none.")
    ] = False,
    data_dir: DataDirOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write the assignment's report from the runs under DIR: environment and the command that
    reproduces each run, the gradient check, the four reference settings against the original
    work, other losses, the bonus recipe, searches, ensembles, and the best model by validation.

    Every number is read from the run files; figures are the runs' own PNGs (drawn into their
    folders when missing; the test images are read from the folder each model was trained on).
    A damaged run, or one still being trained, is left out and named in a note.

    **Example:** cifarlin report outputs -o report.html
    """
    from cifarlin.figures.drawer import FigureDrawer
    from cifarlin.report import render
    from cifarlin.report.gather import find
    from cifarlin.report.pictures import Pictures
    from cifarlin.report.sections import document

    if format is not None and format not in FORMATS:
        raise bad_value("format", format, f"use one of {', '.join(FORMATS)}")
    suffix = out.suffix.lstrip(".").lower() if out is not None else ""
    fmt = format or (suffix if suffix in FORMATS else "html")
    target = out if out is not None else Path(f"report.{fmt}")
    render.check_target(target)  # before any work: a bad path is a usage error
    e = env(ctx)
    if fmt == "pdf":
        render.chromium(e.tools)  # no Chromium: said before any work
    given = data_dir is not None or e.data_dir_set
    with FigureDrawer(background=not no_draw) as drawer:  # a child draws what is missing meanwhile
        drawer.warm_up()  # its matplotlib import while the runs are read (ended unused if none is)
        found = find(folder)
        pictures = Pictures(
            (lambda: ensure_data(ctx, data_dir, True, True)),
            found.notes,
            e.feature_cache,
            draw=not no_draw,
            given_first=given,
            drawer=drawer,
        )
        doc = document(found, pictures, title)
    written = render.write(doc, target, fmt, e.tools)
    c = results(json_out)
    if not quiet:
        for note in doc["notes"]:
            say(console(), f"note: {note}")
        if pictures.drawn:
            say(console(), "drew " + ", ".join(map(str, pictures.drawn)))
    size = sum(p.stat().st_size for p in written)
    say(c, f"wrote {', '.join(map(str, written[:1]))} ({size / 1e6:.1f} MB, {len(doc['sections'])} sections)")
    if json_out:
        emit_json({**doc, "files": [str(p) for p in written], "format": fmt})
