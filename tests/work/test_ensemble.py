"""evaluate with several models and --ensemble.

Each test names the bug it would catch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cifarlin.cli import app
from cifarlin.core import config, losses
from cifarlin.data import cifar as data
from cifarlin.store import checkpoint
from cifarlin.work import evaluation
from cifarlin.work.prepare import prepare
from cli_helpers import train

TINY = ["--batch-size", "10", "--epochs", "2", "--no-plots", "--quiet"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_py):
    root = tmp_path_factory.mktemp("ens")
    out = {}
    for name, args in {
        "a": ["--seed", "0"],
        "b": ["--seed", "1", "--eta", "0.01"],
        "svm": ["--loss", "svm"],
        "svm2": ["--loss", "svm", "--seed", "3"],
        "bce": ["--loss", "bce", "--eta", "0.01"],
        "held": ["--train-batches", "1,3", "--val-size", "20"],
        "penalised": ["--lam", "0.1", "--seed", "2"],
    }.items():
        train(tiny_py, root / name, *TINY, *args)
        out[name] = root / name / "model.h5"
    return out


def run(runner, tiny_py, *args):
    r = runner.invoke(app, ["evaluate", *map(str, args), "--data-dir", str(tiny_py), "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_an_ensemble_of_one_model_is_the_model(runner, tiny_py, models):
    """Bug: the ensemble averaging something other than the models' own outputs."""
    out = run(runner, tiny_py, models["a"], "--ensemble")
    one, ens = out["models"][0], out["ensemble"]
    assert ens["accuracy"] == one["accuracy"] and ens["confusion_matrix"] == one["confusion_matrix"]
    # the mean of one array is that array (a sum of one term, divided by 1: exact)
    assert ens["mean_true_class_probability"] == one["mean_true_class_probability"]


def test_an_ensemble_averages_probabilities(runner, tiny_py, models):
    """Bug: scores averaged instead of probabilities, or the last model's answer used."""
    out = run(runner, tiny_py, models["a"], models["b"], models["bce"], "--ensemble")
    dataset = data.Dataset(tiny_py, "python")
    outputs, labels = [], None
    for name in ("a", "b", "bce"):
        ev = evaluation.evaluate_split(checkpoint.load_snapshot(models[name]), dataset, "test")
        outputs.append(ev.outputs)
        labels = ev.labels
    mean = np.mean(outputs, axis=0)  # softmax, softmax and sigmoid outputs
    # evaluate_split here and in the command: the same operations on the same shapes, one BLAS
    # thread, so the same outputs to the bit, and the same mean of them
    assert out["ensemble"]["accuracy"] == np.mean(mean.argmax(axis=1) == labels)
    assert out["ensemble"]["mean_true_class_probability"] == mean[np.arange(50), labels].mean()
    assert [m["model"] for m in out["models"]] == [str(models[n]) for n in ("a", "b", "bce")]
    assert out["ensemble"]["cost"] is None and out["split"] == "test"


def test_hinge_models_ensemble_by_scores_and_do_not_mix(runner, tiny_py, models):
    """Bug: hinge scores averaged with probabilities (different scales, a meaningless mean)."""
    out = run(runner, tiny_py, models["svm"], models["svm2"], "--ensemble")
    assert out["ensemble"]["mean_true_class_probability"] is None
    r = runner.invoke(
        app, ["evaluate", str(models["a"]), str(models["svm"]), "--ensemble", "--data-dir", str(tiny_py)]
    )
    assert r.exit_code == 2 and "hinge loss scores average only with their own kind" in r.stderr


def test_different_validation_images_are_refused(runner, tiny_py, models):
    """Bug: an ensemble over val splits that hold different images, pairing unrelated predictions."""
    r = runner.invoke(
        app,
        [
            "evaluate",
            str(models["a"]),
            str(models["held"]),
            "--split",
            "val",
            "--ensemble",
            "--data-dir",
            str(tiny_py),
        ],
    )
    assert r.exit_code == 2 and "--split 'val': the models hold out different images" in r.stderr


def test_several_models_give_one_table_on_stdout(runner, tiny_py, models):
    """Bug: one report per model printed in turn (or the table on stderr, lost to `> file`)."""
    r = runner.invoke(app, ["evaluate", str(models["a"]), str(models["svm"]), "--data-dir", str(tiny_py)])
    assert r.exit_code == 0
    lines = [
        ln for ln in r.stdout.splitlines() if str(models["a"].parent) in ln or str(models["svm"].parent) in ln
    ]
    assert len(lines) == 2 and "ce" in lines[0] and "svm" in lines[1]
    assert r.stdout.count("accuracy") == 1  # one header


def test_held_out_split_is_used_for_val(tiny_py, models):
    snap = checkpoint.load_snapshot(models["held"])
    ev = evaluation.evaluate_split(snap, data.Dataset(tiny_py, "python"), "val")
    p = prepare(data.Dataset(tiny_py, "python"), config.SplitSpec((1, 3), 20))
    assert np.array_equal(ev.labels, p.y["val"])


def test_an_ensemble_has_the_loss_of_its_averaged_outputs(runner, tiny_py, models):
    """Bug: the ensemble row's cost and loss left as NaN (they are well defined: the models' loss
    of the averaged probabilities or scores), a penalty added to its cost, or its loss column
    named "mean" instead of the loss."""
    dataset = data.Dataset(tiny_py, "python")
    evs = {n: evaluation.evaluate_split(checkpoint.load_snapshot(models[n]), dataset, "test") for n in models}
    labels, rows = evs["a"].labels, np.arange(50)
    for names, loss, per in (
        (("a", "b"), "ce", lambda M: -np.log(M[rows, labels])),  # the cross-entropy, by definition
        (("svm", "svm2"), "svm", lambda M: losses.svm_losses(M, labels)),
        (("bce",), "bce", lambda M: -np.log(np.where(np.eye(10)[labels] == 1, M, 1 - M)).mean(axis=1)),
    ):
        out = run(runner, tiny_py, *(models[n] for n in names), "--ensemble")["ensemble"]
        want = per(np.mean([evs[n].outputs for n in names], axis=0)).mean()
        assert out["loss_function"] == loss, names
        assert out["loss"] == out["cost"] and out["loss"] == pytest.approx(want, rel=1e-12), names
    # one model alone: its own loss (from its scores, here from its probabilities: to rounding),
    # and no penalty in the ensemble's cost
    for name in ("bce", "penalised"):
        one = run(runner, tiny_py, models[name], "--ensemble")
        alone, ens = one["models"][0], one["ensemble"]
        assert ens["loss"] == ens["cost"] == pytest.approx(alone["loss"], rel=1e-9), name
    assert alone["cost"] > alone["loss"] + 1e-3  # the penalised model's cost: its penalty added


def test_the_ensemble_row_names_its_loss_at_80_columns(runner, tiny_py, models):
    """Bug: 'mean  ...  nan  nan' in the ensemble row, or no word on what its cost is."""
    args = ["evaluate", str(models["a"]), str(models["b"]), "--ensemble", "--data-dir", str(tiny_py)]
    r = runner.invoke(app, args, env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    row = next(ln for ln in r.stdout.splitlines() if ln.startswith("ensemble of 2"))
    assert row.split()[3] == "ce" and "nan" not in row and "mean" not in row
    assert float(row.split()[5]) == float(row.split()[6])  # cost = loss
    assert "\nensemble: cross-entropy loss of the mean probabilities; cost = loss, no penalty\n" in r.stdout
    # (each a line of its own: at 80 columns a longer one would wrap)
    r = runner.invoke(app, [*args, str(models["bce"])], env={"COLUMNS": "80"})  # ce and bce: no loss
    row = next(ln for ln in r.stdout.splitlines() if ln.startswith("ensemble of 3"))
    assert row.split()[3] == "ce+bce" and row.split()[5:7] == ["-", "-"]
    assert "\nensemble: no cost or loss (ce+bce: probabilities of two kinds averaged)\n" in r.stdout
