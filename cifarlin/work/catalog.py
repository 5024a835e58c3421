"""The run folders under a folder, each summarised from its files without trusting them.

A run folder is a folder holding ``model.h5``, ``checkpoint.h5`` or ``history.h5`` (or the
``.previous-run-*`` folder an interrupted ``--overwrite`` left). Folders are searched to a bounded
depth; symbolic links to folders and hidden folders are not entered, so a link loop costs nothing.

What each run says comes from one file, read in full and validated (see :mod:`cifarlin.store.h5safe`):
``history.h5`` when it is as new as the checkpoint (it holds the configuration, every epoch's
metrics, the status and the test metrics of a finished run), else ``checkpoint.h5`` (a run still
training, or killed), else ``model.h5``. The other files are only checked for what can be seen
without the HDF5 library (a regular file with the HDF5 signature, not truncated):
``cifarlin evaluate`` reads a model in full.

A damaged file never stops the listing: its run gets the status ``damaged`` and the reason.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from cifarlin.core.history import History, history_metrics
from cifarlin.errors import CifarlinError, ModelFileError, RunError, bad_value
from cifarlin.store import h5safe
from cifarlin.store.checkpoint import load_history, load_snapshot, read_data_info
from cifarlin.work.folder import CHECKPOINT, HISTORY, MODEL, RUN_FILES, STASH_PREFIX, stashes

MAX_DEPTH = 4  # folders below the one searched: outputs/sweep/lam-0.1/setting-2 is depth 3
MAX_FOLDERS = 10_000  # searched at most: a search started at / or ~ by mistake ends quickly
STATUSES = ("complete", "interrupted", "diverged", "running-or-stopped", "stashed-overwrite", "damaged")


@dataclass
class RunEntry:
    """One run folder, as listed."""

    folder: Path
    status: str  # one of STATUSES (or the status a newer cifarlin wrote)
    files: list[str]  # the run files present
    reason: str | None = None  # why the run is 'damaged'
    config: dict[str, Any] | None = None  # the TrainConfig, as a dict
    epochs_done: int | None = None
    best_epoch: int | None = None
    best_val_acc: float | None = None
    val_acc: float | None = None  # the saved model's: the last epoch's, or the best's with keep=best
    test_acc: float | None = None
    seconds: float | None = None  # the training time its epochs record
    started: str | None = None  # when training began: ``modified`` less ``seconds`` (UTC, ISO 8601)
    source: str | None = None  # the file the values were read from
    modified: str | None = None  # the newest run file's time, UTC, ISO 8601
    arithmetic: dict[str, str] = field(default_factory=dict)  # NumPy and BLAS that computed it
    data: dict[str, Any] | None = None  # the data trained on: folder, format, checksums (file -> MD5)

    def summary(self) -> dict[str, Any]:
        c = self.config or {}
        return {
            "folder": str(self.folder),
            "status": self.status,
            "reason": self.reason,
            "setting": c.get("setting"),
            "lam": c.get("lam"),
            "eta": c.get("eta"),
            "loss": c.get("loss"),
            "epochs": c.get("epochs"),
            "batch_size": c.get("batch_size"),
            "epochs_done": self.epochs_done,
            "best_epoch": self.best_epoch,
            "best_val_acc": self.best_val_acc,
            "val_acc": self.val_acc,
            "test_acc": self.test_acc,
            "keep": c.get("keep"),
            "seconds": self.seconds,
            "started": self.started,
            "files": self.files,
            "source": self.source,
            "modified": self.modified,
            "config": self.config,
            "arithmetic": self.arithmetic,
            "data": self.data,
        }


@dataclass
class Catalog:
    root: Path
    runs: list[RunEntry] = field(default_factory=list)
    truncated: bool = False  # MAX_FOLDERS reached: not every folder was searched


def _natural(path: Path) -> list[Any]:
    """Sort key: setting-2 before setting-10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _is_run(entries: list[os.DirEntry[str]]) -> bool:
    return any(e.name in RUN_FILES or (e.name.startswith(STASH_PREFIX) and _is_folder(e)) for e in entries)


def _is_folder(e: os.DirEntry[str]) -> bool:
    """A real folder (a symbolic link to one is not followed)."""
    try:
        return e.is_dir(follow_symlinks=False)
    except OSError:
        return False


def find_run_folders(
    root: Path, max_depth: int = MAX_DEPTH, wanted: Callable[[list[os.DirEntry[str]]], bool] | None = None
) -> tuple[list[Path], bool]:
    """Run folders at or below ``root`` (at most ``max_depth`` folders down), in natural order,
    and whether the search stopped at :data:`MAX_FOLDERS` folders. ``wanted``: which folders are
    found instead, judged by their entries (a sweep's, say)."""
    wanted = wanted or _is_run
    found: list[Path] = []
    todo: list[tuple[Path, int]] = [(root, 0)]
    seen = 0
    while todo:
        folder, depth = todo.pop()
        seen += 1
        if seen > MAX_FOLDERS:
            return sorted(found, key=_natural), True
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue  # unreadable: nothing to list there
        if wanted(entries):
            found.append(folder)
        if depth < max_depth:
            todo.extend(
                (Path(e.path), depth + 1) for e in entries if not e.name.startswith(".") and _is_folder(e)
            )
    return sorted(found, key=_natural), False


def _mtime_ns(path: Path) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def describe_run(folder: Path, probe: bool = True) -> RunEntry:
    """One run folder summarised (see the module docstring); never raises for a damaged file."""
    source = folder
    if not any(os.path.lexists(folder / n) for n in RUN_FILES) and (left := stashes(folder)):
        source = left[-1]  # the run an interrupted --overwrite set aside: what it holds
    present = [n for n in RUN_FILES if os.path.lexists(source / n)]
    entry = RunEntry(folder, "", present)
    times = [t for n in present if (t := _mtime_ns(source / n)) is not None]
    if times:
        entry.modified = datetime.fromtimestamp(max(times) / 1e9, UTC).isoformat(timespec="seconds")
    try:
        _fill(entry, source, probe)
    except CifarlinError as e:
        entry.status, entry.reason = "damaged", str(e)
    if times and entry.seconds is not None:
        begun = max(times) / 1e9 - entry.seconds
        entry.started = datetime.fromtimestamp(begun, UTC).isoformat(timespec="seconds")
    if source != folder and entry.status != "damaged":
        entry.status = "stashed-overwrite"
    return entry


def _fill(entry: RunEntry, folder: Path, probe: bool) -> None:
    model, ckpt, hist = (folder / n for n in (MODEL, CHECKPOINT, HISTORY))
    has = {n: os.path.lexists(folder / n) for n in RUN_FILES}
    if has[HISTORY] and not (has[CHECKPOINT] and not has[MODEL] and _newer(ckpt, hist)):
        h = load_history(hist, probe=probe)
        entry.source = str(hist)
        _metrics(entry, h.history, h.config.keep)
        entry.config = h.config.to_dict()
        entry.epochs_done = len(h.history)
        entry.test_acc = h.test.accuracy if h.test is not None else None
        entry.status = h.status or "unknown"
        entry.arithmetic = h.arithmetic
        if entry.status == "complete" and not has[MODEL]:
            raise ModelFileError(f"{model}: missing, though {hist} says the run is complete")
        for n in (MODEL, CHECKPOINT):  # a regular HDF5 file, not truncated: seen without the library
            if has[n]:
                h5safe.check_file(folder / n, "model" if n == MODEL else "checkpoint")
        if has[MODEL] or has[CHECKPOINT]:
            entry.data = asdict(read_data_info(model if has[MODEL] else ckpt, probe=probe))
        return
    if has[CHECKPOINT] and not has[MODEL]:
        snap = load_snapshot(ckpt, kinds=("checkpoint",), probe=probe)
        entry.status = "running-or-stopped"
        entry.source = str(ckpt)
    elif has[MODEL]:
        snap = load_snapshot(model, kinds=("model",), probe=probe)
        entry.status = "complete"  # a final model, its history gone
        entry.source = str(model)
        entry.test_acc = snap.test.accuracy if snap.test is not None else None
        if has[CHECKPOINT]:
            h5safe.check_file(ckpt, "checkpoint")
    else:  # an empty .previous-run-* folder
        raise RunError(f"{folder}: holds no {', '.join(RUN_FILES)}")
    history = snap.state.history
    entry.data = asdict(snap.data)
    entry.arithmetic = snap.arithmetic
    entry.config = snap.config.to_dict()
    _metrics(entry, history, snap.config.keep)
    entry.epochs_done = len(history) if len(history) else snap.state.epoch


def _metrics(entry: RunEntry, history: History, keep: str) -> None:
    """The validation accuracies of ``history``: the best epoch's and the saved model's."""
    entry.best_epoch = history.best_epoch or None
    entry.best_val_acc = history.best_val_acc
    entry.val_acc = history_metrics(history, keep).get("val_accuracy")
    entry.seconds = float(sum(history.columns["seconds"]))


def _newer(a: Path, b: Path) -> bool:
    """Whether ``a`` was written after ``b`` (a resumed run's checkpoint, past its old history)."""
    ta, tb = _mtime_ns(a), _mtime_ns(b)
    return ta is not None and tb is not None and ta > tb


def describe_runs(folders: list[Path], probe: bool = True) -> list[RunEntry]:
    """:func:`describe_run` for each folder.

    With ``probe`` (a file could crash or hang the HDF5 library), all of them are first read in
    one child process (see :func:`h5safe.probe`), which hands its summaries back: one child for
    the whole listing instead of one per file, and no file read twice. Only when that child
    crashes or hangs is each folder probed on its own, which isolates the file at fault.
    """
    if not probe or not folders:
        return [describe_run(f, probe=False) for f in folders]
    size = sum(_size(f / n) for f in folders for n in RUN_FILES)
    seconds = h5safe.PROBE_SECONDS + 0.2 * len(folders) + size / 20e6
    try:
        data = h5safe.probe(folders[0].parent, partial(_summaries, folders), "run listing", seconds=seconds)
    except ModelFileError:  # a crash or a hang: find the file at fault, one probe each
        return [describe_run(f, probe=True) for f in folders]
    if not isinstance(data, list) or len(data) != len(folders):  # no child could be had: read here
        return [describe_run(f, probe=True) for f in folders]
    return [_from_json(d) for d in data]


def _summaries(folders: list[Path], _: Path) -> list[dict[str, Any]]:
    """What the child of :func:`describe_runs` hands back: every folder's summary, as JSON."""
    return [_to_json(describe_run(f, probe=False)) for f in folders]


def _to_json(e: RunEntry) -> dict[str, Any]:
    return {**asdict(e), "folder": str(e.folder)}


def _from_json(d: dict[str, Any]) -> RunEntry:
    return RunEntry(**{**d, "folder": Path(d["folder"])})


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def list_runs(root: Path, max_depth: int = MAX_DEPTH, probe: bool = True) -> Catalog:
    """Every run folder at or below ``root`` (at most ``max_depth`` folders down), summarised."""
    root = Path(root).expanduser()
    if not 0 <= max_depth <= 32:
        raise bad_value("depth", max_depth, "use 0 to 32 folders down")
    try:
        st = os.stat(root)
    except FileNotFoundError:
        raise RunError(
            f"{root}: no such folder (cifarlin train writes its runs into outputs/ unless --out says "
            "otherwise); give the folder that holds your runs: cifarlin runs DIR"
        ) from None
    except OSError as e:
        raise RunError(f"{root}: cannot be read ({e.strerror or e})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise RunError(f"{root}: not a folder; give the folder that holds run folders")
    folders, truncated = find_run_folders(root, max_depth)
    return Catalog(root, describe_runs(folders, probe), truncated)
