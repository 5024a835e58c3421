"""Writing files so that a crash or Ctrl-C never leaves a partial one behind."""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cifarlin.errors import WriteError, bad_value


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # once, at import: os.umask can only be read by setting it


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block ends.

    On success the file is flushed to disk, given the permissions a new file would get and moved
    into place with ``os.replace``; on any exception (Ctrl-C included) it is removed.
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _write_error(path, e) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _write_error(path, e) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_error(path: Path, e: OSError) -> WriteError:
    code = e.errno or next((int(m) for m in re.findall(r"errno = (\d+)", str(e))), None)  # h5py buries it
    reason = os.strerror(code) if code else " ".join((e.strerror or str(e)).split())[:120]
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


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def check_path(out: Path, field: str = "out") -> None:
    """Refuse a path this system cannot use (too long, a name in it too long, a loop of links)
    before anything is created there: a usage error naming ``field``."""
    anchor = next((p for p in Path(os.path.abspath(out)).parents if p.is_dir()), Path("/"))
    name_max, path_max = _limit(anchor, "PC_NAME_MAX", 255), _limit(anchor, "PC_PATH_MAX", 4096)
    if len(os.fsencode(os.path.abspath(out))) >= path_max:
        raise bad_value(field, str(out), f"cannot be used as a folder here (longer than {path_max} bytes)")
    if any(len(os.fsencode(part)) > name_max for part in out.parts):
        raise bad_value(field, str(out), f"cannot be used as a folder here (a name over {name_max} bytes)")
    try:
        out.exists()
        out.resolve()
    except (OSError, RuntimeError) as e:
        why = os.strerror(e.errno) if isinstance(e, OSError) and e.errno else str(e)
        raise bad_value(field, str(out), f"cannot be used as a folder here ({why})") from None


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
