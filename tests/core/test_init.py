"""train --init: starting gradient descent from a trained model's weights (e.g. the ridge solution).

Each test names the bug it would catch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cifar_files import FIT
from cifarlin.cli import app
from cifarlin.core import train
from cifarlin.core.config import TrainConfig
from cifarlin.core.normalize import Normalizer
from tolerances import U64, assert_within, normalised_error, product_error

TINY = ["--batch-size", "10", "--no-plots", "--json", "--val-size", "20"]


def normalisers(seed: int, d: int = 12) -> tuple[Normalizer, Normalizer]:
    rng = np.random.default_rng(seed)
    return tuple(Normalizer(rng.uniform(0.2, 0.8, d), rng.uniform(0.1, 0.4, d)) for _ in range(2))


@pytest.mark.parametrize("seed", range(3))
def test_warm_state_gives_every_image_the_same_scores(seed):
    """Bug: the source's weights copied as they are into a run whose inputs are normalised with
    another mean and std (another training split, the ridge solver's views): the start would
    score every image differently from the model it claims to start from."""
    old, new = normalisers(seed)
    rng = np.random.default_rng(10 + seed)
    W, b = rng.standard_normal((10, 12)), rng.standard_normal(10)
    x = rng.integers(0, 256, (7, 12)).astype(np.float64)  # raw pixels
    st = train.warm_state(TrainConfig(dtype="float64"), W, b, "ce", old, new)
    z1, z2 = (x / 255 - old.mean) / old.std, (x / 255 - new.mean) / new.std
    before, after = z1 @ W.T + b, z2 @ st.W.T + st.b
    # Each side: its inputs' three roundings (x / 255, - mean, / std: normalised_error through |W|)
    # and its product with the bias (product_error); warm_state's W' = W (sd2 / sd1) rounds twice
    # (2 u |W'|, through |z2|) and b' = b + W ((m2 - m1) / sd1) has a d-term product of its own
    t = (new.mean - old.mean) / old.std
    inputs1 = normalised_error(z1, old.mean / old.std, U64) @ np.abs(W.T)
    inputs2 = normalised_error(z2, new.mean / new.std, U64) @ np.abs(st.W.T)
    warm = 2 * U64 * (np.abs(z2) @ np.abs(st.W.T) + np.abs(W) @ np.abs(t)) + product_error(W, t, U64, b)
    bound = product_error(z1, W.T, U64, b) + inputs1 + product_error(z2, st.W.T, U64, st.b) + inputs2 + warm
    assert_within(after, before, bound, "scores")
    assert st.epoch == 0 and st.W.dtype == np.float64


def test_squared_loss_start_is_mapped_onto_the_squared_hinge_targets_only():
    """Bug: a 0/1-target ridge solution started for the -1/+1 squared hinge as it is (every score
    half what the loss wants), or that mapping applied where the loss has no such targets."""
    old, _ = normalisers(0)
    rng = np.random.default_rng(1)
    W, b = rng.standard_normal((10, 12)), rng.standard_normal(10)
    cfg = TrainConfig(dtype="float64")
    hinge = train.warm_state(cfg.replace(loss="l2svm"), W, b, "mse", old, old)
    # one normaliser on both sides: std / std = 1 and W (mean - mean) = 0 exactly, so every step is
    # exact but 2 b - 1, rounded here as there
    assert np.array_equal(hinge.W, 2 * W) and np.array_equal(hinge.b, 2 * b - 1)
    for src, loss in (("mse", "ce"), ("ce", "l2svm"), ("l2svm", "l2svm"), ("mse", "svm")):
        st = train.warm_state(cfg.replace(loss=loss), W, b, src, old, old)
        assert np.array_equal(st.W, W) and np.array_equal(st.b, b)


def test_warm_start_draws_the_same_generator_stream_as_a_random_start():
    """Bug: a warm start that skips the draw of W, b, so the shuffling and augmentation of the
    run differ from a random start with the same seed."""
    old, new = normalisers(2)
    cfg = TrainConfig(seed=7)
    st = train.warm_state(cfg, np.ones((10, 12)), np.zeros(10), "ce", old, new)
    assert st.rng_state == train.init_state(cfg, d=12).rng_state
    assert st.W.dtype == np.float32


def test_run_from_a_ridge_model_starts_at_its_accuracy(runner, disagreeing_py, tmp_path):
    """Bug: the start not the source model (another normaliser: ridge with flips normalises by its
    views, gradient descent by the plain images), seen in the history's epoch 0. On tiny_py every
    model scores 1.00, so a start that ignored the normalisers passed (issue 25): disagreeing_py's
    noisy images are not separable."""
    r = runner.invoke(
        app,
        [
            "train",
            "--solver",
            "ridge",
            "--augment",
            "flip",
            "-o",
            str(tmp_path / "ridge"),
            "--data-dir",
            str(disagreeing_py),
            *TINY,
        ],
    )
    assert r.exit_code == 0, r.output
    src = json.loads(r.stdout)
    assert 0.3 < src["val"]["accuracy"] < 0.9 and 0.3 < src["train"]["accuracy"] < 1  # room to differ
    for loss, eta in (("ce", "0.01"), ("l2svm", "0.001")):
        r = runner.invoke(
            app,
            [
                "train", "--init", str(tmp_path / "ridge"), "--loss", loss, "--eta", eta, "--epochs", "2",
                "-o", str(tmp_path / loss), "--data-dir", str(disagreeing_py), *TINY,
            ],
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)
        assert out["config"]["init"] == str((tmp_path / "ridge").resolve())  # the folder, as given
        assert out["history"]["initial"]["val_acc"] == src["val"]["accuracy"]
        assert out["history"]["initial"]["train_acc"] == src["train"]["accuracy"]


def test_bad_starts_are_refused_with_one_line(runner, tiny_py, tmp_path):
    """Bug: a missing, damaged or mismatched start model failing with a traceback, or after a run
    folder was made."""
    base = ["train", "--data-dir", str(tiny_py), *TINY, "--epochs", "1"]
    r = runner.invoke(app, [*base, "-o", str(tmp_path / "px")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        app, ["features", "fit", "--out", str(tmp_path / "k.h5"), "--data-dir", str(tiny_py), *FIT]
    )
    assert r.exit_code == 0, r.output
    (tmp_path / "junk.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    cases = [
        (["--init", str(tmp_path / "nope")], "nope: no such file or folder"),
        (["--init", str(tmp_path / "junk.h5")], "junk.h5"),
        (["--init", str(tmp_path / "px"), "--solver", "ridge"], "--init"),
        (["--init", str(tmp_path / "px"), "--features", str(tmp_path / "k.h5")], "that model reads pixels"),
    ]
    for args, words in cases:
        out = tmp_path / "new"
        r = runner.invoke(app, [*base, "-o", str(out), *args])
        assert r.exit_code != 0, args
        line = r.stderr.strip()
        assert "\n" not in line and words in line and "Traceback" not in r.output, (args, r.output)
        assert not out.exists(), args


def test_resume_needs_no_start_model_and_a_changed_one_is_another_run(runner, tiny_py, tmp_path):
    """Bugs: --resume refused once the start model is gone (it is in the checkpoint already);
    a start model overwritten with other weights silently 'reusing' the finished run; a start
    model inside the folder the run replaces."""
    data = ["--data-dir", str(tiny_py), *TINY]
    src = tmp_path / "src"
    assert runner.invoke(app, ["train", *data, "--epochs", "2", "-o", str(src)]).exit_code == 0
    run = ["train", *data, "--init", str(src), "--epochs", "2", "-o", str(tmp_path / "a")]
    r = runner.invoke(app, run)
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)
    assert len(first["config"]["init_checksum"]) == 64
    r = runner.invoke(app, [*run, "--epochs", "3"])  # as one more epoch asked for later
    assert r.exit_code == 1 and "already holds a run" in r.stderr
    moved = tmp_path / "moved"
    src.rename(moved)
    r = runner.invoke(app, [*run[:-2], "--epochs", "3", "-o", str(tmp_path / "a"), "--resume"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["history"]["initial"] == first["history"]["initial"]
    again = [*run[:-2], "--epochs", "3", "-o", str(tmp_path / "a")]  # the finished run's parameters
    moved.rename(src)
    r = runner.invoke(app, again)
    assert r.exit_code == 0 and "reusing it" in r.stderr
    r = runner.invoke(app, [*again, "--init", str(src / "model.h5")])  # the same model, spelt otherwise
    assert r.exit_code == 0 and "reusing it" in r.stderr
    # the same path, other weights: not the finished run any more
    r = runner.invoke(app, ["train", *data, "--seed", "5", "--epochs", "2", "-o", str(src), "--overwrite"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, again)
    assert r.exit_code == 1 and "started from other weights" in r.stderr and "--overwrite" in r.stderr
    r = runner.invoke(
        app, ["train", *data, "--init", str(tmp_path / "a"), "-o", str(tmp_path / "a"), "--overwrite"]
    )
    assert r.exit_code == 2 and "lies inside the run folder" in r.stderr.strip().splitlines()[-1]
    # --setting all writes four folders: a start model in any of them is refused
    root = tmp_path / "outputs"
    r = runner.invoke(app, ["train", *data, "--setting", "3", "--epochs", "1", "-o", str(root / "setting-3")])
    assert r.exit_code == 0, r.output
    setting_all = ["train", *data, "--setting", "all", "--epochs", "1", "--init", str(root / "setting-3")]
    r = runner.invoke(app, [*setting_all, "-o", str(root)])
    assert r.exit_code == 2 and "lies inside the run folder" in r.stderr and not (root / "setting-1").exists()


def test_sweep_checks_its_start_models_before_it_starts(runner, tiny_py, tmp_path):
    """Bug: a sweep whose start model is not a model starting Dask and failing every trial, and
    leaving a sweep folder behind."""
    r = runner.invoke(
        app, ["train", "--data-dir", str(tiny_py), *TINY, "--epochs", "1", "-o", str(tmp_path / "src")]
    )
    assert r.exit_code == 0, r.output
    out = tmp_path / "s"
    args = ["sweep", "--lam", "0,0.1", "--epochs", "1", "--batch-size", "10", "--data-dir", str(tiny_py)]
    r = runner.invoke(app, [*args, "--init", str(tmp_path / "src" / "history.h5"), "--out", str(out)])
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "history.h5" in r.stderr.strip().splitlines()[-1] and not out.exists()
    run = [*args, "--init", str(tmp_path / "src"), "--out", str(out), "--workers", "1", "--no-plots"]
    assert runner.invoke(app, run).exit_code == 0
    r = runner.invoke(
        app,
        [
            "train",
            "--data-dir",
            str(tiny_py),
            *TINY,
            "--epochs",
            "1",
            "--seed",
            "4",
            "-o",
            str(tmp_path / "src"),
            "--overwrite",
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, run)
    assert r.exit_code != 0 and "started from other weights" in r.stderr.strip().splitlines()[-1]
