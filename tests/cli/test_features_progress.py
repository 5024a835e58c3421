"""What long feature work shows: k-means rounds with their objective and extraction with counts
and the time left (bars on a terminal, lines in a log, nothing with --quiet); the feature cache
listed and cleared (`cifarlin features cache`)."""

from __future__ import annotations

import json
import re
import sys

import pytest

from cifar_files import FIT
from cifarlin.cli import app
from cli_helpers import train


def _fit(runner, tiny_py, tmp_path, *extra):
    args = ["features", "fit", *FIT, "--out", str(tmp_path / "k6.h5"), "--data-dir", str(tiny_py), *extra]
    return runner.invoke(app, args)


def test_fit_reports_each_round_with_its_objective_in_a_log(runner, tiny_py, tmp_path):
    """Bug: 20 bare "k-means round N/20" lines, no objective."""
    r = _fit(runner, tiny_py, tmp_path)
    assert r.exit_code == 0, r.output
    rounds = [ln for ln in r.stderr.splitlines() if ln.startswith("k-means: ")]
    assert len(rounds) == 3, r.stderr  # FIT: 3 rounds, a line each
    assert re.match(r"k-means: 1/3 rounds, mean squared distance [\d.e+-]+, ETA \d+:\d\d$", rounds[0])
    assert re.match(r"k-means: 3 rounds, mean squared distance [\d.e+-]+, [\d.]+ s$", rounds[-1])
    quiet = _fit(runner, tiny_py, tmp_path, "--quiet", "--overwrite")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def test_train_reports_the_extraction_of_each_batch_file(runner, tiny_py, tmp_path):
    """Bug: one line, then nothing for the 50 s of extraction."""
    assert _fit(runner, tiny_py, tmp_path).exit_code == 0
    args = ["--features", str(tmp_path / "k6.h5"), "--batch-size", "10", "--epochs", "1", "--no-plots"]
    r = train(tiny_py, tmp_path / "run", *args)
    done = re.findall(r"^features of (\w+): extracted (\d+) images, [\d.]+ s$", r.stderr, re.M)
    assert done == [("data_batch_1", "50"), ("data_batch_2", "50"), ("test_batch", "50")]
    r = train(tiny_py, tmp_path / "quiet", *args, "--quiet", "--overwrite")
    assert "features of" not in r.stderr


@pytest.mark.slow
def test_feature_work_draws_bars_on_a_terminal(tiny_py, tmp_path):
    """Bars with counts on a terminal, then one line each when done."""
    pytest.importorskip("pty")
    from processes import run_in_pty

    env = {
        "TERM": "xterm",
        "COLUMNS": "80",
        "CIFARLIN_DATA_DIR": str(tiny_py),
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
    }
    fit = ["features", "fit", *FIT, "--out", str(tmp_path / "k6.h5")]
    text = run_in_pty([sys.executable, "-m", "cifarlin", *fit], env)
    assert "k-means: 3 rounds, mean squared distance" in text and "k-means: 1/3" not in text
    assert "━" in text  # the live bar
    args = ["train", "--features", str(tmp_path / "k6.h5"), "--batch-size", "10", "--epochs", "1"]
    text = run_in_pty([sys.executable, "-m", "cifarlin", *args, "--no-plots", "-o", str(tmp_path / "r")], env)
    assert "features of test_batch: extracted 50 images" in text and "Error" not in text, text


def test_cache_lists_and_clears_its_entries(runner, tiny_py, tmp_path):
    """Bug: 92 MB of feature cache after one small run, and no command to see or remove it."""
    r = runner.invoke(app, ["features", "cache"], env={"COLUMNS": "80"})
    assert r.exit_code == 0 and r.stdout.strip().startswith("0 entries, 0.0 MB in ")
    assert _fit(runner, tiny_py, tmp_path).exit_code == 0
    args = ["--features", str(tmp_path / "k6.h5"), "--batch-size", "10", "--epochs", "1", "--no-plots"]
    train(tiny_py, tmp_path / "run", *args, "--augment", "flip")
    r = runner.invoke(app, ["features", "cache"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert max(map(len, lines[:-1])) <= 80  # the table; the last line names the folder
    batches = sorted(re.findall(r"  (data_batch_\d(?: \(mirrored\))?|test_batch)  ", r.stdout))
    assert batches == ["data_batch_1", "data_batch_1 (mirrored)", "data_batch_2", "test_batch"]
    assert re.match(r"4 entries, [\d.]+ MB in .*features$", lines[-1])
    doc = json.loads(runner.invoke(app, ["features", "cache", "--json"]).stdout)
    folder = tmp_path / "xdg-cache" / "cifarlin" / "features"
    assert doc["cache"] == str(folder) and len(doc["entries"]) == 4
    assert doc["bytes"] == sum(f.stat().st_size for f in folder.iterdir()) > 0
    r = runner.invoke(app, ["features", "cache", "--clear"])
    assert r.exit_code == 0 and r.stdout == f"removed 4 entries ({doc['bytes'] / 1e6:.1f} MB) from {folder}\n"
    assert list(folder.iterdir()) == []
    r = runner.invoke(app, ["features", "cache", "--centroids", "9"])
    assert r.exit_code == 2 and "--centroids is not an option of features cache" in r.stderr
    r = runner.invoke(app, ["features", "fit", "--clear"])
    assert r.exit_code == 2 and "--clear is an option of features cache" in r.stderr


@pytest.mark.parametrize("n", ["0", "-3"])
def test_fit_refuses_no_rounds_of_kmeans(runner, tiny_py, tmp_path, n):
    """Bug: `features fit --iterations 0` was accepted (the centroids: random patches)."""
    r = _fit(runner, tiny_py, tmp_path, "--iterations", n)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.output
    assert f"--iterations {n}: k-means needs at least 1 round" in r.stderr
    assert not (tmp_path / "k6.h5").exists()
