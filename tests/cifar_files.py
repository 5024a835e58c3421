"""Tiny CIFAR-10 look-alikes written by the tests themselves, in the official layouts.

The python version is written the way Python 2 wrote the official files (protocol 2, byte-string
keys, arrays through ``numpy.core.multiarray._reconstruct``, raw data as a BINSTRING), by a small
hand-rolled pickle writer; that also lets tests craft hostile pickles opcode by opcode.
"""

from __future__ import annotations

import hashlib
import io
import struct
import tarfile
from pathlib import Path

import numpy as np

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _int(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])  # BININT1
    return b"J" + struct.pack("<i", n)  # BININT


def _bytes(b: bytes) -> bytes:
    if len(b) < 256:
        return b"U" + bytes([len(b)]) + b  # SHORT_BINSTRING
    return b"T" + struct.pack("<i", len(b)) + b  # BINSTRING


def global_op(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL


def _array(a: np.ndarray, module: str = "numpy.core.multiarray") -> bytes:
    out = global_op(module, "_reconstruct") + global_op("numpy", "ndarray")
    out += _int(0) + b"\x85" + _bytes(b"b") + b"\x87" + b"R"  # (ndarray, (0,), 'b') REDUCE
    dtype = global_op("numpy", "dtype") + _bytes(a.dtype.str[1:].encode()) + b"\x89\x88\x87R"
    dtype += b"(" + _int(3) + _bytes(b"|") + b"NNN" + _int(-1) + _int(-1) + _int(0) + b"tb"
    shape = b"(" + b"".join(_int(n) for n in a.shape) + b"t"
    state = b"(" + _int(1) + shape + dtype + b"\x89" + _bytes(a.tobytes()) + b"t"
    return out + state + b"b"  # BUILD


def _obj(o: object) -> bytes:
    if isinstance(o, np.ndarray):
        return _array(o)
    if isinstance(o, bool):
        return b"\x88" if o else b"\x89"
    if isinstance(o, int):
        return _int(o)
    if isinstance(o, str):
        return _bytes(o.encode())
    if isinstance(o, bytes):
        return _bytes(o)
    if isinstance(o, list):
        return b"](" + b"".join(_obj(v) for v in o) + b"e" if o else b"]"
    if isinstance(o, dict):
        return b"}(" + b"".join(_obj(k) + _obj(v) for k, v in o.items()) + b"u"
    raise TypeError(type(o))


def py2_pickle(obj: object) -> bytes:
    """Protocol-2 pickle of dicts, lists, ints, byte strings and uint8 arrays, as Python 2 wrote."""
    return b"\x80\x02" + _obj(obj) + b"."


def make_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, 3072) uint8 of 10 classes that a linear classifier can tell apart."""
    templates = np.random.default_rng(1234).integers(40, 216, size=(10, 3072))
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    noise = rng.normal(0, 40, size=(n, 3072))
    images = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels


def smooth_images(n: int, seed: int) -> np.ndarray:
    """``n`` smooth random images (blurred noise) as (n, 3072) uint8 rows, so that patches have
    structure to cluster and encode."""
    noise = np.random.default_rng(seed).normal(size=(n, 3, 36, 36))
    k = np.ones(5) / 5
    for axis in (2, 3):
        noise = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), axis, noise)
    x = (noise - noise.min()) / (noise.max() - noise.min()) * 255
    return x.reshape(n, -1).astype(np.uint8)


def batch_dict(images: np.ndarray, labels: np.ndarray, label: str) -> dict:
    return {
        b"batch_label": label.encode(),
        b"labels": [int(v) for v in labels],
        b"data": images,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }


def write_python_dataset(folder: Path, n: int = 50, n_test: int = 50) -> Path:
    """A complete cifar-10-batches-py folder with n images per training batch."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        images, labels = make_split(n, seed=i)
        (folder / f"data_batch_{i}").write_bytes(
            py2_pickle(batch_dict(images, labels, f"training batch {i} of 5"))
        )
    images, labels = make_split(n_test, seed=99)
    (folder / "test_batch").write_bytes(py2_pickle(batch_dict(images, labels, "testing batch 1 of 1")))
    meta = {b"num_cases_per_batch": n, b"label_names": [s.encode() for s in NAMES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return folder


def write_binary_dataset(folder: Path, n: int = 50, n_test: int = 50) -> Path:
    """A complete cifar-10-batches-bin folder."""
    folder.mkdir(parents=True, exist_ok=True)

    def records(images: np.ndarray, labels: np.ndarray) -> bytes:
        return np.concatenate([labels.astype(np.uint8)[:, None], images], axis=1).tobytes()

    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(records(*make_split(n, seed=i)))
    (folder / "test_batch.bin").write_bytes(records(*make_split(n_test, seed=99)))
    (folder / "batches.meta.txt").write_text("\n".join(NAMES) + "\n\n")
    return folder


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def tar_gz(members: dict[str, bytes]) -> bytes:
    """A .tar.gz of regular files (folders are implied by the names)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def dataset_archive(tmp: Path, fmt: str = "python") -> bytes:
    """The bytes of a cifar-10-{python,binary}.tar.gz holding a tiny dataset."""
    name = "cifar-10-batches-py" if fmt == "python" else "cifar-10-batches-bin"
    folder = tmp / "archive-src" / name
    (write_python_dataset if fmt == "python" else write_binary_dataset)(folder)
    return tar_gz({f"{name}/{p.name}": p.read_bytes() for p in sorted(folder.iterdir())})


# `cifarlin features fit` options for a tiny feature map of these tiny files (seconds, not minutes)
FIT = [
    "--centroids",
    "6",
    "--patches",
    "600",
    "--iterations",
    "3",
    "--val-size",
    "20",
    "--train-batches",
    "1",
]


# ---------------------------------------------------------------------------------------------
# A dataset on which validation and test disagree
# ---------------------------------------------------------------------------------------------
#
# On make_split's images every candidate of every choice (each lambda, each epoch, each trial)
# scores 1.00 on both splits, so a choice made on the wrong split passes any test. These images
# are noisy and not separable: 8 x 8 x 3 coarse pixels, each shown as a 4 x 4 block, holding a
# weak class signal (a colour per quadrant, and a fainter fine pattern), five strong nuisance
# directions shared by all classes, and independent noise. 192 distinct values an image against
# 200 training images: lambda and the epoch matter, and the validation accuracy has an interior
# maximum. The test batch's images come from the same distribution, but each is labelled as the
# NEXT class ((y + 1) % 10): a model's test accuracy is the rate at which it takes a class for
# the next, which falls as the model improves. So what is best on validation is among the worst
# on test, and a choice made on the test split lands elsewhere (each test checks that it does).

DISAGREE_N = 200  # images per batch file (training batches, test batch)
COARSE = 8  # side of the coarse image; each of its pixels is a (32 / COARSE)^2 block


def make_noisy_split(n: int, seed: int, amp: float = 5.0, quad: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, 3072) uint8 and their labels: the class signal ``amp`` times a fine random
    pattern plus ``amp * quad`` times a colour per quadrant, under nuisance (std 80 along five
    directions) and noise (std 40), on coarse pixels of 4 x 4 (see above)."""
    s, f = COARSE, 32 // COARSE
    rng0 = np.random.default_rng(4321)  # the same classes and nuisances in every batch
    fine = rng0.normal(0, 1, size=(10, 3, s, s))
    colour = rng0.normal(0, 1, size=(10, 3, 2, 2)).repeat(s // 2, axis=2).repeat(s // 2, axis=3)
    templates = (fine + quad * colour).reshape(10, -1)  # (10, 192)
    nuisance = rng0.normal(0, 1, size=(5, 3 * s * s))  # (5, 192)
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    coarse = (
        128
        + amp * templates[labels]
        + rng.normal(0, 80, size=(n, 5)) @ nuisance / np.sqrt(5)
        + rng.normal(0, 40, size=(n, 3 * s * s))
    )  # (n, 192)
    images = coarse.reshape(n, 3, s, s).repeat(f, axis=2).repeat(f, axis=3).reshape(n, -1)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels


def write_disagreeing_dataset(folder: Path, n: int = DISAGREE_N, seed: int = 1) -> Path:
    """A cifar-10-batches-py folder of :func:`make_noisy_split` images: five training batches
    and a test batch of n images each, the test batch labelled as the next class."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        images, labels = make_noisy_split(n, seed=seed * 100 + i)
        (folder / f"data_batch_{i}").write_bytes(
            py2_pickle(batch_dict(images, labels, f"training batch {i} of 5"))
        )
    images, labels = make_noisy_split(n, seed=seed * 100 + 99)
    (folder / "test_batch").write_bytes(
        py2_pickle(batch_dict(images, (labels + 1) % 10, "testing batch 1 of 1"))
    )
    meta = {b"num_cases_per_batch": n, b"label_names": [s.encode() for s in NAMES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return folder
