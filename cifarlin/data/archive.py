"""Unpacking a CIFAR-10 archive without trusting it.

The archive is read twice. The first pass checks it and writes nothing: every header is checked
before tarfile acts on it (:class:`_CheckedTarInfo`: PAX and GNU long-name headers are capped
before their payload is read, sparse members refused), every member as it is read (regular files
and folders only, inside the dataset's own folder, within caps on size and count), and the
decompressed stream is read to its very end, so that gzip checks its CRC and length. The second
pass extracts into a temporary folder inside the data folder, whose dataset is validated by the
loader and only then renamed into place. A write that fails there (a full disk) is a
:class:`WriteError` naming the cause, not a broken archive.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from cifarlin.data import cifar as data
from cifarlin.errors import DataError, DownloadError, WriteError

try:
    from lzma import LZMAError
except ImportError:  # a Python built without liblzma: tarfile then cannot read .xz either
    LZMAError = zlib.error  # type: ignore[misc,assignment]

MAX_UNPACKED = 1 << 30  # the archives unpack to about 180 MB; refuse anything above 1 GiB
MAX_MEMBERS = 1000  # ... or more members than this (they have 8 or 9)
MAX_MEMBER = data.MAX_BATCH_BYTES  # ... or a member larger than any file the loader would read
MAX_HEADER = 16 << 10  # one PAX or GNU long-name header (a path and a few fields; CIFAR-10 has none)
MAX_HEADERS = 256 << 10  # all such headers together
MAX_GLOBAL = 4 << 10  # PAX global headers together (tarfile copies them into every member)
MAX_CHAIN = 8  # extended headers in a row before one member (tarfile reads them recursively)
MAX_TRAILING = 16 << 20  # decompressed bytes after the end-of-archive blocks (padding to a record)

#: Headers whose payload tarfile reads into memory whole: PAX extended and global headers, GNU
#: long names and long link names.
_EXTENDED = {
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
}
SPACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


class _Refused(Exception):
    """A header or member refused while the archive is read; becomes a one-line DownloadError."""


class _CheckedTarInfo(tarfile.TarInfo):
    """A tar header checked before tarfile acts on it.

    ``_proc_member`` is the entry point tarfile documents for subclasses to override (see its
    source); it runs once the 512-byte header is parsed and before anything after it is read.
    tarfile reads the whole payload of a PAX or GNU long-name header into memory, and a sparse
    member's map too, so a 100 KB .tar.gz could make it read gigabytes before any check of ours.
    """

    def _proc_member(self, tar: Any) -> tarfile.TarInfo:
        if self.size < 0:  # tarfile would seek backwards, or read all that follows
            raise _Refused(f"a header at byte {self.offset} declares a negative size")
        if self.type in _EXTENDED:
            tar.count_extended(self)
        elif self.type == tarfile.GNUTYPE_SPARSE:
            raise _Refused(f"member {self.name!r} is a sparse file")
        else:
            tar.chain = 0
        return super()._proc_member(tar)

    def _refuse_sparse(self, member: tarfile.TarInfo, *args: object) -> None:
        raise _Refused(f"member {member.name!r} is a sparse file (GNU.sparse PAX records)")

    # tarfile's readers of the three PAX forms of GNU sparse maps (a map can be unbounded)
    _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse


#: The tarfile methods the checks above replace or wrap; a tarfile without them (a future Python
#: that renamed them) would read archives unguarded, so none is read then.
_HOOKS = ("_proc_member", "_proc_gnusparse_00", "_proc_gnusparse_01", "_proc_gnusparse_10")
_GUARDED = all(callable(getattr(tarfile.TarInfo, name, None)) for name in _HOOKS)


class _CheckedTarFile(tarfile.TarFile):
    """A TarFile of :class:`_CheckedTarInfo` headers that counts the extended headers."""

    tarinfo = _CheckedTarInfo

    def __init__(self, *args: Any, **kwargs: Any):
        self.chain = self.extended = self.globals = 0
        super().__init__(*args, **kwargs)  # reads the first header already

    def count_extended(self, info: tarfile.TarInfo) -> None:
        """Refuse an extended header that is too large, or one too many."""
        kind = "PAX" if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE) else "GNU"
        what = {
            tarfile.XGLTYPE: "global ",
            tarfile.GNUTYPE_LONGNAME: "long-name ",
            tarfile.GNUTYPE_LONGLINK: "long-link ",
        }.get(info.type, "")
        if info.size > MAX_HEADER:
            raise _Refused(
                f"a {kind} {what}header at byte {info.offset} declares {info.size:,} bytes "
                f"(at most {MAX_HEADER:,})"
            )
        self.chain += 1
        self.extended += info.size
        self.globals += info.size if info.type == tarfile.XGLTYPE else 0
        if self.chain > MAX_CHAIN:
            raise _Refused(f"more than {MAX_CHAIN} extended headers in a row at byte {info.offset}")
        if self.globals > MAX_GLOBAL:
            raise _Refused(f"its PAX global headers hold more than {MAX_GLOBAL:,} bytes in all")
        if self.extended > MAX_HEADERS:
            raise _Refused(f"its extended headers hold more than {MAX_HEADERS:,} bytes in all")


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
        if m.size > MAX_MEMBER:
            raise DownloadError(
                f"{archive}: refused: member {m.name!r} has {m.size:,} bytes, more than any "
                f"CIFAR-10 file ({MAX_MEMBER:,})"
            )
        total += max(m.size, 0)
        members.append(m)
        if total > MAX_UNPACKED or len(members) > MAX_MEMBERS:
            raise DownloadError(
                f"{archive}: refused: it unpacks to more than {MAX_UNPACKED >> 20} MiB or {MAX_MEMBERS} files"
            )
    return members


def _read_to_end(stream: Any) -> None:
    """Read what follows the end-of-archive blocks, so the decompressor checks its trailer.

    tarfile stops at the end-of-archive blocks, and gzip checks the CRC-32 and length of the
    data only when it reaches the end of the stream: without this, an archive whose CRC is
    wrong (whose data are not what was compressed) would be installed.
    """
    left = MAX_TRAILING
    while chunk := stream.read(min(1 << 20, left + 1)):
        left -= len(chunk)
        if left < 0:
            raise _Refused(f"more than {MAX_TRAILING:,} bytes follow the end of its tar data")


def _check(archive: Path, tar: tarfile.TarFile, folder: str, tmp: Path) -> list[tarfile.TarInfo]:
    """First pass, writing nothing: the checked members, with the whole stream read and verified."""
    members = _members(archive, tar, folder, tmp)
    _read_to_end(tar.fileobj)
    return members


def _unpack(archive: Path, tar: tarfile.TarFile, members: list[tarfile.TarInfo], tmp: Path) -> None:
    """Second pass: extract ``members`` into ``tmp``; a failed write is a :class:`WriteError`."""
    try:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp, members=members, filter="data")
        else:  # Python < 3.11.4: the checks above are the filter
            tar.extractall(tmp, members=members)
    except OSError as e:
        if e.errno is None:  # gzip's own errors (BadGzipFile) carry no errno: the archive changed
            raise
        raise _write_error(archive, tmp.parent, e) from None


def _write_error(archive: Path, root: Path, e: OSError) -> WriteError:
    """A failed write while unpacking, named by its cause (a full disk, a quota, a file size limit)."""
    reason = os.strerror(e.errno) if e.errno else str(e)
    hint = "free some space or pass --data-dir DIR" if e.errno in SPACE_ERRNOS else "pass --data-dir DIR"
    return WriteError(f"{root}: cannot unpack {archive.name} there ({reason}); {hint}")


def _read_error(archive: Path, e: BaseException) -> DownloadError:
    if isinstance(e, _Refused):
        return DownloadError(f"{archive}: refused: {e}")
    what = "truncated" if isinstance(e, EOFError) else "not a readable .tar.gz archive"
    detail = type(e).__name__
    if isinstance(e, OSError) and str(e):  # gzip's CRC or length check, in its words
        detail += ": " + " ".join(str(e).split())[:200]
    return DownloadError(f"{archive}: {what} ({detail})")


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
    except OSError as e:  # the data folder's fault, not the archive's
        raise WriteError(f"{target}: cannot be replaced ({e.strerror or e})") from None


def extract(archive: Path, root: Path, fmt: data.Format) -> tuple[data.Dataset, dict[str, str]]:
    """Unpack ``archive`` into ``root/<official folder>`` safely; returns the source and checksums.

    The archive is checked whole before anything is written (see the module's docstring), then
    extracted to a temporary folder inside ``root``; the dataset folder is validated there and
    renamed into place (replacing an old one), so a half-extracted dataset never exists. Raises
    :class:`DownloadError` for an archive that is refused or broken, :class:`WriteError` when the
    data folder cannot take it (a full disk).
    """
    folder = data.FOLDERS[fmt]
    if not _GUARDED:
        raise DownloadError(
            f"{archive}: not unpacked: this Python's tarfile module lacks the hooks cifarlin checks "
            f"headers with; unpack it with tar and pass its {folder} folder as --data-dir"
        )
    try:
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".cifarlin-extract-"))
    except OSError as e:
        raise _write_error(archive, root, e) from None
    try:
        try:
            with _CheckedTarFile.open(archive, "r:*") as tar:
                members = _check(archive, tar, folder, tmp)
                _unpack(archive, tar, members, tmp)
        except (_Refused, tarfile.TarError, EOFError, OSError, ValueError, zlib.error, LZMAError) as e:
            raise _read_error(archive, e) from None
        staged = data.Dataset(tmp / folder, fmt)
        if not staged.folder.is_dir():
            raise DownloadError(f"{archive}: has no {folder}/ folder; is it the {fmt} version of CIFAR-10?")
        try:
            for path in [staged.folder, *staged.folder.rglob("*")]:  # read-only members stay removable
                os.chmod(path, 0o755 if path.is_dir() else 0o644)
        except OSError as e:
            raise _write_error(archive, root, e) from None
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
