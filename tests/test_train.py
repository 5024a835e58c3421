"""Training, checkpoints, resuming, divergence and evaluation on tiny data."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from cifarlin.cli import app
from cifarlin.core import config, history, model, train
from cifarlin.core.config import SETTINGS, TrainConfig
from cifarlin.data import cifar as data
from cifarlin.errors import ConfigError, DataError, DivergenceError, ModelFileError
from cifarlin.store import checkpoint
from cifarlin.work import runs
from cifarlin.work.prepare import prepare
from tolerances import U32, U64, cost_rounding, min_gap, normalised_error, product_error

TINY = ["--batch-size", "10", "--no-plots"]


@pytest.fixture
def prepared(tiny_py):
    return prepare(data.Dataset(tiny_py, "python"), config.SplitSpec())


def cfg(**kw):
    return TrainConfig(**{"epochs": 4, "batch_size": 10, "eta": 0.01, **kw})


def test_settings_are_the_reference_ones():
    assert {s: (TrainConfig.for_setting(s).lam, TrainConfig.for_setting(s).eta) for s in SETTINGS} == {
        1: (0.0, 0.1),
        2: (0.0, 0.001),
        3: (0.1, 0.001),
        4: (1.0, 0.001),
    }
    for s in SETTINGS:
        c = TrainConfig.for_setting(s)
        assert (c.epochs, c.batch_size, c.shuffle, c.init_std, c.train_batches) == (
            40,
            100,
            False,
            0.01,
            (1,),
        )


def test_a_few_epochs_lower_the_cost(prepared):
    c = cfg(epochs=5)
    st = train.fit(c, prepared, train.init_state(c))
    costs = st.history.columns["train_cost"]
    st0 = train.init_state(c)
    start = model.evaluate(st0.W, st0.b, prepared.X["train"], prepared.y["train"], 0.0).cost
    assert len(costs) == 5 and st.epoch == 5
    assert costs[0] < start and all(b < a for a, b in itertools.pairwise(costs))
    assert st.history.columns["train_acc"][-1] > 0.5


def test_update_rule_is_plain_minibatch_gradient_descent(prepared):
    c = cfg(epochs=1, lam=0.3)
    st0 = train.init_state(c)
    W, b = st0.W.copy(), st0.b.copy()
    X, y = prepared.X["train"], prepared.y["train"]
    for s in range(0, len(y), 10):
        dW, db = model.gradients(W, b, X[s : s + 10], y[s : s + 10], 0.3)
        W -= c.eta * dW
        b -= c.eta * db
    st = train.fit(c, prepared, st0)
    assert np.array_equal(st.W, W) and np.array_equal(st.b, b)


def test_same_seed_same_bits_different_seed_differs(prepared):
    a = train.fit(cfg(shuffle=True), prepared, train.init_state(cfg(shuffle=True)))
    b = train.fit(cfg(shuffle=True), prepared, train.init_state(cfg(shuffle=True)))
    c = train.fit(cfg(shuffle=True, seed=1), prepared, train.init_state(cfg(shuffle=True, seed=1)))
    assert np.array_equal(a.W, b.W) and a.history.columns["val_cost"] == b.history.columns["val_cost"]
    assert not np.array_equal(a.W, c.W)


def test_shuffle_changes_the_order(prepared):
    a = train.fit(cfg(), prepared, train.init_state(cfg()))
    b = train.fit(cfg(shuffle=True), prepared, train.init_state(cfg(shuffle=True)))
    assert not np.array_equal(a.W, b.W)


def test_divergence_raises_with_the_epoch(prepared):
    c = cfg(eta=1e38)
    with pytest.raises(DivergenceError, match=r"epoch 1 \(eta=1e\+38, lam=0.0\).*try a smaller eta$") as e:
        train.fit(c, prepared, train.init_state(c))
    assert e.value.epoch == 1


@pytest.mark.parametrize(
    "kw, value",
    [
        (dict(eta=0), "eta=0: "),
        (dict(eta=-1.0), "eta=-1.0: "),
        (dict(batch_size=0), "batch_size=0: "),
        (dict(lam=-0.1), "lam=-0.1: "),
        (dict(epochs=0), "epochs=0: "),
        (dict(eta=float("nan")), "eta=nan: "),
    ],
)
def test_config_validation_names_the_value(kw, value):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**kw)
    assert str(e.value).startswith(value)


def test_batch_larger_than_training_set(prepared):
    c = cfg(batch_size=51)
    with pytest.raises(ConfigError, match=r"batch_size=51: larger than the training set \(50 images\)"):
        train.fit(c, prepared, train.init_state(c))


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        out = {k: f[k][()] for k in f if isinstance(f[k], h5py.Dataset)}
        if "history" in f:
            out.update({f"history/{k}": f["history"][k][()] for k in f["history"]})
        return out


def test_files_and_layout(prepared, tmp_path):
    c = cfg(lam=0.1)
    out = tmp_path / "run"
    o = runs.run(c, out, prepared)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.h5", "history.h5", "model.h5"]
    with h5py.File(out / "model.h5", "r") as f:
        assert f["W"].shape == (10, 3072) and f["b"].shape == (10,)
        assert f["mean"].shape == (3072,) and f["std"].shape == (3072,)
        assert f.attrs["lam"] == 0.1 and f.attrs["eta"] == 0.01 and f.attrs["batch_size"] == 10
        assert f.attrs["epoch"] == 4 and f.attrs["seed"] == 0 and f.attrs["kind"] == "model"
        assert list(f.attrs["class_names"])[:2] == ["airplane", "automobile"]
        assert f.attrs["cifarlin_version"] and f.attrs["data_dir"] == str(prepared.dataset.folder)
        assert dict(f["data_files"].attrs) == prepared.checksums
        assert json.loads(f.attrs["rng_state"])["bit_generator"] == "PCG64"
    with h5py.File(out / "history.h5", "r") as f:
        for k in history.HISTORY_KEYS:
            assert f[k].shape == (4,)
        assert f.attrs["status"] == "complete" and f.attrs["test_acc"] == o.test.accuracy
    assert not list(out.glob(".*tmp"))


def test_model_round_trip(prepared, tmp_path):
    c = cfg(lam=0.5, shuffle=True, seed=7)
    st = train.fit(c, prepared, train.init_state(c))
    snap = checkpoint.Snapshot(
        c,
        st,
        prepared.normalizer,
        prepared.class_names,
        checkpoint.DataInfo("x", "python", {"a": "b"}),
        kind="checkpoint",
    )
    checkpoint.save_snapshot(tmp_path / "c.h5", snap)
    back = checkpoint.load_snapshot(tmp_path / "c.h5")
    assert back.config == c and back.class_names == prepared.class_names
    assert np.array_equal(back.state.W, st.W) and back.state.W.dtype == np.float32
    assert np.array_equal(back.normalizer.mean, prepared.normalizer.mean)
    assert back.state.history.columns == st.history.columns
    assert back.state.rng_state == st.rng_state and back.data.checksums == {"a": "b"}


def test_interrupted_then_resumed_equals_uninterrupted(prepared, tmp_path):
    c = cfg(epochs=6, shuffle=True, lam=0.05)
    whole = tmp_path / "whole"
    full = runs.run(c, whole, prepared)

    part = tmp_path / "part"

    def stop_in_epoch_4(epoch, j, n):
        if epoch == 4 and j == 2:
            raise KeyboardInterrupt

    with pytest.raises(runs.Interrupted, match="resume with 'cifarlin train --out"):
        runs.run(c, part, prepared, on_batch=stop_in_epoch_4)
    assert checkpoint.load_snapshot(part / "checkpoint.h5").state.epoch == 3
    assert not (part / "model.h5").exists()
    runs.check_run_folder(part, resume=True, overwrite=False)
    c2, snap = runs.resume_point(part, {})
    assert c2 == c
    resumed = runs.run(c2, part, prepared, start=snap)
    a, b = read_arrays(whole / "model.h5"), read_arrays(part / "model.h5")
    for k in ("W", "b", "mean", "std"):
        assert np.array_equal(a[k], b[k]), k
    ha, hb = read_arrays(whole / "history.h5"), read_arrays(part / "history.h5")
    for k in history.HISTORY_KEYS:
        if k != "seconds":
            assert np.array_equal(ha[k], hb[k]), k
    assert resumed.test == full.test


def test_resume_refuses_changed_settings(prepared, tmp_path):
    out = tmp_path / "r"
    runs.run(cfg(), out, prepared)
    with pytest.raises(ConfigError, match="eta=0.5: the run in"):
        runs.resume_point(out, {"eta": 0.5})
    c, _ = runs.resume_point(out, {"eta": 0.01, "epochs": 9})
    assert c.epochs == 9
    with pytest.raises(ConfigError, match="epochs=2: "):
        runs.resume_point(out, {"epochs": 2})


def test_divergence_keeps_the_last_good_checkpoint(prepared, tmp_path):
    out = tmp_path / "d"
    c = cfg(epochs=3)
    runs.run(c, out, prepared)
    before = read_arrays(out / "checkpoint.h5")
    state = checkpoint.load_snapshot(out / "checkpoint.h5").state
    bad = c.replace(eta=1e38, epochs=5)
    with pytest.raises(DivergenceError, match="epoch 4.*checkpoint.h5 holds epoch 3"):
        runs.run(bad, out, prepared, start=checkpoint.load_snapshot(out / "checkpoint.h5"))
    after = read_arrays(out / "checkpoint.h5")
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert checkpoint.load_snapshot(out / "checkpoint.h5").state.epoch == state.epoch == 3
    assert checkpoint.load_history(out / "history.h5").status == "diverged"


def test_cli_divergence_exit_1(runner, tiny_py, tmp_path):
    r = runner.invoke(
        app,
        [
            "train",
            "--data-dir",
            str(tiny_py),
            "--out",
            str(tmp_path / "x"),
            *TINY,
            "--eta",
            "1e38",
            "--epochs",
            "2",
        ],
    )
    assert r.exit_code == 1
    last = r.stderr.strip().splitlines()[-1]
    assert "diverged in epoch 1" in last and "--eta" in last
    assert "Traceback" not in r.output


def test_setting_bonus_is_the_named_recipe(runner, tiny_py, tmp_path):
    """--setting bonus trains the recipe of config.RECIPES (overrides on top) into
    outputs/setting-bonus with its cosine schedule, and compares with no original figure."""
    r = runner.invoke(
        app,
        [
            "train",
            "--setting",
            "bonus",
            "--epochs",
            "3",
            "--val-size",
            "50",
            "--json",
            "--data-dir",
            str(tiny_py),
            *TINY,
        ],
    )
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    want = {**config.RECIPES["bonus"], "epochs": 3, "val_size": 50, "batch_size": 10}
    got = {k: s["config"][k] for k in want}
    assert got == {**want, "train_batches": list(want["train_batches"])}
    assert s["setting"] == "bonus" and s["reference_test_accuracy"] is None
    assert not s["comparable_to_reference"]
    assert Path(s["files"]["model"]) == Path("outputs/setting-bonus/model.h5")
    h = checkpoint.load_history(Path("outputs/setting-bonus/history.h5"))
    assert h.config.setting == "bonus" and h.config == TrainConfig.for_setting("bonus", **want)
    eta = h.history.columns["eta"]
    assert eta[0] == want["eta"] and eta[-1] < eta[0]


def test_parse_setting_names_the_choices():
    assert config.parse_setting("2") == 2 and config.parse_setting(" bonus") == "bonus"
    for bad in ("5", "0", "Bonus", "", "all"):
        with pytest.raises(ConfigError, match="use one of 1, 2, 3, 4, bonus"):
            config.parse_setting(bad)


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


def test_cli_refuses_a_folder_with_a_run_then_resume_and_overwrite(runner, tiny_py, tmp_path):
    args = [
        "train",
        "--out",
        str(tmp_path / "r"),
        "--data-dir",
        str(tiny_py),
        *TINY,
        "--epochs",
        "1",
        "--quiet",
    ]
    assert runner.invoke(app, args).exit_code == 0
    before = (tmp_path / "r" / "model.h5").stat().st_mtime_ns
    r = runner.invoke(app, args)  # the same parameters: the complete run is reused, nothing rewritten
    assert r.exit_code == 0 and "holds a complete run with these parameters: reusing it" in r.stderr
    assert (tmp_path / "r" / "model.h5").stat().st_mtime_ns == before
    r = runner.invoke(app, [*args, "--eta", "0.5"])  # other parameters: refused, naming them
    assert r.exit_code == 1 and r.stderr.strip() == (
        f"Error: {tmp_path / 'r'} already holds a run with other settings (--eta 0.001 there, 0.5 asked): "
        "--overwrite replaces it, or --out DIR trains this one in another folder"
    )  # (--resume would not help: that run is complete, and keeps its eta)
    r = runner.invoke(app, [*args[:-2], "2", "--quiet"])  # more epochs: --resume trains it on
    assert r.exit_code == 1 and r.stderr.strip() == (
        f"Error: {tmp_path / 'r'} already holds a run with other settings (--epochs 1 there, 2 asked): "
        "--resume trains it on to 2 epochs, --overwrite replaces it, or --out DIR trains this one in "
        "another folder"
    )
    r = runner.invoke(app, [*args, "--resume", "--epochs", "2", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["resumed_from_epoch"] == 1
    r = runner.invoke(app, [*args, "--overwrite", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["epochs"] == 1
    r = runner.invoke(app, [*args, "--overwrite", "--resume"])
    assert r.exit_code == 2


@pytest.mark.parametrize(
    "args, value",
    [
        (["--eta", "0"], "--eta 0"),
        (["--batch-size", "0"], "--batch-size 0"),
        (["--lam", "-1"], "--lam -1"),
        (["--setting", "5"], "'5'"),
        (["--batch-size", "51"], "--batch-size 51"),
        (["--epochs", "0"], "--epochs 0"),
        (["--train-batches", "7"], "--train-batches '7'"),
        (["--train-batches", "1-3"], "--val-size"),
    ],
)
def test_cli_bad_values_exit_2(runner, tiny_py, tmp_path, args, value):
    r = runner.invoke(
        app, ["train", "--data-dir", str(tiny_py), "--out", str(tmp_path / "o"), "--no-plots", *args]
    )
    assert r.exit_code == 2, r.output
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("Error:") and value in line
    assert not (tmp_path / "o").exists()  # nothing written


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not an HDF5 file"),
        (b"garbage" * 100, "not an HDF5 file"),
    ],
)
def test_foreign_files_give_one_line(runner, tmp_path, content, message, tiny_py):
    path = tmp_path / "m.h5"
    path.write_bytes(content)
    r = runner.invoke(app, ["evaluate", str(path), "--data-dir", str(tiny_py)])
    assert r.exit_code == 1
    line = r.stderr.strip()
    assert "\n" not in line and str(path) in line and message in line


def test_truncated_and_wrong_models(runner, tiny_py, tmp_path, prepared):
    out = tmp_path / "run"
    runs.run(cfg(epochs=1), out, prepared)
    raw = (out / "model.h5").read_bytes()
    cases = {
        "truncated.h5": raw[: len(raw) // 2],
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = np.zeros(3)
    (tmp_path / "shape.h5").write_bytes(raw)
    with h5py.File(tmp_path / "shape.h5", "a") as f:
        del f["W"]
        f["W"] = np.zeros((10, 100))
    expect = {
        "truncated.h5": r"truncated \(\d+ of its \d+ bytes\)",
        "foreign.h5": "not a cifarlin model",
        "shape.h5": r"'W' has shape \(10, 100\)",
        "missing.h5": "no such file",
    }
    for name, message in expect.items():
        with pytest.raises(ModelFileError, match=message):
            checkpoint.load_snapshot(tmp_path / name)
        r = runner.invoke(app, ["evaluate", str(tmp_path / name), "--data-dir", str(tiny_py)])
        assert r.exit_code == 1 and r.stderr.count("\n") == 1, (name, r.stderr)
    with pytest.raises(ModelFileError, match="expected a model"):
        checkpoint.load_snapshot(out / "history.h5")


def test_setting_all_writes_a_summary(runner, tiny_py, tmp_path):
    r = runner.invoke(
        app,
        [
            "train",
            "--setting",
            "all",
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
            "--data-dir",
            str(tiny_py),
            *TINY,
            "--json",
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # one JSON document holding every run
    lines = doc["runs"]
    assert doc["files"] == [str(tmp_path / "summary.md"), str(tmp_path / "summary.json")]
    assert [s["setting"] for s in lines] == [1, 2, 3, 4]
    assert [(s["config"]["lam"], s["config"]["eta"]) for s in lines] == [
        (0, 0.1),
        (0, 0.001),
        (0.1, 0.001),
        (1, 0.001),
    ]
    md = (tmp_path / "summary.md").read_text()
    assert md.count("\n| ") == 5 and "0.3898" in md
    assert json.loads((tmp_path / "summary.json").read_text()) == lines  # as printed
    assert all((tmp_path / f"setting-{i}" / "model.h5").is_file() for i in range(1, 5))
    # Every cell of summary.md against the run's own files. Catches the test acc column filled
    # with the validation accuracy (they differ here), the best epoch or val acc from the wrong
    # curve, shifted columns and rows out of order.
    assert f"on `{tiny_py}`" in md
    table = [[c.strip() for c in ln.strip("|").split("|")] for ln in md.splitlines() if ln.startswith("|")]
    assert table[0] == [
        "setting",
        "lambda",
        "eta",
        "epochs",
        "batch",
        "seed",
        "best val epoch",
        "val acc",
        "test acc",
        "original",
        "difference",
    ]
    original = {1: "0.3069", 2: "0.3898", 3: "0.3924", 4: "0.3763"}  # the original work's report
    for setting, row in enumerate(table[2:], start=1):
        with h5py.File(tmp_path / f"setting-{setting}" / "model.h5", "r") as f:
            lam, eta, test_acc = f.attrs["lam"], f.attrs["eta"], f.attrs["test_acc"]
        with h5py.File(tmp_path / f"setting-{setting}" / "history.h5", "r") as f:
            val_acc = f["val_acc"][()].tolist()
        assert len(val_acc) == 1 and test_acc == lines[setting - 1]["test"]["accuracy"]
        assert [row[0], float(row[1]), float(row[2]), *row[3:]] == [
            str(setting),
            lam,
            eta,
            "1",
            "10",
            "0",
            "1",
            f"{val_acc[0]:.4f}",
            f"{test_acc:.4f}",
            original[setting],
            "(not comparable)",
        ], f"the row of setting {setting}"
    assert any(row[7] != row[8] for row in table[2:])  # val and test accuracy differ somewhere


@pytest.mark.slow
def test_ctrl_c_saves_and_exits_130(tiny_py, tmp_path):
    """A real SIGINT to a real process: the checkpoint stays, the message says how to resume."""
    out = tmp_path / "run"
    env = {**os.environ, "CIFARLIN_DATA_DIR": str(tiny_py), "PYTHONUNBUFFERED": "1"}
    from conftest import SLOW_CLI as code

    p = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "train",
            "--out",
            str(out),
            "--epochs",
            "100",
            "--batch-size",
            "10",
            "--no-plots",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []

    def read():
        lines.extend(p.stderr)

    reader = threading.Thread(target=read)
    reader.start()
    deadline = 60
    import time as _t

    t0 = _t.time()
    while not any("epoch 2/100" in line for line in lines):
        assert _t.time() - t0 < deadline and p.poll() is None, "".join(lines)
        _t.sleep(0.05)
    p.send_signal(signal.SIGINT)
    p.wait(timeout=30)
    reader.join()
    assert p.returncode == 130, "".join(lines)
    last = lines[-1]
    assert "interrupted in epoch" in last and "--resume" in last
    epoch = checkpoint.load_snapshot(out / "checkpoint.h5").state.epoch
    assert epoch >= 2 and checkpoint.load_history(out / "history.h5").status == "interrupted"
    assert not list(out.glob(".*tmp"))


def edited_copy(src: Path, dst: Path, edit) -> Path:
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "a") as f:
        edit(f)
    return dst


def test_damaged_model_contents_are_refused(prepared, tmp_path):
    out = tmp_path / "run"
    runs.run(cfg(epochs=1), out, prepared)
    good = out / "checkpoint.h5"

    def nan_w(f):
        w = f["W"][()]
        w[0, 0] = np.nan
        f["W"][...] = w

    def replace(name, value):
        def edit(f):
            del f[name]
            f[name] = value

        return edit

    def huge(f):
        del f["W"]
        f.create_dataset("W", shape=(10, 10**9), dtype="f4", chunks=(1, 1024))  # nothing stored

    cases = {
        "nan.h5": (nan_w, "NaN or infinite"),
        "std.h5": (replace("std", np.zeros(3072)), "'std' holds values <= 0"),
        "dtype.h5": (replace("W", np.zeros((10, 3072), np.float16)), "'W' has type float16"),
        "w64.h5": (replace("W", np.zeros((10, 3072), np.float64)), "weights are float64"),
        "huge.h5": (huge, r"shape \(10, 1000000000\)"),
        "rng.h5": (lambda f: f.attrs.__setitem__("rng_state", '{"bit_generator": "MT19937"}'), "damaged"),
        "names.h5": (lambda f: f.attrs.__setitem__("class_names", "abc"), "damaged"),
        "two-names.h5": (
            lambda f: f.attrs.__setitem__("class_names", np.array(["a", "b"], dtype=h5py.string_dtype())),
            "damaged",
        ),
        "lam.h5": (lambda f: f.attrs.__delitem__("lam"), "no 'lam' attribute"),
        "version.h5": (lambda f: f.attrs.__setitem__("format_version", 99), "format version 99"),
        "epoch.h5": (lambda f: f.attrs.__setitem__("epoch", -3), "epoch -3"),
    }
    for name, (edit, message) in cases.items():
        path = edited_copy(good, tmp_path / name, edit)
        with pytest.raises(ModelFileError, match=message):
            checkpoint.load_snapshot(path)


def test_resume_refuses_other_data(prepared, tmp_path, tiny_py):
    out = tmp_path / "run"
    runs.run(cfg(epochs=1), out, prepared)
    _, snap = runs.resume_point(out, {})
    snap.data.checksums["data_batch_1"] = "0" * 32
    with pytest.raises(DataError, match="data_batch_1 differs from the file"):
        runs.run(cfg(epochs=2), out, prepared, start=snap)


@pytest.mark.parametrize("again", [False, True])
def test_interrupt_during_a_checkpoint_write_keeps_files_consistent(prepared, tmp_path, monkeypatch, again):
    """Ctrl-C while epoch 3's checkpoint is written: the save on stop writes it again, so
    checkpoint and history both end at epoch 3; with a second Ctrl-C during that save, both end
    at epoch 2."""
    out = tmp_path / "run"
    real = checkpoint.save_snapshot
    calls = []

    def interrupted_third(path, snap):
        calls.append(snap.state.epoch)
        if len(calls) == 3 or (again and len(calls) > 3 and snap.kind == "checkpoint"):
            raise KeyboardInterrupt
        real(path, snap)

    monkeypatch.setattr(runs, "save_snapshot", interrupted_third)
    with pytest.raises(runs.Interrupted):
        runs.run(cfg(epochs=5), out, prepared)
    snap = checkpoint.load_snapshot(out / "checkpoint.h5")
    hist = checkpoint.load_history(out / "history.h5")
    kept = 2 if again else 3
    assert calls[2:] == [3, 3]  # the interrupted write, then the save on stop
    assert snap.state.epoch == kept and len(snap.state.history) == kept and len(hist.history) == kept


def test_overwrite_keeps_the_old_run_until_the_new_one_saved_something(prepared, tmp_path):
    out = tmp_path / "run"
    runs.run(cfg(epochs=1), out, prepared)
    (out / "curves.png").write_bytes(b"old figure")
    old = read_arrays(out / "model.h5")
    with pytest.raises(DivergenceError, match="nothing was saved"):
        runs.run(cfg(eta=1e38), out, prepared, overwrite=True)
    assert np.array_equal(read_arrays(out / "model.h5")["W"], old["W"])  # put back
    assert (out / "curves.png").read_bytes() == b"old figure"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.h5", "curves.png", "history.h5", "model.h5"]
    runs.run(cfg(epochs=2, seed=3), out, prepared, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.h5", "history.h5", "model.h5"]
    assert not np.array_equal(read_arrays(out / "model.h5")["W"], old["W"])


def test_a_failed_fresh_run_leaves_no_folder(prepared, tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(DivergenceError):
        runs.run(cfg(eta=1e38), out, prepared)
    assert not out.exists()


def test_one_writer_per_run_folder(prepared, tmp_path):
    out = tmp_path / "run"
    with runs.RunFolder(out), pytest.raises(runs.RunExistsError, match="another cifarlin is training"):
        runs.run(cfg(epochs=1), out, prepared)
    runs.run(cfg(epochs=1), out, prepared)  # free again
    assert not (out / runs.LOCK).exists()


def test_unwritable_folder_fails_before_training(prepared, tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(runs.tempfile, "NamedTemporaryFile", refuse)
    calls = []
    with pytest.raises(runs.WriteError, match="cannot write the run there"):
        runs.run(cfg(epochs=1), tmp_path / "run", prepared, on_batch=lambda *a: calls.append(a))
    assert calls == []  # refused before any training


def test_a_failed_checkpoint_write_says_what_is_kept(prepared, tmp_path, monkeypatch):
    real = checkpoint.save_snapshot
    calls = []

    def full_disk_at_third(path, snap):
        calls.append(path)
        if len(calls) == 3:
            raise runs.WriteError(f"{path}: cannot be written (No space left on device)")
        real(path, snap)

    monkeypatch.setattr(runs, "save_snapshot", full_disk_at_third)
    with pytest.raises(runs.WriteError, match="No space left on device.*checkpoint.h5 holds epoch 2"):
        runs.run(cfg(epochs=5), tmp_path / "run", prepared)


def test_default_run_folders_are_unique(tmp_path):
    c = cfg()
    a = runs.default_out(c, tmp_path)
    a.mkdir()
    b = runs.default_out(c, tmp_path)
    assert a != b and b.name.startswith(a.name)


def setting_all(workers: str, out, data, epochs: int) -> list[str]:
    """`cifarlin train --setting all` on tiny data, quietly and without figures."""
    return [
        *("train", "--workers", workers, "--setting", "all", "--out", str(out), "--data-dir", str(data)),
        *("--batch-size", "10", "--epochs", str(epochs), "--no-plots", "--quiet"),
    ]


@pytest.mark.parametrize(("workers", "cores", "thread"), [("1", 2, True), ("2", 2, False), ("2", 4, True)])
def test_runs_two_at_a_time_keep_a_metrics_thread_only_with_the_cores(
    runner, tiny_py, tmp_path, monkeypatch, workers, cores, thread
):
    """Bug: two runs at a time on two cores each with a metrics thread (four threads fighting
    for two cores), or runs that have the cores losing theirs."""
    from cifarlin.plans import experiments

    monkeypatch.setattr(train.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    real, seen = runs.fit, []

    def record(*args, metrics_thread=True, **kw):
        seen.append(metrics_thread)
        return real(*args, metrics_thread=metrics_thread, **kw)

    monkeypatch.setattr(runs, "fit", record)
    assert experiments.metrics_thread_fits is train.metrics_thread_fits
    r = runner.invoke(app, setting_all(workers, tmp_path, tiny_py, epochs=1))
    assert r.exit_code == 0, r.stderr
    assert seen == [thread] * 4


@pytest.mark.parametrize("workers", ["1", "2"])
def test_setting_all_resumes_as_a_whole(runner, tiny_py, tmp_path, monkeypatch, workers):
    """Bug: Ctrl-C in one of the four runs (one after another, or two at a time) losing the
    others' work, or a resume that starts finished runs again."""
    args = setting_all(workers, tmp_path, tiny_py, epochs=2)
    real = runs.fit

    def stop_in_setting_3(cfg_, prepared_, state, on_epoch=None, **kw):
        def then_stop(st):
            on_epoch(st)
            if cfg_.setting == 3:
                raise KeyboardInterrupt  # Ctrl-C right after setting 3's first epoch

        return real(cfg_, prepared_, state, on_epoch=then_stop, **kw)

    monkeypatch.setattr(runs, "fit", stop_in_setting_3)
    r = runner.invoke(app, args)
    assert r.exit_code == 130
    assert r.stderr.strip().endswith(  # the same command, all its options: it continues them all
        f"; resume with 'cifarlin train --setting all --epochs 2 --batch-size 10 --out {tmp_path} "
        f"--no-plots --workers {workers} --data-dir {tiny_py} --quiet'"
    )
    if workers == "1":
        assert not (tmp_path / "setting-4").exists()
    done = {
        i: (tmp_path / f"setting-{i}" / "model.h5").stat().st_mtime_ns
        for i in (1, 2)
        if (tmp_path / f"setting-{i}" / "model.h5").exists()
    }
    assert done  # one of the first two finished before the interruption
    monkeypatch.setattr(runs, "fit", real)
    r = runner.invoke(app, [*args, "--resume", "--json"])
    assert r.exit_code == 0, r.output
    runs_ = json.loads(r.stdout)["runs"]
    assert [s["setting"] for s in runs_] == [1, 2, 3, 4]
    assert all(s["epochs"] == 2 for s in runs_)
    for i, stamp in done.items():  # finished runs are not trained again
        assert (tmp_path / f"setting-{i}" / "model.h5").stat().st_mtime_ns == stamp
    assert (tmp_path / "summary.md").is_file()


def test_reference_comparisons_only_for_unchanged_settings():
    assert TrainConfig.for_setting(2).is_reference and TrainConfig.for_setting(2, seed=5).is_reference
    assert not TrainConfig.for_setting(2, epochs=5).is_reference
    assert not TrainConfig.for_setting(3, shuffle=True).is_reference and not TrainConfig().is_reference


def test_setting_all_two_at_a_time_equals_one_after_another(runner, tiny_py, tmp_path):
    """Bug: runs trained in threads at the same time giving other numbers than alone (a BLAS
    thread count changed under a running run, or shared state between runs)."""
    base = [
        "train",
        "--setting",
        "all",
        "--data-dir",
        str(tiny_py),
        *TINY,
        "--epochs",
        "3",
        "--shuffle",
        "--quiet",
    ]
    for workers in ("1", "2"):
        r = runner.invoke(app, [*base, "--workers", workers, "--out", str(tmp_path / workers)])
        assert r.exit_code == 0, r.output
    for i in range(1, 5):
        a = read_arrays(tmp_path / "1" / f"setting-{i}" / "model.h5")
        b = read_arrays(tmp_path / "2" / f"setting-{i}" / "model.h5")
        assert np.array_equal(a["W"], b["W"]) and np.array_equal(a["b"], b["b"])
        ha = checkpoint.load_history(tmp_path / "1" / f"setting-{i}" / "history.h5").history.columns
        hb = checkpoint.load_history(tmp_path / "2" / f"setting-{i}" / "history.h5").history.columns
        assert ha["val_cost"] == hb["val_cost"] and ha["train_acc"] == hb["train_acc"]


def test_a_ctrl_c_swallowed_by_a_weakref_callback_still_stops_training(prepared, monkeypatch):
    """Bug: SIGINT landing in a weakref callback (h5py's, numpy's) is printed as 'Exception
    ignored' and lost, and the run went on to its end: the loop raises it at the next batch."""
    import weakref

    from cifarlin import errors

    class Thing:
        pass

    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)  # where 'Exception ignored' goes
    thing = Thing()
    ref = weakref.ref(thing, lambda _: errors.stop_signal(terminate=False))  # as the CLI's handler
    try:
        del thing  # the callback raises KeyboardInterrupt, which Python reports and ignores
        assert ref() is None and [type(u.exc_value) for u in ignored] == [KeyboardInterrupt]
        batches = []
        with pytest.raises(KeyboardInterrupt):
            train.fit(cfg(), prepared, train.init_state(cfg()), on_batch=lambda *a: batches.append(a))
        assert batches == []  # stopped at the first batch
    finally:
        errors.reset_stop()
    assert train.fit(cfg(epochs=1), prepared, train.init_state(cfg())).epoch == 1
