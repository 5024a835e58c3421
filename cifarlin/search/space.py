"""What a hyperparameter search can vary and how its values read from text: the sweepable fields
(:data:`SWEEPABLE`), how a value of a field is read and written back by the field's type
(:data:`KINDS`, :func:`kind`, :func:`show`), and an axis of a sweep (:func:`parse_axis`).
:mod:`cifarlin.search.plan` plans trials over the axes.

Which fields can be swept is one table, :data:`SWEEPABLE`; how a value of a field is read from
text depends only on the field's type in :class:`~cifarlin.core.config.TrainConfig` (:data:`KINDS`).
A new TrainConfig field becomes sweepable by one line in :data:`SWEEPABLE` (and, for a type not
seen before, one in :data:`KINDS`); the command line makes its option from that table. Messages
name fields (``lam='x': not a number``), as the rest of the library does. Nothing heavy is
imported here (the command line reads its tables from this module).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cifarlin.core.config import TrainConfig, parse_batches
from cifarlin.errors import bad_value


@dataclass(frozen=True)
class Sweepable:
    """What a value of a sweepable field means (the command line's help), and what separates the
    values of a list when they may hold commas themselves (default: the field type's)."""

    help: str
    sep: str | None = None
    path: bool = False  # values are files: made absolute (workers may run elsewhere), never ranges


#: The TrainConfig fields a sweep can vary. To make a new field sweepable, add it here: its
#: option and parsing follow from its type in TrainConfig (see KINDS).
SWEEPABLE: dict[str, Sweepable] = {
    "lam": Sweepable("Penalty weight lambda"),
    "eta": Sweepable("Learning rate"),
    "loss": Sweepable("Loss (ce, svm, bce, mse or l2svm)"),
    "solver": Sweepable("Solver (gd; ridge: the exact squared-loss optimum, each lambda nearly free)"),
    "epochs": Sweepable("Epochs"),
    "batch_size": Sweepable("Images per batch"),
    "seed": Sweepable("Seed of the initial W, b (and of shuffling and augmentation)"),
    "shuffle": Sweepable("Shuffle the batches each epoch (true or false)"),
    "train_batches": Sweepable("Training batches, each value e.g. 1, 1-5 or 1,3"),
    "val_size": Sweepable("Validate on the last N training images (none: on data_batch_2)"),
    "dtype": Sweepable("Precision of data and weights (float32 or float64)"),
    "init_std": Sweepable("Standard deviation of the initial W and b"),
    "schedule": Sweepable("Learning-rate schedule (constant, step, cosine or cyclic)"),
    "decay": Sweepable("step: eta's factor"),
    "decay_every": Sweepable("step: epochs between decays"),
    "eta_min": Sweepable("cosine, cyclic: the lowest eta"),
    "eta_max": Sweepable("cyclic: the highest eta (none: eta)"),
    "step_size": Sweepable("cyclic: updates per half cycle (none: two epochs)"),
    "augment": Sweepable("Augmentation, each value none, flip, translate:K or flip,translate:K", sep="/"),
    "features": Sweepable(
        "A feature map (cifarlin features fit) to train on (none: pixels)", sep=os.pathsep, path=True
    ),
    "init": Sweepable(
        "Start from this trained model's weights (a model.h5 or its run folder; none: random)",
        sep=os.pathsep,
        path=True,
    ),
    "keep": Sweepable("What model.h5 holds (last or best epoch)"),
    "patience": Sweepable("Stop after N epochs without a better validation accuracy (none: never)"),
}

# ---------------------------------------------------------------------------------------------
# Values of a field from text, by the field's type
# ---------------------------------------------------------------------------------------------


def _float(name: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise bad_value(name, text, "not a number") from None
    if not math.isfinite(v):
        raise bad_value(name, text, "must be a finite number")
    return v


def _int(name: str, text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise bad_value(name, text, "not a whole number")
    return int(text)


def _optional_int(name: str, text: str) -> int | None:
    return None if text.lower() == "none" else _int(name, text)


def _optional_float(name: str, text: str) -> float | None:
    return None if text.lower() == "none" else _float(name, text)


def _bool(name: str, text: str) -> bool:
    t = text.lower()
    if t in ("true", "yes", "on", "1"):
        return True
    if t in ("false", "no", "off", "0"):
        return False
    raise bad_value(name, text, "use true or false")


def _path(name: str, text: str) -> str | None:
    if text.lower() == "none":
        return None
    path = Path(text).expanduser()
    if name == "init":
        from cifarlin.work.folder import start_path

        if not path.exists():
            raise bad_value(name, text, "no such file or folder (give a model.h5 or its run folder)")
        return start_path(path)
    if not path.is_file():
        raise bad_value(name, text, "no such file (a feature map is made by cifarlin features fit)")
    return str(path.resolve())


def _show_float(v: float) -> str:
    """A number as a person types it and as ``cifarlin runs`` shows it (``0``, ``0.01``, ``1e-06``),
    all its digits when fewer would not read back the same."""
    short = f"{v:g}"
    return short if float(short) == v else repr(v)


def _show_batches(batches: tuple[int, ...]) -> str:
    if len(batches) > 1 and list(batches) == list(range(batches[0], batches[-1] + 1)):
        return f"{batches[0]}-{batches[-1]}"
    return ",".join(map(str, batches))


@dataclass(frozen=True)
class Kind:
    """How a value of one TrainConfig field type is read from text and written back."""

    parse: Callable[[str, str], Any]  # (field name, text) -> value
    show: Callable[[Any], str]  # value -> text that parses back to it
    sep: str = ","  # between the values of a list
    ranged: bool = False  # LOW..HIGH is a log-uniform range of a random search


#: Keyed by the type of the field in TrainConfig, as written there.
KINDS: dict[str, Kind] = {
    "float": Kind(_float, _show_float, ranged=True),
    "int": Kind(_int, str),
    "int | None": Kind(_optional_int, lambda v: "none" if v is None else str(v)),
    "float | None": Kind(_optional_float, lambda v: "none" if v is None else _show_float(v), ranged=True),
    "bool": Kind(_bool, lambda v: "true" if v else "false"),
    "str": Kind(lambda name, text: text, str),
    "str | None": Kind(
        lambda name, text: None if text == "none" else text, lambda v: "none" if v is None else v
    ),
    "tuple[int, ...]": Kind(lambda name, text: parse_batches(text), _show_batches, sep="/"),
}

#: Ranges as a message shows them: one per field would be a long line, and a bare field name would
#: not read as the command line's flag (the command line turns ``lam=...`` into ``--lam ...``).
RANGE_EXAMPLES = "e.g. lam=1e-5..1, init_std=1e-3..0.1"

FIELD_TYPES = {f.name: str(f.type) for f in fields(TrainConfig)}  # field -> its type, as written there


def kind(name: str) -> Kind:
    """The :class:`Kind` of a sweepable field."""
    return KINDS[FIELD_TYPES[name]]


def separator(name: str) -> str:
    """What separates the values of a list of field ``name``."""
    return SWEEPABLE[name].sep or kind(name).sep


def show(name: str, value: Any) -> str:
    """``value`` of field ``name`` as the command line takes it."""
    return kind(name).show(value)


def ranged_fields() -> list[str]:
    return [f for f in SWEEPABLE if kind(f).ranged]


# ---------------------------------------------------------------------------------------------
# Axes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    """The values a field takes in a sweep: a list, or a log-uniform range LOW..HIGH."""

    field: str
    text: str  # as given
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None

    @property
    def is_range(self) -> bool:
        return self.low is not None


def parse_axis(name: str, text: str) -> Axis:
    """``'0,0.01,0.1'`` -> a list; ``'1e-5..1'`` -> a log-uniform range (float fields only)."""
    if name not in SWEEPABLE:
        raise bad_value(name, text, f"cannot be swept; these can: {', '.join(SWEEPABLE)}")
    k = kind(name)
    text = text.strip()
    parse = _path if SWEEPABLE[name].path else k.parse
    if ".." in text and not SWEEPABLE[name].path:
        if not k.ranged:
            raise bad_value(
                name,
                text,
                f"a range LOW..HIGH is for real numbers ({RANGE_EXAMPLES}); give a list of values",
            )
        lo_text, _, hi_text = text.partition("..")
        lo, hi = k.parse(name, lo_text.strip()), k.parse(name, hi_text.strip())
        if lo is None or hi is None:
            raise bad_value(name, text, "a range LOW..HIGH is of numbers")
        if lo <= 0:
            raise bad_value(name, text, "a log-uniform range needs LOW > 0")
        if not lo < hi:
            raise bad_value(name, text, "an empty range: give LOW..HIGH with LOW < HIGH")
        return Axis(name, text, low=lo, high=hi)
    sep = separator(name)
    items = [t.strip() for t in text.split(sep)]
    if not all(items):
        raise bad_value(name, text, f"an empty value in the list (values are separated by '{sep}')")
    values = tuple(parse(name, t) for t in items)
    for i, v in enumerate(values):
        if v in values[:i]:
            raise bad_value(name, text, f"{items[i]} is given twice")
    return Axis(name, text, values=values)
