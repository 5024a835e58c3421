"""Confusion matrix and per-class accuracy: their orientation (rows are the true class) and their
values, on hand-counted examples and on a saved model classifying a split. Each test's
docstring names the bug it catches."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from cifar_files import make_split
from cifarlin.cli import app
from cifarlin.core import config
from cifarlin.core.config import TrainConfig
from cifarlin.data import cifar as data
from cifarlin.store import checkpoint
from cifarlin.work import evaluation, runs
from cifarlin.work.prepare import prepare
from cli_helpers import TINY
from tolerances import U32, U64, cost_rounding, min_gap, normalised_error, product_error

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


def test_cli_train_then_evaluate(runner, tiny_py, tmp_path):
    out = tmp_path / "s2"
    r = runner.invoke(
        app,
        [
            "train",
            "--setting",
            "2",
            "--epochs",
            "2",
            "--json",
            "--out",
            str(out),
            "--data-dir",
            str(tiny_py),
            *TINY,
        ],
    )
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert (
        s["setting"] == 2 and s["epochs"] == 2 and s["config"]["eta"] == 0.001 and s["config"]["lam"] == 0.0
    )
    assert s["config"]["batch_size"] == 10 and s["reference_test_accuracy"] == 0.3898
    assert set(s["test"]) == {"cost", "loss", "accuracy"} and 1 <= s["best_epoch"] <= 2
    assert Path(s["files"]["model"]) == out / "model.h5"
    assert r.stderr.count("epoch 1/2") == 1 and r.stderr.count("epoch 2/2") == 1
    e = runner.invoke(app, ["evaluate", str(out / "model.h5"), "--json", "--data-dir", str(tiny_py)])
    assert e.exit_code == 0, e.output
    ev = json.loads(e.stdout)
    assert ev["accuracy"] == s["test"]["accuracy"] and ev["cost"] == s["test"]["cost"]  # exactly
    assert ev["split"] == "test" and ev["images"] == 50 and ev["same_data_as_training"] is True
    cm = np.array(ev["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 50 and np.trace(cm) / 50 == ev["accuracy"]
    assert list(ev["per_class_accuracy"]) == ev["class_names"]
    # Catches a transposed confusion matrix and per-class precision instead of recall: both
    # recomputed here from model.h5 and the tiny test batch, image by image.
    from cifar_files import NAMES, make_split

    with h5py.File(out / "model.h5", "r") as f:
        W, b, mean, std = (f[k][()].astype(np.float64) for k in ("W", "b", "mean", "std"))
    images, labels = make_split(50, seed=99)  # the tiny test batch
    Xn = (images / 255 - mean) / std  # (50, d), as float64
    S = Xn @ W.T + b
    # evaluate computes S in float32 (any kernel): within its product's and normalisation's
    # rounding of this S. An image whose top two scores are closer than twice that may be
    # counted under either class: every such choice is allowed, the others are exact.
    E = product_error(Xn, W.T, U32, b) + normalised_error(Xn, mean / std, U32) @ np.abs(W).T
    close = np.flatnonzero(min_gap(S) <= 2 * E.max(axis=1))
    assert len(close) <= 3  # so that the check below still pins the matrix
    top2 = np.argsort(-S, axis=1)[:, :2]
    allowed = []
    for pick in itertools.product((0, 1), repeat=len(close)):
        pred = S.argmax(axis=1)
        pred[close] = top2[close, list(pick)]
        m = np.zeros((10, 10), dtype=int)
        np.add.at(m, (labels, pred), 1)  # row: true class, column: predicted class
        allowed.append(m.tolist())
    assert all(not np.array_equal(np.array(m), np.array(m).T) for m in allowed)  # a transposed one shows
    assert cm.tolist() in allowed
    expected = np.array(cm.tolist())  # one of the recomputed matrices
    recall = {n: int(expected[i, i]) / int(expected[i].sum()) for i, n in enumerate(NAMES)}
    precision = {n: int(expected[i, i]) / max(int(expected[:, i].sum()), 1) for i, n in enumerate(NAMES)}
    assert recall != precision  # per-class precision would show
    assert ev["class_names"] == NAMES
    assert ev["per_class_accuracy"] == recall
    v = runner.invoke(app, ["evaluate", str(out), "--split", "val", "--json", "--data-dir", str(tiny_py)])
    assert json.loads(v.stdout)["accuracy"] == s["val"]["accuracy"]
    t = runner.invoke(app, ["evaluate", str(out), "--split", "train", "--json", "--data-dir", str(tiny_py)])
    # The training-set metrics are gathered by the next epoch's passes (or, after the last epoch,
    # by the same passes on their own): summed batch by batch, they may differ from evaluating the
    # whole split in the last bits of the cost (a wrong penalty or split differs by far more);
    # the accuracy is a count, exact.
    train_images, train_labels = make_split(50, seed=1)  # data_batch_1 of the tiny set
    Xt = (train_images / 255 - mean) / std
    both = 2 * cost_rounding("ce", W, b, Xt, train_labels, 0.0, U64, products=U32)  # two computations
    assert json.loads(t.stdout)["cost"] == pytest.approx(s["train"]["cost"], abs=both)
    assert json.loads(t.stdout)["accuracy"] == s["train"]["accuracy"]
