"""Finding, reading and validating CIFAR-10.

Both official layouts are read: the python version (``cifar-10-batches-py/``: pickled batches,
loaded by :mod:`cifarlin.data.safepickle`) and the binary version (``cifar-10-batches-bin/``: records of
1 label byte + 3072 pixel bytes). Images come back as (N, 3072) uint8 rows in the official channel
layout (1024 red, 1024 green, 1024 blue values, each row-major over the 32 x 32 image) with (N,)
int64 labels. Normalising them is :mod:`cifarlin.core.normalize`, a run's data
:mod:`cifarlin.work.prepare`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from cifarlin.core.config import N_TRAIN_BATCHES, SplitSpec
from cifarlin.core.model import D, K
from cifarlin.data.safepickle import safe_unpickle, text
from cifarlin.errors import DataError, DataNotFoundError, bad_value, wait_held

Format = Literal["python", "binary"]  # the layouts of config.LAYOUTS

FOLDERS: dict[str, str] = {"python": "cifar-10-batches-py", "binary": "cifar-10-batches-bin"}
RECORD = 1 + D  # bytes per image in the binary version


def batch_name(fmt: Format, batch: int | str) -> str:
    """File name of training batch 1..5, or of the test batch when ``batch == 'test'``."""
    stem = "test_batch" if batch == "test" else f"data_batch_{batch}"
    return stem + (".bin" if fmt == "binary" else "")


def meta_name(fmt: Format) -> str:
    return "batches.meta.txt" if fmt == "binary" else "batches.meta"


def dataset_files(fmt: Format) -> list[str]:
    """Every file an extracted dataset folder must hold."""
    names = [batch_name(fmt, i) for i in range(1, N_TRAIN_BATCHES + 1)]
    return [*names, batch_name(fmt, "test"), meta_name(fmt)]


# ---------------------------------------------------------------------------------------------
# Where the data live
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dataset:
    """An extracted CIFAR-10 folder and the layout of its files."""

    folder: Path
    format: Format

    def path(self, name: str) -> Path:
        return self.folder / name


def locate(root: Path) -> Dataset | None:
    """The dataset folder under ``root``, or ``root`` itself when it is one; None if absent.

    ``root`` may be the parent (``root/cifar-10-batches-py``) or the dataset folder itself, under
    any name (as left by torchvision or Keras). The python version wins when both are present.
    """
    for fmt in ("python", "binary"):
        if (root / batch_name(fmt, 1)).is_file() or (root / batch_name(fmt, "test")).is_file():
            return Dataset(root, fmt)
    for fmt in ("python", "binary"):
        if (root / FOLDERS[fmt]).is_dir():
            return Dataset(root / FOLDERS[fmt], fmt)
    return None


def check_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise bad_value("data_dir", str(root), "is a file, not a folder")


def find(root: Path) -> Dataset:
    """The dataset in or under ``root``, or :class:`DataNotFoundError`."""
    root = Path(root).expanduser()
    check_root(root)
    dataset = locate(root) if root.is_dir() else None
    if dataset is None:
        raise DataNotFoundError(
            f"no CIFAR-10 data in {root} (looked for {root / FOLDERS['python']} and "
            f"{root / FOLDERS['binary']}): run 'cifarlin download' or pass --data-dir DIR"
        )
    return dataset


# ---------------------------------------------------------------------------------------------
# Reading and validating files
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One batch file: images (N, 3072) uint8, labels (N,) int64, and the file's MD5 (computed
    on another thread while the images are used: ``md5`` waits for it)."""

    images: np.ndarray
    labels: np.ndarray
    digest: Future[str] | str

    @property
    def md5(self) -> str:
        return (
            self.digest if isinstance(self.digest, str) else wait_held(self.digest.result, self.digest.done)
        )


_hashing: ThreadPoolExecutor | None = None


def _md5_soon(raw: bytes) -> Future[str]:
    """The MD5 of ``raw``, computed on a helper thread (hashlib releases the GIL): reading a batch
    costs its unpickling, not also its hashing."""
    global _hashing
    if _hashing is None:
        _hashing = ThreadPoolExecutor(1, thread_name_prefix="cifarlin-md5")
    return _hashing.submit(lambda: hashlib.md5(raw).hexdigest())


def _fresh_copy_hint(path: Path) -> str:
    folder = path.parent
    root = folder.parent if folder.name in FOLDERS.values() else folder
    return f"fetch a fresh copy with 'cifarlin download --force --data-dir {root}'"


#: The largest file of each kind cifarlin reads, checked before reading: an official batch is
#: 30,730,000 bytes (binary) or about 31 MB (python), the meta files a few hundred bytes. A
#: bigger file (a sparse or runaway one) is refused at once instead of being read and hashed.
MAX_BATCH_BYTES = 64 << 20
MAX_META_BYTES = 1 << 20

_KINDS = (
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def _check_regular(path: Path, st: os.stat_result, limit: int) -> None:
    """Refuse anything but a regular file of at most ``limit`` bytes (opening a FIFO would block
    forever, a device would never end)."""
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{path}: is a folder, expected a CIFAR-10 file")
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _KINDS if test(st.st_mode)), "special file")
        raise DataError(f"{path}: is a {kind}, not a regular file; expected a CIFAR-10 file")
    if st.st_size > limit:
        raise _too_big(path, f"{st.st_size:,} bytes", limit)


def _too_big(path: Path, size: str, limit: int) -> DataError:
    return DataError(
        f"{path}: {size}, more than a CIFAR-10 file of its kind ever holds ({limit:,} bytes); "
        f"{_fresh_copy_hint(path)}"
    )


def _read_bytes(path: Path, limit: int, into: bytearray | None = None) -> bytes | bytearray:
    """The whole of the regular file ``path``, at most ``limit`` bytes, read once.

    The file is checked by ``os.stat`` before it is opened, and again by ``fstat`` once open (it
    is opened non-blocking, so a FIFO put in its place meanwhile cannot block the open either).
    With ``into`` of the file's size, the bytes are read into it and it is returned (cut to what
    was read): memory already in use takes a third of the time of fresh memory, whose pages the
    kernel hands out one by one (3 ms against 13 ms for a batch file here).
    """
    try:
        _check_regular(path, os.stat(path), limit)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise DataError(f"{path}: missing; {_fresh_copy_hint(path)}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    with open(fd, "rb") as f:
        try:
            st = os.fstat(fd)
            _check_regular(path, st, limit)
            if hasattr(os, "set_blocking"):
                os.set_blocking(fd, True)
            raw: bytes | bytearray
            if into is not None and st.st_size == len(into):
                del into[f.readinto(into) :]  # a file cut short meanwhile: what it still held
                raw = into
            else:
                raw = f.read(st.st_size)  # exactly the size: read(limit) would allocate the limit
            more = f.read(1)
            if more:  # it grew since the stat, or reports no size (as /proc files do)
                raw = bytes(raw) + more + f.read(limit - len(raw))
        except OSError as e:
            raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    if len(raw) > limit:
        raise _too_big(path, "more bytes than its size said", limit)
    return raw


def _size(path: Path) -> int:
    """The size ``os.stat`` gives ``path``, or 0 (:func:`_read_bytes` says what is wrong)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _check_batch(path: Path, images: object, labels: object) -> Batch:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        what = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
        raise DataError(f"{path}: images have type {what}, expected uint8")
    if images.ndim != 2 or images.shape[1] != D or images.shape[0] == 0:
        raise DataError(f"{path}: images have shape {images.shape}, expected (N, {D}) with N > 0")
    if isinstance(labels, np.ndarray):
        lab = labels
    elif isinstance(labels, list) and all(type(v) is int and -(2**62) < v < 2**62 for v in labels):
        lab = np.array(labels, dtype=np.int64)
    else:
        lab = np.array([])
    if lab.ndim != 1 or lab.dtype.kind not in "iu" or (len(lab) == 0 and len(images) > 0):
        raise DataError(f"{path}: labels are not a list of integers")
    if len(lab) != len(images):
        raise DataError(f"{path}: {len(lab)} labels for {len(images)} images")
    bad = (lab < 0) | (lab >= K)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{path}: label {int(lab[i])} at index {i} is outside 0..{K - 1}")
    return Batch(images=images, labels=lab.astype(np.int64), digest="")


def read_batch(path: Path, fmt: Format, scratch: bytearray | None = None) -> Batch:
    """Read and validate one batch file of either format (read once: the MD5 is of the same bytes).

    A python batch may be read into ``scratch`` (the unpickler copies what it keeps), which must
    then stay unchanged until the MD5 is done; a binary batch's images are views of its bytes,
    so it never is."""
    raw = _read_bytes(path, MAX_BATCH_BYTES, scratch if fmt == "python" else None)
    if fmt == "binary":
        if len(raw) == 0 or len(raw) % RECORD:
            raise DataError(
                f"{path}: {len(raw)} bytes is not a whole number of {RECORD}-byte records "
                "(truncated or not a CIFAR-10 binary batch)"
            )
        digest = _md5_soon(raw)
        records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
        batch = _check_batch(path, records[:, 1:], records[:, 0])  # images: a view, no copy
        return Batch(batch.images, batch.labels, digest)
    if not raw:
        raise DataError(f"{path}: empty file; {_fresh_copy_hint(path)}")
    digest = _md5_soon(raw)
    obj = safe_unpickle(raw, path)
    missing = [k for k in ("data", "labels") if k not in obj]
    if missing:
        keys = ", ".join(sorted(map(str, obj))) or "none"
        raise DataError(f"{path}: no {' or '.join(missing)!s} entry (has: {keys})")
    batch = _check_batch(path, obj["data"], obj["labels"])
    return Batch(batch.images, batch.labels, digest)


def read_class_names(dataset: Dataset) -> list[str]:
    """The 10 class names, from ``batches.meta`` or ``batches.meta.txt``."""
    return _class_names(dataset)[0]


def _class_names(dataset: Dataset) -> tuple[list[str], str]:
    """The 10 class names and the MD5 of the file they were read from."""
    path = dataset.path(meta_name(dataset.format))
    raw = _read_bytes(path, MAX_META_BYTES)
    if dataset.format == "binary":
        names: object = [ln.strip() for ln in raw.decode("utf-8", "replace").splitlines()]
        names = [n for n in names if n]
    else:
        names = safe_unpickle(raw, path).get("label_names")
        if isinstance(names, list):
            names = [text(n) for n in names]
    if not (isinstance(names, list) and len(names) == K and all(isinstance(n, str) for n in names)):
        raise DataError(f"{path}: expected {K} class names")
    return list(names), hashlib.md5(raw).hexdigest()


def verify_dataset(dataset: Dataset) -> dict[str, str]:
    """Validate every file of a dataset folder; returns {file name: MD5}."""
    sums = {}
    for name in dataset_files(dataset.format):
        if name.startswith("batches.meta"):
            sums[name] = _class_names(dataset)[1]
        else:
            sums[name] = read_batch(dataset.path(name), dataset.format).md5
    return sums


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------


@dataclass
class Split:
    """Raw images (N, 3072) uint8 and labels (N,) of one split."""

    images: np.ndarray
    labels: np.ndarray


class Reader:
    """Reads batches of one dataset folder and remembers the MD5 of every file it read."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._digests: dict[str, Batch] = {}
        self._scratch = bytearray()  # the file bytes of a python batch, reused by the next one

    @property
    def checksums(self) -> dict[str, str]:
        """{file name: MD5} of every batch read (waiting for the hashes still being computed)."""
        return {name: batch.md5 for name, batch in self._digests.items()}

    def batch(self, which: int | str) -> Batch:
        name = batch_name(self.dataset.format, which)
        for earlier in self._digests.values():
            _ = earlier.md5  # its hash done (and its file's bytes free) before the next read
        path = self.dataset.path(name)
        scratch = None
        if self.dataset.format == "python" and 0 < (size := _size(path)) <= MAX_BATCH_BYTES:
            if not self._scratch:
                self._scratch = bytearray(size)
            del self._scratch[size:]  # resized in place: the batch files differ by a few bytes
            self._scratch.extend(bytes(size - len(self._scratch)))
            scratch = self._scratch
        try:
            batch = read_batch(path, self.dataset.format, scratch)
        except BaseException:
            self._scratch = bytearray()  # its MD5 may still be reading it: a fresh one next time
            raise
        # Only the digest is kept: fresh empty arrays, as a view (images[:0]) would keep the file alive
        self._digests[name] = Batch(np.empty((0, D), np.uint8), np.empty(0, np.int64), batch.digest)
        return batch

    def release(self) -> None:
        """Free the read buffer (once no more batches will be read)."""
        self._scratch = bytearray()

    def batch_md5(self, which: int | str) -> str:
        """The MD5 of a batch file this reader read."""
        return self._digests[batch_name(self.dataset.format, which)].md5

    def train_batches(self, spec: SplitSpec) -> tuple[list[Batch], int]:
        """The training batches of ``spec`` and how many of their rows train (the rest validate)."""
        batches = [self.batch(i) for i in spec.train_batches]
        n_all = sum(len(b.labels) for b in batches)
        n_train = n_all - (spec.val_size or 0)
        if n_train < 1:
            raise bad_value("val_size", spec.val_size, f"the training batches hold only {n_all} images")
        return batches, n_train


def load_split(dataset: Dataset, spec: SplitSpec, name: str) -> tuple[Split, Reader]:
    """The raw images and labels of split ``name`` ('train', 'val' or 'test')."""
    reader = Reader(dataset)
    if name == "test" or (name == "val" and spec.val_size is None):
        b = reader.batch("test" if name == "test" else 2)
        reader.release()
        return Split(b.images, b.labels), reader
    batches, n_train = reader.train_batches(spec)
    reader.release()
    images = np.concatenate([b.images for b in batches])
    labels = np.concatenate([b.labels for b in batches])
    rows = slice(0, n_train) if name == "train" else slice(n_train, None)
    return Split(images[rows], labels[rows]), reader
