"""Every choice cifarlin makes on validation data, tested where choosing on the test split gives
another answer (issue 25).

On tiny_py every candidate of every choice scores 1.00 on every split, so a choice made on the
test split (or on none) passed. Here the data are disagreeing_py (noisy images whose test batch
is labelled as the next class: see cifar_files.write_disagreeing_dataset). Each test computes
the validation and test accuracy of every candidate itself (val_oracle: NumPy in float64, from
the raw batch files), asserts that the two splits pick different candidates, and then that
cifarlin picked the validation one. The ridge lambda on pixels is in test_ridge_cli.py (it
needs the 3072 x 3072 eigendecomposition).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cifarlin.cli import app
from cifarlin.core import config, encode, train
from cifarlin.data import cifar as data
from cifarlin.store import checkpoint, featuremap
from cifarlin.work.prepare import prepare
from cli_helpers import train_json
from val_oracle import (
    LAMBDAS,
    Standardise,
    assert_clear,
    assert_disagree,
    batch,
    best_epoch,
    best_lambda,
    cost,
    patience_stop,
    refine_box,
    ridge_solutions,
    scored,
)

# ---------------------------------------------------------------------------------------------
# Gradient descent: --keep best and --patience choose an epoch
# ---------------------------------------------------------------------------------------------

# A large step: the validation accuracy climbs, drops and climbs again (the most at epoch 11,
# equalled but not beaten by the four after it), while the test accuracy (labels of the next
# class) is highest at epoch 1. (The training accuracy would pick epoch 11 too: this data
# tells validation from test, not from the training set.)
GD = ("--eta", "4", "--batch-size", "20", "--epochs", "15")


@pytest.fixture(scope="module")
def trajectory(disagreeing_py):
    """The weights after each of GD's 15 epochs (train.fit, as `cifarlin train` with GD and
    the defaults; the tests check they are the command's), and each epoch's correct
    validation and test images counted here."""
    cfg = config.TrainConfig(eta=4.0, batch_size=20, epochs=15)
    prepared = prepare(data.Dataset(disagreeing_py, "python"), cfg.split)
    weights = []
    train.fit(
        cfg, prepared, train.init_state(cfg), on_epoch=lambda s: weights.append((s.W.copy(), s.b.copy()))
    )
    assert len(weights) == 15
    images, _ = batch(disagreeing_py, "data_batch_1")
    pixels = Standardise(images)
    counts, gaps = {}, []
    for split, name in (("val", "data_batch_2"), ("test", "test_batch")):
        images, labels = batch(disagreeing_py, name)
        Z = pixels(images)
        scores = [scored(Z, W, b, labels) for W, b in weights]
        counts[split] = [c for c, _ in scores]
        gaps += [g for _, g in scores]
    assert_clear(gaps)
    return weights, counts["val"], counts["test"], len(labels)


# Where the validation images come from: data_batch_2, or the tail of the training batches
# (--val-size); here the same 200 images either way, so the same trajectory and counts hold.
SPLITS = [
    pytest.param((), id="val-data_batch_2"),
    pytest.param(("--train-batches", "1-2", "--val-size", "200"), id="val-tail"),
]


@pytest.mark.parametrize("split", SPLITS)
def test_keep_best_keeps_the_epoch_best_on_validation(disagreeing_py, tmp_path, trajectory, split):
    """Bug: model.h5 holding the epoch best on the test set (or the last, or the latest of tied
    epochs), or the epochs' validation accuracies measured on another split."""
    weights, val, test, n = trajectory
    assert_disagree(val, test, best_epoch)
    best = best_epoch(val)  # 0-based
    assert best != len(val) - 1, "the fixture must make the best epoch differ from the last"
    s = train_json(disagreeing_py, tmp_path / "r", "--no-plots", *GD, *split, "--keep", "best")
    assert s["model_epoch"] == best + 1 == s["best_epoch"]
    assert s["history"]["val_acc"] == [c / n for c in val]  # validation is data_batch_2, scored alike
    snap = checkpoint.load_snapshot(tmp_path / "r" / "model.h5")
    assert snap.kept_epoch == best + 1
    assert np.array_equal(snap.state.W, weights[best][0]) and np.array_equal(snap.state.b, weights[best][1])
    assert s["test"]["accuracy"] == test[best] / n  # the kept model's, measured once
    last = checkpoint.load_snapshot(tmp_path / "r" / "checkpoint.h5")
    assert np.array_equal(last.state.W, weights[-1][0]), "the trajectory is not the command's"


@pytest.mark.parametrize("split", SPLITS)
def test_patience_counts_epochs_without_a_better_validation_accuracy(
    disagreeing_py, tmp_path, trajectory, split
):
    """Bug: early stopping that watches the test accuracy (it stops this run at another epoch)."""
    weights, val, test, n = trajectory
    stop, stop_on_test = patience_stop(val, 3), patience_stop(test, 3)
    assert stop < len(val) and stop != stop_on_test, (
        f"the fixture must stop the run early, and the test split elsewhere ({stop}, {stop_on_test})"
    )
    s = train_json(disagreeing_py, tmp_path / "r", "--no-plots", *GD, *split, "--patience", "3")
    assert s["epochs"] == stop and s["stopped_early"]
    assert s["history"]["val_acc"] == [c / n for c in val[:stop]]
    snap = checkpoint.load_snapshot(tmp_path / "r" / "model.h5")
    assert snap.state.epoch == stop and np.array_equal(snap.state.W, weights[stop - 1][0])


# ---------------------------------------------------------------------------------------------
# Ridge on k-means features: lambda chosen on the feature run's validation rows
# ---------------------------------------------------------------------------------------------

# a map of 32 centroids (128 features) learnt from data_batch_1's first 180 images
FIT32 = ["--centroids", "32", "--patches", "2000", "--iterations", "3", "--train-batches", "1"]
FIT32 += ["--val-size", "20"]


@pytest.mark.slow  # about 2-5 s each: fitting the map, extracting 400-600 images' features
@pytest.mark.parametrize(
    "split",
    [
        pytest.param((), id="val-data_batch_2"),
        pytest.param(("--train-batches", "1", "--val-size", "100"), id="val-last-100"),
    ],
)
def test_ridge_on_features_chooses_lambda_on_validation(runner, disagreeing_py, tmp_path, split):
    """Bug: a feature run whose validation rows are the test batch's (or the training rows'),
    from data_batch_2 or from the tail of the training batches, or a lambda chosen on them."""
    fmap_file = tmp_path / "k32.h5"
    r = runner.invoke(
        app, ["features", "fit", *FIT32, "--out", str(fmap_file), "--data-dir", str(disagreeing_py)]
    )
    assert r.exit_code == 0, r.output
    fmap = featuremap.load(fmap_file)
    s = train_json(
        disagreeing_py,
        tmp_path / "r",
        "--no-plots",
        "--features",
        str(fmap_file),
        "--solver",
        "ridge",
        *split,
    )

    one, one_labels = batch(disagreeing_py, "data_batch_1")
    F1 = encode.extract(fmap, one)
    if split:  # the first 100 images train, the last 100 validate
        rows = {"train": (F1[:100], one_labels[:100]), "val": (F1[100:], one_labels[100:])}
    else:
        two, two_labels = batch(disagreeing_py, "data_batch_2")
        rows = {"train": (F1, one_labels), "val": (encode.extract(fmap, two), two_labels)}
    test_images, test_labels = batch(disagreeing_py, "test_batch")
    rows["test"] = (encode.extract(fmap, test_images), test_labels)
    standardise = Standardise(rows["train"][0], scale=1.0, eps=0.01)
    solutions = ridge_solutions(standardise(rows["train"][0]), rows["train"][1], LAMBDAS)
    counts, gaps = {}, []
    for name in ("val", "test"):
        Z, y = standardise(rows[name][0]), rows[name][1]
        scores = [scored(Z, W, b, y) for W, b in solutions]
        counts[name] = [c for c, _ in scores]
        gaps += [g for _, g in scores]
    assert_clear(gaps)
    val, test = counts["val"], counts["test"]
    assert_disagree(val, test, best_lambda)

    pick = best_lambda(val)
    assert s["config"]["lam"] == pytest.approx(LAMBDAS[pick])
    assert s["test"]["accuracy"] == test[pick] / len(test_labels)
    search = s["lambda_search"]  # every candidate's accuracy, as reported, is the validation rows'
    assert [c["lam"] for c in search] == pytest.approx(list(LAMBDAS))
    assert [c["val_accuracy"] for c in search] == [c / len(rows["val"][1]) for c in val]


# ---------------------------------------------------------------------------------------------
# The sweep: its best trial and its second round's box
# ---------------------------------------------------------------------------------------------

ETA_LOW, ETA_HIGH = 0.01, 4.0


@pytest.fixture(scope="module")
def random_sweep(disagreeing_py, tmp_path_factory):
    """A random search of 8 trials over eta with a second round of 2 (keep best, so each trial is
    ranked by its best epoch), on two worker processes; and each trial's saved model's correct
    validation and test images and validation cost, computed here."""
    from typer.testing import CliRunner

    out = tmp_path_factory.mktemp("sweep") / "s"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(out.parent / "xdg-cache"))
        mp.chdir(out.parent)
        args = f"sweep --eta {ETA_LOW}..{ETA_HIGH} --trials 8 --refine 2 --keep best".split()
        args += ["--batch-size", "20", "--epochs", "15", "--workers", "2", "--data-dir", str(disagreeing_py)]
        r = CliRunner().invoke(app, [*args, "--out", str(out), "--json", "--no-plots"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    images, _ = batch(disagreeing_py, "data_batch_1")
    pixels = Standardise(images)
    splits = {}
    for split, name in (("val", "data_batch_2"), ("test", "test_batch")):
        images, labels = batch(disagreeing_py, name)
        splits[split] = (pixels(images), labels)
    facts, gaps = {}, []
    for t in doc["trials"]:
        assert t["status"] == "done", t
        snap = checkpoint.load_snapshot(Path(t["run_dir"]) / "model.h5")
        W, b = snap.state.W, snap.state.b
        (val, val_gap), (test, test_gap) = (scored(Z, W, b, y) for Z, y in (splits["val"], splits["test"]))
        facts[t["name"]] = {"val": val, "test": test, "cost": cost(splits["val"][0], W, b, splits["val"][1])}
        gaps += [val_gap, test_gap]
    assert_clear(gaps)
    return doc, facts, len(splits["val"][1])


def ranking(names: list[str], facts: dict, key: str) -> list[str]:
    """Trials best first as the sweep documents it on the validation set (most correct images,
    then the lowest validation cost, then the earlier trial); with key="test", by the test set."""
    if key == "val":
        return sorted(names, key=lambda t: (-facts[t]["val"], facts[t]["cost"], names.index(t)))
    return sorted(names, key=lambda t: (-facts[t]["test"], names.index(t)))


@pytest.mark.slow
def test_sweep_best_trial_is_the_best_on_validation(random_sweep):
    """Bug: the best trial picked by its test accuracy (or its last epoch's validation accuracy
    when it saved its best), or a trial's validation accuracy measured on another split."""
    doc, facts, n = random_sweep
    names = [t["name"] for t in doc["trials"]]
    for t in doc["trials"]:  # each trial's figure is its saved model's, on validation
        assert t["val_accuracy"] == facts[t["name"]]["val"] / n, t["name"]
        assert t["val_cost"] == pytest.approx(facts[t["name"]]["cost"], rel=1e-5)
    by_val, by_test = ranking(names, facts, "val"), ranking(names, facts, "test")
    best, best_on_test = by_val[0], by_test[0]
    runner_up = by_val[1]
    assert (facts[best]["val"], facts[best]["cost"]) != (facts[runner_up]["val"], facts[runner_up]["cost"])
    assert best != best_on_test and facts[best]["test"] < facts[best_on_test]["test"], (
        f"the fixture must make the test split pick another trial ({best}, {best_on_test}): {facts}"
    )
    assert doc["best"]["name"] == best
    assert doc["best"]["test_accuracy"] == facts[best]["test"] / n


@pytest.mark.slow
def test_refined_box_is_around_the_best_on_validation(random_sweep):
    """Bug: round 2 narrowed around the trials best on the test set (or the worst)."""
    doc, facts, _ = random_sweep
    round1 = [t["name"] for t in doc["trials"] if t["round"] == 1]
    eta = {t["name"]: t["params"]["eta"] for t in doc["trials"]}
    top = math.ceil(0.25 * len(round1))  # the best quarter of round 1
    by_val, by_test = ranking(round1, facts, "val"), ranking(round1, facts, "test")
    assert facts[by_val[top - 1]]["val"] > facts[by_val[top]]["val"], "the best quarter must be clear-cut"
    want = refine_box([eta[t] for t in by_val[:top]], ETA_LOW, ETA_HIGH)
    on_test = refine_box([eta[t] for t in by_test[:top]], ETA_LOW, ETA_HIGH)
    assert want[1] < on_test[0] or on_test[1] < want[0], "the fixture must put the test split's box elsewhere"
    assert doc["round2_box"]["eta"] == pytest.approx(list(want), rel=1e-9)
    assert all(want[0] <= eta[t["name"]] <= want[1] for t in doc["trials"] if t["round"] == 2)
