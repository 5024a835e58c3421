"""`train --solver ridge` end to end on tiny data: the model file holds the exact optimum of the
squared loss, lambda is chosen on the validation set, and every command reads the result."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cifarlin.cli import app
from cifarlin.core import augment, model, ridge
from cifarlin.core.config import SplitSpec
from cifarlin.data import cifar as data
from cifarlin.store import checkpoint
from cli_helpers import train_json
from tolerances import U64, assert_within
from val_oracle import (
    LAMBDAS,
    Standardise,
    assert_clear,
    assert_disagree,
    batch,
    best_lambda,
    ridge_solutions,
    scored,
)

RIDGE = ["--solver", "ridge", "--no-plots"]


def raw_training(tiny_py, spec=SplitSpec()):
    batches, n_train = data.Reader(data.Dataset(tiny_py, "python")).train_batches(spec)
    images = np.concatenate([b.images for b in batches])[:n_train]
    labels = np.concatenate([b.labels for b in batches])[:n_train]
    return images, labels


@pytest.mark.parametrize("views", ["none", "flip,translate:1"])
def test_model_file_holds_the_exact_optimum_of_the_squared_loss(tiny_py, tmp_path, views):
    """Bug: a solution of another objective (a penalised bias, lambda scaled by n), or views left
    out. At the optimum the gradient of J (--loss mse, over every view of every image) is zero."""
    s = train_json(tiny_py, tmp_path / "r", *RIDGE, "--lam", "0.3", "--augment", views, "--dtype", "float64")
    assert s["config"]["lam"] == 0.3 and not s["config"]["choose_lam"] and s["lambda_search"] == []
    snap = checkpoint.load_snapshot(tmp_path / "r" / "model.h5")
    assert snap.config.solver == "ridge" and snap.config.loss == "mse" and snap.state.epoch == 1
    images, labels = raw_training(tiny_py)
    maps = augment.views(augment.parse_augment(views))
    X = np.concatenate([snap.normalizer.apply(images[:, v], np.float64) for v in maps])  # (n views, d)
    y = np.tile(labels, len(maps))
    dW, db = model.gradients(snap.state.W, snap.state.b, X, y, 0.3, "mse")
    scale = np.abs(model.gradients(0 * snap.state.W, 0 * snap.state.b, X, y, 0.3, "mse")[0]).max()
    assert np.abs(dW).max() < 1e-9 * scale and np.abs(db).max() < 1e-9 * scale
    # its normaliser is the views' own mean and std (what the solver fitted on): exact integer
    # sums divided by 255 n there (two roundings); here uint8 summed exactly in float64, divided
    # by n, then by 255 (two roundings)
    want = np.concatenate([images[:, v] for v in maps]).mean(0) / 255
    assert_within(snap.normalizer.mean, want, 4 * U64 * want, "mean")


def test_lambda_is_chosen_on_the_validation_set(runner, disagreeing_py, tmp_path):
    """Bug: lambda chosen on the test set (or the training set), or not the best candidate, or not
    reported. On tiny_py every candidate scored 1.00 on every split, so any choice passed (issue
    25): disagreeing_py makes validation and test pick different lambdas, and every candidate's
    accuracies are computed here, by another route (the n x n dual system, float64)."""
    s = train_json(disagreeing_py, tmp_path / "r", *RIDGE)
    search = s["lambda_search"]
    assert [c["lam"] for c in search] == list(ridge.lambda_grid())  # JSON keeps a float64 exactly
    best = max(c["val_accuracy"] for c in search)
    chosen = [c for c in search if c["lam"] == s["config"]["lam"]]
    assert s["config"]["choose_lam"] and len(chosen) == 1 and chosen[0]["val_accuracy"] == best
    assert s["val"]["accuracy"] == best  # the history's validation accuracy is the chosen one's

    images, labels = batch(disagreeing_py, "data_batch_1")
    pixels = Standardise(images)
    solutions = ridge_solutions(pixels(images), labels, LAMBDAS)
    counts, gaps = {}, []
    for split, name in (("train", "data_batch_1"), ("val", "data_batch_2"), ("test", "test_batch")):
        images, labels = batch(disagreeing_py, name)
        scores = [scored(pixels(images), W, b, labels) for W, b in solutions]
        counts[split] = [c for c, _ in scores]
        gaps += [g for _, g in scores]
    assert_clear(gaps)
    assert_disagree(counts["val"], counts["test"], best_lambda)
    pick, n = best_lambda(counts["val"]), len(labels)
    assert best_lambda(counts["train"]) != pick  # choosing on the training set would fail too
    assert s["config"]["lam"] == pytest.approx(LAMBDAS[pick])
    assert s["test"]["accuracy"] == counts["test"][pick] / n
    assert [c["val_accuracy"] for c in search] == [c / n for c in counts["val"]]
    e = runner.invoke(
        app, ["evaluate", str(tmp_path / "r" / "model.h5"), "--json", "--data-dir", str(disagreeing_py)]
    )
    assert e.exit_code == 0, e.output
    assert json.loads(e.stdout)["accuracy"] == s["test"]["accuracy"]


def test_a_finished_run_is_reused_with_its_chosen_lambda(tiny_py, tmp_path):
    out = str(tmp_path / "r")
    first = train_json(tiny_py, out, *RIDGE)
    again = train_json(tiny_py, out, *RIDGE)
    assert again["reused"] and again["config"] == first["config"] and again["test"] == first["test"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--setting", "2"], "the settings are gradient-descent recipes"),
        (["--epochs", "3"], "solves in one step"),
        (["--loss", "ce"], "minimises the squared loss"),
    ],
)
def test_options_that_do_not_apply_are_refused(runner, tiny_py, args, message):
    r = runner.invoke(app, ["train", "--solver", "ridge", "--data-dir", str(tiny_py), *args])
    assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.output


def test_predict_and_export_read_a_ridge_model(runner, tiny_py, tmp_path):
    train_json(tiny_py, tmp_path / "r", *RIDGE, "--lam", "1")
    images, _ = raw_training(tiny_py)
    np.save(tmp_path / "x.npy", images[:3].reshape(3, 3, 32, 32).transpose(0, 2, 3, 1))
    p = runner.invoke(app, ["predict", str(tmp_path / "r" / "model.h5"), str(tmp_path / "x.npy")])
    assert p.exit_code == 0, p.output
    assert "scores, not probabilities" in p.stdout
    x = runner.invoke(app, ["export", str(tmp_path / "r" / "model.h5"), "--to", str(tmp_path / "m.npz")])
    assert x.exit_code == 0, x.output
    with np.load(tmp_path / "m.npz") as z:
        snap = checkpoint.load_snapshot(tmp_path / "r" / "model.h5")
        assert np.array_equal(z["W"], snap.state.W)
