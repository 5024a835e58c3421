"""Installing CIFAR-10: the archive fetched (:mod:`cifarlin.data.fetch`) or given, verified,
and safely unpacked.

Nothing downloaded is trusted: the archive's MD5 is checked before anything is extracted, and
:mod:`cifarlin.data.archive` unpacks it safely. Downloads go to cifarlin's own folder in the data
folder (:data:`DOWNLOAD_FOLDER`), under a name of cifarlin's choosing, never one taken from the
URL; :func:`cifarlin.data.fetch.fetch` streams them to a ``.part`` file, retries with backoff,
resumes by HTTP Range, and gives up on a server that sends too little for too long
(:mod:`cifarlin.data.http`).
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cifarlin.data import cifar as data
from cifarlin.data.archive import extract
from cifarlin.data.fetch import MAX_ARCHIVE, Progress, fetch
from cifarlin.data.source import DownloadConfig
from cifarlin.errors import DataError, DownloadError, Interrupted, WriteError, bad_value

OFFICIAL_URL = {
    "python": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "binary": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
}
OFFICIAL_MD5 = {
    "python": "c58f30108f718f92721af3b95e74349a",
    "binary": "c32a1d4ab5d03f1284b67883e8d87530",
}
#: Per-file MD5 of the official python version (as torchvision lists them).
OFFICIAL_FILE_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
#: cifarlin's own folder in the data folder: the archive being fetched, its ``.part`` and
#: ``.part.json`` live there under fixed names, so nothing of the user's is ever replaced.
DOWNLOAD_FOLDER = ".cifarlin-download"


@dataclass
class Result:
    """What ``cifarlin download`` did (its ``--json`` output)."""

    path: str
    format: str
    origin: str | None  # the URL or the archive file installed from
    md5: str | None
    bytes: int
    seconds: float
    status: str  # "downloaded", "installed" (from a file) or "already present"
    official_files: bool | None  # do the files match the official per-file checksums?

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def official_match(dataset: data.Dataset, checksums: dict[str, str]) -> bool | None:
    """True/False when official per-file checksums are known for the format, else None."""
    if dataset.format != "python":
        return None
    return all(checksums.get(k) == v for k, v in OFFICIAL_FILE_MD5.items())


def install(
    root: Path,
    cfg: DownloadConfig | None = None,
    *,
    from_file: Path | None = None,
    force: bool = False,
    on_progress: Progress | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> Result:
    """Make sure CIFAR-10 (``cfg.layout`` version) is unpacked under ``root``; download if needed.

    ``from_file`` installs an archive fetched by other means (it is not deleted); its MD5 must be
    the official one or ``cfg.md5``.
    """
    cfg = cfg or DownloadConfig()
    t0 = time.perf_counter()
    notice = on_notice or (lambda msg: None)
    root = Path(root).expanduser()
    data.check_root(root)

    present = data.locate(root) if root.is_dir() else None
    if present is not None and present.format == cfg.layout and not force:
        try:
            sums = data.verify_dataset(present)
        except DataError as e:
            notice(f"{present.folder} is incomplete or damaged ({e}); fetching a fresh copy")
        else:
            return Result(
                str(present.folder),
                cfg.layout,
                None,
                None,
                0,
                time.perf_counter() - t0,
                "already present",
                official_match(present, sums),
            )
    if present is not None and present.folder == root:
        # the data folder names the dataset folder itself: unpack beside it, under the official name
        root = root.parent
        if root / data.FOLDERS[cfg.layout] != present.folder:
            raise DownloadError(
                f"{present.folder}: is a dataset folder with a non-standard name; "
                f"pass its parent or an empty folder as the data folder to download a fresh copy"
            )
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"{root}: cannot create the data folder ({e.strerror or e})") from None
    try:
        return _install_into(root, cfg, from_file, on_progress, notice, t0)
    except BaseException:
        if created:  # a data folder this run made and could not fill goes away again
            try:
                root.rmdir()
            except OSError:
                pass
        raise


def _given_archive(from_file: Path) -> Path:
    """The user's own archive (``--from-file``): a regular file of a plausible size."""
    archive = Path(from_file).expanduser()
    if archive.is_dir():
        raise bad_value("from_file", str(archive), "is a folder; give the .tar.gz archive itself")
    if not archive.exists():
        raise bad_value("from_file", str(archive), "no such file")
    if not archive.is_file():  # a pipe (<(curl ...)) or a device: hashing it would consume or hang
        raise bad_value("from_file", str(archive), "is not a regular file; save the archive to a file first")
    if archive.stat().st_size > MAX_ARCHIVE:
        raise DownloadError(
            f"{archive}: {archive.stat().st_size:,} bytes, more than a CIFAR-10 archive could hold "
            f"({MAX_ARCHIVE:,}); is it the right file?"
        )
    return archive


def download_folder(root: Path) -> Path:
    """cifarlin's own folder in ``root`` for archives being fetched, made when missing.

    Everything in it is cifarlin's, under names of cifarlin's choosing: a URL never decides
    what is written or deleted. Something else under its name (a file, a link) is refused.
    """
    folder = root / DOWNLOAD_FOLDER
    try:
        folder.mkdir(exist_ok=True)
        ours = stat.S_ISDIR(os.lstat(folder).st_mode)
    except FileExistsError:
        ours = False
    except OSError as e:
        raise DownloadError(f"{folder}: cannot be created ({e.strerror or e}); pass --data-dir DIR") from None
    if not ours:
        raise DownloadError(f"{folder}: is not a folder cifarlin made; move it away and run again")
    return folder


def _fetched_archive(
    root: Path,
    cfg: DownloadConfig,
    expected: str,
    on_progress: Progress | None,
    notice: Callable[[str], None],
) -> tuple[Path, int]:
    """The archive of ``cfg``, in :func:`download_folder`: one a stopped run fetched and
    verified, or fetched now (resuming its ``.part``)."""
    url = cfg.url or OFFICIAL_URL[cfg.layout]
    archive = download_folder(root) / f"cifar-10-{cfg.layout}.tar.gz"
    if os.path.lexists(archive) and not stat.S_ISREG(os.lstat(archive).st_mode):
        raise DownloadError(f"{archive}: is not a file cifarlin made; move it away and run again")
    if archive.is_file() and file_md5(archive) == expected:  # fetched by a run stopped before unpacking
        notice(f"{archive} was downloaded and verified before")
        return archive, archive.stat().st_size
    archive.unlink(missing_ok=True)  # cifarlin's own, and not the archive wanted
    notice(f"downloading {url} to {archive}")
    return archive, fetch(url, archive, on_progress=on_progress, timeout=cfg.timeout, retries=cfg.retries)


def _install_into(
    root: Path,
    cfg: DownloadConfig,
    from_file: Path | None,
    on_progress: Progress | None,
    notice: Callable[[str], None],
    t0: float,
) -> Result:
    expected = cfg.md5 or OFFICIAL_MD5[cfg.layout]
    if from_file is not None:
        archive = _given_archive(from_file)
        origin, status, size = str(archive), "installed", archive.stat().st_size
    else:
        try:
            archive, size = _fetched_archive(root, cfg, expected, on_progress, notice)
        finally:
            _remove_if_empty(root / DOWNLOAD_FOLDER)
        origin, status = cfg.url or OFFICIAL_URL[cfg.layout], "downloaded"
    try:
        got, target, sums = _verify_and_unpack(
            archive, root, cfg, expected, ours=from_file is None, notice=notice
        )
    finally:
        if from_file is None:
            _remove_if_empty(root / DOWNLOAD_FOLDER)
    return Result(
        str(target.folder),
        cfg.layout,
        origin,
        got,
        size,
        time.perf_counter() - t0,
        status,
        official_match(target, sums),
    )


def _verify_and_unpack(
    archive: Path,
    root: Path,
    cfg: DownloadConfig,
    expected: str,
    *,
    ours: bool,
    notice: Callable[[str], None],
) -> tuple[str, data.Dataset, dict[str, str]]:
    """Check the MD5 of ``archive`` and unpack it; an archive cifarlin downloaded (``ours``) is
    deleted once unpacked or refused, and kept when unpacking failed for want of space."""
    notice(f"checking the MD5 of {archive}")
    got = file_md5(archive)
    if got != expected:
        if ours:
            archive.unlink(missing_ok=True)
        deleted = "; the download was deleted" if ours else ""
        hint = "" if cfg.md5 else " (give md5=HEX if you trust this archive and it is not the official one)"
        raise DownloadError(
            f"{archive}: MD5 mismatch: expected {expected}, got {got}; nothing was extracted{deleted}{hint}"
        )
    notice(f"unpacking into {root / data.FOLDERS[cfg.layout]}")
    try:
        target, sums = extract(archive, root, cfg.layout)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted while unpacking; the verified {archive} is kept for the next run"
        ) from None
    except WriteError as e:  # the data folder's fault (a full disk), not the archive's
        if ours:
            raise WriteError(f"{e}; the verified download stays in {archive} for the next run") from None
        raise
    except DownloadError:
        if ours:
            archive.unlink(missing_ok=True)
        raise
    if ours:
        archive.unlink(missing_ok=True)
    return got, target, sums


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def ensure(
    root: Path,
    cfg: DownloadConfig | None = None,
    *,
    download: bool = True,
    on_progress: Progress | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> data.Dataset:
    """The dataset in or under ``root``, downloaded there first when it is missing and
    ``download`` is on."""
    try:
        return data.find(root)
    except data.DataNotFoundError:
        if not download:
            raise
        if on_notice is not None:
            on_notice(f"CIFAR-10 is not in {root}; downloading it there (--no-download turns this off)")
        try:
            install(root, cfg, on_progress=on_progress, on_notice=on_notice)
        except DownloadError as err:
            raise DownloadError(
                f"no CIFAR-10 data in {root}, and fetching it failed: {err}, "
                "or point --data-dir at an existing copy"
            ) from None
        return data.find(root)
