"""A report document (:func:`cifarlin.report.sections.document`) written as one self-contained
HTML page (the figures as data URIs, the stylesheet inline: it works offline and can be mailed),
as Markdown with its figures in an ``images/`` folder beside it, or as a PDF printed from the HTML
by a headless Chromium. Templates are Jinja2 files shipped in ``cifarlin/report/templates``.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cifarlin.errors import ReportError, WriteError
from cifarlin.errors import printable as shown
from cifarlin.report.gather import cell_text
from cifarlin.store.files import atomic_path, check_file_path, make_folder, write_text

FORMATS = ("html", "md", "pdf")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")  # what a figure's file name in images/ may hold
NUMERIC = ("int", "num", "acc", "pt", "sci", "pm", "s")
PNG = b"\x89PNG\r\n\x1a\n"
MAX_IMAGE_BYTES = 20_000_000
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_SECONDS = 120


def printable(value: Any) -> Any:
    """``value`` with every text in it shown as :func:`cifarlin.errors.printable` shows text from
    a file: control and format characters (terminal escapes, a right-to-left override) as
    escapes, so that what the page shows is what a copy of it runs."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, list):
        return [printable(v) for v in value]
    if isinstance(value, dict):
        return {k: printable(v) for k, v in value.items()}
    return value


def md_escape(text: Any) -> str:
    """Text for a Markdown paragraph or table cell: pipes, backticks, emphasis and brackets
    escaped, lines joined."""
    s = str(text).replace("\n", " ")
    return re.sub(r"([\\`*_\[\]|<>#])", r"\\\1", s)


def md_code(text: Any) -> str:
    """A Markdown code span of ``text`` in a table cell: its text kept whole (a span of two
    backticks around one holding a backtick), no pipe ending the cell."""
    s = str(text).replace("\n", " ").replace("|", "\\|")
    return f"`` {s} ``" if "`" in s else f"`{s}`"


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cifarlin.report", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["cell"] = cell_text
    env.filters["md"] = md_escape
    env.filters["mdcode"] = md_code
    env.globals["numeric"] = NUMERIC
    return env


def read_png(path: Path) -> bytes:
    """A figure's bytes, checked to be a PNG of a sane size."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_IMAGE_BYTES + 1)
    except OSError as e:
        raise ReportError(f"{path}: cannot be read ({e.strerror or e})") from None
    if len(data) > MAX_IMAGE_BYTES or not data.startswith(PNG):
        raise ReportError(f"{path}: not a PNG figure of at most {MAX_IMAGE_BYTES} bytes")
    return data


def _with_sources(doc: dict[str, Any], source: Any, notes: list[str]) -> dict[str, Any]:
    """``doc`` with each figure's ``src`` (what ``source(path, n)`` gives; a figure that cannot be
    read is left out, with a note)."""
    sections, n = [], 0
    for s in doc["sections"]:
        figures = []
        for f in s["figures"]:
            try:
                src = source(Path(f["file"]), n)
            except ReportError as e:
                notes.append(str(e))
                continue
            n += 1
            figures.append({**f, "src": src, "wide": Path(f["file"]).name in ("settings.png", "sweep.png")})
        sections.append({**s, "figures": figures})
    return {**doc, "sections": sections, "notes": notes}


def html(doc: dict[str, Any]) -> str:
    """The page: one file, every figure inline as a data URI."""

    def data_uri(path: Path, n: int) -> str:
        return "data:image/png;base64," + base64.b64encode(read_png(path)).decode("ascii")

    page = printable(_with_sources(doc, data_uri, list(doc["notes"])))  # read the files, then escape
    return _environment().get_template("report.html").render(doc=page)


def markdown(doc: dict[str, Any], images: str = "images", prefix: str = "") -> tuple[str, dict[str, bytes]]:
    """The Markdown text and the figures it links, by their names in the ``images`` folder (each
    name begins with ``prefix``: reports beside each other keep their own figures)."""
    files: dict[str, bytes] = {}

    def link(path: Path, n: int) -> str:
        data = read_png(path)
        name = _SAFE.sub("_", f"{prefix}{n + 1:02d}-{path.parent.name}-{path.name}")
        files[name] = data
        return f"{images}/{name}"

    page = printable(_with_sources(doc, link, list(doc["notes"])))
    return _environment().get_template("report.md").render(doc=page), files


def check_target(out: Path) -> None:
    """Refuse, before any work, a path the report cannot be written to (a usage error)."""
    check_file_path(out, "out", f"report{out.suffix or '.html'}")


def write(doc: dict[str, Any], out: Path, fmt: str, environ: Mapping[str, str]) -> list[Path]:
    """Write the report as ``fmt`` to ``out`` (each file whole or not at all, its folder made
    when missing); the files written."""
    if fmt not in FORMATS:
        raise ReportError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    make_folder(out.parent, "the report's folder")
    if fmt == "html":
        write_text(out, html(doc))
        return [out]
    if fmt == "md":
        text, files = markdown(doc, prefix=f"{out.stem}-")
        folder = out.parent / "images"
        written: list[Path] = []
        try:
            if files:
                make_folder(folder)
            for name, data in files.items():
                with atomic_path(folder / name) as tmp:
                    tmp.write_bytes(data)
                written.append(folder / name)
            write_text(out, text)
        except BaseException:  # the page is whole or not at all: its figures go with it
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return [out, *written]
    print_pdf(html(doc), out, chromium(environ))
    return [out]


def chromium(environ: Mapping[str, str]) -> str:
    """The headless browser that prints PDFs: ``$CIFARLIN_CHROMIUM``, else the first of
    :data:`CHROMIUM_NAMES` on ``$PATH`` (both read from ``environ``)."""
    given = environ.get("CIFARLIN_CHROMIUM")
    if given:
        if shutil.which(given, path=environ.get("PATH")) is None:
            raise ReportError(f"$CIFARLIN_CHROMIUM={given!r}: no such program; give a Chromium's path")
        return given
    for name in CHROMIUM_NAMES:
        if (found := shutil.which(name, path=environ.get("PATH"))) is not None:
            return found
    raise ReportError(
        "--format pdf needs a Chromium to print with, and none was found: install Debian's chromium "
        "package (sudo apt-get install chromium) or set $CIFARLIN_CHROMIUM, or write --format html and "
        "print it from a browser"
    )


def chromium_args(browser: str, profile: Path) -> list[str]:
    """A headless Chromium that makes no connection of its own (no updates, sync or telemetry)."""
    args = [
        browser,
        "--headless",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to start its sandbox as root
    return args


def print_pdf(page: str, out: Path, browser: str) -> None:
    """Print the HTML ``page`` to ``out`` as A4 (its print stylesheet) with ``browser``."""
    with tempfile.TemporaryDirectory(prefix="cifarlin-report-") as tmp:
        src = Path(tmp) / "report.html"
        src.write_text(page, encoding="utf-8")
        with atomic_path(out) as target:
            cmd = [
                *chromium_args(browser, Path(tmp) / "profile"),
                f"--print-to-pdf={target}",
                "--no-pdf-header-footer",
                "--print-to-pdf-no-header",
                src.as_uri(),
            ]
            try:
                done = subprocess.run(
                    cmd, capture_output=True, timeout=CHROMIUM_SECONDS, stdin=subprocess.DEVNULL
                )
            except subprocess.TimeoutExpired:
                raise ReportError(f"{browser}: did not print the PDF in {CHROMIUM_SECONDS} s") from None
            except OSError as e:
                raise ReportError(f"{browser}: cannot be started ({e.strerror or e})") from None
            try:
                ok = target.stat().st_size > 0 and target.read_bytes()[:5] == b"%PDF-"
            except OSError:
                ok = False
            if done.returncode != 0 or not ok:
                last = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1]
                raise WriteError(f"{out}: {browser} printed no PDF (exit {done.returncode}: {last[:200]})")
