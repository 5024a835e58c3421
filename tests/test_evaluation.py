"""Confusion matrix and per-class accuracy: their orientation (rows are the true class) and their
values, on hand-counted examples and on a saved model classifying a split. Each test's
docstring names the bug it catches."""

from __future__ import annotations

import numpy as np
import pytest

from cifar_files import make_split
from cifarlin.core import config
from cifarlin.core.config import TrainConfig
from cifarlin.data import cifar as data
from cifarlin.store import checkpoint
from cifarlin.work import evaluation, runs
from cifarlin.work.prepare import prepare

# Three classes: class 0 has 10 images (8 right, 2 taken for class 1), class 1 has 10 (5 right,
# 5 taken for class 2), class 2 has 1 image (right). Recall and precision disagree for every class.
Y_TRUE = np.array([0] * 10 + [1] * 10 + [2])
Y_PRED = np.array([0] * 8 + [1] * 2 + [1] * 5 + [2] * 5 + [2])
CONFUSION = [[8, 2, 0], [0, 5, 5], [0, 0, 1]]
RECALL = [8 / 10, 5 / 10, 1 / 1]  # per true row
PRECISION = [8 / 8, 5 / 7, 1 / 6]  # per predicted column: the wrong answer


def counted(y_true, y_pred, K):
    """C[i, j] counted one image at a time: true class i, predicted class j."""
    C = np.zeros((K, K), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        C[t, p] += 1
    return C


def test_confusion_rows_are_the_true_class():
    """Catches: a transposed confusion matrix (rows = predicted class)."""
    assert counted(Y_TRUE, Y_PRED, 3).tolist() == CONFUSION
    assert evaluation.confusion_matrix(Y_TRUE, Y_PRED, K=3).tolist() == CONFUSION
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 10, 200), rng.integers(0, 10, 200)
    assert np.array_equal(evaluation.confusion_matrix(y, p), counted(y, p, 10))


def test_per_class_accuracy_is_the_recall_of_each_true_class():
    """Catches: per-class accuracy computed per predicted column (precision) instead of per true
    row (recall), and a class with no images giving NaN instead of 0."""
    assert RECALL != PRECISION
    assert evaluation.per_class_accuracy(np.array(CONFUSION)).tolist() == RECALL
    empty = np.array([[3, 1, 0], [0, 0, 0], [2, 0, 4]])  # class 1 has no images
    assert evaluation.per_class_accuracy(empty).tolist() == [3 / 4, 0.0, 4 / 6]


@pytest.fixture(scope="module")
def model_file(tiny_py, tmp_path_factory):
    """A model trained in float64 (its predictions do not hinge on float32 rounding)."""
    prepared = prepare(data.Dataset(tiny_py, "python"), config.SplitSpec(), dtype=np.float64)
    out = tmp_path_factory.mktemp("eval") / "run"
    runs.run(TrainConfig(epochs=2, batch_size=10, eta=0.001, dtype="float64"), out, prepared)
    return out / "model.h5"


def test_evaluate_split_counts_every_image_where_it_belongs(model_file, tiny_py):
    """Catches: a transposed confusion matrix, per-class precision instead of recall, and
    predictions made without the model's own normalisation, on a real model and split."""
    snap = checkpoint.load_snapshot(model_file)
    ev = evaluation.evaluate_split(snap, data.Dataset(tiny_py, "python"), "test")
    images, labels = make_split(50, seed=99)  # the tiny test batch, made independently
    W, b = snap.state.W, snap.state.b
    mean, std = snap.normalizer.mean, snap.normalizer.std
    S = ((images / 255 - mean) / std) @ W.T + b  # the README's recipe
    top2 = np.sort(S, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-9  # no near ties: the predictions are unambiguous
    pred = S.argmax(axis=1)
    C = counted(labels, pred, 10)
    assert not np.array_equal(C, C.T)  # a transposed matrix would show
    recall = [C[i, i] / C[i].sum() for i in range(10)]
    precision = [C[i, i] / max(C[:, i].sum(), 1) for i in range(10)]
    assert recall != precision  # precision instead of recall would show
    assert np.array_equal(ev.labels, labels) and np.array_equal(ev.predictions, pred)
    assert ev.confusion.tolist() == C.tolist()
    assert ev.per_class_accuracy.tolist() == recall
    assert ev.metrics.accuracy == np.trace(C) / 50
