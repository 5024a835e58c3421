"""evaluate and visualize without --data-dir: the folder the model was trained on, when it still
holds the files the evaluation reads (their MD5s as recorded), else the default folder as before.

Each test names the bug it would catch.
"""

from __future__ import annotations

import json
import shutil

import pytest

from cifar_files import batch_dict, make_split, py2_pickle
from cifarlin.cli import app
from cli_helpers import train

TINY = ["--batch-size", "10", "--epochs", "2", "--no-plots", "--quiet"]


@pytest.fixture
def trained(tiny_py, tmp_path):
    """A copy of the tiny data (to change behind the model's back) and a run trained on it."""
    data = tmp_path / "mine" / "cifar-10-batches-py"
    shutil.copytree(tiny_py, data)
    train(data, tmp_path / "run", *TINY)
    return data, tmp_path / "run"


def evaluate(runner, *args, env=None):
    return runner.invoke(app, ["evaluate", *map(str, args)], env={"COLUMNS": "80", **(env or {})})


def test_evaluate_reads_the_folder_the_model_was_trained_on(runner, trained):
    """Bug: the recorded folder ignored, so evaluate (no --data-dir, no $CIFARLIN_DATA_DIR) went
    for the default folder and downloaded 163 MB there (here: the download fails)."""
    data, run = trained
    r = evaluate(runner, run, "--json")
    assert r.exit_code == 0, r.output
    assert f"data: the folder the model was trained on, {data}\n" in r.stderr
    assert json.loads(r.stdout)["data_dir"] == str(data)
    assert "downloading" not in r.stderr
    r = evaluate(runner, run, run, "--json", "--quiet")  # several models: one folder, nothing said
    assert r.exit_code == 0 and "trained on" not in r.stderr
    assert json.loads(r.stdout)["data_dir"] == str(data)


def test_only_the_files_evaluated_must_be_the_same(runner, trained):
    """Bug: the recorded folder refused for a file the evaluation does not read, or used though
    one it reads changed since training (the model's numbers on other images)."""
    data, run = trained
    (data / "data_batch_3").write_bytes(b"not read by an evaluation of the test split")
    r = evaluate(runner, run, "--split", "test")
    assert r.exit_code == 0 and "trained on, " in r.stderr
    images, labels = make_split(50, seed=7)  # another test batch, valid but not the one trained on
    (data / "test_batch").write_bytes(py2_pickle(batch_dict(images, labels, "testing batch 1 of 1")))
    r = evaluate(runner, run, "--no-download")
    assert r.exit_code != 0 and "data: the folder" not in r.stderr
    assert f"the folder the model was trained on, {data}, cannot be used: its test_batch" in r.stderr
    assert "no CIFAR-10 data in" in r.stderr and "xdg-cache" in r.stderr  # the default, as before
    r = evaluate(runner, run, "--split", "val")  # data_batch_2: unchanged, so still that folder
    assert r.exit_code == 0 and "trained on, " in r.stderr


def test_a_moved_folder_falls_back_to_the_default(runner, trained):
    """Bug: a missing recorded folder breaking evaluate instead of the usual default folder."""
    data, run = trained
    data.rename(data.parent / "moved")
    r = evaluate(runner, run, "--no-download")
    assert r.exit_code != 0 and "no CIFAR-10 data in" in r.stderr and "trained on" not in r.stderr


def test_a_folder_given_wins(runner, trained, tiny_py):
    """Bug: the recorded folder used though --data-dir or $CIFARLIN_DATA_DIR names another."""
    run = trained[1]
    for args, env in ((["--data-dir", tiny_py], None), ([], {"CIFARLIN_DATA_DIR": str(tiny_py)})):
        r = evaluate(runner, run, "--json", *args, env=env)
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["data_dir"] == str(tiny_py) and "trained on" not in r.stderr


def test_visualize_reads_the_folder_the_model_was_trained_on(runner, trained, tmp_path):
    """Bug: visualize's confusion matrix and samples going for the default folder (a download)."""
    data, run = trained
    r = runner.invoke(app, ["visualize", str(run), "--what", "confusion", "--out", str(tmp_path / "f")])
    assert r.exit_code == 0, r.output
    assert f"data: the folder the model was trained on, {data}\n" in r.stderr
    assert (tmp_path / "f" / "confusion-test.png").is_file()
