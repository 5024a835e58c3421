"""Writing files so that a crash or Ctrl-C never leaves a partial one behind."""

from __future__ import annotations

import itertools
import math
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cifarlin.errors import STOPS_HELD, WriteError, bad_value, raise_held_stop


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # once, at import: os.umask can only be read by setting it


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block ends.

    On success the file is flushed to disk, given the permissions a new file would get and moved
    into place with ``os.replace``; on any exception (Ctrl-C included) it is removed. A failed
    write (an OSError, or h5py's RuntimeError carrying an errno: a full disk, a file size limit,
    a read-only or forbidden folder, a name too long) becomes one :class:`WriteError` naming
    ``path`` and the cause; an earlier ``path`` is never touched before the final rename.
    """
    path = Path(path)
    name = None
    STOPS_HELD[0] += 1  # while mkstemp makes the file, a stop signal is noted, not raised
    try:
        try:
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path.name), suffix=".tmp")
        except OSError as e:
            raise _write_error(path, e) from None
        finally:
            STOPS_HELD[0] -= 1
        os.close(fd)
        raise_held_stop()  # now that `name` names the file, the handlers below remove it
        tmp = Path(name)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as e:
        STOPS_HELD[0] += 1  # the first bytecode: a stop signal from here on cannot skip the removal
        try:
            _discard(name)
        finally:
            STOPS_HELD[0] -= 1
        if isinstance(e, RuntimeError) and write_errno(e) is None:
            raise  # not a failed write: a bug, shown as one
        raise _write_error(path, e) from None
    except BaseException:
        STOPS_HELD[0] += 1  # as above: a second Ctrl-C must not leave the file behind
        try:
            _discard(name)
        finally:
            STOPS_HELD[0] -= 1
        raise


@contextmanager
def atomic_h5(path: Path) -> Iterator[Any]:
    """An HDF5 file (h5py.File) open for writing that appears at ``path`` only once complete.

    The file is built in memory (HDF5's core driver, no backing file) and its image, the same
    bytes HDF5 would have written, goes to disk through :func:`atomic_path` in one plain write.
    HDF5 itself never meets a failed write: one that does (a full disk, a file size limit)
    raises RuntimeError from its close, leaves its temporary file behind, or crashes the process
    (h5py 3.16 with HDF5 2.0: a segmentation fault closing a file whose writes failed).
    """
    import h5py

    from cifarlin.errors import STOPS_HELD, raise_held_stop

    path = Path(path)
    # Stop signals are held while the image is built (in memory: milliseconds): one raised inside
    # h5py comes out of its type conversion as TypeError ('Operation not defined for data type
    # class'; CI: two Ctrl-C 20 ms apart, the second during the first's checkpoint); it is
    # raised once the file is closed.
    STOPS_HELD[0] += 1
    try:
        f = h5py.File(f"{path}.{next(_images)}.in-memory", "w", driver="core", backing_store=False)
        try:
            yield f
            f.flush()
            image = f.id.get_file_image()
        finally:
            f.close()
    finally:
        STOPS_HELD[0] -= 1
    raise_held_stop()
    with atomic_path(path) as tmp:
        tmp.write_bytes(image)


_images = itertools.count()  # a name per in-memory HDF5 file: HDF5 tells open files apart by name


def _temp_prefix(name: str) -> str:
    """``.NAME.``, with NAME cut so that the temporary file's name (``.NAME.`` and mkstemp's 8
    characters and ``.tmp``) stays within the 255 bytes most file systems allow: a long but
    valid name must not fail for its temporary file's."""
    while len(os.fsencode(name)) > 255 - len("..") - 8 - len(".tmp") and name:
        name = name[:-1]
    return f".{name}."


def _discard(name: str | None) -> None:
    if name is None:
        return
    try:
        os.unlink(name)
    except OSError:
        pass


def write_errno(e: BaseException) -> int | None:
    """The errno of a failed write: an OSError's own, or the one HDF5 names in its message
    (h5py raises OSError or RuntimeError with ``errno = 28`` in the text)."""
    if isinstance(e, OSError) and e.errno:
        return e.errno
    found = re.search(r"errno = (\d+)", str(e))
    return int(found[1]) if found and int(found[1]) else None


def _write_error(path: Path, e: BaseException) -> WriteError:
    code = write_errno(e)
    if code:
        reason = os.strerror(code)
    else:
        reason = " ".join((getattr(e, "strerror", None) or str(e) or type(e).__name__).split())[:120]
    return WriteError(f"{path}: cannot be written ({reason}); any earlier version of it is unchanged")


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class WritesOnly:
    """A file's ``write`` alone, for NumPy to write through (a write that fails raises). Given the
    file itself, np.save writes with C stdio and does not check its end: on a full disk or past a
    file size limit it cuts the file short without an error (NumPy 2.4)."""

    def __init__(self, f: Any) -> None:
        self.write = f.write


def make_folder(folder: Path, what: str = "the folder") -> None:
    """Create ``folder`` (and its parents) unless it exists; a failure is one :class:`WriteError`
    naming it and the cause (a read-only or forbidden parent, a full disk, a name too long)."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(f"{folder}: cannot create {what} ({_reason(e)})") from None


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def check_path(out: Path, field: str = "out", what: str = "folder") -> None:
    """Refuse a path this system cannot use (too long, a name in it too long, a loop of links)
    before anything is created there: a usage error naming ``field`` (a ``what``: folder, file)."""
    full = os.path.abspath(out)
    anchor = next((p for p in Path(full).parents if is_dir(p)), Path("/"))
    name_max, path_max = _limit(anchor, "PC_NAME_MAX", 255), _limit(anchor, "PC_PATH_MAX", 4096)
    unusable = f"cannot be used as a {what} here"
    if len(os.fsencode(full)) >= path_max:
        raise bad_value(field, str(out), f"{unusable} (longer than {path_max} bytes)")
    if any(len(os.fsencode(part)) > name_max for part in out.parts):
        raise bad_value(field, str(out), f"{unusable} (a name over {name_max} bytes)")
    try:
        out.exists()
        out.resolve()
    except (OSError, RuntimeError) as e:
        raise bad_value(field, str(out), f"{unusable} ({_reason(e)})") from None


def check_file_path(path: Path, field: str, example: str) -> None:
    """Refuse, before any work, a path no file can be written to: a usage error naming ``field``
    (a name too long, a folder there, a file where a folder of it should be); ``example`` is a
    file name the message suggests inside a folder given by mistake."""
    check_path(path, field, "file")
    if is_dir(path):
        raise bad_value(field, str(path), f"is a folder; give a file in it, e.g. {field}={path / example}")
    for parent in path.parents:
        if os.path.lexists(parent):
            if not is_dir(parent):
                raise bad_value(field, str(path), f"{parent} is not a folder; give {field}=FILE in a folder")
            break


def is_dir(p: Path) -> bool:
    """Path.is_dir without its exceptions: Python 3.11's raises ENAMETOOLONG and EACCES."""
    try:
        return stat.S_ISDIR(os.stat(p).st_mode)
    except (OSError, ValueError):
        return False


def _reason(e: BaseException) -> str:
    return os.strerror(e.errno) if isinstance(e, OSError) and e.errno else str(e)


def _limit(folder: Path, name: str, default: int) -> int:
    try:
        return int(os.pathconf(folder, name))
    except (OSError, ValueError):
        return default


def json_ready(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None: JSON has neither (json.dumps would write NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    return obj
