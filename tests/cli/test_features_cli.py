"""`cifarlin features` and `train --features` end to end on tiny data: a feature map learnt from
the training images, the one linear layer trained on its features (gradient descent or ridge),
and a model file that carries the map, so evaluate and predict take raw images."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from cifar_files import FIT
from cifarlin.cli import app
from cifarlin.core import augment, encode, kmeans, model
from cifarlin.core.config import SplitSpec
from cifarlin.data import cifar as data
from cifarlin.store import checkpoint, featuremap
from cli_helpers import train
from tolerances import U32, U64, assert_within, min_gap, product_error, sum_error


@pytest.fixture
def fmap_file(runner, tiny_py, tmp_path):
    path = tmp_path / "k6.h5"
    r = runner.invoke(
        app, ["features", "fit", *FIT, "--out", str(path), "--data-dir", str(tiny_py), "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["checksum"] == featuremap.load(path).checksum
    return path


GD = ("--batch-size", "10", "--epochs", "3", "--eta", "0.05")


def on(fmap_file) -> list[str]:
    """The options of a run on the features of FMAP_FILE, printing its JSON document."""
    return ["--features", str(fmap_file), "--no-plots", "--json"]


def test_fit_learns_from_the_training_rows_only_and_is_deterministic(runner, tiny_py, tmp_path, fmap_file):
    """Bug: validation or test images among the patches; a map that changes from run to run."""
    again = tmp_path / "again.h5"
    r = runner.invoke(app, ["features", "fit", *FIT, "--out", str(again), "--data-dir", str(tiny_py)])
    assert r.exit_code == 0, r.output
    assert featuremap.load(again).checksum == featuremap.load(fmap_file).checksum
    batches, n_train = data.Reader(data.Dataset(tiny_py, "python")).train_batches(SplitSpec((1,), 20))
    expected = kmeans.fit(batches[0].images[:n_train], 6, n_patches=600, iterations=3)
    assert expected.checksum == featuremap.load(fmap_file).checksum
    with h5py.File(fmap_file) as f:
        assert f.attrs["train_images"] == n_train == 30 and list(f.attrs["train_batches"]) == [1]
    r = runner.invoke(app, ["features", "fit", *FIT, "--out", str(again), "--data-dir", str(tiny_py)])
    assert r.exit_code == 1 and "exists: pass --overwrite" in r.stderr


def test_model_carries_the_map_and_evaluate_reproduces_training(runner, tiny_py, tmp_path, fmap_file):
    """Bug: a model file without its feature map (evaluate would need the map file), or
    evaluation features that differ from training's (another standardisation)."""
    r = train(tiny_py, tmp_path / "run", *on(fmap_file), *GD)
    s, err = json.loads(r.stdout), r.stderr
    assert err.count(": extracted") == 3  # data_batch_1, data_batch_2, test_batch
    fmap_file.unlink()  # the model needs the map file no more
    snap = checkpoint.load_snapshot(tmp_path / "run" / "model.h5")
    assert snap.features is not None and snap.state.W.shape == (10, 4 * 6) and snap.normalizer.scale == 1
    e = runner.invoke(app, ["evaluate", str(tmp_path / "run"), "--json", "--data-dir", str(tiny_py)])
    assert e.exit_code == 0, e.output
    # the cached features of test_batch, standardised and scored as training did (one BLAS thread,
    # the same shapes): the same bits
    assert json.loads(e.stdout)["accuracy"] == s["test"]["accuracy"]
    assert json.loads(e.stdout)["cost"] == s["test"]["cost"]
    images = data.read_batch(tiny_py / "test_batch", "python").images[:4]
    np.save(tmp_path / "x.npy", images.reshape(4, 3, 32, 32).transpose(0, 2, 3, 1))
    p = runner.invoke(app, ["predict", str(tmp_path / "run"), str(tmp_path / "x.npy"), "--json"])
    assert p.exit_code == 0, p.output
    X = snap.inputs(images)
    S = X @ snap.state.W.T + snap.state.b
    # predict's product has other shapes: no two top scores within twice its rounding
    S64 = X.astype(np.float64) @ snap.state.W.T.astype(np.float64) + snap.state.b
    assert (min_gap(S64) > 4 * product_error(X, snap.state.W.T, U32, snap.state.b).max(axis=1)).all()
    got = [pred["top"][0]["class"] for pred in json.loads(p.stdout)["predictions"]]
    assert got == [snap.class_names[i] for i in S.argmax(axis=1)]


def test_second_run_reads_the_cached_features(tiny_py, tmp_path, fmap_file):
    """Bug: features extracted again for every run (a sweep would pay minutes per trial), or a
    damaged cache entry used."""
    first = json.loads(train(tiny_py, tmp_path / "a", *on(fmap_file), *GD).stdout)
    cached = sorted((tmp_path / "xdg-cache" / "cifarlin" / "features").glob("*.npy"))
    assert len(cached) == 3
    cached[0].write_bytes(cached[0].read_bytes()[:-8] + b"\0" * 8)  # damaged: its digest fails
    r = train(tiny_py, tmp_path / "b", *on(fmap_file), *GD)
    second, err = json.loads(r.stdout), r.stderr
    assert err.count("from the cache") == 2 and err.count(": extracted") == 1
    assert second["test"] == first["test"] and second["history"] == {
        **first["history"],
        "seconds": second["history"]["seconds"],
    }


def test_ridge_on_features_with_mirrored_copies(tiny_py, tmp_path, fmap_file):
    """Bug: the mirrored images left out of the solution (or counted twice), or features
    standardised by other statistics than those of the rows solved for."""
    r = train(
        tiny_py,
        tmp_path / "r",
        *on(fmap_file),
        "--solver",
        "ridge",
        "--augment",
        "flip",
        "--dtype",
        "float64",
    )
    s, err = json.loads(r.stdout), r.stderr
    assert "data_batch_1 (mirrored): extracted 50 images" in err
    assert s["config"]["solver"] == "ridge" and s["config"]["augment"] == "flip" and s["lambda_search"]
    snap = checkpoint.load_snapshot(tmp_path / "r" / "model.h5")
    assert snap.config.features == str(fmap_file.resolve())
    images = data.read_batch(tiny_py / "data_batch_1", "python").images
    mirrored = images[:, augment.flip_index()]
    F = np.concatenate([encode.extract(snap.features, images), encode.extract(snap.features, mirrored)])
    # the features the run cached, to the bit (the same blocks); its mean sums them in float64
    # in other blocks: each within sum_error(n) + u (the division) of mean|F|
    F64 = F.astype(np.float64)
    bound = 2 * (sum_error(len(F), U64) + U64) * np.abs(F64).mean(axis=0)
    assert_within(snap.normalizer.mean, F64.mean(axis=0), bound, "feature means")
    X = snap.normalizer.apply(F, np.float64)
    y = np.tile(data.read_batch(tiny_py / "data_batch_1", "python").labels, 2)
    lam = s["config"]["lam"]
    dW, db = model.gradients(snap.state.W, snap.state.b, X, y, lam, "mse")
    scale = np.abs(model.gradients(0 * snap.state.W, 0 * snap.state.b, X, y, lam, "mse")[0]).max()
    assert np.abs(dW).max() < 1e-6 * scale and np.abs(db).max() < 1e-6 * scale


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--augment", "translate:1"], "with --features only flip"),
        (["--features", "missing.h5"], "missing.h5"),
    ],
)
def test_bad_feature_options_give_one_line_errors(runner, tiny_py, tmp_path, fmap_file, args, message):
    full = ["train", "--features", str(fmap_file), "--data-dir", str(tiny_py), "--no-plots", *args]
    r = runner.invoke(app, full)
    assert r.exit_code in (1, 2) and message in r.stderr and r.stderr.count("\n") == 1, r.output
    assert "Traceback" not in r.output


def test_a_model_file_given_as_a_feature_map_is_refused(runner, tiny_py, tmp_path, fmap_file):
    train(tiny_py, tmp_path / "run", *on(fmap_file), *GD)
    r = runner.invoke(
        app, ["train", "--features", str(tmp_path / "run" / "model.h5"), "--data-dir", str(tiny_py)]
    )
    assert r.exit_code == 1 and "not a cifarlin feature map" in r.stderr and r.stderr.count("\n") == 1


def test_show_describes_a_map(runner, fmap_file):
    r = runner.invoke(app, ["features", "show", str(fmap_file), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert (
        info["centroids"] == 6
        and info["features"] == 24
        and info["checksum"] == featuremap.load(fmap_file).checksum
    )
    r = runner.invoke(app, ["features", "show"])
    assert r.exit_code == 2 and "needs the FILE" in r.stderr
