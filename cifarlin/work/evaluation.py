"""A saved model classifying the images of one split: metrics, confusion matrix, per-class accuracy."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifarlin.core import model
from cifarlin.core.losses import LOSSES
from cifarlin.core.threads import one_blas_thread
from cifarlin.data.cifar import MAX_BATCH_BYTES, Dataset, Reader, Split, batch_name, load_split, locate
from cifarlin.errors import bad_value
from cifarlin.store.checkpoint import Snapshot


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, K: int = model.K) -> np.ndarray:
    """C (K, K) with C[i, j] = number of images of true class i predicted as class j."""
    return np.bincount(K * np.asarray(y_true) + np.asarray(y_pred), minlength=K * K).reshape(K, K)


def per_class_accuracy(C: np.ndarray) -> np.ndarray:
    """(K,) the fraction of each true class's images classified right: C[i, i] / sum_j C[i, j]
    (the recall of each class; 0 for a class with no images)."""
    return np.diag(C) / np.maximum(C.sum(axis=1), 1)


@dataclass
class Evaluation:
    """A saved model classifying one split of the data."""

    split: str
    images: np.ndarray  # (N, 3072) uint8, raw
    labels: np.ndarray  # (N,)
    predictions: np.ndarray  # (N,)
    metrics: model.Metrics
    confusion: np.ndarray  # (K, K), rows: true class
    changed_files: list[str]  # batch files whose MD5 differs from the ones trained on
    true_class_prob: np.ndarray | None = None  # (N,) the probability given the true class (ce, bce)
    outputs: np.ndarray | None = None  # (N, K) float64: probabilities (ce, bce) or scores (the others)

    @property
    def per_class_accuracy(self) -> np.ndarray:
        return per_class_accuracy(self.confusion)


def evaluate_split(
    snap: Snapshot,
    dataset: Dataset,
    split: str,
    feature_cache: Path | None = None,
    loaded: tuple[Split, Reader] | None = None,
) -> Evaluation:
    """Classify the raw images of ``split`` with the model in ``snap`` (its own normalisation,
    its own data split), exactly as training evaluated them. A model on features reads them from
    the cache in ``feature_cache`` when given (see :func:`_inputs`), else extracts them.
    ``loaded``: the split as ``load_split`` read it already (models of the same split share it)."""
    raw, reader = loaded if loaded is not None else load_split(dataset, snap.config.split, split)
    X = _inputs(snap, raw.images, reader, split, feature_cache)
    with one_blas_thread():  # the summation order of training's own evaluation, to the last bit
        S = model.scores(snap.state.W, snap.state.b, X)  # (N, K)
        metrics = model.metrics(S, raw.labels, snap.state.W, snap.config.lam, snap.config.loss)
    pred = S.argmax(axis=1)
    probs = LOSSES[snap.config.loss].probs
    outputs = np.asarray(S, np.float64) if probs is None else probs(np.asarray(S, np.float64))  # (N, K)
    p_true = None if probs is None else outputs[np.arange(len(pred)), raw.labels]
    return Evaluation(
        split,
        raw.images,
        raw.labels,
        pred,
        metrics,
        confusion_matrix(raw.labels, pred),
        snap.data.changed(reader.checksums),
        p_true,
        outputs,
    )


def split_files(snap: Snapshot, split: str, fmt: str) -> list[str]:
    """The batch files (names in the layout ``fmt``) that evaluating ``snap`` on ``split`` reads
    (see :func:`cifarlin.data.cifar.load_split`)."""
    spec = snap.config.split
    if split == "test":
        which: list[int | str] = ["test"]
    elif split == "val" and spec.val_size is None:
        which = [2]
    else:
        which = list(spec.train_batches)
    return [batch_name(fmt, w) for w in which]  # type: ignore[arg-type]


def _file_md5(path: Path) -> str | None:
    """The MD5 of a regular file of at most a batch file's size, or None (missing, unreadable,
    a FIFO or device, too big)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BATCH_BYTES:
            return None
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "md5").hexdigest()
    except OSError:
        return None


def recorded_dataset(
    snaps: list[Snapshot], split: str, on_notice: Callable[[str], None] | None = None
) -> Dataset | None:
    """The data folder the models were trained on (``Snapshot.data``), when it still holds every
    file that evaluating each of them on ``split`` reads, each with the MD5 recorded at training;
    None otherwise (no folder recorded, moved, changed, or files not recorded). ``on_notice``
    hears why a recorded folder that still exists is not used."""
    hashes: dict[Path, str | None] = {}
    for folder in dict.fromkeys(s.data.folder for s in snaps if s.data.folder):
        dataset = locate(Path(folder)) if Path(folder).is_dir() else None
        if dataset is None:
            continue
        bad = None
        for snap in snaps:
            if snap.data.format != dataset.format:
                bad = f"it holds the {dataset.format} version, {snap.data.format} was trained on"
                break
            for name in split_files(snap, split, dataset.format):
                path = dataset.path(name)
                if path not in hashes:
                    hashes[path] = _file_md5(path)
                if hashes[path] is None:
                    bad = f"no readable {name} there"
                    break
                if hashes[path] != snap.data.checksums.get(name):
                    bad = f"its {name} is not the file trained on"
                    break
            if bad:
                break
        if bad is None:
            return dataset
        if on_notice is not None:
            on_notice(f"the folder the model was trained on, {folder}, cannot be used: {bad}")
    return None


def _inputs(
    snap: Snapshot, images: np.ndarray, reader: Reader, split: str, feature_cache: Path | None
) -> np.ndarray:
    """The model's inputs for a split's images; a model on features reads those of a whole batch
    file from the feature cache (where training left them) instead of extracting them again."""
    whole = {"test": "test", "val": 2}.get(split) if snap.config.val_size is None or split == "test" else None
    if snap.features is None or whole is None or feature_cache is None:
        return snap.inputs(images)
    from cifarlin.features.cache import FeatureCache

    md5 = reader.batch_md5(whole)
    F = FeatureCache(feature_cache).features(snap.features, md5, images)[0]
    return snap.normalizer.apply(
        F, np.dtype(snap.config.dtype), out=F if snap.config.dtype == "float32" else None
    )


def ensemble_loss(losses: list[str]) -> str:
    """The loss an ensemble of models of ``losses`` is measured by: theirs when they share one,
    else their names joined by '+' (no loss: see :func:`ensemble`)."""
    return "+".join(dict.fromkeys(losses))


def averaged_losses(outputs: np.ndarray, labels: np.ndarray, loss: str) -> np.ndarray:
    """Per-image losses (N,) of averaged outputs (N, K) under ``loss``: for ce the cross-entropy
    -log p_y of the averaged softmax probabilities, for bce the binary cross-entropy
    -(1/K) sum_k [y_k log p_k + (1 - y_k) log(1 - p_k)] of the averaged sigmoids, for a loss of
    scores that loss of the averaged scores (inf where a probability of the true class is 0)."""
    rows = np.arange(len(labels))
    if LOSSES[loss].probs is None:
        return LOSSES[loss].losses(outputs, labels)
    with np.errstate(divide="ignore"):
        if loss == "ce":
            return -np.log(outputs[rows, labels])
        logs = np.log1p(-outputs)  # (N, K) log(1 - p_k)
        logs[rows, labels] = np.log(outputs[rows, labels])
        return -logs.mean(axis=1)


def ensemble(evals: list[Evaluation], losses: list[str]) -> Evaluation:
    """The average of several models' class probabilities (or, for models of a loss without
    probabilities, hinge or squared, their scores: all of one loss) on the same images,
    classified by its highest entry. Its loss is the models' loss of the averaged outputs
    (:func:`averaged_losses`; NaN for a mix of ce and bce models, whose averaged probabilities
    are neither kind), and its cost that loss: no penalty (it has no one W)."""
    first = evals[0]
    for ev in evals[1:]:
        if not np.array_equal(ev.labels, first.labels):
            raise bad_value(
                "split",
                first.split,
                "the models hold out different images here; "
                "ensemble them on the test split (or on models trained on the same split)",
            )
    scores = [name for name in losses if LOSSES[name].probs is None]
    if scores and len(set(losses)) > 1:
        raise bad_value(
            "ensemble", ",".join(losses), f"{LOSSES[scores[0]].label} scores average only with their own kind"
        )
    mean = np.mean([ev.outputs for ev in evals], axis=0)  # (N, K)
    pred = mean.argmax(axis=1)
    rows = np.arange(len(pred))
    p_true = None if scores else mean[rows, first.labels]
    accuracy = float((pred == first.labels).mean())
    name = ensemble_loss(losses)
    loss = float(averaged_losses(mean, first.labels, name).mean()) if name in LOSSES else float("nan")
    return Evaluation(
        first.split,
        first.images,
        first.labels,
        pred,
        model.Metrics(loss, loss, accuracy),
        confusion_matrix(first.labels, pred),
        sorted({f for ev in evals for f in ev.changed_files}),
        p_true,
        mean,
    )
