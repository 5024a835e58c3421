"""A run folder on disk: the names of its files, finding the run behind a folder or a model
file, and the folder while a run writes into it (:class:`RunFolder`): its lock, the old run an
``--overwrite`` sets aside until the new one has saved (the stash), and putting that back after
a kill (:func:`recover`).

A run folder holds:

    model.h5        the final model
    checkpoint.h5   the latest finished epoch (written after every epoch), to resume from
    history.h5      the metrics per epoch and the run's status
    *.png/pdf/svg   figures (curves, montage, confusion-SPLIT, samples-SPLIT)
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cifarlin.core.config import FIGURE_FORMATS, TrainConfig
from cifarlin.errors import ConfigError, ModelFileError, RunError, RunExistsError, WriteError, bad_value

MODEL, CHECKPOINT, HISTORY = "model.h5", "checkpoint.h5", "history.h5"
RUN_FILES = (MODEL, CHECKPOINT, HISTORY)
#: Figures a run folder may hold (written by ``train`` and ``visualize``), removed by overwrite.
FIGURE_PATTERNS = tuple(
    f"{stem}.{fmt}"
    for stem in ("curves", "montage", "confusion*", "samples*", "probs*")
    for fmt in FIGURE_FORMATS
)


def default_out(cfg: TrainConfig, root: Path = Path("outputs")) -> Path:
    """``root/setting-N`` (``setting-N-LOSS`` for a loss other than the cross-entropy), or a new
    ``root/run-<date>-<time>`` when no setting is named."""
    if cfg.setting is not None:
        return root / (f"setting-{cfg.setting}" + ("" if cfg.loss == "ce" else f"-{cfg.loss}"))
    stem = datetime.now().strftime("run-%Y%m%d-%H%M%S")
    out, n = root / stem, 1
    while out.exists():  # two runs started in the same second get their own folders
        n += 1
        out = root / f"{stem}-{n}"
    return out


@dataclass(frozen=True)
class RunFiles:
    """The files of a run, found from a run folder or from one of its model files."""

    folder: Path
    model: Path | None  # model.h5, else checkpoint.h5 (an unfinished run), else None
    history: Path | None


def run_files(target: Path) -> RunFiles:
    """The run behind ``target``: a run folder, or a model or checkpoint file."""
    target = Path(target).expanduser()
    try:
        os.stat(target)
    except FileNotFoundError:
        pass  # said below, with what to give instead
    except (OSError, ValueError) as e:  # too long a name, no permission: is_dir() would raise it
        why = os.strerror(e.errno) if isinstance(e, OSError) and e.errno else str(e)
        raise ModelFileError(f"{target}: cannot be read ({why})") from None
    if target.is_dir():
        found = next((target / f for f in (MODEL, CHECKPOINT) if (target / f).is_file()), None)
        folder = target
    elif target.exists():
        found, folder = target, target.parent
    else:
        raise ModelFileError(f"{target}: no such file or folder; give a run folder or its model.h5")
    history = folder / HISTORY
    if found is None and (left := stashes(folder)):
        raise RunError(
            f"{folder}: an interrupted --overwrite left the previous run in {left[-1]}; "
            "any cifarlin train on this folder puts it back (e.g. with --resume)"
        )
    return RunFiles(folder, found, history if history.is_file() else None)


def start_path(target: Path) -> str:
    """How a run records its start model (``--init``): the absolute path, symlinks resolved, of
    the run folder, or of the file itself unless it is a folder's model.h5 (the folder names the
    same model, so either spelling is the same run)."""
    path = Path(target).expanduser().resolve()
    return str(path.parent if path.name == MODEL and path.is_file() else path)


def model_file(target: Path) -> Path:
    """The model file behind ``target``: a model or checkpoint file, or a run folder's."""
    files = run_files(target)
    if files.model is None:
        raise ModelFileError(f"{files.folder}: no model.h5 or checkpoint.h5 in this folder")
    return files.model.resolve()


def check_run_folder(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a folder that holds another run (unless resuming or overwriting); writes nothing."""
    if resume and overwrite:
        raise ConfigError("resume=True and overwrite=True: choose one")
    if out.exists() and not out.is_dir():
        raise bad_value("out", str(out), "exists and is not a folder")
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise RunError(
                f"{out / CHECKPOINT}: no checkpoint to resume from; start the run without resuming"
            )
        return
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not overwrite:
        raise RunExistsError(
            f"{out} already holds a run ({', '.join(held)}): pass --resume to continue it, "
            "--overwrite to replace it, or --out DIR for a new folder"
        )


LOCK = ".cifarlin.lock"
STASH_PREFIX = ".previous-run-"  # an --overwrite keeps the old run here until the new one saves
STALE_SECONDS = 3600  # a figure's temporary file this old belongs to no running command


@contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Hold the run folder's lock (one cifarlin writes into a run folder at a time).

    The lock file is opened with O_NOFOLLOW: a symbolic link planted in its place is refused, never
    followed (which would create its target outside the folder).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Windows
        yield
        return
    lock = out / LOCK
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise RunError(f"{lock}: is a symbolic link, not cifarlin's lock file; remove it") from None
        why = os.strerror(e.errno) if e.errno else str(e)
        raise WriteError(f"{out}: cannot write there ({why}); choose another folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise RunExistsError(
            f"{out}: another cifarlin is training into this folder; wait for it, or choose another folder"
        ) from None
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def held(out: Path) -> bool:
    """Whether a cifarlin holds the lock of run folder ``out`` (it is writing into it).

    Read from the kernel's table of locks (Linux's /proc/locks) without taking one, so that a
    ``train`` starting at that moment is never refused; elsewhere, by taking a shared lock for an
    instant."""
    try:
        st = os.stat(out / LOCK, follow_symlinks=False)
    except OSError:
        return False  # no lock file: nobody holds the folder
    if not stat.S_ISREG(st.st_mode):
        return False
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            table = f.read()
    except OSError:
        return _held_by_flock(out / LOCK)
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(
        len(w := line.split()) > 5 and w[1] == "FLOCK" and w[5] == where for line in table.splitlines()
    )


def _held_by_flock(lock: Path) -> bool:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Windows
        return False
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also releases the shared lock taken
    return False


def stashes(out: Path) -> list[Path]:
    """Old runs an --overwrite set aside in ``out`` (normally none: they go when it finishes)."""
    try:
        return sorted(p for p in out.glob(STASH_PREFIX + "*") if p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def recover(out: Path) -> str | None:
    """Put back the run an interrupted ``--overwrite`` set aside, and remove stale temporary files.

    An --overwrite that was killed (SIGKILL, power loss) before the new run saved its first
    checkpoint leaves the old run in ``.previous-run-*`` and no run files: the old run is moved
    back. If the new run did save, the leftover is removed. Returns what was done, or None. Does
    nothing while another cifarlin holds the folder's lock.
    """
    if not out.is_dir() or not (left := stashes(out)):
        return None
    try:
        with folder_lock(out):
            if any((out / name).exists() for name in RUN_FILES):
                for stash in left:
                    shutil.rmtree(stash, ignore_errors=True)
                return None
            stash = left[-1]
            for p in stash.iterdir():
                os.replace(p, out / p.name)
            for extra in left:
                shutil.rmtree(extra, ignore_errors=True)
            return f"put back the previous run from {stash} (an --overwrite stopped before its first epoch)"
    except RunExistsError:
        return None


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files of killed writes: those of the run files (only the lock holder writes them)
    and figures' ones older than an hour (``visualize`` writes figures without the lock)."""
    now = time.time()
    for pattern in (*(f".{name}.*.tmp" for name in RUN_FILES), ".cifarlin-probe-*"):
        for p in out.glob(pattern):
            p.unlink(missing_ok=True)
    for pattern in FIGURE_PATTERNS:
        for p in out.glob(f".{pattern}.*.tmp"):
            try:
                if now - p.lstat().st_mtime > STALE_SECONDS:
                    p.unlink()
            except OSError:
                pass


class RunFolder:
    """The folder of a run while it trains.

    Created when needed, locked against a second cifarlin writing into it (stale temporary files
    of killed writes are removed then), and checked for writing before any work is done. With
    ``overwrite`` the old run's files are set aside and deleted only once the new run has saved
    its first checkpoint; if the new run fails before that, they are put back (and if it is
    killed, :func:`recover` puts them back next time), and a folder this run created is removed.
    """

    def __init__(self, out: Path, overwrite: bool = False):
        self.out, self.overwrite = out, overwrite
        self.created = False
        self.stash: Path | None = None
        self._lock = ExitStack()

    def __enter__(self) -> RunFolder:
        try:
            self.created = not self.out.exists()
            self.out.mkdir(parents=True, exist_ok=True)
            self._lock.enter_context(folder_lock(self.out))
            probe = tempfile.NamedTemporaryFile(dir=self.out, prefix=".cifarlin-probe-")
            probe.close()
            _remove_stale_temporaries(self.out)
        except OSError as e:
            self._release(remove_folder=True)
            raise WriteError(
                f"{self.out}: cannot write the run there ({e.strerror or e}); choose another folder"
            ) from None
        except BaseException:
            self._release(remove_folder=True)
            raise
        if self.overwrite:
            old = [p for name in RUN_FILES if (p := self.out / name).exists()]
            old += [p for pattern in FIGURE_PATTERNS for p in self.out.glob(pattern)]
            if old:
                self.stash = Path(tempfile.mkdtemp(dir=self.out, prefix=STASH_PREFIX))
                for p in old:
                    os.replace(p, self.stash / p.name)
        return self

    def saved(self) -> None:
        """The new run has a checkpoint on disk: the old run is gone for good."""
        if self.stash is not None:
            shutil.rmtree(self.stash, ignore_errors=True)
            self.stash = None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        failed_before_saving = exc_type is not None and not any((self.out / n).exists() for n in RUN_FILES)
        if self.stash is not None:
            if exc_type is not None:
                for p in self.stash.iterdir():
                    os.replace(p, self.out / p.name)
            shutil.rmtree(self.stash, ignore_errors=True)
            self.stash = None
        self._release(remove_folder=failed_before_saving and self.created)

    def _release(self, remove_folder: bool) -> None:
        self._lock.close()
        if remove_folder and self.created:
            try:
                self.out.rmdir()  # only if empty
            except OSError:
                pass
