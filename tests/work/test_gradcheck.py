"""cifarlin gradcheck: the report, the verdict and its exit code."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cifar_files import make_split
from cifarlin.cli import app
from cifarlin.core import model
from cifarlin.work import gradcheck
from tolerances import U64, assert_within, normalised_error, pixel_statistics_error

FIELDS = {"max_rel", "p99_rel", "mean_rel", "max_abs", "checked", "failing", "pass"}


def test_random_json_passes(runner):
    r = runner.invoke(app, ["gradcheck", "--random", "--json", "--n", "5", "--dims", "100", "--lam", "0.1"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)  # stdout holds exactly one JSON object
    assert out["pass"] is True and out["inputs"] == "random"
    assert out["method"] == "centred" and out["h"] == 1e-6 and out["lam"] == 0.1
    for name, checked in (("W", 10 * 100), ("b", 10)):
        assert set(out[name]) >= FIELDS
        assert out[name]["checked"] == checked and out[name]["failing"] == 0
        assert out[name]["max_abs"] < 1e-8 and out[name]["p99_rel"] < 1e-6
    assert "PASS" in r.stderr


def test_complex_step_default_h(runner):
    r = runner.invoke(app, ["gradcheck", "--random", "--json", "--method", "complex", "--dims", "64"])
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert out["h"] == 1e-20
    assert out["W"]["max_rel"] < 1e-10 and out["b"]["max_rel"] < 1e-10


@pytest.mark.parametrize("loss", ["ce", "svm", "bce", "l2svm"])
@pytest.mark.parametrize("method", ["centred", "complex"])
def test_broken_gradient_fails_with_exit_1(runner, monkeypatch, loss, method):
    """Bug: a wrong analytic gradient of any loss that the check lets pass."""
    real = model.gradients

    def broken(W, b, X, y, lam, loss="ce"):
        dW, db = real(W, b, X, y, lam, loss)
        dW = dW.copy()
        dW[3, 7] += 1e-4
        return dW, db

    monkeypatch.setattr(model, "gradients", broken)
    args = ["gradcheck", "--random", "--json", "--dims", "50", "--loss", loss, "--method", method]
    r = runner.invoke(app, args)
    assert r.exit_code == 1
    out = json.loads(r.stdout)
    assert out["pass"] is False and out["W"]["failing"] == 1 and out["b"]["failing"] == 0
    assert out["loss"] == loss
    assert "FAIL: 1 of 510 entries outside |ga - gn| <= 1e-08 + 1e-06 (|ga| + |gn|)" in r.stderr


@pytest.mark.parametrize(
    "args, value",
    [
        (["--n", "0"], "--n 0"),
        (["--h", "-1"], "--step -1"),
        (["--step", "0"], "--step 0.0"),
        (["--dims", "5000"], "--dims 5000"),
        (["--tol", "-1"], "--tol -1"),
        (["--lam", "nan"], "--lam nan"),
        (["--method", "forward"], "forward"),
    ],
)
def test_bad_values_exit_2_with_one_line(runner, args, value):
    r = runner.invoke(app, ["gradcheck", "--random", *args])
    assert r.exit_code == 2
    assert r.stdout == ""
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("Error:") and value in line
    assert "Traceback" not in r.output


def test_without_data_says_where_it_looked(runner, tmp_path):
    r = runner.invoke(app, ["gradcheck", "--data-dir", str(tmp_path / "nothing"), "--no-download"])
    assert r.exit_code == 1
    line = r.stderr.strip()
    assert "\n" not in line
    assert str(tmp_path / "nothing") in line and "cifarlin download" in line


def test_on_tiny_data_uses_normalised_training_images(runner, tiny_py, monkeypatch):
    """Catches: the sample normalised by the mean and std of the n sampled rows instead of the
    whole training split, rows other than the first n, labels out of step with their images,
    inputs other than the first --dims, and weights other than training's initial ones."""
    checked = []
    real = gradcheck.check

    def spy(W, b, X, y, cfg, inputs):
        checked.append((W, b, X, y))
        return real(W, b, X, y, cfg, inputs)

    monkeypatch.setattr(gradcheck, "check", spy)
    r = runner.invoke(app, ["gradcheck", "--data-dir", str(tiny_py), "--n", "8", "--dims", "200", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["inputs"] == str(tiny_py) and out["n"] == 8 and out["W"]["checked"] == 2000
    [(W, b, X, y)] = checked
    images, labels = make_split(50, seed=1)  # data_batch_1, the whole training split, made independently
    pixels = images / 255
    mean, std = pixels.mean(axis=0), pixels.std(axis=0)  # over all 50 training images
    expected = (pixels[:8] - mean) / std
    # The command's statistics (exact sums) and these (pixel_statistics_error), through z: the
    # mean's error over std and |z| times std's relative one; both normalisations' own roundings.
    mean_error, std_error = pixel_statistics_error(pixels)
    rounding = 2 * normalised_error(expected, mean / std, U64)
    bound = (mean_error + np.abs(expected) * std_error) / std + rounding
    assert_within(X, expected[:, :200], bound[:, :200], "normalised pixels")
    assert np.array_equal(y, labels[:8])
    own = (pixels[:8] - pixels[:8].mean(axis=0)) / pixels[:8].std(axis=0)  # the bug's sample
    assert np.abs(own - expected).max() > 0.1  # differs enough to be seen
    rng = np.random.default_rng(0)
    W0 = rng.normal(0.0, 0.01, size=(10, 3072))
    assert np.array_equal(W, W0[:, :200]) and np.array_equal(b, rng.normal(0.0, 0.01, size=10))


def test_n_larger_than_the_training_set(runner, tiny_py):
    r = runner.invoke(app, ["gradcheck", "--data-dir", str(tiny_py), "--n", "51"])
    assert r.exit_code == 2 and "--n 51" in r.stderr


def test_report_statistics():
    ga = np.array([1.0, 2.0, 0.0, 1e-12])
    gn = np.array([1.0, 2.0 + 1e-5, 0.0, 0.0])
    p = gradcheck.compare("W", ga, gn, tol=1e-6, atol=1e-8)
    assert p.checked == 4 and p.failing == 1 and not p.passed
    assert p.max_abs == pytest.approx(1e-5, rel=0, abs=2 * 2 * U64)  # (2 + 1e-5) - 2: 2 + 1e-5 rounds
    assert p.max_rel == 1e-12 / 1e-8  # |1e-12 - 0| / max(|a|, |b|, atol): one division, as here


def test_random_problem_uses_training_init():
    cfg = gradcheck.GradcheckConfig(n=3, dims=40, seed=5)
    W, b, X, y = gradcheck.random_problem(cfg)
    W0, b0 = model.init_params(np.random.default_rng(5))
    assert np.array_equal(W, W0[:, :40]) and np.array_equal(b, b0)
    assert X.shape == (3, 40) and y.shape == (3,)


def test_nan_gradients_fail(runner, monkeypatch):
    real = model.gradients

    def nan_grads(W, b, X, y, lam, loss="ce"):
        dW, db = real(W, b, X, y, lam, loss)
        return np.full_like(dW, np.nan), db

    monkeypatch.setattr(model, "gradients", nan_grads)
    r = runner.invoke(app, ["gradcheck", "--random", "--json", "--dims", "20"])
    assert r.exit_code == 1, r.output
    out = json.loads(r.stdout)
    assert out["pass"] is False and out["W"]["failing"] == 200 and out["W"]["max_rel"] is None
    assert gradcheck.compare("W", np.array([np.nan, 1.0]), np.ones(2), 1e-6, 1e-8).failing == 1
