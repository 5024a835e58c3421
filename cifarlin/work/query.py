"""The runs of a listing as a table to query (``cifarlin runs --filter --sort --group-by --diff``).

Rows are the runs' summaries (:meth:`cifarlin.work.catalog.RunEntry.summary`); a column is one of
their values or a field of the run's configuration (``seed``, ``keep``, ``augment``...). Filters
read ``column OP value`` (OP one of ``= != < <= > >=``), compared as numbers when the run's value
is a number, else as text (so ``started>2026-12-07`` works on the times). A run without the value
(a damaged run, an older file) matches no filter and sorts last. Groups average the metrics of
their runs (the seeds of one setting): mean and sample standard deviation.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cifarlin.core.config import TrainConfig
from cifarlin.errors import bad_value
from cifarlin.work.catalog import RunEntry

#: Not columns: lists and tables of their own, and the damaged run's reason.
_NOT_COLUMNS = ("files", "config", "arithmetic", "reason", "data")
#: The values of a run's summary that are columns, then the configuration's other fields.
RUN_COLUMNS = tuple(k for k in RunEntry(Path(), "", []).summary() if k not in _NOT_COLUMNS)
CONFIG_COLUMNS = tuple(f.name for f in fields(TrainConfig) if f.name not in RUN_COLUMNS)
COLUMNS = RUN_COLUMNS + CONFIG_COLUMNS
#: The table's headings, accepted for the columns they show.
ALIASES = {"run": "folder", "lambda": "lam", "batch": "batch_size", "val": "val_acc", "test": "test_acc"}
#: What a group averages over its runs.
METRICS = ("val_acc", "best_val_acc", "test_acc")
OPERATORS = ("<=", ">=", "!=", "=", "<", ">")  # the two-character ones first


def column(name: str, field: str, text: str) -> str:
    """The column ``name`` names (a heading of the table is taken for its column), or a
    ``field=text`` error naming the columns."""
    name = name.strip()
    name = ALIASES.get(name, name)
    if name not in COLUMNS:
        raise bad_value(field, text, f"no column {name!r}; the columns: {', '.join(COLUMNS)}")
    return name


def value(row: dict[str, Any], name: str) -> Any:
    """The value of column ``name`` in a row (None when the run does not say)."""
    v = row.get(name) if name in RUN_COLUMNS else (row.get("config") or {}).get(name)
    if isinstance(v, list):  # train_batches: compared as written on the command line
        return ",".join(map(str, v))
    return v


@dataclass(frozen=True)
class Filter:
    """``column OP value``, as given (``text``)."""

    column: str
    op: str
    value: str
    text: str

    def matches(self, row: dict[str, Any]) -> bool:
        v = value(row, self.column)
        if v is None:
            return False
        want: Any = self.value
        if isinstance(v, int | float):  # bool too: true and false read as 1 and 0
            want = _number(self.value)
            if want is None:
                raise bad_value("filters", self.text, f"{self.column} is a number; compare it with a number")
        else:
            v = str(v)
        if self.op == "=":
            return bool(v == want)
        if self.op == "!=":
            return bool(v != want)
        if self.op == "<":
            return bool(v < want)
        if self.op == "<=":
            return bool(v <= want)
        if self.op == ">":
            return bool(v > want)
        return bool(v >= want)


def _number(text: str) -> float | None:
    t = text.strip().lower()
    if t in ("true", "false"):
        return float(t == "true")
    try:
        return float(t)
    except ValueError:
        return None


_FILTER = re.compile(r"^\s*([A-Za-z_][\w]*)\s*(==|<=|>=|!=|=|<|>)\s*(.*?)\s*$")


def parse_filter(text: str) -> Filter:
    """``loss=ce``, ``test_acc>0.4``... as a :class:`Filter` (a ``filters=`` error otherwise)."""
    m = _FILTER.match(text)
    if m is None or not m.group(3):
        raise bad_value(
            "filters", text, f"write COLUMN OP VALUE, OP one of {' '.join(OPERATORS)} (e.g. 'test_acc>0.4')"
        )
    name, op, want = m.groups()
    return Filter(column(name, "filters", text), "=" if op == "==" else op, want, text)


def filtered(rows: list[dict[str, Any]], filters: list[str]) -> list[dict[str, Any]]:
    """The rows every filter matches."""
    parsed = [parse_filter(f) for f in filters]
    return [r for r in rows if all(f.matches(r) for f in parsed)]


def sort_keys(spec: str, descending: bool = False) -> list[tuple[str, bool]]:
    """``lam,-test_acc`` as [(column, descending)]: ``-`` before a column, or ``descending``, sorts
    it from the highest."""
    keys = []
    for part in spec.split(","):
        name = part.strip()
        desc = descending or name.startswith("-")
        keys.append((column(name.lstrip("-"), "sort", spec), desc))
    return keys


def sorted_rows(rows: list[dict[str, Any]], spec: str, descending: bool = False) -> list[dict[str, Any]]:
    """The rows sorted by the columns of ``spec`` (see :func:`sort_keys`); runs without the value
    last, ties in the listing's order."""
    keys = sort_keys(spec, descending)
    for name, desc in reversed(keys):  # stable sorts, the last key first
        have = [r for r in rows if value(r, name) is not None]
        rest = [r for r in rows if value(r, name) is None]
        rows = sorted(have, key=lambda r: _order(value(r, name)), reverse=desc) + rest
    return rows


def _order(v: Any) -> tuple[int, Any]:
    return (0, v) if isinstance(v, int | float) else (1, str(v))


def group_columns(spec: list[str]) -> list[str]:
    """``["lam,eta"]`` (one option or several) as the columns to group by."""
    text = ",".join(spec)
    return [column(n, "group_by", text) for s in spec for n in s.split(",") if n.strip()]


def grouped(rows: list[dict[str, Any]], by: list[str]) -> list[dict[str, Any]]:
    """One group per distinct value of the ``by`` columns, in the order of its first run: its
    values, its runs, and for each of :data:`METRICS` the mean and sample standard deviation over
    the runs that have it (``n`` of them; ``sd`` None for one)."""
    groups: dict[str, dict[str, Any]] = {}
    for r in rows:
        values = {c: value(r, c) for c in by}
        g = groups.setdefault(json.dumps(values, default=str), {"by": values, "count": 0, "runs": []})
        g["count"] += 1
        g["runs"].append(r)
    out = []
    for g in groups.values():
        runs = g.pop("runs")
        g["folders"] = [r["folder"] for r in runs]
        for m in METRICS:
            g[m] = mean_sd([r[m] for r in runs if r.get(m) is not None])
        out.append(g)
    return out


def mean_sd(xs: list[float]) -> dict[str, Any]:
    """The mean and sample standard deviation of ``xs`` (``sd`` None for one value), and ``n``."""
    if not xs:
        return {"mean": None, "sd": None, "n": 0}
    mean = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return {"mean": mean, "sd": sd, "n": len(xs)}


def differing(rows: list[dict[str, Any]]) -> list[str]:
    """The configuration fields whose values are not the same in all the rows (runs without a
    configuration, damaged ones, left out), in the configuration's order."""
    configs = [r["config"] for r in rows if r.get("config")]
    names = [f.name for f in fields(TrainConfig)]
    names += sorted({k for c in configs for k in c} - set(names))  # fields of a newer cifarlin
    return [n for n in names if len({json.dumps(c.get(n), sort_keys=True) for c in configs}) > 1]
