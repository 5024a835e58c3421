"""What ``cifarlin visualize`` draws and where (:class:`FigureRequest`), validated when made,
and the choices of its options.

This module imports nothing heavy: the command line reads its defaults and choices from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cifarlin.core.config import FIGURE_FORMATS, SPLITS
from cifarlin.errors import bad_value

FIGURES = ("curves", "montage", "confusion", "samples", "probs")
PANELS = ("cost", "loss", "acc", "eta")
SIZES = ("single", "double")
PICKS = ("first", "random", "errors")


@dataclass(frozen=True)
class FigureRequest:
    """What ``visualize`` draws and where."""

    kinds: tuple[str, ...] = FIGURES
    out: Path | None = None  # default: the run folder
    format: str = "png"
    dpi: int = 150
    split: str = "test"
    n_samples: int = 24
    show: bool = False
    panels: tuple[str, ...] | None = (
        None  # curves: default cost (when lambda > 0), loss, acc, eta (when it varies)
    )
    size: str | None = None  # curves: a journal's single or double column width
    normalize: bool = False  # confusion: fractions of each true class
    pick: str = "first"  # samples: the first images, random ones, or the misclassified
    seed: int = 0  # samples: the seed of --pick random

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in FIGURES]
        if unknown or not self.kinds:
            raise bad_value("what", ",".join(self.kinds), f"use some of {', '.join(FIGURES)}, or all")
        if self.format not in FIGURE_FORMATS:
            raise bad_value("format", self.format, f"use one of {', '.join(FIGURE_FORMATS)}")
        if not 10 <= self.dpi <= 1200:
            raise bad_value("dpi", self.dpi, "use 10 to 1200")
        if not 1 <= self.n_samples <= 400:
            raise bad_value("n_samples", self.n_samples, "use 1 to 400 sample images")
        if self.split not in SPLITS:
            raise bad_value("split", self.split, f"use one of {', '.join(SPLITS)}")
        if self.panels is not None and (not self.panels or any(p not in PANELS for p in self.panels)):
            raise bad_value("panels", ",".join(self.panels), f"use some of {', '.join(PANELS)}")
        if self.size is not None and self.size not in SIZES:
            raise bad_value("size", self.size, f"use one of {', '.join(SIZES)}")
        if self.pick not in PICKS:
            raise bad_value("pick", self.pick, f"use one of {', '.join(PICKS)}")


def parse_list(text: str, field: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'), each one of ``allowed``, in the order given, without repeats."""
    items = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    bad = [p for p in items if p not in allowed]
    if bad or not items:
        raise bad_value(field, text, f"use a comma list of {', '.join(allowed)}")
    return items
