"""A run's model and history in formats any tool reads: ``.npz`` (NumPy) and ``.csv``.

``model.npz`` (``np.load(path, allow_pickle=False)`` reads it; nothing in it is pickled):

    W (K, d), b (K,)       the weights, in the model's dtype (float32 or float64)
    mean (d,), std (d,)    float64; x_norm = (x / scale - mean) / std, x the inputs
    scale                  255.0 for a model on pixels (x: raw uint8 pixels, d = 3072), 1.0 for
                           a model on k-means features (x: the features below, d = 4 k)
    class_names (K,)       text
    loss                   'ce', 'svm', 'bce', 'mse' or 'l2svm' (0-d text; as every value below)
    lam, eta, epochs, batch_size, seed, shuffle, init_std, train_batches (an integer array),
    dtype, schedule, decay, decay_every, eta_min, keep, solver, choose_lam, and val_size,
    setting, eta_max, step_size, patience, features, init and init_checksum (the start model's
    path and weights' SHA-256) when set: the training configuration
    epoch                  epochs the weights were trained for
    test_cost, test_loss, test_acc   when the file holds them
    format, format_version, cifarlin_version   'cifarlin-npz', 1, the version that wrote it

A model on k-means features (``train --features``) also holds its feature map, everything that
turns an image into its features (:mod:`cifarlin.core.kmeans`, as the README shows in NumPy):

    kmeans_centroids (k, 3 p^2)       float32, in whitened patch space
    kmeans_zca_mean (3 p^2,)          float64, the mean of the normalised training patches
    kmeans_zca (3 p^2, 3 p^2)         float64, the whitening matrix
    kmeans_patch                      p, the patch side (stride 1)
    kmeans_norm_eps, kmeans_zca_eps   the patch normalisation's and the whitening's epsilon
    kmeans_seed, kmeans_iterations, kmeans_n_patches   how the map was learnt
    kmeans_dictionary                 'kmeans' or 'patches' (the atoms: centroids or random patches)
    kmeans_encoder, kmeans_alpha      'triangle', 'relu' or 'split', and the threshold (0 for triangle)
    kmeans_pool, kmeans_mirror        the pool x pool grid of sums; whether atoms k/2.. mirror ..k/2
                                      and the features average the image's and its mirror's
    kmeans_activation, kmeans_pooling the encoder again; 'quadrant-sum' (2 x 2, no mirror) or 'grid-sum'
    kmeans_checksum                   the map's SHA-256 (as in its HDF5 file)

``history.csv``: a header line, then one line per epoch with the columns :data:`CSV_COLUMNS`;
numbers are written with Python's ``repr``, so they read back to the same float64 values.

Both are written atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from cifarlin import __version__
from cifarlin.core.history import History
from cifarlin.core.kmeans import LEARNT, LEGACY
from cifarlin.errors import RunExistsError, bad_value
from cifarlin.store import featuremap
from cifarlin.store.checkpoint import Snapshot
from cifarlin.store.files import atomic_path, write_text

FORMATS = {".npz": "model", ".csv": "history"}
NPZ_FORMAT, NPZ_VERSION = "cifarlin-npz", 1
CSV_COLUMNS = (
    "epoch",
    "train_cost",
    "train_loss",
    "train_acc",
    "val_cost",
    "val_loss",
    "val_acc",
    "eta",
    "seconds",
)


def target_kind(path: Path) -> str:
    """'model' for a ``.npz`` file name, 'history' for ``.csv``; a usage error otherwise."""
    kind = FORMATS.get(Path(path).suffix.lower())
    if kind is None:
        raise bad_value(
            "to", str(path), "the suffix chooses the format: .npz (the model) or .csv (the history per epoch)"
        )
    return kind


def model_arrays(snap: Snapshot) -> dict[str, np.ndarray]:
    """What ``model.npz`` holds (see the module docstring), as NumPy arrays of no object dtype."""
    arrays: dict[str, np.ndarray] = {
        "W": snap.state.W,
        "b": snap.state.b,
        "mean": snap.normalizer.mean,
        "std": snap.normalizer.std,
        "scale": np.asarray(float(snap.normalizer.scale)),
        "class_names": np.array(snap.class_names, dtype=str),
    }
    fmap = snap.features
    if fmap is not None:
        arrays["kmeans_centroids"] = fmap.centroids.astype(np.float32)
        arrays["kmeans_zca_mean"] = fmap.zca_mean.astype(np.float64)
        arrays["kmeans_zca"] = fmap.zca.astype(np.float64)
        for name in (*LEARNT, *LEGACY):  # every choice, those of the first format too
            arrays[f"kmeans_{name}"] = np.asarray(getattr(fmap, name))
        arrays["kmeans_activation"] = np.asarray(fmap.encoder)
        arrays["kmeans_pooling"] = np.asarray(featuremap.pooling(fmap.pool, fmap.mirror))
        arrays["kmeans_checksum"] = np.asarray(fmap.checksum)
    for name, value in snap.config.to_dict().items():
        if value is not None:
            arrays[name] = np.asarray(value, dtype=np.int64 if name == "train_batches" else None)
    arrays["epoch"] = np.asarray(snap.state.epoch)
    if snap.test is not None:
        arrays["test_cost"] = np.asarray(snap.test.cost)
        arrays["test_loss"] = np.asarray(snap.test.loss)
        arrays["test_acc"] = np.asarray(snap.test.accuracy)
    arrays["format"] = np.asarray(NPZ_FORMAT)
    arrays["format_version"] = np.asarray(NPZ_VERSION)
    arrays["cifarlin_version"] = np.asarray(__version__)
    assert not any(a.dtype.hasobject for a in arrays.values())  # loadable with allow_pickle=False
    return arrays


def check_targets(paths: list[Path], overwrite: bool) -> None:
    """Refuse (before anything is read or written) a target that exists, unless ``overwrite``."""
    for path in paths:
        if not overwrite and (Path(path).exists() or Path(path).is_symlink()):
            raise RunExistsError(f"{path} exists: pass overwrite=True to replace it, or another to=FILE")


def export_model(snap: Snapshot, path: Path) -> None:
    """Write ``snap``'s model to ``path`` as an uncompressed ``.npz``, atomically."""
    arrays = model_arrays(snap)
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as fh:  # a file object: no '.npz' appended
        np.savez(fh, **arrays)


def history_csv(history: History) -> str:
    """The history as CSV text: :data:`CSV_COLUMNS`, one row per epoch."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    columns: list[Any] = [range(1, len(history) + 1), *(history.columns[k] for k in CSV_COLUMNS[1:])]
    for row in zip(*columns, strict=True):
        w.writerow([row[0], *(repr(float(v)) for v in row[1:])])
    return buf.getvalue()


def export_history(history: History, path: Path) -> None:
    """Write ``history`` to ``path`` as CSV, atomically."""
    write_text(Path(path), history_csv(history))
