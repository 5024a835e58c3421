"""A run's data: the splits of its configuration read, normalised by the training split's
statistics and kept in memory (:class:`~cifarlin.core.normalize.Prepared`), as pixels or, for a
run on k-means features, as features (:mod:`cifarlin.features.prepare`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cifarlin.core.augment import Augment, parse_augment
from cifarlin.core.config import SplitSpec, TrainConfig
from cifarlin.core.model import D
from cifarlin.core.normalize import Normalizer, empty_rows
from cifarlin.core.prepared import Prepared
from cifarlin.data.cifar import Batch, Dataset, Reader, read_class_names
from cifarlin.errors import bad_value


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
    :func:`cifarlin.features.prepare.prepare_features`)."""
    if cfg.features is not None:
        from cifarlin.features.prepare import prepare_features

        return prepare_features(dataset, cfg, **feature_args)
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
