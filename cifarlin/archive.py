"""Unpacking a CIFAR-10 archive without trusting it.

Every member is checked as it is read (regular files and folders only, inside the dataset's own
folder, within caps on size and count); extraction goes to a temporary folder inside the data
folder, whose dataset is validated by the loader and only then renamed into place.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from cifarlin import data
from cifarlin.errors import DataError, DownloadError

MAX_UNPACKED = 1 << 30  # the archives unpack to about 180 MB; refuse anything above 1 GiB
MAX_MEMBERS = 1000  # ... or more members than this (they have 8 or 9)


def _member_kind(m: tarfile.TarInfo) -> str:
    for test, kind in (
        (m.issym, "symbolic link"),
        (m.islnk, "hard link"),
        (m.ischr, "character device"),
        (m.isblk, "block device"),
        (m.isfifo, "FIFO"),
    ):
        if test():
            return kind
    return "special file"


def check_member(archive: Path, m: tarfile.TarInfo, folder: str) -> None:
    """Refuse anything but a regular file or folder under ``folder/``."""
    parts = PurePosixPath(m.name).parts
    if m.name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", m.name) or ".." in parts:
        raise DownloadError(f"{archive}: refused: member {m.name!r} points outside the target folder")
    if not (m.isfile() or m.isdir()):
        raise DownloadError(
            f"{archive}: refused: member {m.name!r} is a {_member_kind(m)}; "
            "only regular files and folders are allowed"
        )
    if not parts or parts[0] != folder:
        raise DownloadError(f"{archive}: refused: member {m.name!r} is not inside {folder}/")


def _members(archive: Path, tar: tarfile.TarFile, folder: str, tmp: Path) -> list[tarfile.TarInfo]:
    """The members, each checked as it is read, so a hostile or huge archive is refused early."""
    members, total = [], 0
    for m in tar:
        check_member(archive, m, folder)
        if not (tmp / m.name).resolve().is_relative_to(tmp.resolve()):  # belt and braces
            raise DownloadError(f"{archive}: refused: member {m.name!r} points outside the target")
        total += max(m.size, 0)
        members.append(m)
        if total > MAX_UNPACKED or len(members) > MAX_MEMBERS:
            raise DownloadError(
                f"{archive}: refused: it unpacks to more than {MAX_UNPACKED >> 20} MiB or {MAX_MEMBERS} files"
            )
    return members


def _swap_in(staged: Path, target: Path, spare: Path) -> None:
    """Move ``staged`` to ``target``; an old ``target`` goes to ``spare`` and comes back if the move
    fails or is interrupted, so the dataset is the old one or the new one, never neither."""
    old = target.is_symlink() or target.exists()
    try:
        if old:
            os.replace(target, spare)
        try:
            os.replace(staged, target)
        except BaseException:
            if old:
                os.replace(spare, target)
            raise
    except OSError as e:
        raise DownloadError(f"{target}: cannot be replaced ({e.strerror or e})") from None


def extract(archive: Path, root: Path, fmt: data.Format) -> tuple[data.Dataset, dict[str, str]]:
    """Unpack ``archive`` into ``root/<official folder>`` safely; returns the source and checksums.

    Extraction goes to a temporary folder inside ``root``; the dataset folder is validated there
    and then renamed into place (replacing an old one), so a half-extracted dataset never exists.
    """
    folder = data.FOLDERS[fmt]
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".cifarlin-extract-"))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = _members(archive, tar, folder, tmp)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:  # Python < 3.11.4: the checks above are the filter
                    tar.extractall(tmp, members=members)
        except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as e:
            what = "truncated" if isinstance(e, EOFError) else "not a readable .tar.gz archive"
            raise DownloadError(f"{archive}: {what} ({type(e).__name__})") from None
        staged = data.Dataset(tmp / folder, fmt)
        if not staged.folder.is_dir():
            raise DownloadError(f"{archive}: has no {folder}/ folder; is it the {fmt} version of CIFAR-10?")
        for path in [staged.folder, *staged.folder.rglob("*")]:  # read-only members stay removable
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        try:
            checksums = data.verify_dataset(staged)
        except DataError as e:
            what = str(e).replace(str(tmp) + os.sep, "").split("; ")[0]  # name files as in the archive
            raise DownloadError(
                f"{archive}: refused: it does not hold a valid CIFAR-10 dataset ({what})"
            ) from None
        target = root / folder
        _swap_in(staged.folder, target, tmp / "previous")
        return data.Dataset(target, fmt), checksums
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
