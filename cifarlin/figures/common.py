"""What every figure of cifarlin shares: the backend, the style, the colours, a run's title, and
saving. The figures themselves are in :mod:`cifarlin.figures.plots` (curves and maps of numbers)
and :mod:`cifarlin.figures.images` (figures made of images).

Importing these modules imports matplotlib (about half a second), so only the workflows that
draw do, when they draw. Figures use the non-interactive Agg backend unless the caller asks for a
window, fixed layouts (no constrained layout: it costs more than the drawing), and are saved
atomically. Text that comes from files (class names) is never parsed as math; our own labels
are (lambda, ||W||^2, eta).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # before pyplot: no GUI toolkit is imported unless a window is asked for
import matplotlib.pyplot as plt
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import Formatter

from cifarlin.core.config import TrainConfig
from cifarlin.core.losses import LOSSES
from cifarlin.errors import printable
from cifarlin.store.files import atomic_path

TRAIN_COLOR, VAL_COLOR, BEST_COLOR, WRONG_COLOR = "#1f77b4", "#d62728", "#555555", "#c00000"


def use_backend(show: bool = False) -> None:
    """Agg (files only, no display needed) unless a window is wanted."""
    if show:
        try:
            plt.switch_backend(matplotlib.rcParamsDefault["backend"])
        except (ImportError, ValueError):  # no display or no toolkit: files only
            plt.switch_backend("Agg")
    else:
        plt.switch_backend("Agg")


def warm_up() -> None:
    """Draw a small figure with text and an image and throw it away: what a process's first
    figure costs once (fonts found and loaded, glyphs cached) is paid before it is needed."""
    style()
    fig = plt.figure(figsize=(2, 1))
    ax = fig.add_axes((0.2, 0.3, 0.7, 0.5))
    ax.plot([0, 1], [0, 1], marker="o")
    ax.set_title("warm up 0123456789", parse_math=True)
    fig.text(0.5, 0.05, "$\\lambda$ = 0, $\\eta$ = 0.001", parse_math=True)
    fig.figimage(np.zeros((4, 4, 3)))
    fig.canvas.draw()
    plt.close(fig)


def show() -> None:
    """Open every figure drawn so far in a window (blocks until they are closed)."""
    plt.show()


def can_show() -> bool:
    """Whether the current backend opens windows (it does not without a display)."""
    return matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo", "template")


def style(small: bool = False) -> None:
    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "font.size": 7 if small else 10,
            "axes.titlesize": 8 if small else 11,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "svg.hashsalt": "cifarlin",  # reproducible SVG ids
            "text.parse_math": False,  # class names and paths from files are text, never math
            "text.usetex": False,
        }
    )


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _math_safe(text: str) -> str:
    """Text from the user (a file name) inside a title drawn with parse_math: its $ kept literal."""
    return text.replace("$", "\\$")


def _numbers(values: tuple[int, ...]) -> str:
    """(1, 2, 3, 4, 5) -> '1-5', (1, 3) -> '1, 3'."""
    if len(values) > 2 and list(values) == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ", ".join(map(str, values))


def run_details(cfg: TrainConfig) -> list[str]:
    """What a run did beyond lambda, eta, batch and epochs, each when not the default: the loss,
    features, augmentation, schedule, training batches, shuffling, the model kept, a warm start."""
    from cifarlin.core.augment import parse_augment

    out = [] if cfg.loss == "ce" or cfg.solver == "ridge" else [LOSSES[cfg.loss].label]
    if cfg.features is not None:
        out.append(f"k-means features ({_math_safe(Path(cfg.features).name)})")
    aug = parse_augment(cfg.augment)
    views = (["flips"] if aug.flip else []) + (
        [f"shifts of up to {aug.translate} px"] if aug.translate else []
    )
    if views:
        out.append(" and ".join(views))
    if cfg.schedule == "step":
        out.append(f"step schedule ($\\times${cfg.decay:g} every {cfg.decay_every} epochs)")
    elif cfg.schedule == "cosine":
        out.append(f"cosine schedule to {cfg.eta_min:g}")
    elif cfg.schedule != "constant":
        out.append(f"{cfg.schedule} schedule")
    if cfg.train_batches != (1,):
        out.append(
            f"training batch{'es' if len(cfg.train_batches) > 1 else ''} {_numbers(cfg.train_batches)}"
        )
    if cfg.shuffle and cfg.solver != "ridge":
        out.append("shuffled")
    if cfg.keep != "last":
        out.append(f"model of the {cfg.keep} epoch")
    if cfg.init is not None:
        out.append("warm start")
    return out


def run_title(cfg: TrainConfig, epochs: int | None = None, sep: str = "; ") -> str:
    """'setting 2: $\\lambda$ = 0, $\\eta$ = 0.001, batch 100, 40 epochs', then ``sep`` and
    :func:`run_details` when there are any (draw with parse_math)."""
    setting = f"setting {cfg.setting}: " if cfg.setting else ""
    if cfg.solver == "ridge":
        lam = "$\\lambda$ chosen on validation" if cfg.choose_lam else f"$\\lambda$ = {cfg.lam:g}"
        main = f"{setting}ridge solver ({LOSSES[cfg.loss].label}), {lam}"
    else:
        main = (
            f"{setting}$\\lambda$ = {cfg.lam:g}, $\\eta$ = {cfg.eta:g}, batch {cfg.batch_size}, "
            f"{_epochs(cfg.epochs if epochs is None else epochs)}"
        )
    details = run_details(cfg)
    return main + (sep + ", ".join(details) if details else "")


def wrap_title(title: str, chars: int) -> str:
    """``title`` in lines of about ``chars`` characters, broken after '; ' or ', ' (never inside
    $...$ math), so that a long run title stays within its figure."""
    lines: list[str] = []
    for part in title.split("\n"):
        line = ""
        for piece in re.split(r"(?<=[;,] )", part):
            if line and len(_shown(line + piece)) > chars:
                lines.append(line.rstrip())
                line = ""
            line += piece
        lines.append(line.rstrip())
    return "\n".join(lines)


def _shown(text: str) -> str:
    """Roughly what math text shows: '$\\lambda$' as one character."""
    return re.sub(r"\$[^$]*\$", "x", text)


class PlainLogFormatter(Formatter):
    """Tick labels of a log (or symlog) axis as plain numbers ('0.003', '1e-05'), never math text
    (cifarlin draws with ``text.parse_math`` off, so matplotlib's default log labels would print as
    raw ``$\\mathdefault{...}$``). Major ticks are always labelled; a minor tick only where the axis
    spans too little for major ticks to say enough: all of them within one decade, the 2s and 5s
    within two, none beyond."""

    def __init__(self, minor: bool = False) -> None:
        self.minor = minor

    def __call__(self, x: float, pos: int | None = None) -> str:
        if not self.minor:
            return f"{x:g}"
        if x <= 0 or self.axis is None:
            return ""
        lo, hi = sorted(abs(v) for v in self.axis.get_view_interval())
        decades = np.log10(hi / lo) if lo > 0 else np.inf
        mantissa = round(x / 10 ** np.floor(np.log10(x) + 1e-9), 6)
        if decades <= 1.05 or (decades <= 2.05 and mantissa in (2, 5)):
            return f"{x:g}"
        return ""


def plain_log_ticks(axis: Axis) -> None:
    """Plain major and minor labels (:class:`PlainLogFormatter`) on a log or symlog ``axis``."""
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(minor=True))


def _printable_texts(fig: Figure) -> None:
    from matplotlib.text import Text

    for t in fig.findobj(Text):
        text = t.get_text()
        if not text.isprintable():
            t.set_text(printable(text, keep="\n"))


def save(fig: Figure, path: Path, fmt: str = "png", dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` atomically and close it: drawn in memory (the same bytes), then
    one plain write (matplotlib's PDF writer, on a full disk, raises AttributeError, not OSError)."""
    _printable_texts(fig)  # class names and paths come from files
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format=fmt, dpi=dpi, metadata={"Software": None} if fmt == "png" else None)
    finally:
        plt.close(fig)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())  # a copy: a view of buf held by a failed write's traceback
        # crashed Python 3.12.1's garbage collector (a segmentation fault after the error line)
    return path
