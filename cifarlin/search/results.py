"""The sweep folder's files and what they hold: ``sweep.h5`` and ``results.csv`` (one row per
trial, each rewritten whole as trials finish: :func:`write_tables`), what an earlier run of the
sweep left in ``sweep.h5`` (:func:`read_previous`, :func:`stored_box`), the arguments of
``sweep.png`` (:func:`figure_args`) and a finished sweep's results (:class:`SweepResult`, its JSON
document). NumPy and h5py are imported where they are used.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cifarlin import __version__
from cifarlin.core.config import TrainConfig
from cifarlin.errors import CifarlinError
from cifarlin.search.plan import (
    MAX_TRIALS,
    METRICS,
    SELECTED_BY,
    STATUSES,
    Box,
    SweepSpec,
    TrialResult,
)
from cifarlin.search.space import FIELD_TYPES, SWEEPABLE, ranged_fields, show
from cifarlin.store.files import write_text

SWEEP_FILE, RESULTS_FILE, FIGURE_FILE = "sweep.h5", "results.csv", "sweep.png"


@dataclass
class SweepResult:
    """What :func:`cifarlin.search.sweep.run_sweep` returns: every trial's result, and the best
    trial with its test metrics."""

    spec: SweepSpec
    out: Path
    results: list[TrialResult]
    best: TrialResult | None
    test: Any  # the best trial's test metrics (model.Metrics), read once, for it alone
    box: Box | None = None
    files: list[Path] = field(default_factory=list)
    cluster: str = ""

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in STATUSES}

    def document(self) -> dict[str, Any]:
        """``{"trials": [...], "best": {... "test_accuracy": ...}}`` and the sweep's facts."""
        best = None
        if self.best is not None:
            best = self.best.row()
            if self.test is not None:
                best.update(
                    test_accuracy=self.test.accuracy, test_cost=self.test.cost, test_loss=self.test.loss
                )
        return {
            "trials": [r.row() for r in self.results],
            "best": best,
            "selected_by": SELECTED_BY,
            "sweep": self.spec.to_dict(),
            "round2_box": _box_json(self.box),
            "out": str(self.out),
            "counts": self.counts(),
            "files": [str(f) for f in self.files],
        }


def config_json(cfg: TrainConfig) -> str:
    """A trial's whole configuration as sweep.h5 keeps it (a diverged trial is known by it)."""
    return json.dumps(cfg.to_dict(), sort_keys=True)


def _decode(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _box_json(box: Box | None) -> dict[str, list[Any]] | None:
    return None if box is None else {k: list(v) for k, v in box.items()}


# ---------------------------------------------------------------------------------------------
# sweep.h5 of an earlier run
# ---------------------------------------------------------------------------------------------


@dataclass
class Previous:
    """What an earlier run of this sweep recorded in sweep.h5 (nothing when there is none)."""

    spec: dict[str, Any] = field(default_factory=dict)  # its SweepSpec.to_dict()
    box: Any = None  # round 2's box, as JSON gives it back
    trials: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> status, error, config


def read_previous(out: Path) -> Previous:
    """What an earlier run of this sweep recorded in ``out``'s sweep.h5: round 2's box, and the trials
    that diverged before saving anything (their folders are gone; they are not run again)."""
    from cifarlin.store.h5safe import open_file

    path = out / SWEEP_FILE
    previous = Previous()
    if not path.is_file():
        return previous
    columns = ("name", "status", "error", "config")
    try:
        with open_file(path, "sweep") as r:
            previous.spec = json.loads(r.text("spec", "{}"))
            previous.box = json.loads(r.text("round2_box", "null"))
            if all(c in r for c in columns):
                cols = [[_decode(v) for v in r.dataset(c, 1, "OSU", 4 * MAX_TRIALS)] for c in columns]
                previous.trials = {
                    row[0]: dict(zip(columns, row, strict=True)) for row in zip(*cols, strict=True)
                }
    except (CifarlinError, ValueError, TypeError):
        return Previous()
    return previous


def _read_sweep(path: Path) -> dict[str, Any]:
    from cifarlin.store.h5safe import open_file

    with open_file(path, "sweep") as r:
        if r.text("kind", "") != "sweep":
            raise r.fail("not a cifarlin sweep file (its kind is not 'sweep')")
        n = len(r.dataset("name", 1, "OSU", 4 * MAX_TRIALS))
        text = {
            c: [_decode(v) for v in r.dataset(c, 1, "OSU", n, (n,))] for c in ("name", "status", "config")
        }
        nums = {m: [float(v) for v in r.dataset(m, 1, "fiu", n, (n,))] for m in METRICS if m in r}
        trials = []
        for i in range(n):
            row: dict[str, Any] = {c: text[c][i] for c in ("name", "status")}
            row["config"] = json.loads(text["config"][i])
            row.update({m: (None if v[i] != v[i] else v[i]) for m, v in nums.items()})  # NaN: none
            trials.append(row)
        test = r.attr("best_test_accuracy", "f", None)
        return {
            "spec": json.loads(r.text("spec", "{}")),
            "selected_by": r.text("selected_by", SELECTED_BY),
            "best": r.text("best", "") or None,
            "best_test_accuracy": None if test is None else float(test),
            "created": r.text("created", ""),
            "trials": trials,
        }


def read_sweep(out: Path) -> dict[str, Any]:
    """What ``out``'s sweep.h5 records, JSON-ready: the sweep's spec, its trials (name, status,
    configuration, metrics), the best trial and, once measured, its test accuracy. The file is read
    first in a child process (:func:`cifarlin.store.h5safe.probe`): it may come from anywhere."""
    from cifarlin.store import h5safe

    path = Path(out) / SWEEP_FILE
    h5safe.probe(path, _read_sweep, "sweep")
    try:
        return _read_sweep(path)
    except (ValueError, TypeError) as e:  # JSON of another shape
        raise CifarlinError(f"{path}: damaged cifarlin sweep ({type(e).__name__}: {e})") from None


def stored_box(spec: SweepSpec, previous: Previous) -> Box | None:
    """Round 2's box as an earlier run of the same sweep drew it (so its trials are the same)."""
    box = previous.box
    same = {k: v for k, v in spec.to_dict().items() if k != "refine"}
    if not isinstance(box, dict) or {k: v for k, v in previous.spec.items() if k != "refine"} != same:
        return None
    try:
        out = {}
        for k, v in box.items():
            if k in ranged_fields() and any(a.field == k and a.is_range for a in spec.axes):
                out[k] = (float(v[0]), float(v[1]))
            else:
                out[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        return out
    except (TypeError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

CSV_COLUMNS = ("name", "round", *SWEEPABLE, "status", *METRICS, "seconds", "worker", "run_dir", "error")


def write_tables(
    out: Path,
    spec: SweepSpec,
    results: Sequence[TrialResult],
    best: TrialResult | None = None,
    test: Any = None,
    box: Box | None = None,
) -> None:
    """``sweep.h5`` and ``results.csv`` in ``out``, each written whole or not at all.

    sweep.h5: one dataset per column, one value per trial (``name``, ``round``, ``status``,
    ``error``, ``worker``, ``run_dir``, the metrics, ``seconds``, ``config``: the trial's whole
    TrainConfig as JSON; ``params/<field>`` for every
    sweepable field: numbers as numbers, ``val_size`` 0 for none, ``train_batches`` as text),
    NaN where a trial has no value; attributes: the sweep (``spec`` as JSON), ``selected_by``,
    ``best`` and its ``best_test_*`` metrics once known, ``round2_box`` (JSON).
    """
    import h5py
    import numpy as np

    from cifarlin.store.checkpoint import atomic_h5

    text = h5py.string_dtype()

    def nums(values: list[Any], dtype: Any) -> Any:
        return np.array([np.nan if v is None else v for v in values], dtype=dtype)

    with atomic_h5(out / SWEEP_FILE) as f:
        f.attrs.update(
            {
                "format": "cifarlin",
                "format_version": 1,
                "kind": "sweep",
                "cifarlin_version": __version__,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "spec": json.dumps(spec.to_dict()),
                "selected_by": SELECTED_BY,
                "best": best.trial.name if best is not None else "",
            }
        )
        if box is not None:
            f.attrs["round2_box"] = json.dumps(_box_json(box))
        if test is not None:
            f.attrs["best_test_accuracy"], f.attrs["best_test_cost"] = test.accuracy, test.cost
            f.attrs["best_test_loss"] = test.loss
        for name in ("status", "error", "worker"):
            f.create_dataset(
                name, data=np.array([getattr(r, name) for r in results], dtype=object), dtype=text
            )
        f.create_dataset("name", data=np.array([r.trial.name for r in results], dtype=object), dtype=text)
        configs = [config_json(r.trial.config) for r in results]
        f.create_dataset("config", data=np.array(configs, dtype=object), dtype=text)
        f.create_dataset(
            "run_dir", data=np.array([str(r.run_dir) for r in results], dtype=object), dtype=text
        )
        f.create_dataset("round", data=np.array([r.trial.round for r in results], dtype=np.int64))
        for m in METRICS:
            is_int = m in ("best_epoch", "epochs_trained")
            f.create_dataset(
                m, data=nums([getattr(r, m) for r in results], np.int64 if is_int else np.float64)
            )
        f.create_dataset("seconds", data=nums([r.seconds for r in results], np.float64))
        params = f.create_group("params")
        for name in SWEEPABLE:
            values = [getattr(r.trial.config, name) for r in results]
            t = FIELD_TYPES[name]
            if t == "float":
                params.create_dataset(name, data=np.array(values, dtype=np.float64))
            elif t in ("int", "int | None"):
                params.create_dataset(name, data=np.array([v or 0 for v in values], dtype=np.int64))
            elif t == "bool":
                params.create_dataset(name, data=np.array(values, dtype=bool))
            else:
                shown = [show(name, v) for v in values]
                params.create_dataset(name, data=np.array(shown, dtype=object), dtype=text)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in results:
        row = r.row()
        cells = {**{k: show(k, getattr(r.trial.config, k)) for k in SWEEPABLE}, **row}
        w.writerow(["" if cells[c] is None else cells[c] for c in CSV_COLUMNS])
    write_text(out / RESULTS_FILE, buf.getvalue())


def figure_args(spec: SweepSpec, results: Sequence[TrialResult], best: TrialResult | None) -> dict[str, Any]:
    """The arguments of :func:`cifarlin.figures.plots.sweep_figure` for ``sweep.png``, as plain values:
    validation accuracy over (lambda, eta), the best trial marked."""
    others = [
        a.field for a in spec.axes if a.field not in ("lam", "eta") and (a.is_range or len(a.values) > 1)
    ]
    return {
        "lam": [r.trial.config.lam for r in results],
        "eta": [r.trial.config.eta for r in results],
        "accuracy": [r.val_accuracy if r.status == "done" else None for r in results],
        "status": [r.status for r in results],
        "best": None if best is None else results.index(best),
        "grid": spec.mode == "grid",
        "title": f"{spec.describe()}; {len(results)} trials"
        + (f" (each cell: the best over {', '.join(others)})" if others and spec.mode == "grid" else ""),
    }
