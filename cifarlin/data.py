"""Finding, reading, validating and normalising CIFAR-10.

Both official layouts are read: the python version (``cifar-10-batches-py/``: pickled batches)
and the binary version (``cifar-10-batches-bin/``: records of 1 label byte + 3072 pixel bytes).
Images come back as (N, 3072) uint8 rows in the official channel layout (1024 red, 1024 green,
1024 blue values, each row-major over the 32 x 32 image) with (N,) int64 labels.

Pickles are never trusted: the unpickler below admits only the four numpy globals the official
files name, and even those are stand-ins that build arrays from validated raw bytes; numpy's own
unpickling code never sees the file.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from cifarlin.errors import ConfigError, DataError, DataNotFoundError
from cifarlin.model import D, K

Format = Literal["python", "binary"]

FOLDERS: dict[str, str] = {"python": "cifar-10-batches-py", "binary": "cifar-10-batches-bin"}
TRAIN_BATCHES = 5
RECORD = 1 + D  # bytes per image in the binary version


def batch_name(fmt: Format, batch: int | str) -> str:
    """File name of training batch 1..5, or of the test batch when ``batch == 'test'``."""
    stem = "test_batch" if batch == "test" else f"data_batch_{batch}"
    return stem + (".bin" if fmt == "binary" else "")


def meta_name(fmt: Format) -> str:
    return "batches.meta.txt" if fmt == "binary" else "batches.meta"


def dataset_files(fmt: Format) -> list[str]:
    """Every file an extracted dataset folder must hold."""
    names = [batch_name(fmt, i) for i in range(1, TRAIN_BATCHES + 1)]
    return [*names, batch_name(fmt, "test"), meta_name(fmt)]


# ---------------------------------------------------------------------------------------------
# Where the data lives
# ---------------------------------------------------------------------------------------------


def default_data_dir() -> Path:
    """``$CIFARLIN_DATA_DIR``, else ``$XDG_CACHE_HOME/cifarlin``, else ``~/.cache/cifarlin``."""
    if os.environ.get("CIFARLIN_DATA_DIR"):
        return Path(os.environ["CIFARLIN_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "cifarlin"


def resolve_data_dir(data_dir: Path | None) -> Path:
    """The folder every command uses: ``--data-dir`` if given, else :func:`default_data_dir`."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


@dataclass(frozen=True)
class Source:
    """An extracted CIFAR-10 folder and the layout of its files."""

    folder: Path
    format: Format

    def path(self, name: str) -> Path:
        return self.folder / name


def locate(root: Path) -> Source | None:
    """The dataset folder under ``root``, or ``root`` itself when it is one; None if absent.

    ``root`` may be the parent (``root/cifar-10-batches-py``) or the dataset folder itself, under
    any name (as left by torchvision or Keras). The python version wins when both are present.
    """
    for fmt in ("python", "binary"):
        if (root / batch_name(fmt, 1)).is_file() or (root / batch_name(fmt, "test")).is_file():
            return Source(root, fmt)
    for fmt in ("python", "binary"):
        if (root / FOLDERS[fmt]).is_dir():
            return Source(root / FOLDERS[fmt], fmt)
    return None


def check_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root}: is a file, not a folder; point --data-dir (or $CIFARLIN_DATA_DIR) at a folder")


def find(data_dir: Path | None = None) -> Source:
    """Locate the dataset by the resolution rule, or raise :class:`DataNotFoundError`."""
    root = resolve_data_dir(data_dir)
    check_root(root)
    source = locate(root) if root.is_dir() else None
    if source is None:
        raise DataNotFoundError(
            f"no CIFAR-10 data in {root} (looked for {root / FOLDERS['python']} and "
            f"{root / FOLDERS['binary']}): run 'cifarlin download' or pass --data-dir DIR"
        )
    return source


# ---------------------------------------------------------------------------------------------
# The restricted unpickler
# ---------------------------------------------------------------------------------------------

_PLAIN_DTYPES = {"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8", "b1"}


class _Refused(pickle.UnpicklingError):
    pass


def _text(value: object) -> object:
    return value.decode("latin-1") if isinstance(value, bytes) else value


class _Global:
    """A stand-in for one of the allowed numpy globals: it can be called (building a stub) but
    not given state or attributes, so a pickle cannot modify it for later loads."""

    __slots__ = ("name", "make")

    def __init__(self, name: str, make: Callable[..., object] | None):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "make", make)

    def __call__(self, *args: object) -> object:
        if self.make is None:
            raise _Refused(f"{self.name} is called")
        return self.make(*args)

    def __setstate__(self, state: object) -> None:
        raise _Refused(f"{self.name} is given a state")

    def __setattr__(self, key: str, value: object) -> None:
        raise _Refused(f"{self.name} is given an attribute")


_NDARRAY = _Global("numpy.ndarray", None)


class _DTypeStub:
    """Stands for ``numpy.dtype(spec, align, copy)``: only plain numeric dtypes."""

    def __init__(self, spec: object, align: object = False, copy: object = True):
        spec = _text(spec)
        if not isinstance(spec, str) or spec not in _PLAIN_DTYPES:
            raise _Refused(f"dtype {spec!r} is not a plain numeric dtype")
        self.spec = spec
        self.byteorder = "|"

    def __setstate__(self, state: object) -> None:
        # (version, byteorder, subarray, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 5 or any(s is not None for s in state[2:5]):
            raise _Refused("structured or sub-array dtypes are not allowed")
        order = _text(state[1])
        if order not in ("<", ">", "|", "="):
            raise _Refused(f"byte order {order!r} is not valid")
        self.byteorder = order

    def dtype(self) -> np.dtype:
        dt = np.dtype(self.spec)
        return dt.newbyteorder(self.byteorder) if self.byteorder in "<>" else dt


class _ArrayStub:
    """Stands for ``numpy.core.multiarray._reconstruct(ndarray, shape, typecode)``.

    Its state is checked and turned into an array with ``np.frombuffer``: numpy's own
    ``ndarray.__setstate__`` never runs on data from the file.
    """

    def __init__(self, cls: object, shape: object = (0,), typecode: object = b"b"):
        if cls is not _NDARRAY:
            raise _Refused("_reconstruct of something other than numpy.ndarray")
        self.array: np.ndarray | None = None

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("array state is not valid")
        shape, dtype, fortran, raw = state[-4:]
        if not (isinstance(shape, tuple) and len(shape) <= 2):
            raise _Refused(f"array shape {shape!r} is not valid")
        if not all(type(n) is int and n >= 0 for n in shape):
            raise _Refused(f"array shape {shape!r} is not valid")
        if not isinstance(dtype, _DTypeStub):
            raise _Refused("array dtype is not valid")
        if isinstance(raw, str):
            raw = raw.encode("latin-1")
        if not isinstance(raw, bytes | bytearray):
            raise _Refused("array data is not raw bytes")
        dt = dtype.dtype()
        want = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        if len(raw) != want:
            raise _Refused(f"array data has {len(raw)} bytes, its shape {shape} needs {want}")
        self.array = np.frombuffer(raw, dtype=dt).reshape(shape, order="F" if fortran else "C")


_RECONSTRUCT = _Global("numpy.core.multiarray._reconstruct", _ArrayStub)
_GLOBALS: dict[tuple[str, str], _Global] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Global("numpy.dtype", _DTypeStub),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(
                f"it asks for the Python global {module}.{name}, which CIFAR-10 files never use"
            ) from None


MAX_DEPTH = 4  # the official files nest dict -> list -> item
MAX_ITEMS = 1_000_000  # list and dict entries in one file (an official batch has about 20,000)


def _unstub(obj: object) -> object:
    """Plain data for the unpickled object: arrays for array stubs, str keys; anything else that is
    not plain data (a bare global, a container met twice, a cycle, deep nesting) is refused, so
    a small file cannot expand into a huge structure."""
    seen: set[int] = set()
    items = 0

    def walk(o: object, depth: int) -> object:
        nonlocal items
        if isinstance(o, _ArrayStub):
            if o.array is None:
                raise _Refused("an array without data")
            return o.array
        if isinstance(o, dict | list | tuple):
            if depth > MAX_DEPTH:
                raise _Refused(f"containers nested more than {MAX_DEPTH} deep")
            if id(o) in seen:
                raise _Refused("a container referenced twice (or a cycle)")
            seen.add(id(o))
            items += len(o)
            if items > MAX_ITEMS:
                raise _Refused(f"more than {MAX_ITEMS} list or dict entries")
            if isinstance(o, dict):
                return {_text(k): walk(v, depth + 1) for k, v in o.items()}
            return [walk(v, depth + 1) for v in o]
        if isinstance(o, bool | int | float | str | bytes | bytearray) or o is None:
            return o
        raise _Refused(f"a {type(o).__name__} where plain data was expected")

    return walk(obj, 0)


def safe_unpickle(stream: BinaryIO, path: Path) -> dict:
    """Unpickle a CIFAR-10 python-version file without trusting it.

    Returns a dict with str keys; raises :class:`DataError` naming ``path`` for anything that is
    not a plain pickle of a dict of numbers, strings, lists and numeric arrays.
    """
    try:
        obj = _unstub(_SafeUnpickler(stream, encoding="bytes").load())
    except _Refused as e:
        raise DataError(f"{path}: refused to load: {e} (the file may be hostile)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, OverflowError, RecursionError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: truncated or not a CIFAR-10 pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: holds a {type(obj).__name__}, expected a dict")
    return obj


class _HashingReader:
    """A read-only file that feeds every byte it hands out to an MD5: the file is read once,
    without a second copy of it in memory."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.md5 = hashlib.md5()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.md5.update(data)
        return data

    def readline(self, n: int = -1) -> bytes:
        data = self.f.readline(n)
        self.md5.update(data)
        return data

    def peek(self, n: int = 0) -> bytes:  # lets the unpickler prefetch: far fewer read() calls
        return self.f.peek(n)

    def readinto(self, buf: bytearray | memoryview) -> int:
        n = self.f.readinto(buf)
        self.md5.update(memoryview(buf)[:n])
        return n

    def hexdigest(self) -> str:
        while self.read(1 << 20):  # whatever follows the pickle counts too
            pass
        return self.md5.hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading and validating files
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One batch file: images (N, 3072) uint8, labels (N,) int64, and the file's MD5."""

    images: np.ndarray
    labels: np.ndarray
    md5: str


def _fresh_copy_hint(path: Path) -> str:
    folder = path.parent
    root = folder.parent if folder.name in FOLDERS.values() else folder
    return f"fetch a fresh copy with 'cifarlin download --force --data-dir {root}'"


@contextmanager
def _open(path: Path) -> Iterator[BinaryIO]:
    try:
        with open(path, "rb") as f:
            yield f
    except FileNotFoundError:
        raise DataError(f"{path}: missing; {_fresh_copy_hint(path)}") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a CIFAR-10 file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None


def _read_bytes(path: Path) -> bytes:
    with _open(path) as f:
        return f.read()


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
    return Batch(images=images, labels=lab.astype(np.int64), md5="")


def read_batch(path: Path, fmt: Format) -> Batch:
    """Read and validate one batch file of either format (reading it once, hashing as it goes)."""
    if fmt == "binary":
        raw = _read_bytes(path)
        if len(raw) == 0 or len(raw) % RECORD:
            raise DataError(
                f"{path}: {len(raw)} bytes is not a whole number of {RECORD}-byte records "
                "(truncated or not a CIFAR-10 binary batch)"
            )
        records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)
        batch = _check_batch(path, records[:, 1:], records[:, 0])  # images: a view, no copy
        return Batch(batch.images, batch.labels, hashlib.md5(raw).hexdigest())
    with _open(path) as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise DataError(f"{path}: empty file; {_fresh_copy_hint(path)}")
        reader = _HashingReader(f)
        obj = safe_unpickle(reader, path)  # type: ignore[arg-type]
        md5 = reader.hexdigest()
    missing = [k for k in ("data", "labels") if k not in obj]
    if missing:
        keys = ", ".join(sorted(map(str, obj))) or "none"
        raise DataError(f"{path}: no {' or '.join(missing)!s} entry (has: {keys})")
    batch = _check_batch(path, obj["data"], obj["labels"])
    return Batch(batch.images, batch.labels, md5)


def read_class_names(source: Source) -> list[str]:
    """The 10 class names, from ``batches.meta`` or ``batches.meta.txt``."""
    path = source.path(meta_name(source.format))
    raw = _read_bytes(path)
    if source.format == "binary":
        names: object = [ln.strip() for ln in raw.decode("utf-8", "replace").splitlines()]
        names = [n for n in names if n]
    else:
        names = safe_unpickle(io.BytesIO(raw), path).get("label_names")
        if isinstance(names, list):
            names = [_text(n) for n in names]
    if not (isinstance(names, list) and len(names) == K and all(isinstance(n, str) for n in names)):
        raise DataError(f"{path}: expected {K} class names")
    return list(names)


def check_folder(source: Source) -> dict[str, str]:
    """Validate every file of a dataset folder; returns {file name: MD5}."""
    sums = {}
    for name in dataset_files(source.format):
        if name.startswith("batches.meta"):
            read_class_names(source)
            sums[name] = hashlib.md5(_read_bytes(source.path(name))).hexdigest()
        else:
            sums[name] = read_batch(source.path(name), source.format).md5
    return sums


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------


def parse_batches(text: str) -> tuple[int, ...]:
    """'1-5' -> (1, 2, 3, 4, 5); '1,3' -> (1, 3); '2' -> (2,)."""
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ConfigError(f"--train-batches {text!r}: use a list like '1-5' or '1,3,5'")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if not 1 <= lo <= hi <= TRAIN_BATCHES:
            raise ConfigError(f"--train-batches {text!r}: batches are numbered 1 to {TRAIN_BATCHES}")
        out.extend(i for i in range(lo, hi + 1) if i not in out)
    return tuple(out)


@dataclass(frozen=True)
class SplitSpec:
    """Which images train, validate and test.

    The default is the original work's: train on data_batch_1, validate on data_batch_2, test on
    test_batch. With ``val_size``, the last ``val_size`` images of the training batches are held
    out for validation instead.
    """

    train_batches: tuple[int, ...] = (1,)
    val_size: int | None = None

    def __post_init__(self) -> None:
        if not self.train_batches or any(not 1 <= i <= TRAIN_BATCHES for i in self.train_batches):
            raise ConfigError(f"train batches {self.train_batches}: use batches 1 to {TRAIN_BATCHES}")
        if self.val_size is None and 2 in self.train_batches:
            raise ConfigError(
                "--train-batches includes batch 2, the default validation batch: "
                "give --val-size N to hold out the last N training images instead"
            )
        if self.val_size is not None and self.val_size < 1:
            raise ConfigError(f"--val-size {self.val_size}: must be at least 1")

    def describe(self) -> str:
        train = ",".join(map(str, self.train_batches))
        if self.val_size is None:
            return f"train data_batch_{train}, validate data_batch_2, test test_batch"
        return f"train data_batch_{train} minus the last {self.val_size} (validation), test test_batch"


@dataclass
class Split:
    """Raw images (N, 3072) uint8 and labels (N,) of one split."""

    images: np.ndarray
    labels: np.ndarray


class Reader:
    """Reads batches of one dataset folder and remembers the MD5 of every file it read."""

    def __init__(self, source: Source):
        self.source = source
        self.checksums: dict[str, str] = {}

    def batch(self, which: int | str) -> Batch:
        name = batch_name(self.source.format, which)
        batch = read_batch(self.source.path(name), self.source.format)
        self.checksums[name] = batch.md5
        return batch

    def train_batches(self, spec: SplitSpec) -> tuple[list[Batch], int]:
        """The training batches of ``spec`` and how many of their rows train (the rest validate)."""
        batches = [self.batch(i) for i in spec.train_batches]
        n_all = sum(len(b.labels) for b in batches)
        n_train = n_all - (spec.val_size or 0)
        if n_train < 1:
            raise ConfigError(f"--val-size {spec.val_size}: the training batches hold only {n_all} images")
        return batches, n_train


def load_split(source: Source, spec: SplitSpec, name: str) -> tuple[Split, Reader]:
    """The raw images and labels of split ``name`` ('train', 'val' or 'test')."""
    reader = Reader(source)
    if name == "test" or (name == "val" and spec.val_size is None):
        b = reader.batch("test" if name == "test" else 2)
        return Split(b.images, b.labels), reader
    batches, n_train = reader.train_batches(spec)
    images = np.concatenate([b.images for b in batches])
    labels = np.concatenate([b.labels for b in batches])
    rows = slice(0, n_train) if name == "train" else slice(n_train, None)
    return Split(images[rows], labels[rows]), reader


# ---------------------------------------------------------------------------------------------
# Preprocessing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Normalizer:
    """x -> (x / 255 - mean) / std per input, with the training split's mean and std (d,)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, chunks: Sequence[np.ndarray]) -> Normalizer:
        """Exact per-input mean and (population) std of uint8 images given as row blocks (n, d).

        Sums of the pixel values and of their squares are exact in int64, so the result does not
        depend on how the rows are split or summed. A constant input gets std 1 (only centred).
        """
        N = sum(len(c) for c in chunks)
        s1 = np.zeros(D, dtype=np.int64)
        s2 = np.zeros(D, dtype=np.int64)
        sq = np.empty((256, D), dtype=np.int64)  # reused: no fresh memory per block
        for images in chunks:
            s1 += images.sum(axis=0, dtype=np.int64)
            for i in range(0, len(images), len(sq)):
                block = images[i : i + len(sq)]
                np.multiply(block, block, out=sq[: len(block)], dtype=np.int64)
                s2 += sq[: len(block)].sum(axis=0)
        mean = s1 / (255.0 * N)
        std = np.sqrt((s2 * N - s1 * s1) / (255.0 * N) ** 2)  # numerator exact in int64
        std[std == 0] = 1.0
        return cls(mean=mean, std=std)

    def apply(
        self, images: np.ndarray, dtype: np.dtype | type = np.float32, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Normalised images (N, d) in ``dtype``, written into ``out`` when given."""
        if out is None:
            out = np.empty(images.shape, dtype=dtype)
        # (x - 255 mean) / (255 std); uint8 -> float is exact, so this equals x/255 - mean ... / std
        np.subtract(images, (255.0 * self.mean).astype(out.dtype), out=out, dtype=out.dtype)
        np.divide(out, (255.0 * self.std).astype(out.dtype), out=out)
        return out


@dataclass
class Prepared:
    """Normalised splits ready for the model: X (N, d) float, y (N,) int64 per split."""

    X: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    normalizer: Normalizer
    class_names: list[str]
    source: Source
    spec: SplitSpec
    checksums: dict[str, str]


def _fit_training_rows(batches: list[Batch], n_train: int) -> Normalizer:
    """Normaliser of the first ``n_train`` rows of the training batches (the rest validate)."""
    head, left = [], n_train
    for b in batches:
        head.append(b.images[:left])
        left -= len(head[-1])
    return Normalizer.fit(head)


def training_sample(
    source: Source, spec: SplitSpec, n: int, dtype: np.dtype | type = np.float64
) -> tuple[np.ndarray, np.ndarray, Reader]:
    """The first ``n`` training images, normalised as in training (by the whole training split's
    mean and std): X (n, 3072), y (n,)."""
    reader = Reader(source)
    batches, n_train = reader.train_batches(spec)
    if n > n_train:
        raise ConfigError(f"--n {n}: the training split holds only {n_train} images")
    norm = _fit_training_rows(batches, n_train)
    images = np.concatenate([b.images for b in batches])[:n]
    labels = np.concatenate([b.labels for b in batches])[:n]
    return norm.apply(images, dtype), labels, reader


def prepare(source: Source, spec: SplitSpec, dtype: np.dtype | type = np.float32) -> Prepared:
    """Read the splits of ``spec``, fit the normaliser on the training split, normalise all.

    Each raw batch is converted into its split's contiguous float array and released at once:
    the peak memory is the float arrays plus the raw training batches (or one other raw batch),
    never a float64 copy.
    """
    reader = Reader(source)
    batches, n_train = reader.train_batches(spec)
    norm = _fit_training_rows(batches, n_train)
    labels = np.concatenate([b.labels for b in batches])
    X_all = np.empty((len(labels), D), dtype=dtype)  # (N, d), one contiguous row per image
    row = 0
    while batches:
        images = batches.pop(0).images
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
    return Prepared(X, y, norm, read_class_names(source), source, spec, reader.checksums)
