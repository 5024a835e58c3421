"""Reading HDF5 files without trusting them.

A model, checkpoint or history file may come from anywhere (a colleague, a download, a disk that
flipped bits), and the HDF5 library itself can crash or loop forever on a damaged file. So:

1. :func:`check_file` looks before the library does: a regular file (not a FIFO, device or
   folder) of a plausible size, with the HDF5 signature and a superblock whose end-of-file
   address fits the file's length (a truncated file is named as such).
2. :class:`Reader` walks what the file holds before anything is read: no soft or external links,
   no virtual datasets or external raw storage (a file cannot make cifarlin read another file),
   no committed types, attributes of bounded size; and every value is read with its shape, type
   and size checked first, so a dataset declaring 2**40 elements costs nothing to refuse.
3. :func:`probe` runs a whole read in a short-lived child process first, so a crash or a hang
   inside the library becomes a one-line error instead of a dead or frozen command.

Everything wrong is a :class:`~cifarlin.errors.ModelFileError` naming the file.
"""

from __future__ import annotations

import os
import signal
import stat
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from cifarlin.errors import ModelFileError

SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_FILE_BYTES = 96 << 20  # a model is ~250 KB; a history of a million epochs (the most) ~72 MB
MAX_ATTR_BYTES = 1 << 20  # fixed-size attributes; variable-length text is bounded by the file's size
MAX_MEMBERS = 64  # objects in one group (a history has 8)
MAX_DEPTH = 3
ALLOWED_FILTERS = {1, 2, 3}  # deflate, shuffle, fletcher32
PROBE_SECONDS = 3.0  # plus a second per 20 MB: a model reads in milliseconds

T = TypeVar("T")


def check_file(path: Path, what: str) -> None:
    """Refuse what is not a plausible HDF5 file before the HDF5 library opens it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _bad(path, "no such file") from None
    except OSError as e:
        raise _bad(path, f"cannot be read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise _bad(path, f"is a folder, expected a {what} file")
    if not stat.S_ISREG(st.st_mode):
        raise ModelFileError(
            f"{path}: not a regular file (a FIFO, socket or device?); expected a {what} file"
        )
    if st.st_size > MAX_FILE_BYTES:
        raise ModelFileError(
            f"{path}: {st.st_size} bytes, more than a cifarlin {what} can hold ({MAX_FILE_BYTES >> 20} MiB)"
        )
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise _bad(path, f"cannot be read ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)  # the same file as stat'ed above, not one swapped in since
        if not stat.S_ISREG(st.st_mode):
            raise _bad(path, f"is not a regular file; expected a {what} file")
        head = os.pread(fd, 128, 0)
    finally:
        os.close(fd)
    not_hdf5 = f"{path}: not an HDF5 file, or truncated; expected a cifarlin {what}"
    if head[:8] != SIGNATURE:
        raise ModelFileError(not_hdf5)
    end = _end_of_file_address(head)
    if end is None:
        raise ModelFileError(not_hdf5)
    if end > st.st_size:
        raise _bad(path, f"truncated ({st.st_size} of its {end} bytes); not a usable {what}")


def _end_of_file_address(head: bytes) -> int | None:
    """The end-of-file address the superblock declares (the superblock at offset 0), or None."""
    if len(head) < 16:
        return None
    version = head[8]
    if version in (0, 1):
        size_offsets, size_lengths = head[13], head[14]
        start = 24 + (4 if version == 1 else 0)  # base, free space, end of file, driver addresses
    elif version in (2, 3):
        size_offsets, size_lengths = head[9], head[10]
        start = 12  # base, superblock extension, end of file, root object header addresses
    else:
        return None
    if size_offsets not in (2, 4, 8) or size_lengths not in (2, 4, 8):
        return None
    fmt = {2: "<H", 4: "<I", 8: "<Q"}[size_offsets]
    at = start + 2 * size_offsets
    if len(head) < at + size_offsets:
        return None
    (base,) = struct.unpack_from(fmt, head, start)
    (end,) = struct.unpack_from(fmt, head, at)
    return end if base == 0 else None


class Reader:
    """An open HDF5 file (or group) whose every value is checked before it is read."""

    def __init__(self, node: Any, path: Path):
        self.node, self.path = node, path

    def fail(self, why: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: {why}")

    def __contains__(self, name: str) -> bool:
        return name in self.node

    def group(self, name: str) -> Reader:
        import h5py

        obj = self.node.get(name)
        if not isinstance(obj, h5py.Group):
            raise self.fail(f"no group '{name}'")
        return Reader(obj, self.path)

    def dataset(self, name: str, ndim: int, kinds: str, max_size: int, shape: tuple[int, ...] | None = None):
        """The values of dataset ``name`` as a NumPy array, read only once its rank, shape, element
        kind (NumPy kind letters, e.g. 'f' or 'fi') and size are as expected."""
        import h5py

        ds = self.node.get(name)
        if not isinstance(ds, h5py.Dataset):
            raise self.fail(f"no dataset '{name}'")
        want = f"{kinds}-kind {shape if shape is not None else f'{ndim}-d'}"
        if (
            len(ds.shape) != ndim
            or (shape is not None and ds.shape != shape)
            or ds.dtype.kind not in kinds
            or ds.dtype.itemsize > 8
            or ds.size > max_size
        ):
            raise self.fail(f"dataset '{name}' has shape {ds.shape} and type {ds.dtype}, expected {want}")
        return ds[()]

    def attr(self, name: str, kinds: str, default: Any = ..., shape: tuple[int, ...] = ()) -> Any:
        """Attribute ``name``, checked to be of NumPy kind ``kinds`` ('i' integer, 'f' real,
        'b' bool, 'U'/'S'/'O' text) and ``shape`` before it is read; ``default`` when absent
        (required when no default is given)."""
        attrs = self.node.attrs
        if name not in attrs:
            if default is ...:
                raise self.fail(f"no '{name}' attribute")
            return default
        aid = attrs.get_id(name)
        dt = aid.dtype
        kind = "O" if dt.kind == "O" or (dt.kind == "S" and dt.itemsize == 0) else dt.kind
        if aid.shape != shape or kind not in kinds or aid.get_storage_size() > MAX_ATTR_BYTES:
            raise self.fail(
                f"attribute '{name}' has shape {aid.shape} and type {dt}, expected {kinds} {shape}"
            )
        value = attrs[name]
        if "O" in kinds or "U" in kinds or "S" in kinds:
            value = _text(value) if shape == () else [_text(v) for v in np.asarray(value).ravel()]
            if shape == () and not isinstance(value, str):
                raise self.fail(f"attribute '{name}' is not text")
        return value

    def int(self, name: str, default: Any = ...) -> int:
        v = self.attr(name, "iu", default)
        return v if v is default else int(v)

    def float(self, name: str, default: Any = ...) -> float:
        v = self.attr(name, "fiu", default)
        return v if v is default else float(v)

    def text(self, name: str, default: Any = ...) -> str:
        return self.attr(name, "OUS", default)

    def attr_names(self) -> list[str]:
        names = list(self.node.attrs)
        if len(names) > 4 * MAX_MEMBERS:
            raise self.fail(f"{len(names)} attributes, more than a cifarlin file has")
        return names


def _bad(path: Path, why: str) -> ModelFileError:
    return ModelFileError(f"{path}: {why}")


def _text(v: Any) -> Any:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def check_tree(f: Any, path: Path) -> None:
    """Refuse links, virtual or externally stored datasets, committed types and oversized
    attributes anywhere in the open file ``f``, before any value is read."""
    import h5py

    def walk(group: Any, depth: int) -> None:
        names = list(group)
        if len(names) > MAX_MEMBERS or depth > MAX_DEPTH:
            raise _bad(path, f"'{group.name}' holds more than a cifarlin file does")
        check_attrs(group)
        for name in names:
            link = group.get(name, getlink=True)
            where = f"{group.name.rstrip('/')}/{name}"
            if not isinstance(link, h5py.HardLink):
                kind = "an external" if isinstance(link, h5py.ExternalLink) else "a soft"
                raise _bad(path, f"'{where}' is {kind} link; a cifarlin file holds no links")
            obj = group[name]
            if isinstance(obj, h5py.Group):
                walk(obj, depth + 1)
            elif isinstance(obj, h5py.Dataset):
                check_storage(obj, where)
                check_attrs(obj)
            else:
                raise _bad(path, f"'{where}' is a committed type; a cifarlin file holds none")

    def check_storage(ds: Any, where: str) -> None:
        plist = ds.id.get_create_plist()
        layout = plist.get_layout()
        if layout not in (h5py.h5d.COMPACT, h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED):
            raise ModelFileError(
                f"{path}: '{where}' is a virtual dataset; cifarlin files store their own data"
            )
        if plist.get_external_count():
            raise _bad(path, f"'{where}' keeps its data in another file; refused")
        for i in range(plist.get_nfilters()):
            code = plist.get_filter(i)[0]
            if code not in ALLOWED_FILTERS:
                raise ModelFileError(
                    f"{path}: '{where}' is stored with filter {code}, which cifarlin never uses"
                )

    def check_attrs(obj: Any) -> None:
        names = list(obj.attrs)
        if len(names) > 4 * MAX_MEMBERS:
            raise ModelFileError(
                f"{path}: '{obj.name}' has {len(names)} attributes, more than cifarlin writes"
            )
        for name in names:
            if obj.attrs.get_id(name).get_storage_size() > MAX_ATTR_BYTES:
                raise _bad(path, f"attribute '{name}' is larger than a cifarlin file's")

    walk(f, 0)


@contextmanager
def open_file(path: Path, what: str) -> Iterator[Reader]:
    """``path`` opened for reading after :func:`check_file` and :func:`check_tree`; any error of
    the HDF5 library while reading it becomes a :class:`ModelFileError` naming the file."""
    import h5py

    path = Path(path)
    check_file(path, what)
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise _bad(path, f"not an HDF5 file, or damaged; expected a cifarlin {what}") from None
    try:
        check_tree(f, path)
        yield Reader(f, path)
    except ModelFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, OverflowError) as e:
        raise _bad(path, f"damaged cifarlin {what} ({type(e).__name__}: {e})") from None
    finally:
        f.close()


def probe(path: Path, read: Callable[[Path], T], what: str, seconds: float | None = None) -> Any:
    """Run ``read(path)`` in a child process first (one of :mod:`cifarlin.store.helper`'s, never a
    fork of this process); a crash (a signal), a hang (longer than ``seconds``, by default 3 s
    plus 1 s per 20 MB of file, counted from the child's start) or a :class:`ModelFileError`
    there is raised here as a one-line error. Returns what ``read`` returned when that is JSON
    (else None). ``read`` must be picklable: a module's function, or a ``functools.partial`` of one.

    Costs a fork of the helper (a few ms; the helper's own start, once a command, overlaps);
    where no helper can be had (no fork or no descriptor passing on this platform), nothing.
    """
    from cifarlin.store import helper

    if not helper.available():  # pragma: no cover - Windows
        return None
    if seconds is None:
        try:
            seconds = PROBE_SECONDS + os.stat(path).st_size / 20e6
        except OSError:
            seconds = PROBE_SECONDS
    try:
        ended = helper.run(read, path, seconds=seconds)
    except OSError:  # no helper could be started: read as without a probe
        return None
    if ended.how == "timeout":
        raise ModelFileError(
            f"{path}: the HDF5 library did not finish reading it in {seconds:g} s (a damaged file?); refused"
        )
    if ended.how == "signal":
        name = signal.Signals(ended.code).name
        raise _bad(path, f"the HDF5 library crashed reading it ({name}): the file is damaged")
    if ended.how == "exit" and ended.code == 0:
        return ended.result
    if ended.how == "exit":
        if ended.error_type == "ModelFileError" and ended.error:  # the read's own verdict
            raise ModelFileError(ended.error)
        raise _bad(path, f"damaged cifarlin {what} ({ended.error_type or 'no result'})")
    if ended.how == "refused" and ended.code:  # a read the helper could not even load: a bug
        raise RuntimeError(f"the probe of {path} could not start: {ended.error_type}: {ended.error}")
    return None  # the helper would not fork (it had threads) or went away: read as without a probe
