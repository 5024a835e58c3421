"""cifarlin export: the model as .npz and the history as .csv, equal to the run's own files.

Each test names the bug it would catch.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cifar_files import FIT
from cifarlin.cli import app
from cifarlin.data import cifar as data
from cifarlin.store import checkpoint
from cifarlin.work import export
from cli_helpers import train

README = Path(__file__).resolve().parents[2] / "README.md"

TRAIN = ["--batch-size", "10", "--epochs", "3", "--no-plots", "--quiet"]


@pytest.fixture(scope="module")
def run(tiny_py, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "run"
    train(tiny_py, out, *TRAIN, "--setting", "3", "--loss", "svm")
    return out


def invoke(*args):
    return CliRunner().invoke(app, ["export", *map(str, args)])


def test_npz_holds_the_model_exactly(run, tmp_path):
    """Bug: weights cast or rounded on the way out (float32 written as float64 is still equal;
    rounded is not), the normalisation or the loss missing, anything pickled (np.load without
    pickles would refuse it), or hyperparameters that differ from the file's."""
    r = invoke(run, "--to", tmp_path / "m.npz")
    assert r.exit_code == 0, r.output
    assert r.stdout == f"wrote {tmp_path / 'm.npz'} (from {run / 'model.h5'})\n"
    snap = checkpoint.load_snapshot(run / "model.h5")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        for key, want in (
            ("W", snap.state.W),
            ("b", snap.state.b),
            ("mean", snap.normalizer.mean),
            ("std", snap.normalizer.std),
        ):
            assert z[key].dtype == want.dtype and np.array_equal(z[key], want), key
        assert z["class_names"].tolist() == snap.class_names
        assert z["loss"][()] == "svm" and z["setting"][()] == 3
        cfg = snap.config
        assert (z["lam"][()], z["eta"][()], z["epochs"][()], z["batch_size"][()]) == (0.1, 0.001, 3, 10)
        assert z["lam"][()] == cfg.lam and z["seed"][()] == cfg.seed and bool(z["shuffle"][()]) is cfg.shuffle
        assert z["train_batches"].tolist() == [1] and z["dtype"][()] == "float32"
        assert z["epoch"][()] == 3 and z["test_acc"][()] == snap.test.accuracy
        assert z["format"][()] == "cifarlin-npz" and z["format_version"][()] == 1
        assert "val_size" not in z.files  # unset values are left out, not stored as None objects
        W, b, mean, std = z["W"], z["b"], z["mean"], z["std"]
    x = np.arange(3072, dtype=np.uint8)[None]  # the README's recipe works on the exported arrays
    expected = np.argmax(
        snap.normalizer.apply(x, np.float64) @ snap.state.W.T.astype(np.float64) + snap.state.b
    )
    assert np.argmax(((x / 255 - mean) / std) @ W.T + b, axis=1)[0] == expected


def test_csv_holds_the_history_exactly(run, tmp_path):
    """Bug: values rounded on the way out (e.g. to four decimals), columns in another order or
    missing (eta, seconds), epochs counted from 0, or a header per row."""
    r = invoke(run, "--to", tmp_path / "h.csv", "--json")
    assert r.exit_code == 0, r.output
    h = checkpoint.load_history(run / "history.h5").history
    assert json.loads(r.stdout) == {
        "written": [
            {"file": str(tmp_path / "h.csv"), "format": "csv", "from": str(run / "history.h5"), "epochs": 3}
        ]
    }
    text = (tmp_path / "h.csv").read_text()
    assert text.splitlines()[0] == (
        "epoch,train_cost,train_loss,train_acc,val_cost,val_loss,val_acc,eta,seconds"
    )
    rows = list(csv.DictReader(text.splitlines()))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    for key in export.CSV_COLUMNS[1:]:
        assert [float(row[key]) for row in rows] == h.columns[key], key


def test_both_at_once_and_the_suffix_chooses(run, tmp_path):
    """Bug: only the first --to written, or the format taken from the order instead of the name."""
    r = invoke(run, "--to", tmp_path / "H.CSV", "--to", tmp_path / "M.NPZ", "--json")
    assert r.exit_code == 0, r.output
    assert [w["format"] for w in json.loads(r.stdout)["written"]] == ["csv", "npz"]
    assert (tmp_path / "H.CSV").read_text().startswith("epoch,")
    with np.load(tmp_path / "M.NPZ", allow_pickle=False) as z:
        assert "W" in z.files


def test_an_unknown_suffix_is_a_usage_error_and_writes_nothing(run, tmp_path):
    """Bug: an unknown format guessed (or written as .npz under the wrong name), or the files
    named before the bad one written anyway."""
    r = invoke(run, "--to", tmp_path / "m.npz", "--to", tmp_path / "m.json")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert f"--to '{tmp_path / 'm.json'}'" in r.stderr and ".npz (the model) or .csv" in r.stderr
    assert list(tmp_path.iterdir()) == []
    assert invoke(run).exit_code == 2  # --to is required


def test_a_failed_write_leaves_the_old_file_and_no_temporary(run, tmp_path, monkeypatch):
    """Bug: an export that fails part-way leaving a torn .npz in place of the good one."""
    target = tmp_path / "m.npz"
    target.write_bytes(b"the previous export")

    def torn(fh, **arrays):
        fh.write(b"PK half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", torn)
    r = invoke(run, "--to", target, "--overwrite")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "No space left on device" in r.stderr
    assert target.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_an_unfinished_run_exports_its_checkpoint(tiny_py, tmp_path):
    """Bug: a run still training (no model.h5, no history.h5 yet) refused, or its checkpoint's
    history not the one written."""
    out = tmp_path / "r"
    train(tiny_py, out, *TRAIN)
    (out / "model.h5").unlink()
    (out / "history.h5").unlink()
    r = invoke(out, "--to", tmp_path / "m.npz", "--to", tmp_path / "h.csv")
    assert r.exit_code == 0, r.output
    assert "no model.h5 (unfinished run)" in r.stderr and "no history.h5" in r.stderr
    snap = checkpoint.load_snapshot(out / "checkpoint.h5")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        assert np.array_equal(z["W"], snap.state.W) and "test_acc" not in z.files
    rows = list(csv.DictReader((tmp_path / "h.csv").read_text().splitlines()))
    assert [float(row["val_acc"]) for row in rows] == snap.state.history.columns["val_acc"]


def test_a_model_file_alone_has_no_history(run, tmp_path):
    """Bug: a model copied away from its run folder exporting a wrong (or empty) history."""
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "model.h5").write_bytes((run / "model.h5").read_bytes())
    r = invoke(lone / "model.h5", "--to", tmp_path / "h.csv")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "a model alone has no history" in r.stderr
    assert not (tmp_path / "h.csv").exists()


def test_an_existing_file_is_kept_without_overwrite(run, tmp_path):
    """Bug: export replacing a file silently (train and features fit refuse without --overwrite),
    or writing the other --to files before refusing."""
    target = tmp_path / "m.npz"
    target.write_bytes(b"someone's file")
    r = invoke(run, "--to", tmp_path / "h.csv", "--to", target)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert f"{target} exists: pass --overwrite to replace it, or another --to FILE" in r.stderr
    assert target.read_bytes() == b"someone's file" and not (tmp_path / "h.csv").exists()
    r = invoke(run, "--to", tmp_path / "h.csv", "--to", target, "--overwrite")
    assert r.exit_code == 0, r.output
    with np.load(target, allow_pickle=False) as z:
        assert "W" in z.files


def readme_recipe() -> str:
    """The README's NumPy code that classifies images with a model.npz alone."""
    text = README.read_text()
    start = text.index("```python\nimport numpy as np\n", text.index("**Without cifarlin: `model.npz`.**"))
    recipe = text[start + len("```python\n") : text.index("```\n", start + 10)]
    assert "def kmeans_features" in recipe and "def scores" in recipe
    return recipe


@pytest.fixture(scope="module")
def features_run(tiny_py, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export-features")
    r = CliRunner().invoke(
        app, ["features", "fit", *FIT, "--out", str(root / "k6.h5"), "--data-dir", str(tiny_py), "--quiet"]
    )
    assert r.exit_code == 0, r.output
    train(tiny_py, root / "run", *TRAIN, "--eta", "0.05", "--features", root / "k6.h5")
    return root / "run"


@pytest.fixture(scope="module")
def split_run(tiny_py, tmp_path_factory) -> Path:
    """A run on a mirrored map of the split encoder summed over a 3 x 3 grid."""
    root = tmp_path_factory.mktemp("export-split")
    fit = [*FIT, "--encoder", "split", "--alpha", "0.1", "--pool", "3", "--mirror"]
    r = CliRunner().invoke(
        app, ["features", "fit", *fit, "--out", str(root / "s6.h5"), "--data-dir", str(tiny_py), "--quiet"]
    )
    assert r.exit_code == 0, r.output
    train(tiny_py, root / "run", *TRAIN, "--eta", "0.05", "--features", root / "s6.h5")
    return root / "run"


@pytest.mark.parametrize("which", ["features", "split", "pixels"])
def test_the_npz_alone_classifies_as_cifarlin_does(which, features_run, split_run, run, tiny_py, tmp_path):
    """Bug: a features model's .npz without its k-means map (W (10, 4k) and only the map's path:
    it could not classify an image), a map array or parameter left out or misnamed, or a README
    recipe that does not compute what cifarlin computes. The README's own code runs here, on the
    test images, with NumPy alone, and agrees with predict and with evaluate."""
    folder = {"features": features_run, "split": split_run, "pixels": run}[which]
    r = invoke(folder, "--to", tmp_path / "model.npz")  # the README's name, in the working folder
    assert r.exit_code == 0, r.output
    images = data.Reader(data.Dataset(tiny_py, "python")).batch("test")
    np.save(tmp_path / "test.npy", images.images)
    space = {"images": images.images}
    exec(readme_recipe(), space)  # the README's code, as a reader would run it
    S = space["scores"](space["z"], images.images)  # (n, 10)
    with np.load(tmp_path / "model.npz", allow_pickle=False) as z:
        if which == "split":  # 3 pairs of atoms, 2 polarities, 9 cells
            assert z["W"].shape == (10, 54) and z["kmeans_encoder"] == "split" and z["kmeans_mirror"]
            assert z["kmeans_pool"] == 3 and z["kmeans_alpha"] == 0.1 and z["kmeans_pooling"] == "grid-sum"
        elif which == "features":
            assert z["W"].shape == (10, 24) and z["kmeans_centroids"].shape == (6, 108)
            assert z["scale"][()] == 1.0 and z["kmeans_patch"][()] == 6
            assert (
                str(z["kmeans_checksum"]) == checkpoint.load_snapshot(folder / "model.h5").features.checksum
            )
        else:
            assert "kmeans_centroids" not in z.files and z["scale"][()] == 255.0
    r = CliRunner().invoke(app, ["predict", str(folder), str(tmp_path / "test.npy"), "--top", "10", "--json"])
    assert r.exit_code == 0, r.output
    kind = "score" if which == "pixels" else "probability"  # an svm model and ce models
    cli = np.zeros_like(S)
    for p in json.loads(r.stdout)["predictions"]:
        for entry in p["top"]:
            cli[p["index"], list(space["z"]["class_names"]).index(entry["class"])] = entry[kind]
    mine = S if which == "pixels" else np.exp(S - S.max(axis=1, keepdims=True))
    mine = mine if which == "pixels" else mine / mine.sum(axis=1, keepdims=True)
    # float64 here, float32 features and inputs in cifarlin: equal to float32's rounding
    np.testing.assert_allclose(mine, cli, rtol=1e-5, atol=1e-5)  # here: 2e-6 and 7e-7 at most
    assert np.array_equal(space["classes"], space["z"]["class_names"][cli.argmax(axis=1)])
    r = CliRunner().invoke(app, ["evaluate", str(folder), "--data-dir", str(tiny_py), "--json", "--quiet"])
    assert json.loads(r.stdout)["accuracy"] == np.mean(S.argmax(axis=1) == images.labels)
