"""`features fit` with the dictionary, encoder, grid and mirror options (issue 29), and runs on
such maps: the file is the map the library learns, show and --json describe it, runs train and
evaluate on it, and bad choices or a run too large for memory are one line, before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cifar_files import FIT
from cifarlin.cli import app
from cifarlin.core import kmeans
from cifarlin.core.config import SplitSpec
from cifarlin.data import cifar as data
from cifarlin.features import memory
from cifarlin.store import featuremap
from cli_helpers import train

SPLIT = ["--encoder", "split", "--alpha", "0.5", "--pool", "3", "--mirror"]


@pytest.fixture
def split_file(runner, tiny_py, tmp_path):
    path = tmp_path / "s6.h5"
    r = runner.invoke(
        app, ["features", "fit", *FIT, *SPLIT, "--out", str(path), "--data-dir", str(tiny_py), "--json"]
    )
    assert r.exit_code == 0, r.output
    return path


def test_fit_writes_the_map_the_library_learns(runner, tiny_py, split_file):
    """Bug: an option dropped or renamed on the way from the command line to the library."""
    batches, n_train = data.Reader(data.Dataset(tiny_py, "python")).train_batches(SplitSpec((1,), 20))
    want = kmeans.fit(
        batches[0].images[:n_train],
        6,
        n_patches=600,
        iterations=3,
        encoder="split",
        alpha=0.5,
        pool=3,
        mirror=True,
    )
    got = featuremap.load(split_file)
    assert got.checksum == want.checksum and got.n_features == 3 * 3 * 2 * 3
    r = runner.invoke(app, ["features", "show", str(split_file), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert (info["encoder"], info["alpha"], info["pool"], info["mirror"], info["dictionary"]) == (
        "split",
        0.5,
        3,
        True,
        "kmeans",
    )
    assert info["features"] == 54
    said = " ".join(r.stderr.split())  # status lines wrap at spaces
    assert "6 k-means centroids (3 and their mirrors), split encoder (alpha 0.5), 3x3 sums" in said


def test_random_patches_need_no_kmeans(runner, tiny_py, tmp_path):
    out = tmp_path / "p.h5"
    args = ["--centroids", "8", "--patches", "600", "--val-size", "20", "--train-batches", "1"]
    args += ["--dictionary", "patches", "--encoder", "relu", "--out", str(out), "--data-dir", str(tiny_py)]
    r = runner.invoke(app, ["features", "fit", *args])
    assert r.exit_code == 0, r.output
    fmap = featuremap.load(out)
    assert fmap.iterations == 0 and fmap.dictionary == "patches" and fmap.alpha == 0.25  # the default
    assert "k-means" not in r.stderr and "8 random patches" in r.stderr


def test_a_run_on_a_mirrored_map_trains_and_evaluates(runner, tiny_py, tmp_path, split_file):
    """The model carries the new map: evaluate gives the run's own test accuracy, to the bit;
    the ridge solver solves on it too."""
    r = train(
        tiny_py, tmp_path / "run", "--features", split_file, "--no-plots", "--json", "--batch-size", "10"
    )
    s = json.loads(r.stdout)
    e = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--json", "--data-dir", str(tiny_py)])
    assert e.exit_code == 0, e.output
    assert json.loads(e.stdout)["accuracy"] == s["test"]["accuracy"]
    r = train(
        tiny_py, tmp_path / "ridge", "--features", split_file, "--solver", "ridge", "--no-plots", "--json"
    )
    assert json.loads(r.stdout)["lambda_search"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--alpha", "0.5"], "--alpha is the relu and split encoders' threshold; the triangle has none"),
        (["--encoder", "relu", "--alpha", "-1"], "--alpha -1.0: use 0 to 100"),
        (["--pool", "0"], "--pool 0: use 1 to 9"),
        (["--pool", "12"], "--pool 12: use 1 to 9"),
        (["--mirror", "--centroids", "7"], "--centroids 7: --mirror needs pairs"),
        (
            ["--dictionary", "patches", "--iterations", "5"],
            "--dictionary patches draws its atoms without any",
        ),
        (["--encoder", "softmax"], "--encoder softmax: use one of triangle, relu, split"),
        (["--dictionary", "sc"], "--dictionary sc: use one of kmeans, patches"),
    ],
)
def test_bad_fit_choices_are_one_line(runner, tiny_py, tmp_path, args, message):
    out = tmp_path / "m.h5"
    r = runner.invoke(app, ["features", "fit", *args, "--out", str(out), "--data-dir", str(tiny_py)])
    assert r.exit_code == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.output
    assert not out.exists() and "Traceback" not in r.output


def test_fit_options_are_refused_by_extract(runner, tiny_py, split_file):
    r = runner.invoke(
        app, ["features", "extract", str(split_file), "--encoder", "relu", "--data-dir", str(tiny_py)]
    )
    assert r.exit_code == 2 and "--encoder is an option of features fit" in r.stderr


def _quiet_train(runner, data, out, fmap_file, *args):
    """``train --features FMAP_FILE ARGS --out OUT -q``, whatever its exit code."""
    full = ["train", "--features", str(fmap_file), *args, "--out", str(out), "--data-dir", str(data), "-q"]
    return runner.invoke(app, full)


def test_flip_augmentation_on_a_mirrored_map_is_refused(runner, tiny_py, tmp_path, split_file):
    """Its features are already those of both images averaged: --augment flip would only double
    the work."""
    out = tmp_path / "run"
    r = _quiet_train(runner, tiny_py, out, split_file, "--augment", "flip")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.output
    assert "is a mirrored map" in r.stderr and "leave --augment out" in r.stderr
    assert not out.exists()


def test_a_run_too_large_for_memory_stops_before_allocating(
    runner, tiny_py, tmp_path, split_file, monkeypatch
):
    """One line naming the size and what to do, exit 1, no run folder left behind."""
    monkeypatch.setattr(memory, "available", lambda: 10_000)
    out = tmp_path / "run"
    r = _quiet_train(runner, tiny_py, out, split_file, "--solver", "ridge")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.output
    said = r.stderr
    assert "this run needs about" in said and "54 features an image" in said and "10 kB is available" in said
    assert "the ridge solver's matrices 117 kB" in said and "--centroids" in said
    assert "Traceback" not in r.output and not out.exists()


def test_memory_estimate_counts_rows_and_the_ridge_matrices():
    fm = kmeans.FeatureMap(
        np.zeros((4000, 108), np.float32),
        np.zeros(108),
        np.eye(108),
        encoder="split",
        alpha=0.25,
        mirror=True,
    )
    assert fm.n_features == 16000
    from cifarlin.core.config import TrainConfig

    gd = memory.needed(fm, TrainConfig(features="m.h5"), 49_000, 1_000, 10_000)
    assert gd["training features"] == 49_000 * 16_000 * 4 and "the ridge solver's matrices" not in gd
    flips = memory.needed(fm, TrainConfig(features="m.h5", augment="flip"), 49_000, 1_000, 10_000)
    assert flips["training features"] == 2 * gd["training features"]
    ridge = memory.needed(
        fm, TrainConfig(features="m.h5", solver="ridge", loss="mse", epochs=1), 49_000, 1_000, 10_000
    )
    assert ridge["the ridge solver's matrices"] == memory.RIDGE_MATRICES * 16_000**2 * 8


def test_report_and_the_montage_describe_the_map(runner, tiny_py, tmp_path, split_file):
    """report names what the model's features are, read from the model file (the map file may
    be gone); the run's montage shows the atoms and says they come in mirrored pairs."""
    out = tmp_path / "outputs"
    train(tiny_py, out / "run", "--features", split_file, "--batch-size", "10", "--epochs", "2")
    split_file.unlink()
    assert (out / "run" / "montage.png").stat().st_size > 0
    r = runner.invoke(app, ["report", str(out), "--format", "md", "-o", str(tmp_path / "r.md"), "--no-draw"])
    assert r.exit_code == 0, r.output
    text = " ".join((tmp_path / "r.md").read_text().split())
    want = "6 k-means centroids (3 and their mirrors), split encoder (alpha 0.5), 3x3 sums: 54 features"
    assert want in text
