"""Classifying the user's own images with a saved model.

Inputs are untrusted files, each read on its own (one bad file never stops the others):

- PNG and JPEG images of any size (only these two decoders are enabled). The EXIF orientation is
  applied, palette, black-and-white, CMYK and 16-bit greyscale images become RGB (16-bit values
  v -> round(v / 257)), and the image is resized to 32 x 32 with Pillow's LANCZOS filter
  (antialiased): ``fit="crop"`` takes the centred square whose side is the shorter side,
  ``fit="squash"`` the whole image, its aspect ratio not kept. Transparent pixels are composited
  onto white after resizing: c -> (c a + 255 (255 - a) + 127) // 255 for alpha a. An animated
  file gives its first frame. A 32 x 32 RGB image is used exactly as it is.
- ``.npy`` arrays of uint8 pixels, shape (n, 3072) (CIFAR rows: 1024 red, 1024 green, 1024 blue
  values, each row-major) or (n, 32, 32, 3) (height, width, channel, as most libraries hold
  images). The header is read and checked (dtype, shape, size against the file's) before any
  data; pickled objects are never loaded.

Before a decoder sees a file: a regular file (a FIFO or device is refused by ``stat``, never
opened for reading), at most :data:`MAX_IMAGE_BYTES` (:data:`MAX_NPY_BYTES` for arrays), and for
images at most :data:`MAX_PIXELS` pixels as declared by the header (Pillow's decompression-bomb
limit, its warning turned into an error). Pillow is imported only when an image is read.

A model classifies raw uint8 rows exactly as evaluation does: normalised with the model's own
mean and std, scores S = X W^T + b, and the class probabilities of its loss (softmax for ``ce``,
per-class sigmoids for ``bce``, which need not sum to 1); a hinge-loss (``svm``), squared-loss
(``mse``, the ridge solver's) or squared-hinge (``l2svm``) model has scores only.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from cifarlin.core import model
from cifarlin.core.config import D
from cifarlin.core.losses import LOSSES
from cifarlin.errors import DataError, bad_value
from cifarlin.store.checkpoint import Snapshot

SIDE = 32  # CIFAR-10 images are 32 x 32 RGB
FITS = ("crop", "squash")
FORMATS = ("PNG", "JPEG")  # the decoders enabled (a JPEG holding several pictures, MPO, included)
RESAMPLE = "LANCZOS"  # the resize filter, by its name in PIL.Image.Resampling
MAX_IMAGE_BYTES = 64 << 20
MAX_NPY_BYTES = 256 << 20  # about 87,000 images of 3072 bytes
MAX_PIXELS = 50_000_000  # declared width x height; a 50-megapixel photo decodes to 150-200 MB
NPY_SUFFIX = ".npy"
CHUNK = 4096  # rows classified at a time: 50 MB of float32 inputs, however long the array

#: What Pillow raises for a file it cannot decode: the exceptions its own fuzzing tests accept from
#: a bad file (besides UnidentifiedImageError and the decompression-bomb ones), and two its
#: decoders let through from struct unpacking and short reads.
PILLOW_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    MemoryError,
    NotImplementedError,
    EOFError,
    struct.error,
)


# ---------------------------------------------------------------------------------------------
# Reading a file without trusting it
# ---------------------------------------------------------------------------------------------


@contextmanager
def _open_regular(path: Path, max_bytes: int, what: str) -> Iterator[tuple[BinaryIO, int]]:
    """``path`` open for reading, and its size: refused unless a regular file of at most
    ``max_bytes``. Checked by ``stat`` before opening (a FIFO is never opened, so never waited
    on) and again on the open descriptor (a file swapped in between is refused too)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{path}: is a folder, expected {what}")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: not a regular file (a FIFO, socket or device?); expected {what}")
    if st.st_size > max_bytes:
        raise DataError(f"{path}: {st.st_size} bytes, more than the {max_bytes >> 20} MiB read as {what}")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    fh = os.fdopen(fd, "rb")
    with fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            raise DataError(f"{path}: changed while being opened; expected {what}")
        yield fh, st.st_size


def _read_all(path: Path, max_bytes: int, what: str) -> bytes:
    with _open_regular(path, max_bytes, what) as (fh, _):
        try:
            data = fh.read(max_bytes + 1)
        except OSError as e:
            raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    if len(data) > max_bytes:  # grew since it was checked
        raise DataError(f"{path}: more than the {max_bytes >> 20} MiB read as {what}")
    return data


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


@contextmanager
def _pillow_limits() -> Iterator[Any]:
    """PIL.Image with the decompression-bomb limit at :data:`MAX_PIXELS` and its warning raised
    as an error; Pillow's other warnings (a malformed MPO read as a JPEG) silenced. Restored after."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield Image
    finally:
        Image.MAX_IMAGE_PIXELS = before


def crop_box(width: int, height: int, fit: str) -> tuple[float, float, float, float]:
    """The region of a ``width`` x ``height`` image that becomes the 32 x 32 image: the centred
    square of side min(width, height) (``fit="crop"``), or everything (``"squash"``)."""
    if fit not in FITS:
        raise bad_value("fit", fit, f"use one of {', '.join(FITS)}")
    if fit == "squash":
        return (0.0, 0.0, float(width), float(height))
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return (left, top, left + side, top + side)


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 from (h, w, 4) uint8: each colour c with alpha a -> (c a + 255 (255 - a)
    + 127) // 255, the image laid on a white background (exact, in integers)."""
    c = rgba[..., :3].astype(np.uint32)
    a = rgba[..., 3:].astype(np.uint32)
    return ((c * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def _resizable(im: Any, Image: Any) -> Any:
    """``im`` in a mode that resizes with a real filter and ends in RGB: L, LA, RGB or RGBA.

    Pillow resizes P and 1 images by nearest neighbour only, and clips 16-bit values to 255 when
    converting, so those are converted here first.
    """
    mode = im.mode
    if mode in ("L", "LA", "RGB", "RGBA"):
        return im
    if mode.startswith("I;16") or mode == "I":  # 16-bit greyscale (older Pillows: mode I)
        v = np.asarray(im, dtype=np.int64)
        v = (np.clip(v, 0, 65535) * 255 + 32767) // 65535  # round(v / 257)
        return Image.fromarray(v.astype(np.uint8), "L")
    if mode in ("P", "PA"):
        alpha = mode == "PA" or "transparency" in im.info
        return im.convert("RGBA" if alpha else "RGB")
    if mode == "1":
        return im.convert("L")
    if mode in ("La", "RGBa"):  # premultiplied alpha
        return im.convert(mode.upper())
    return im.convert("RGB")  # CMYK, YCbCr (JPEG)


def image_to_row(im: Any, fit: str = "crop") -> np.ndarray:
    """A decoded PIL image (already turned upright) as one CIFAR row (3072,) uint8, as the module
    docstring says: mode conversion, ``fit`` and the LANCZOS resize to 32 x 32, alpha on white."""
    from PIL import Image

    im = _resizable(im, Image)
    box = crop_box(im.width, im.height, fit)
    filt = getattr(Image.Resampling, RESAMPLE)
    small = im.resize((SIDE, SIDE), filt, box=box)  # LA and RGBA: premultiplied while resampling
    pixels = np.asarray(small, dtype=np.uint8)
    if small.mode == "L":
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    elif small.mode == "LA":
        pixels = composite_on_white(pixels[..., [0, 0, 0, 1]])  # (grey, grey, grey, alpha)
    elif small.mode == "RGBA":
        pixels = composite_on_white(pixels)
    return hwc_to_rows(pixels[None])[0]


def hwc_to_rows(images: np.ndarray) -> np.ndarray:
    """(n, 32, 32, 3) images -> (n, 3072) CIFAR rows: the red plane, then green, then blue."""
    n = images.shape[0]
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(n, D))


def load_image(path: Path, fit: str = "crop") -> np.ndarray:
    """The PNG or JPEG file ``path`` as one CIFAR row (3072,) uint8; :class:`DataError` naming the
    file for anything that is not a decodable PNG or JPEG within the limits."""
    path = Path(path)
    crop_box(1, 1, fit)  # a bad fit is a usage error, not a bad file
    data = _read_all(path, MAX_IMAGE_BYTES, "a PNG or JPEG image")
    from PIL import ImageOps

    with _pillow_limits() as Image:
        try:
            with Image.open(io.BytesIO(data), formats=FORMATS) as im:
                im.load()
                ImageOps.exif_transpose(im, in_place=True)  # no copy when it is upright already
                return image_to_row(im, fit)
        except Image.UnidentifiedImageError:
            raise DataError(f"{path}: not a PNG or JPEG image (or damaged beyond recognition)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise DataError(
                f"{path}: refused as a possible decompression bomb: {_first_sentence(e)} "
                f"(the limit is {MAX_PIXELS} pixels; scale the image down first)"
            ) from None
        except PILLOW_ERRORS as e:
            raise DataError(f"{path}: damaged or truncated image ({type(e).__name__}: {e})") from None


def _first_sentence(e: BaseException) -> str:
    return str(e).split(", could be")[0]


# ---------------------------------------------------------------------------------------------
# NumPy arrays
# ---------------------------------------------------------------------------------------------


def _npy_header(fh: BinaryIO, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
    except ValueError:
        raise DataError(f"{path}: not a NumPy .npy file (no .npy signature)") from None
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    if version not in readers:
        raise DataError(f"{path}: .npy format version {version[0]}.{version[1]}; expected 1.0 or 2.0")
    try:
        shape, _, dtype = readers[version](fh)
    except (ValueError, TypeError, SyntaxError) as e:
        raise DataError(f"{path}: damaged .npy header ({e})") from None
    return shape, dtype


def load_npy(path: Path) -> np.ndarray:
    """The images of the ``.npy`` file ``path`` as CIFAR rows (n, 3072) uint8.

    The header is read first and the array only once its dtype is uint8, its shape (n, 3072) or
    (n, 32, 32, 3) with n >= 1, and its data exactly fill the rest of the file; then
    ``np.load(allow_pickle=False)`` reads it from the same open file.
    """
    path = Path(path)
    what = "a .npy array of uint8 images"
    with _open_regular(path, MAX_NPY_BYTES, what) as (fh, size):
        shape, dtype = _npy_header(fh, path)
        if dtype.hasobject:
            raise DataError(
                f"{path}: holds Python objects (dtype {dtype}), which are never loaded; "
                "expected uint8 pixel values"
            )
        if dtype != np.uint8:
            raise DataError(f"{path}: has dtype {dtype}, expected uint8 pixel values 0-255")
        if not (shape[1:] == (D,) or shape[1:] == (SIDE, SIDE, 3)) or shape[0] < 1:
            raise DataError(
                f"{path}: has shape {shape}, expected (n, {D}) CIFAR rows or (n, {SIDE}, {SIDE}, 3) "
                "images with n >= 1"
            )
        expected = fh.tell() + int(np.prod(shape))
        if size != expected:
            raise DataError(
                f"{path}: {size} bytes, but its header declares {expected} "
                f"({'truncated' if size < expected else 'trailing data'})"
            )
        fh.seek(0)
        try:
            a = np.load(fh, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{path}: cannot be read as .npy ({e})") from None
    if a.shape != shape or a.dtype != np.uint8:  # pragma: no cover - the same file, read twice
        raise DataError(f"{path}: changed while being read")
    return hwc_to_rows(a) if a.ndim == 4 else np.ascontiguousarray(a)


def load_input(path: Path, fit: str = "crop") -> tuple[np.ndarray, bool]:
    """The images of one input file as CIFAR rows (n, 3072) uint8, and whether they are the rows
    of an array (``.npy``, reported by index) rather than one image."""
    path = Path(path)
    if path.suffix.lower() == NPY_SUFFIX:
        return load_npy(path), True
    return load_image(path, fit)[None], False


# ---------------------------------------------------------------------------------------------
# Classifying
# ---------------------------------------------------------------------------------------------


@dataclass
class Classified:
    """A model's outputs for n images."""

    scores: np.ndarray  # (n, K) float64, S = X W^T + b
    outputs: np.ndarray  # (n, K) float64: class probabilities, or the scores (hinge loss)
    kind: str  # "probability" or "score"
    top: np.ndarray  # (n, k) class indices, highest score first (ties: the lower class index)


def classify(snap: Snapshot, images: np.ndarray, top: int = 3) -> Classified:
    """Classify raw uint8 CIFAR rows (n, 3072) with the model in ``snap``: its own normalisation,
    its dtype, its loss's probabilities; the ``top`` classes of each image."""
    k = len(snap.class_names)
    if not 1 <= top <= k:
        raise bad_value("top", top, f"use 1 to {k} (the model's classes)")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != D:
        raise bad_value("images", f"{images.dtype} {images.shape}", f"expected uint8 rows (n, {D})")
    S = np.empty((len(images), k), dtype=np.float64)  # (n, K)
    for i in range(0, len(images), CHUNK):  # normalised a block at a time: bounded memory
        X = snap.inputs(images[i : i + CHUNK])  # (m, d): normalised pixels, or standardised features
        S[i : i + CHUNK] = model.scores(snap.state.W, snap.state.b, X)
    probs = LOSSES[snap.config.loss].probs
    outputs = S.copy() if probs is None else probs(S.copy())
    order = np.argsort(-S, axis=1, kind="stable")[:, :top]  # (n, top)
    return Classified(S, outputs, "score" if probs is None else "probability", order)


@dataclass
class Prediction:
    """The top classes of one image: of a file, or of row ``index`` of an array."""

    file: Path
    index: int | None
    top: list[tuple[str, float]]  # (class name, probability or score), best first


@dataclass
class Report:
    """What :func:`predict_files` found: a prediction per image, an error per unreadable file."""

    kind: str  # "probability" or "score"
    predictions: list[Prediction]
    errors: list[tuple[Path, str]]


def predict_files(snap: Snapshot, paths: Sequence[Path], top: int = 3, fit: str = "crop") -> Report:
    """Read each file (see :func:`load_input`), classify all their images in one pass, and report
    them in the order given; a file that cannot be read becomes an error, the others go on."""
    if not 1 <= top <= len(snap.class_names):
        raise bad_value("top", top, f"use 1 to {len(snap.class_names)} (the model's classes)")
    crop_box(1, 1, fit)
    loaded: list[tuple[Path, np.ndarray, bool]] = []
    errors: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        try:
            rows, indexed = load_input(p, fit)
        except DataError as e:
            errors.append((p, str(e)))
            continue
        loaded.append((p, rows, indexed))
    if not loaded:
        kind = "score" if LOSSES[snap.config.loss].probs is None else "probability"
        return Report(kind, [], errors)
    images = loaded[0][1] if len(loaded) == 1 else np.concatenate([rows for _, rows, _ in loaded])
    c = classify(snap, images, top)
    names = snap.class_names
    values = np.take_along_axis(c.outputs, c.top, axis=1).tolist()
    order = c.top.tolist()
    predictions = []
    i = 0
    for p, rows, indexed in loaded:
        for j in range(len(rows)):
            best = [(names[m], v) for m, v in zip(order[i], values[i], strict=True)]
            predictions.append(Prediction(p, j if indexed else None, best))
            i += 1
    return Report(c.kind, predictions, errors)
