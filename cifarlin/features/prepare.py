"""A run's data as k-means features (:func:`prepare_features`), and a feature map learnt from a
data set's training rows (:func:`fit_dataset`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cifarlin.core import augment
from cifarlin.core.config import SplitSpec, TrainConfig
from cifarlin.core.encode import extract
from cifarlin.core.kmeans import FeatureMap, FeatureStats, Progress, fit
from cifarlin.core.normalize import Normalizer, empty_rows
from cifarlin.core.prepared import Prepared
from cifarlin.data.cifar import Dataset, Reader, read_class_names
from cifarlin.errors import bad_value
from cifarlin.features import memory
from cifarlin.features.cache import FeatureCache
from cifarlin.store.featuremap import load


def prepare_features(
    dataset: Dataset,
    cfg: TrainConfig,
    cache_dir: Path | None = None,
    on_batch: Callable[[str, bool], Progress | None] | None = None,
    workers: int = 2,
) -> Prepared:
    """The splits of ``cfg`` as standardised features of the map in ``cfg.features``: a run's data
    for :func:`cifarlin.core.train.fit` or the ridge solver, one row per image. With ``augment="flip"``
    the training rows of the mirrored images follow those of the images; for the ridge solver
    they go only into the exact sums it solves from (``Prepared.moments``, of the raw features),
    which halves the memory (its history's training metrics are those of the images themselves,
    as for pixels).

    Features are extracted per batch file and cached in ``cache_dir`` by (map, file MD5, view),
    so the next run, or a sweep's next trial, reads them instead (``on_batch(name, cached)`` is
    called before each, and may return an ``on_rows(done, n)`` that follows the extraction; with
    ``cache_dir`` None they are extracted and not kept). They are
    standardised by the training rows' mean and std (the paper's (f - mean) / sqrt(var + 0.01)),
    kept in the returned normaliser (scale 1).
    """
    assert cfg.features is not None
    fmap = load(Path(cfg.features))
    cache = FeatureCache(cache_dir) if cache_dir is not None else None
    reader = Reader(dataset)

    def of(name: str, batch: Any, view: str = "") -> np.ndarray:
        images = batch.images[:, augment.flip_index()] if view == "flip" else batch.images
        hit = cache.get(fmap, batch.md5, len(images), view) if cache is not None else None
        on_rows = on_batch(name + (" (mirrored)" if view else ""), hit is not None) if on_batch else None
        if hit is not None:
            return hit
        if cache is None:
            return extract(fmap, images, workers=workers, on_rows=on_rows)
        return cache.features(fmap, batch.md5, images, view, name, workers=workers, on_rows=on_rows)[0]

    if fmap.mirror and cfg.augment == "flip":
        raise bad_value(
            "augment",
            cfg.augment,
            f"{cfg.features} is a mirrored map: its features are already the mean of each image's and "
            "its mirror image's; leave --augment out",
        )
    spec = cfg.split
    batches, n_train = reader.train_batches(spec)
    labels = np.concatenate([b.labels for b in batches])
    n_val = len(labels) - n_train if spec.val_size is not None else len(batches[0].labels)
    n_file = len(batches[0].labels)  # about the test batch's images, and any batch file's
    memory.check(fmap, cfg, n_train, n_val, n_test=n_file, n_batch=n_file)  # before allocating
    flips = cfg.augment == "flip"
    ridge_sums = cfg.solver == "ridge"  # the solver sums the mirrored rows; no need to keep them
    rows = n_train * (2 if flips and not ridge_sums else 1)
    train = empty_rows((rows, fmap.n_features), np.float32)  # (n_train [x 2], 4k)
    val = empty_rows((len(labels) - n_train, fmap.n_features), np.float32)  # the held-out tail, if any

    def training_blocks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Fill ``train`` and ``val`` batch file by batch file, yielding each file's training
        rows (and their mirrored copies) with their labels as they come."""
        at = 0
        for i, b in zip(spec.train_batches, batches, strict=True):
            F = of(f"data_batch_{i}", b)
            n, head = len(F), max(0, min(len(F), n_train - at))  # head: this file's rows that train
            train[at : at + head] = F[:head]
            val[at + head - n_train : at + n - n_train] = F[head:]
            yield F[:head], b.labels[:head]
            if flips and head:
                M = of(f"data_batch_{i}", b, "flip")[:head]
                if not ridge_sums:
                    train[n_train + at : n_train + at + head] = M
                yield M, b.labels[:head]
            at += n

    moments = None
    if ridge_sums:  # the exact sums of every training row and mirror, then their statistics
        from cifarlin.core import ridge

        moments = ridge.moments(training_blocks(), block=1024)
        mean = moments.sx / moments.n
        var = np.maximum(np.diag(moments.G) / moments.n - mean * mean, 0.0)
        stats = FeatureStats(mean, np.sqrt(var + 0.01))
    else:
        for _ in training_blocks():
            pass
        stats = FeatureStats.fit(train)
    y = {"train": np.tile(labels[:n_train], 2 if flips and not ridge_sums else 1)}
    X = {"train": train}
    if spec.val_size is None:
        b = reader.batch(2)
        X["val"], y["val"] = of("data_batch_2", b), b.labels
    else:
        X["val"], y["val"] = val, labels[n_train:]
    b = reader.batch("test")
    X["test"], y["test"] = of("test_batch", b), b.labels
    norm = Normalizer(stats.mean, stats.std, scale=1.0)
    dtype = np.dtype(cfg.dtype)
    for name in X:
        X[name] = norm.apply(X[name], dtype, out=X[name] if dtype == np.float32 else None)
    return Prepared(
        X, y, norm, read_class_names(dataset), dataset, spec, reader.checksums, moments=moments, features=fmap
    )


def fit_dataset(
    dataset: Dataset, spec: SplitSpec, k: int, **fit_args: Any
) -> tuple[FeatureMap, dict[str, Any]]:
    """A feature map learnt from the training rows of ``spec`` (never its validation rows or the
    test set), and the attributes its file keeps: the data files' MD5s and the split."""
    reader = Reader(dataset)
    batches, n_train = reader.train_batches(spec)
    images = np.concatenate([b.images for b in batches])[:n_train]  # (n_train, 3072) uint8
    fmap = fit(images, k, **fit_args)
    attrs: dict[str, Any] = {f"data_{name}": md5 for name, md5 in reader.checksums.items()}
    attrs["train_batches"] = np.asarray(spec.train_batches, dtype=np.int64)
    attrs["val_size"] = -1 if spec.val_size is None else spec.val_size
    attrs["train_images"] = n_train
    return fmap, attrs
