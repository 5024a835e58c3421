"""Everything under an outputs folder as one report document: sections of tables, figures and
notes, JSON-ready, every number read from a file (``cifarlin report --json`` prints it).

The document::

    {"title", "root", "machine": {...}, "notes": [...], "runs": [...], "sections": [
        {"id", "title", "text": [...], "tables": [{"caption", "columns": [[name, kind]], "rows"}],
         "figures": [{"title", "file", "caption"}]}, ...]}

A cell is a number, a text, None (shown as '-') or, in a column of kind ``pm``, ``[mean, sd, n]``
(the runs of one setting with several seeds). :func:`cell_text` formats cells; the templates use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarlin.core.config import TrainConfig
from cifarlin.errors import CifarlinError, ReportError
from cifarlin.report import facts
from cifarlin.search.results import SWEEP_FILE, read_sweep
from cifarlin.work import query
from cifarlin.work.catalog import RunEntry, describe_runs, find_run_folders
from cifarlin.work.folder import held

GRADCHECK_GLOB = "gradcheck-*.json"


def cell_text(value: Any, kind: str) -> str:
    """A cell as the page shows it: accuracies to 4 decimals, errors in e-notation, '-' for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "pm":
        mean, sd, n = value
        return f"{mean:.4f}" if n < 2 else f"{mean:.4f} ± {sd:.4f} (n={n})"
    if kind == "acc":
        return f"{value:.4f}"
    if kind == "pt":
        return f"{100 * value:+.2f} pt"
    if kind == "sci":
        return f"{value:.2e}"
    if kind == "num":
        return f"{value:g}"
    if kind == "s":
        return f"{value:.1f} s"
    return str(value)


def table(caption: str, columns: list[tuple[str, str]], rows: list[list[Any]]) -> dict[str, Any]:
    return {"caption": caption, "columns": [list(c) for c in columns], "rows": rows}


def figure(title: str, file: Path | None, caption: str = "") -> dict[str, Any] | None:
    return None if file is None else {"title": title, "file": str(file), "caption": caption}


def section(sid: str, title: str, text: list[str], tables: list[Any], figures: list[Any]) -> dict[str, Any]:
    return {
        "id": sid,
        "title": title,
        "text": [t for t in text if t],
        "tables": [t for t in tables if t and t["rows"]],
        "figures": [f for f in figures if f],
    }


@dataclass
class Found:
    """What is under the folder: the runs that could be read, and what was left out and why."""

    root: Path
    runs: list[RunEntry] = field(default_factory=list)
    sweeps: dict[Path, dict[str, Any]] = field(default_factory=dict)  # folder -> read_sweep()
    gradchecks: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def find(root: Path) -> Found:
    """Every run, sweep and gradient check at or below ``root``; a damaged file or a folder being
    trained into is named in the notes, never fatal."""
    root = Path(root).expanduser()
    if not root.exists():
        raise ReportError(
            f"{root}: no such folder; give the folder that holds your runs: cifarlin report DIR"
        )
    if not root.is_dir():
        raise ReportError(f"{root}: not a folder; give the folder that holds your runs: cifarlin report DIR")
    found = Found(root)
    folders, truncated = find_run_folders(root)
    if truncated:
        found.notes.append(f"{root}: too many folders; only the first were searched")
    sweep_folders = _sweep_folders(root)
    busy = [p for p in [*folders, *sweep_folders] if held(p)]
    sweeps = [p for p in sweep_folders if p not in busy]
    for p in busy:
        found.notes.append(f"{p}: skipped, a cifarlin is training into it (its lock is held)")
    for f in folders:  # a sweep that has only begun has no sweep.h5 yet: its lock says it runs
        if f not in busy and f.parent not in busy and f.parent != root and held(f.parent):
            busy.append(f.parent)
            found.notes.append(f"{f.parent}: skipped, a cifarlin is writing into it (its lock is held)")
    folders = [f for f in folders if f not in busy and not any(b in f.parents for b in busy)]
    for entry in describe_runs(folders):
        if entry.status == "damaged":
            found.notes.append(f"{entry.folder}: left out, damaged: {entry.reason}")
        else:
            found.runs.append(entry)
    for p in sweeps:
        try:
            found.sweeps[p] = read_sweep(p)
        except CifarlinError as e:
            found.notes.append(f"{p}: sweep left out: {e}")
    found.gradchecks = _gradchecks(root, found.notes)
    if not (folders or busy or found.sweeps or found.gradchecks):
        if found.notes:  # something was there, and could not be used: say what
            raise ReportError(f"{root}: nothing to report; {found.notes[0]}")
        raise ReportError(
            f"{root}: no runs, sweeps or gradient checks in it or below; give the folder they were "
            "written to (cifarlin train --setting all writes outputs/), or train first"
        )
    return found


def _sweep_folders(root: Path) -> list[Path]:
    """Folders at most :data:`MAX_DEPTH` down holding a sweep.h5 (hidden folders and links not
    entered, as for run folders)."""
    return find_run_folders(root, wanted=lambda entries: any(e.name == SWEEP_FILE for e in entries))[0]


def _gradchecks(root: Path, notes: list[str]) -> list[tuple[Path, dict[str, Any]]]:
    """The gradient checks in ``root`` or two folders below it (``cifarlin gradcheck`` writes
    ``outputs/gradcheck-LOSS.json``)."""
    from cifarlin.work.gradcheck import read_result

    out = []
    found = [p for depth in range(3) for p in sorted(root.glob("/".join(["*"] * depth + [GRADCHECK_GLOB])))]
    for path in found:
        try:
            out.append((path, read_result(path)))
        except CifarlinError as e:
            notes.append(f"{e}; left out of the report")
    return out


# ---------------------------------------------------------------------------------------------
# Which runs go where
# ---------------------------------------------------------------------------------------------


def classify(found: Found) -> dict[str, list[RunEntry]]:
    """The runs by section: ``reference`` (exactly one of settings 1-4, any seed), ``recipes``
    (``--setting bonus``), ``sweeps`` (trials of a sweep), ``losses`` (gradient descent on
    another loss), ``exact`` (ridge solutions and runs on features), ``other``; a run that did not
    finish (interrupted, diverged, still to resume) only in ``unfinished``."""
    groups: dict[str, list[RunEntry]] = {
        k: [] for k in ("reference", "recipes", "sweeps", "losses", "exact", "other", "unfinished")
    }
    for r in found.runs:
        cfg = _config(r)
        if r.folder.parent in found.sweeps:
            groups["sweeps"].append(r)
        elif r.status != "complete":  # stopped, diverged or still to resume: in no aggregate
            groups["unfinished"].append(r)
        elif cfg is None:
            groups["other"].append(r)
        elif cfg.is_reference:
            groups["reference"].append(r)
        elif cfg.solver == "ridge" or cfg.features is not None:
            groups["exact"].append(r)
        elif isinstance(cfg.setting, str):
            groups["recipes"].append(r)
        elif cfg.loss != "ce":
            groups["losses"].append(r)
        else:
            groups["other"].append(r)
    return groups


def _config(r: RunEntry) -> TrainConfig | None:
    try:
        return facts.config_of(r.config or {})
    except (CifarlinError, TypeError, ValueError):
        return None


def mean_sd(values: list[float]) -> list[Any]:
    """``[mean, sample sd, n]`` of ``values`` (sd 0 for one value), as a ``pm`` cell holds it."""
    m = query.mean_sd(values)
    return [m["mean"], m["sd"] or 0.0, m["n"]]


def name_of(r: RunEntry, root: Path) -> str:
    try:
        return str(r.folder.relative_to(root)) or "."
    except ValueError:
        return str(r.folder)


def run_rows(runs: list[RunEntry], root: Path) -> list[list[Any]]:
    """A row a run: folder, loss, solver, lambda, eta, epochs, validation and test accuracy."""
    rows = []
    for r in runs:
        c = r.config or {}
        features = " (features)" if c.get("features") else ""
        rows.append(
            [
                name_of(r, root),
                c.get("loss"),
                f"{c.get('solver')}{features}",
                c.get("lam"),
                c.get("eta") if c.get("solver") != "ridge" else None,
                r.epochs_done,
                r.val_acc,
                r.test_acc,
            ]
        )
    return rows


RUN_COLUMNS = [
    ("run", "run"),
    ("loss", "text"),
    ("solver", "text"),
    ("lambda", "num"),
    ("eta", "num"),
    ("epochs", "int"),
    ("val acc", "acc"),
    ("test acc", "acc"),
]


def representative(runs: list[RunEntry]) -> RunEntry:
    """The run a group shows its figures of: seed 0 when there is one, else the first."""
    return next((r for r in runs if (r.config or {}).get("seed") == 0), runs[0])


def by_setting(runs: list[RunEntry]) -> dict[int, list[RunEntry]]:
    out: dict[int, list[RunEntry]] = {}
    for r in runs:
        out.setdefault(int((r.config or {})["setting"]), []).append(r)
    return dict(sorted(out.items()))
