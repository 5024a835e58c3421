"""Finding, reading, validating and normalising CIFAR-10.

Both official layouts are read: the python version (``cifar-10-batches-py/``: pickled batches,
loaded by :mod:`cifarlin.data.safepickle`) and the binary version (``cifar-10-batches-bin/``: records of
1 label byte + 3072 pixel bytes). Images come back as (N, 3072) uint8 rows in the official channel
layout (1024 red, 1024 green, 1024 blue values, each row-major over the 32 x 32 image) with (N,)
int64 labels.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import stat
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from cifarlin.core.config import N_TRAIN_BATCHES, SplitSpec, TrainConfig
from cifarlin.core.model import D, K
from cifarlin.data.safepickle import safe_unpickle, text
from cifarlin.errors import CifarlinError, DataError, DataNotFoundError, bad_value

if TYPE_CHECKING:
    from cifarlin.core.augment import Augment
    from cifarlin.core.ridge import Moments, RidgePath
    from cifarlin.features.kmeans import FeatureMap

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
        return self.digest if isinstance(self.digest, str) else self.digest.result()


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


# ---------------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------------


SMALL_PAGES_FROM = 16 << 20  # bytes: arrays this large are allocated by :func:`empty_rows`


def empty_rows(shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
    """``np.empty(shape, dtype)`` for the large arrays a run fills once (the normalised splits),
    mapped with every page already in place (``MAP_POPULATE``), in the kernel's ordinary pages.

    NumPy's own allocation asks Linux for transparent huge pages for every array over 4 MB;
    where memory is fragmented (a full page cache: any machine that has been up a while) the
    kernel then compacts memory when the array is first written, and faults the pages in one by
    one otherwise. In a fresh process here, reading and normalising the three default batches
    took 0.21 s or 0.92 s that way (by luck), 0.39 s with ordinary pages faulted one by one,
    and 0.30 s populated in one call; the training loop reads them as fast.
    """
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) * dtype.itemsize
    try:
        if n < SMALL_PAGES_FROM or not hasattr(mmap, "MAP_POPULATE"):
            return np.empty(shape, dtype=dtype)
        # anonymous and private: zero-filled, unmapped with the array's last view
        buf = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
    except (MemoryError, OSError) as e:
        if isinstance(e, OSError) and e.errno != errno.ENOMEM:
            raise
        raise CifarlinError(
            f"out of memory: cannot allocate {n / 2**20:,.0f} MB for {shape[0]:,} rows of {dtype}; "
            "free memory, or use less data (fewer --train-batches, fewer centroids)"
        ) from None
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


EXACT_ROWS = (2**32 - 1) // 255**2  # rows whose sums of squared pixels fit in uint32 (66,051)


@dataclass(frozen=True)
class Normalizer:
    """x -> (x / scale - mean) / std per input, with the training split's mean and std (d,):
    scale 255 for pixels (mean and std of x / 255, as the original work), 1 for features."""

    mean: np.ndarray
    std: np.ndarray
    scale: float = 255.0

    @classmethod
    def fit(cls, chunks: Sequence[np.ndarray]) -> Normalizer:
        """Exact per-input mean and (population) std of uint8 images given as row blocks (n, d).

        Sums of the pixel values and of their squares are exact integers, so the result does not
        depend on how the rows are split or summed. They are taken in the narrowest types that
        hold them (2.6 times faster than in int64): a square of a uint8 fits in uint16, the sums
        of up to ``EXACT_ROWS`` rows in uint32, and those go into int64 totals. A constant input
        gets std 1 (only centred).
        """
        N = sum(len(c) for c in chunks)
        s1 = np.zeros(D, dtype=np.int64)
        s2 = np.zeros(D, dtype=np.int64)
        sq = np.empty((256, D), dtype=np.uint16)  # reused: no fresh memory per block
        part1 = np.zeros(D, dtype=np.uint32)  # sums of at most EXACT_ROWS rows
        part2 = np.zeros(D, dtype=np.uint32)
        rows = 0
        for images in chunks:
            for i in range(0, len(images), len(sq)):
                block = images[i : i + len(sq)]
                if rows + len(block) > EXACT_ROWS:
                    s1 += part1
                    s2 += part2
                    part1[:] = part2[:] = rows = 0
                part1 += block.sum(axis=0, dtype=np.uint32)
                np.multiply(block, block, out=sq[: len(block)], dtype=np.uint16)
                part2 += sq[: len(block)].sum(axis=0, dtype=np.uint32)
                rows += len(block)
        s1 += part1
        s2 += part2
        mean = s1 / (255.0 * N)
        std = np.sqrt((s2 * N - s1 * s1) / (255.0 * N) ** 2)  # numerator exact in int64
        std[std == 0] = 1.0
        return cls(mean=mean, std=std)

    def apply(
        self, images: np.ndarray, dtype: np.dtype | type = np.float32, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Normalised images (N, d) in ``dtype``, written into ``out`` when given.

        Computed as (x - scale mean) / (scale std) in ``dtype`` (uint8 -> float is exact, so this
        equals (x/scale - mean) / std up to the rounding of the two constants), a block of rows at a time:
        each block is converted, shifted and scaled while it is in cache (3 passes over memory
        would cost three times as much, and the first touch of fresh memory more).
        """
        if out is None:
            out = empty_rows(images.shape, dtype)
        shift = (self.scale * self.mean).astype(out.dtype)
        scale = (self.scale * self.std).astype(out.dtype)
        rows = max(1, (1 << 21) // max(1, out.shape[1] * out.itemsize))  # about 2 MB per block
        for i in range(0, len(images), rows):
            block = out[i : i + rows]
            np.copyto(block, images[i : i + rows], casting="unsafe")
            block -= shift
            block /= scale
        return out


@dataclass
class Prepared:
    """Normalised splits ready for the model: X (N, d) float, y (N,) int64 per split."""

    X: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    normalizer: Normalizer
    class_names: list[str]
    dataset: Dataset
    spec: SplitSpec
    checksums: dict[str, str]
    raw_train: np.ndarray | None = None  # (N, d) uint8: the training images, for pixel-space augmentation
    moments: Moments | None = None  # exact sums over the training images' views, for the ridge solver
    ridge_path: RidgePath | None = None  # the solver's eigendecomposition, once per Prepared
    features: FeatureMap | None = None  # X are the standardised features of this map, not pixels


def _training_rows(batches: list[Batch], n_train: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``n_train`` rows of the training batches (the rest validate), as (images,
    labels) blocks: views, no copies."""
    head, left = [], n_train
    for b in batches:
        head.append((b.images[:left], b.labels[:left]))
        left -= len(head[-1][1])
    return head


def _fit_training_rows(batches: list[Batch], n_train: int) -> Normalizer:
    """Normaliser of the first ``n_train`` rows of the training batches (the rest validate)."""
    return Normalizer.fit([images for images, _ in _training_rows(batches, n_train)])


def training_sample(
    dataset: Dataset, spec: SplitSpec, n: int, dtype: np.dtype | type = np.float64
) -> tuple[np.ndarray, np.ndarray, Reader]:
    """The first ``n`` training images, normalised as in training (by the whole training split's
    mean and std): X (n, 3072), y (n,)."""
    reader = Reader(dataset)
    batches, n_train = reader.train_batches(spec)
    reader.release()
    if n > n_train:
        raise bad_value("n", n, f"the training split holds only {n_train} images")
    norm = _fit_training_rows(batches, n_train)
    images = np.concatenate([b.images for b in batches])[:n]
    labels = np.concatenate([b.labels for b in batches])[:n]
    return norm.apply(images, dtype), labels, reader


def prepared_key(cfg: TrainConfig) -> tuple[Any, ...]:
    """What decides a run's prepared data: runs with equal keys share one :class:`Prepared`
    (``train --setting all``, a sweep's worker). Its split and precision; for gradient descent,
    whether augmentation needs the raw training images; for the ridge solver, the views its
    statistics sum over (they also decide its normaliser); for features, the feature map and
    whether mirrored copies join the training rows."""
    if cfg.features is not None:
        return (cfg.split, cfg.dtype, "features", cfg.features, cfg.augment, cfg.solver)
    if cfg.solver == "ridge":
        return (cfg.split, cfg.dtype, "ridge", cfg.augment)
    return (cfg.split, cfg.dtype, cfg.augment != "none")


def prepare_run(dataset: Dataset, cfg: TrainConfig, **feature_args: Any) -> Prepared:
    """The prepared data of the run ``cfg`` (see :func:`prepared_key`; ``feature_args``: those of
    :func:`cifarlin.features.kmeans.prepare`)."""
    from cifarlin.core.augment import parse_augment

    if cfg.features is not None:
        from cifarlin.features import kmeans as features

        return features.prepare(dataset, cfg, **feature_args)
    dtype = np.dtype(cfg.dtype)
    if cfg.solver == "ridge":
        return prepare(dataset, cfg.split, dtype, views=parse_augment(cfg.augment))
    return prepare(dataset, cfg.split, dtype, keep_raw=cfg.augment != "none")


def prepare(
    dataset: Dataset,
    spec: SplitSpec,
    dtype: np.dtype | type = np.float32,
    keep_raw: bool = False,
    views: Augment | None = None,
) -> Prepared:
    """Read the splits of ``spec``, fit the normaliser on the training split, normalise all.

    Each raw batch is converted into its split's contiguous float array and released at once:
    the peak memory is the float arrays plus the raw training batches (or one other raw batch),
    never a float64 copy. With ``keep_raw`` the raw training images stay too (uint8, a quarter
    of the float32 matrix), for augmenting in pixel space. With ``views`` (the ridge solver's),
    the exact sums over those views of the training images come along (``Prepared.moments``),
    and the normaliser is that of the views: of the training set the solver fits.
    """
    reader = Reader(dataset)
    batches, n_train = reader.train_batches(spec)
    moments = None
    if views is None:
        norm = _fit_training_rows(batches, n_train)
    else:
        from cifarlin.core import ridge

        moments = ridge.fold(ridge.moments(_training_rows(batches, n_train)), views)
        norm = ridge.normalizer(moments)
    labels = np.concatenate([b.labels for b in batches])
    chunks = [b.images for b in batches]
    del batches
    raw = None
    if keep_raw:  # one uint8 copy of all rows, the batch files' arrays released before normalising
        chunks = [np.concatenate(chunks)]
        raw = chunks[0][:n_train]
    X_all = empty_rows((len(labels), D), dtype)  # (N, d), one contiguous row per image
    row = 0
    while chunks:
        images = chunks.pop(0)
        norm.apply(images, out=X_all[row : row + len(images)])
        row += len(images)
        del images
    X = {"train": X_all[:n_train]}
    y = {"train": labels[:n_train]}
    if spec.val_size is not None:
        X["val"], y["val"] = X_all[n_train:], labels[n_train:]
    for name in ("val", "test") if spec.val_size is None else ("test",):
        b = reader.batch(2 if name == "val" else "test")
        X[name], y[name] = norm.apply(b.images, dtype), b.labels
        del b
    return Prepared(X, y, norm, read_class_names(dataset), dataset, spec, reader.checksums, raw, moments)
