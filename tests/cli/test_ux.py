"""What a shell user meets: where output goes, terminals and colours, runs that follow each other,
options and help. Each test names the bug it would catch.
"""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
from typer.main import get_command

from cifarlin.cli import app
from cli_helpers import TINY, train

GROUP = get_command(app)
TWO = [*TINY, "--epochs", "2"]  # a run of two epochs on the tiny data
ONE = [*TINY, "--epochs", "1"]  # one epoch (--setting all: of each of its four runs)


def test_results_go_to_stdout_and_progress_to_stderr(runner, tiny_py, tmp_path):
    """Bug: `cifarlin evaluate m.h5 > eval.txt` gave an empty file; `| grep cat` found nothing."""
    r = train(tiny_py, tmp_path / "r", *TWO)
    assert "test accuracy" in r.stdout and "epoch 1/2" in r.stderr and "epoch 1/2" not in r.stdout
    r = runner.invoke(app, ["evaluate", str(tmp_path / "r"), "--data-dir", str(tiny_py)])
    cat = [line for line in r.stdout.splitlines() if line.startswith("cat ")]
    assert len(cat) == 2  # its per-class row and its confusion row
    assert "on test: accuracy" in r.stdout
    r = runner.invoke(app, ["gradcheck", "--random", "--dims", "10"])
    assert r.stdout.startswith("gradient check") and "PASS: all 110 checked entries" in r.stdout


def test_json_failure_is_a_json_document_too(runner, tiny_py, tmp_path):
    """Bug: a script reading --json output got nothing parseable when the command failed."""
    r = runner.invoke(app, ["evaluate", str(tmp_path / "missing.h5"), "--json", "--data-dir", str(tiny_py)])
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["exit_code"] == 1 and "missing.h5" in doc["error"] and doc["error"] in r.stderr
    r = runner.invoke(app, ["train", "--eta", "-1", "--json", "--data-dir", str(tiny_py)])
    assert r.exit_code == 2 and json.loads(r.stdout) == {
        "error": "--eta -1.0: the learning rate must be > 0",
        "exit_code": 2,
    }


def test_plain_epoch_lines_end_with_the_eta(tiny_py, tmp_path):
    """Bug: logs of a long run said nothing of when it would end."""
    r = train(tiny_py, tmp_path / "r", *TWO)
    lines = [line for line in r.stderr.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and all(re.search(r", ETA \d+:\d\d$", line) for line in lines)


@pytest.mark.slow
def test_no_color_keeps_the_progress_bar_on_a_terminal(tiny_py, tmp_path):
    """Bug: NO_COLOR turned off the live progress display along with the colours."""
    pytest.importorskip("pty")
    from processes import run_in_pty

    env = {"NO_COLOR": "1", "TERM": "xterm", "COLUMNS": "100", "CIFARLIN_DATA_DIR": str(tiny_py)}
    args = ["train", "--out", str(tmp_path / "r"), "--epochs", "30", "--batch-size", "10", "--no-plots"]
    text = run_in_pty([sys.executable, "-m", "cifarlin", *args], env)
    assert "epochs" in text and "batches" in text and "━" in text  # the live bars were drawn
    assert not re.search(r"\x1b\[[0-9;]*3[0-9]m|\x1b\[[0-9;]*38;", text)  # and no colour


def test_setting_all_comparison_is_a_table_that_fits_80_columns(tiny_py, tmp_path):
    """Bug: the comparison printed as raw Markdown that wrapped mid-word, and not at all with -q."""
    r = train(tiny_py, tmp_path, "--setting", "all", *ONE, "-q", env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    rows = [line for line in r.stdout.splitlines() if re.match(r"^[1-4] ", line)]
    assert [row.split()[0] for row in rows] == ["1", "2", "3", "4"]
    table = r.stdout[r.stdout.index("against the original work") :].splitlines()[1:7]  # header, rule, 4 rows
    assert max(len(line) for line in table) <= 80 and rows == table[2:]
    assert "|---" not in r.stdout


def test_train_then_setting_all_reuses_the_same_run(tiny_py, tmp_path):
    """Bug: `train --setting 2` then `train --setting all` failed on the folder setting 2 left."""
    first = train(tiny_py, tmp_path / "setting-2", "--setting", "2", *ONE, "--json")
    assert first.exit_code == 0
    r = train(tiny_py, tmp_path, "--setting", "all", *ONE, "--json")
    assert r.exit_code == 0, r.output
    runs = json.loads(r.stdout)["runs"]
    assert [s["reused"] for s in runs] == [False, True, False, False]
    assert runs[1]["test"] == json.loads(first.stdout)["test"]
    assert f"{tmp_path / 'setting-2'} holds a complete run with these parameters: reusing it" in r.stderr


def test_resume_of_a_complete_run_changes_nothing(runner, tiny_py, tmp_path):
    """Bug: --resume on a finished run rewrote its files (and said nothing)."""
    train(tiny_py, tmp_path / "r", *TWO)
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").iterdir()}
    r = runner.invoke(
        app, ["train", "--out", str(tmp_path / "r"), "--data-dir", str(tiny_py), "--resume", "--no-plots"]
    )
    assert r.exit_code == 0 and "is complete (2 epochs): nothing to resume, nothing changed" in r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").iterdir()} == stamps


@pytest.mark.slow
def test_resuming_with_more_epochs_redraws_or_names_stale_figures(runner, tiny_py, tmp_path):
    """Bug: a resumed run kept the old curves silently."""
    out = tmp_path / "r"
    r = runner.invoke(
        app, ["train", "--out", str(out), "--data-dir", str(tiny_py), "--batch-size", "10", "--epochs", "1"]
    )
    assert r.exit_code == 0
    before = (out / "curves.png").stat().st_mtime_ns
    r = runner.invoke(
        app, ["train", "--out", str(out), "--data-dir", str(tiny_py), "--resume", "--epochs", "2"]
    )
    assert r.exit_code == 0 and (out / "curves.png").stat().st_mtime_ns > before  # redrawn
    r = runner.invoke(
        app,
        ["train", "--out", str(out), "--data-dir", str(tiny_py), "--resume", "--epochs", "3", "--no-plots"],
    )
    assert r.exit_code == 0
    assert f"{out / 'curves.png'}, {out / 'montage.png'} show an earlier epoch" in r.stdout


def test_a_cost_growing_by_orders_of_magnitude_is_warned_of(tiny_py, tmp_path):
    """Bug: a run whose cost grew a million-fold without becoming NaN ended as if all was well."""
    r = train(tiny_py, tmp_path / "r", *TWO, "--lam", "1", "--eta", "1.25", "--epochs", "3")
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(line) == 1 and re.fullmatch(
        r"warning: the training cost rose from 5\.\d+ to [\d.]+e\+0\d: eta too large\?", line[0]
    )
    r = train(tiny_py, tmp_path / "ok", *TWO, "--eta", "0.01")
    assert "warning" not in r.stderr


@pytest.mark.parametrize("name", sorted(n for n, c in GROUP.commands.items() if not c.hidden))
def test_help_has_one_style_of_value_names(runner, name):
    """Bug: help mixing <float>, <bool> on switches, lower-case and UPPER-case value names."""
    for flag in ("-h", "--help"):
        r = runner.invoke(app, [name, flag], env={"COLUMNS": "100"})
        assert r.exit_code == 0
        assert not re.search(r"<[a-z|]+>", r.stdout), re.findall(r"<[a-z|]+>", r.stdout)


def test_setting_help_names_the_pairs_and_the_original_work(runner):
    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    flat = " ".join(r.stdout.replace("│", " ").split())
    assert "KTH's DD2424" in flat
    for pair in (
        "1: lambda 0, eta 0.1",
        "2: lambda 0, eta 0.001",
        "3: lambda 0.1, eta 0.001",
        "4: lambda 1, eta 0.001",
    ):
        assert pair in flat


def test_short_options_and_aliases(runner, tiny_py, tmp_path):
    """Bug: the documented short forms and aliases missing."""
    assert runner.invoke(app, ["-V"]).stdout.startswith("cifarlin ")
    assert "Usage" in runner.invoke(app, ["-h"]).stdout
    assert (
        "--install-completion" not in runner.invoke(app, ["--help"]).stdout
    )  # one way to install completion
    r = runner.invoke(
        app, ["gradcheck", "--random", "--dims", "5", "--samples", "3", "--step", "1e-5", "--json"]
    )
    doc = json.loads(r.stdout)
    assert (doc["n"], doc["h"]) == (3, 1e-5)
    r = runner.invoke(app, ["gradcheck", "--random", "--dims", "5", "--h", "1e-4", "--json"])
    assert json.loads(r.stdout)["h"] == 1e-4  # the old spelling still works
    train(tiny_py, tmp_path / "r", *TWO)
    r = runner.invoke(
        app,
        ["visualise", str(tmp_path / "r"), "--what", "curves,montage", "-o", str(tmp_path / "f"), "--json"],
    )
    assert r.exit_code == 0, r.output
    assert [p.rsplit("/", 1)[1] for p in json.loads(r.stdout)["files"]] == ["curves.png", "montage.png"]
    r = runner.invoke(app, ["visualize", str(tmp_path / "r"), "--what", "curves,bogus"])
    assert r.exit_code == 2 and "--what 'curves,bogus': use a comma list of" in r.stderr


@pytest.mark.slow
def test_visualize_a_folder_of_runs_draws_their_comparison(runner, tiny_py, tmp_path):
    """Bug: `visualize outputs/` (a folder of runs) failed on a missing history."""
    r = train(tiny_py, tmp_path, "--setting", "all", *ONE, "-q")
    assert r.exit_code == 0 and not (tmp_path / "settings.png").exists()  # --no-plots
    r = runner.invoke(app, ["visualize", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["files"] == [str(tmp_path / "settings.png")]
    from matplotlib import image

    assert image.imread(tmp_path / "settings.png").shape[:2] == (2572, 1800)  # 4 rows, 12 in wide


@pytest.mark.slow
def test_figure_options(runner, tiny_py, tmp_path):
    """Bug: --panels, --size, --normalize and --pick accepted and ignored."""
    from matplotlib import image

    train(tiny_py, tmp_path / "r", *TWO, "--lam", "0.1")
    base = ["visualize", str(tmp_path / "r"), "--data-dir", str(tiny_py), "--dpi", "100"]
    r = runner.invoke(
        app, [*base, "--what", "curves", "--panels", "acc", "--size", "single", "-o", str(tmp_path / "a")]
    )
    assert r.exit_code == 0, r.output
    assert image.imread(tmp_path / "a" / "curves.png").shape[:2] == (int(100 * (1.75 + 0.9)), 350)
    r = runner.invoke(app, [*base, "--what", "curves", "--size", "double", "-o", str(tmp_path / "b")])
    assert image.imread(tmp_path / "b" / "curves.png").shape[1] == 716  # cost, loss, acc in one row
    r = runner.invoke(
        app, [*base, "--what", "samples", "--pick", "errors", "-o", str(tmp_path / "c"), "--json"]
    )
    assert r.exit_code == 0
    r = runner.invoke(app, [*base, "--what", "confusion", "--normalize", "-o", str(tmp_path / "d")])
    assert r.exit_code == 0 and (tmp_path / "d" / "confusion-test.png").is_file()


def test_pick_errors_shows_only_misclassified_images(tiny_py, tmp_path):
    """Bug: --pick errors drawing correctly classified images."""
    from cifarlin.data import cifar as data
    from cifarlin.figures import make as figures
    from cifarlin.figures.request import FigureRequest
    from cifarlin.store import checkpoint
    from cifarlin.work import evaluation

    train(tiny_py, tmp_path / "r", *TWO, "--eta", "0.0001", "--epochs", "1")
    snap = checkpoint.load_snapshot(tmp_path / "r" / "model.h5")
    ev = evaluation.evaluate_split(snap, data.Dataset(tiny_py, "python"), "test")
    rows = figures._pick(ev, FigureRequest(pick="errors", n_samples=400))
    assert (
        len(rows) == int(np.sum(ev.predictions != ev.labels))
        and (ev.predictions[rows] != ev.labels[rows]).all()
    )
    rows = figures._pick(ev, FigureRequest(pick="random", n_samples=7, seed=3))
    assert len(set(rows.tolist())) == 7 and rows.tolist() == sorted(rows.tolist())
