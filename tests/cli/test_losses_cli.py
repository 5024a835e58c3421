"""--loss through the command line: train, evaluate, gradcheck, visualize; the files and resuming.

Each test names the bug it would catch.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from cifarlin.cli import app
from cifarlin.core import config, model, threads
from cifarlin.data import cifar as data
from cifarlin.store import checkpoint
from cifarlin.work.prepare import prepare
from cli_helpers import train_json
from tolerances import U32, U64, assert_within, outside, product_error, sigmoid_error, softmax_error

TINY = ["--batch-size", "10", "--epochs", "2", "--no-plots"]


@pytest.mark.parametrize("loss", ["svm", "bce", "l2svm"])
def test_train_with_a_loss_stores_it_and_evaluate_uses_it(runner, tiny_py, tmp_path, loss):
    """Bug: the loss not stored in the files, or evaluate reporting the cross-entropy of a model
    trained with another loss."""
    s = train_json(tiny_py, tmp_path / "r", *TINY, "--setting", "3", "--loss", loss)
    assert s["config"]["loss"] == loss and s["config"]["lam"] == 0.1 and s["config"]["eta"] == 0.001
    assert not s["comparable_to_reference"]
    for name in ("model.h5", "checkpoint.h5", "history.h5"):
        with h5py.File(tmp_path / "r" / name) as f:
            assert f.attrs["loss"] == loss and f.attrs["format_version"] == 2
    snap = checkpoint.load_snapshot(tmp_path / "r" / "model.h5")
    p = prepare(data.Dataset(tiny_py, "python"), config.SplitSpec())
    with threads.one_blas_thread():  # as training evaluates: one summation order
        expected = model.evaluate(snap.state.W, snap.state.b, p.X["test"], p.y["test"], 0.1, loss)
    r = runner.invoke(app, ["evaluate", str(tmp_path / "r"), "--data-dir", str(tiny_py), "--json"])
    ev = json.loads(r.stdout)
    assert ev["loss_function"] == loss
    assert ev["loss"] == expected.loss and ev["cost"] == expected.cost == s["test"]["cost"]
    label = {"svm": "hinge loss", "bce": "BCE loss", "l2svm": "squared hinge loss"}[loss]
    assert label in r.stderr
    if loss != "bce":
        assert ev["mean_true_class_probability"] is None
    else:
        S = p.X["test"].astype(np.float64) @ snap.state.W.T.astype(np.float64) + snap.state.b
        sig = 1 / (1 + np.exp(-S[np.arange(len(p.y["test"])), p.y["test"]]))
        # evaluate's float32 scores and these float64 ones, each within product_error of the
        # exact ones; a mean of positive numbers keeps their largest relative error (plus the
        # mean's own rounding, gamma_N of float64)
        E = product_error(p.X["test"], snap.state.W.T, U32, snap.state.b)
        E += product_error(p.X["test"], snap.state.W.T, U64, snap.state.b)
        rel = sigmoid_error(E.max(axis=1)).max() + 2 * len(sig) * U64
        assert_within(ev["mean_true_class_probability"], sig.mean(), rel * sig.mean(), "mean sigmoid")
        P = np.exp(S - S.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)  # a softmax in its place would be seen
        assert outside(P[np.arange(len(p.y["test"])), p.y["test"]].mean(), sig.mean(), rel * sig.mean())


def test_ce_reports_the_mean_softmax_probability_of_the_true_class(runner, tiny_py, tmp_path):
    """Bug: the probability of the predicted class (or of class 0) reported instead."""
    train_json(tiny_py, tmp_path / "r", *TINY)
    snap = checkpoint.load_snapshot(tmp_path / "r" / "model.h5")
    p = prepare(data.Dataset(tiny_py, "python"), config.SplitSpec())
    S = p.X["test"].astype(np.float64) @ snap.state.W.T.astype(np.float64) + snap.state.b
    P = np.exp(S - S.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    r = runner.invoke(app, ["evaluate", str(tmp_path / "r"), "--data-dir", str(tiny_py), "--json", "-q"])
    got = json.loads(r.stdout)["mean_true_class_probability"]
    # evaluate's float32 scores and these float64 ones within E of each other (as above)
    E = product_error(p.X["test"], snap.state.W.T, U32, snap.state.b)
    E += product_error(p.X["test"], snap.state.W.T, U64, snap.state.b)
    rel = softmax_error(E, S).max() + 2 * len(S) * U64
    want = P[np.arange(len(p.y["test"])), p.y["test"]].mean()
    assert_within(got, want, rel * want, "mean probability")
    for bug in (P.max(axis=1).mean(), P[:, 0].mean()):  # the predicted class's, class 0's
        assert outside(bug, want, rel * want)


def test_resume_refuses_another_loss(runner, tiny_py, tmp_path):
    """Bug: a checkpoint trained with one loss continued with another."""
    train_json(tiny_py, tmp_path / "r", *TINY, "--loss", "svm")
    args = ["train", "--out", str(tmp_path / "r"), "--data-dir", str(tiny_py), "--resume", "--loss", "bce"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "--loss 'bce': the run in" in r.stderr and "uses 'svm'" in r.stderr


def test_a_version_1_model_still_evaluates_as_cross_entropy(runner, tiny_py, tmp_path):
    """Bug: files written before the losses existed refused, or read with another loss."""
    train_json(tiny_py, tmp_path / "r", *TINY)
    old = tmp_path / "old.h5"
    old.write_bytes((tmp_path / "r" / "model.h5").read_bytes())
    with h5py.File(old, "a") as f:
        f.attrs["format_version"] = 1
        del f.attrs["loss"]
    assert checkpoint.load_snapshot(old).config.loss == "ce"
    r = runner.invoke(app, ["evaluate", str(old), "--data-dir", str(tiny_py), "--json", "-q"])
    new = runner.invoke(app, ["evaluate", str(tmp_path / "r"), "--data-dir", str(tiny_py), "--json", "-q"])
    assert r.exit_code == 0 and json.loads(r.stdout)["cost"] == json.loads(new.stdout)["cost"]


@pytest.mark.parametrize("loss", ["ce", "svm", "bce", "l2svm"])
def test_gradcheck_loss_on_data(runner, tiny_py, loss):
    """Bug: --loss ignored by gradcheck (every loss checked as the cross-entropy)."""
    r = runner.invoke(app, ["gradcheck", "--loss", loss, "--data-dir", str(tiny_py), "--n", "8", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["loss"] == loss and out["pass"] and out["W"]["checked"] + out["W"]["kinks"] == 30720


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["svm", "bce"])
def test_visualize_probs(runner, tiny_py, tmp_path, loss):
    """Bug: a probability histogram drawn for the hinge (which has no probabilities), or none for bce."""
    train_json(tiny_py, tmp_path / "r", *TINY, "--loss", loss)
    r = runner.invoke(app, ["visualize", str(tmp_path / "r"), "--data-dir", str(tiny_py), "--json"])
    assert r.exit_code == 0, r.output
    names = [p.split("/")[-1] for p in json.loads(r.stdout)["files"]]
    if loss == "svm":
        assert "probs-test.png" not in names and "gives scores, not probabilities" in r.stderr
    else:
        assert "probs-test.png" in names
    r = runner.invoke(app, ["visualize", str(tmp_path / "r"), "--what", "probs", "--data-dir", str(tiny_py)])
    assert r.exit_code == 0
