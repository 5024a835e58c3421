"""``cifarlin report``: one self-contained page whose numbers are the files' numbers, its
Markdown and JSON forms, the commands it prints reproducing their runs, and bad input."""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from cifarlin.cli import app
from cifarlin.core.config import REFERENCE_TEST_ACCURACY
from cifarlin.core.history import history_metrics
from cifarlin.store.checkpoint import load_history, load_snapshot
from page import Page
from report_runs import RUNS

pytestmark = pytest.mark.slow


@pytest.fixture
def outputs(report_outputs, tmp_path) -> Path:
    """A copy of the session's outputs folder, for a test that may write into it."""
    return Path(shutil.copytree(report_outputs, tmp_path / "outputs", symlinks=True))


@pytest.fixture(scope="module")
def written(report_outputs, disagreeing_py, tmp_path_factory):
    """The report of a copy of the outputs folder, written once: (html text, outputs folder)."""
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("written")
    out = Path(shutil.copytree(report_outputs, root / "outputs"))
    env = {"CIFARLIN_DATA_DIR": None, "XDG_CACHE_HOME": str(root / "cache"), "COLUMNS": "120"}
    r = CliRunner().invoke(app, ["report", str(out), "-o", str(root / "report.html")], env=env)
    assert r.exit_code == 0, r.output
    return (root / "report.html").read_text(encoding="utf-8"), out


def test_the_page_is_one_file_every_figure_inline_every_table_headed(written):
    text, _ = written
    page = Page(text)
    assert page.external == [] and page.scripts == 0  # no stylesheet, script or frame to fetch
    assert len(page.images) >= 10  # 4 settings x 2, comparison, probabilities, best model, sweep
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    for t in page.tables:
        assert t.caption and t.headers and all(t.headers), t.caption
        assert t.rows and all(len(row) == len(t.headers) for row in t.rows), t.caption
    assert len(text.encode()) < 10_000_000


def _from_files(folder: Path) -> tuple[float, float]:
    """The validation accuracy of a run's saved model and its test accuracy, read from its history."""
    h = load_history(folder / "history.h5")
    return history_metrics(h.history, h.config.keep)["val_accuracy"], h.test.accuracy


def test_reference_settings_table_holds_the_files_numbers(written):
    text, out = written
    t = Page(text).table("Accuracy of the reference settings")
    assert t.headers == ["setting", "lambda", "eta", "runs", "val acc", "test acc", "original", "difference"]
    rows = {row[0]: row for row in t.rows}
    assert sorted(rows) == ["1", "2", "3", "4"]
    for s in (1, 3, 4):
        val, test = _from_files(out / f"setting-{s}")
        ref = REFERENCE_TEST_ACCURACY[s]
        assert rows[str(s)][3:] == [
            "1",
            f"{val:.4f}",
            f"{test:.4f}",
            f"{ref:.4f}",
            f"{100 * (test - ref):+.2f} pt",
        ]
    tests = [_from_files(out / name)[1] for name in ("setting-2", "setting-2-seed-1")]
    mean, sd = sum(tests) / 2, abs(tests[0] - tests[1]) / math.sqrt(2)
    assert rows["2"][3] == "2"
    assert rows["2"][5] == f"{mean:.4f} ± {sd:.4f} (n=2)"
    assert rows["2"][7] == f"{100 * (mean - REFERENCE_TEST_ACCURACY[2]):+.2f} pt"


def test_gradient_check_table_holds_the_files_numbers(written):
    text, out = written
    t = Page(text).table("Relative errors")
    assert [row[:2] for row in t.rows] == [["ce", "W"], ["ce", "b"], ["svm", "W"], ["svm", "b"]]
    for row in t.rows:
        d = json.loads((out / f"gradcheck-{row[0]}.json").read_text())[row[1]]
        stats = [f"{d[k]:.2e}" for k in ("max_rel", "p99_rel", "mean_rel", "max_abs")]
        assert row[2:] == [*stats, str(d["checked"]), str(d["failing"]), "PASS" if d["pass"] else "FAIL"]


def test_best_model_is_chosen_by_validation_and_its_test_accuracy_read_from_its_file(written):
    """On these data validation and test disagree: a choice by test accuracy names another run.
    Runs validated on other images (the recipe's last 100 training images) are their own set."""
    text, out = written
    trials = sorted(f"sweep/{p.name}" for p in (out / "sweep").glob("trial-*"))
    on_batch_2 = [name for name in RUNS if "--val-size" not in RUNS[name]] + trials
    scores = {name: _from_files(out / name) for name in on_batch_2}
    by_val = max(scores, key=lambda n: scores[n][0])
    assert by_val != max(scores, key=lambda n: scores[n][1])  # the data make the two choices differ
    rows = {row[0]: row for row in Page(text).table("The best model of each validation set").rows}
    assert sorted(rows) == ["data_batch_2", "the last 100 training images (batches 1,2)"]
    loss = load_history(out / by_val / "history.h5").config.loss
    expected = [str(len(on_batch_2)), by_val, loss, f"{scores[by_val][0]:.4f}", f"{scores[by_val][1]:.4f}"]
    assert rows["data_batch_2"][1:] == expected
    val, test = _from_files(out / "recipe")
    assert rows["the last 100 training images (batches 1,2)"][1:] == [
        "1",
        "recipe",
        "ce",
        f"{val:.4f}",
        f"{test:.4f}",
    ]


def test_other_losses_and_the_sweep_come_from_their_files(written):
    text, out = written
    page = Page(text)
    losses = {row[0]: row for row in page.table("Other losses").rows}
    assert sorted(losses) == ["bce", "svm"]
    for name, row in losses.items():
        val, test = _from_files(out / name)
        assert row[1] == name and row[-2:] == [f"{val:.4f}", f"{test:.4f}"]
    sweep = page.table("sweep:")
    import h5py

    with h5py.File(out / "sweep" / "sweep.h5") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f["name"][()]]
        accs = dict(zip(names, f["val_accuracy"][()], strict=True))
    assert {row[0]: row[-2] for row in sweep.rows} == {n: f"{a:.4f}" for n, a in accs.items()}
    assert [row[0] for row in sweep.rows] == sorted(accs, key=lambda n: -accs[n])


def test_every_run_gets_a_command_that_trains_it_again(written, disagreeing_py, runner, tmp_path):
    """The command the page prints for a run, run again into another folder, gives the same
    configuration and the same weights bit for bit."""
    text, out = written
    runs = Page(text).table("Runs and the command")
    assert runs.headers == ["run", "command"]  # one arithmetic for every run: said once, above
    commands = {row[0]: row[1] for row in runs.rows}
    assert set(RUNS) <= set(commands)
    for name in ("setting-2-seed-1", "svm", "recipe"):
        words = shlex.split(commands[name])
        assert words[:2] == ["cifarlin", "train"] and words[-2:] == ["--out", str(out / name)]
        again = tmp_path / name
        r = runner.invoke(
            app, [*words[1:-2], "--out", str(again), "--data-dir", str(disagreeing_py), "--no-plots"]
        )
        assert r.exit_code == 0, r.output
        old, new = load_snapshot(out / name / "model.h5"), load_snapshot(again / "model.h5")
        assert new.config == old.config
        assert (new.state.W == old.state.W).all() and (new.state.b == old.state.b).all()


@pytest.mark.parametrize(
    ("given", "command", "missing"),
    [
        (
            {"solver": "ridge", "loss": "mse", "epochs": 1, "choose_lam": True, "lam": 1.8},
            "--solver ridge",
            [],
        ),
        ({"solver": "ridge", "loss": "mse", "epochs": 1, "lam": 1.0}, "--solver ridge --lam 1", []),
        ({"setting": 3, "seed": 4, "dtype": "float64"}, "--setting 3 --seed 4 --dtype float64", []),
        ({"setting": "bonus", "shuffle": False}, "--setting bonus --no-shuffle", []),
        (
            {"lam": 0.1, "augment": "flip,translate:2", "train_batches": (1, 3, 4)},
            "--lam 0.1 --train-batches 1,3,4 --augment flip,translate:2",
            [],
        ),
        ({"init_std": 0.02}, "", ["init_std=0.02"]),
    ],
)
def test_the_command_of_a_configuration(given, command, missing):
    """Only what differs from what train does by itself (its setting's values, the ridge solver's
    own); what no train option gives is named."""
    from cifarlin.core.config import TrainConfig
    from cifarlin.report.facts import train_command

    cfg = TrainConfig.for_setting(**given) if "setting" in given else TrainConfig(**given)
    text, left = train_command(cfg, "out/x")
    assert text == " ".join(["cifarlin train", command, "--out out/x"]).replace("  ", " ")
    assert left == missing


def test_json_is_the_document_of_the_page(written, report_outputs, runner, tmp_path):
    r = runner.invoke(
        app, ["report", str(report_outputs), "-o", str(tmp_path / "r.html"), "--no-draw", "--json"]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    ids = [s["id"] for s in doc["sections"]]
    assert ids == [
        "environment",
        "gradcheck",
        "reference",
        "losses",
        "recipes",
        "sweeps",
        "ensembles",
        "best",
    ]
    ref = next(s for s in doc["sections"] if s["id"] == "reference")["tables"][0]
    s1 = next(row for row in ref["rows"] if row[0] == 1)
    assert s1[5] == [_from_files(report_outputs / "setting-1")[1], 0.0, 1]  # raw numbers, not text
    assert doc["files"] == [str(tmp_path / "r.html")] and doc["format"] == "html"


def test_markdown_links_every_figure_in_images(written, runner, tmp_path):
    """Every figure (a run folder's name with a space and brackets included) in images/, under a
    name a Markdown link can hold, beginning with the report's own name."""
    out = Path(shutil.copytree(written[1], tmp_path / "outputs"))
    (out / "recipe").rename(out / "my run (1)")
    r = runner.invoke(
        app, ["report", str(out), "--format", "md", "-o", str(tmp_path / "report.md"), "--no-draw"]
    )
    assert r.exit_code == 0, r.output
    text = (tmp_path / "report.md").read_text()
    links = [line.split("](", 1)[1][:-1] for line in text.splitlines() if line.startswith("![")]
    assert len(links) >= 10 and all(
        re.fullmatch(r"images/report-[A-Za-z0-9._-]+\.png", link) for link in links
    )
    assert any("my_run__1_" in link for link in links)
    for link in links:
        assert (tmp_path / link).read_bytes().startswith(b"\x89PNG")
    header = next(line for line in text.splitlines() if line.startswith("| setting | lambda |"))
    assert header.count("|") == 9


def test_figures_the_drawing_child_could_not_draw_are_drawn_here(outputs, runner, tmp_path, monkeypatch):
    """A child that fails (or dies) leaves nothing out: the command draws its figures itself."""
    from cifarlin.figures.drawer import FigureDrawer

    monkeypatch.setattr(FigureDrawer, "answer", lambda self: None)
    r = runner.invoke(app, ["report", str(outputs), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    page = Page((tmp_path / "r.html").read_text())
    assert len(page.images) >= 10
    for name in ("curves.png", "montage.png"):
        assert (outputs / "setting-4" / name).read_bytes().startswith(b"\x89PNG")
    assert (outputs / "settings.png").is_file()


def test_an_odd_gradcheck_file_and_an_unfinished_run_are_shown_as_they_are(outputs, runner, tmp_path):
    """A gradient check with no settings recorded, an interrupted reference run, a diverged sweep
    trial: reported, the run in no average, the trial in no ranking."""
    import h5py

    doc = json.loads((outputs / "gradcheck-ce.json").read_text())
    keep = ("kind", "format_version", "pass", "W", "b")
    (outputs / "gradcheck-ce.json").write_text(json.dumps({k: doc[k] for k in keep}))
    with h5py.File(outputs / "setting-4" / "history.h5", "r+") as f:
        f.attrs["status"] = "interrupted"
    with h5py.File(outputs / "sweep" / "sweep.h5", "r+") as f:
        status = [s.decode() if isinstance(s, bytes) else s for s in f["status"][()]]
        first = int(np.argmax(f["val_accuracy"][()]))
        status[first] = "diverged"
        del f["status"]
        f.create_dataset("status", data=np.array(status, dtype=object), dtype=h5py.string_dtype())
        diverged = f["name"][first].decode()
    r = runner.invoke(app, ["report", str(outputs), "-o", str(tmp_path / "r.html"), "--no-draw"])
    assert r.exit_code == 0, r.output
    page = Page((tmp_path / "r.html").read_text())
    assert [row[:2] for row in page.table("Relative errors").rows][:2] == [["ce", "W"], ["ce", "b"]]
    assert sorted(row[0] for row in page.table("Accuracy of the reference settings").rows) == ["1", "2", "3"]
    assert [(row[0], row[-1]) for row in page.table("Runs that did not finish").rows] == [
        ("setting-4", "interrupted")
    ]
    assert diverged not in [row[0] for row in page.table("sweep:").rows]


@pytest.mark.parametrize("file", ["history.h5", "model.h5"])
def test_a_damaged_run_is_named_and_the_rest_reported(outputs, runner, tmp_path, file):
    """A run whose history (or model: its history still fine) is damaged: named, the rest reported."""
    path = outputs / "setting-3" / file
    size = path.stat().st_size
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * (size // 256))
    r = runner.invoke(app, ["report", str(outputs), "-o", str(tmp_path / "r.html"), "--no-draw"])
    assert r.exit_code == 0, r.output
    assert f"note: {outputs / 'setting-3'}: left out, damaged" in r.stderr
    page = Page((tmp_path / "r.html").read_text())
    assert any(n.startswith(f"{outputs / 'setting-3'}: left out, damaged") for n in page.notes)
    assert sorted(row[0] for row in page.table("Accuracy of the reference settings").rows) == ["1", "2", "4"]


def test_a_run_being_trained_is_skipped_and_named(outputs, runner, tmp_path):
    from cifarlin.work.folder import folder_lock

    with folder_lock(outputs / "svm"):
        r = runner.invoke(app, ["report", str(outputs), "-o", str(tmp_path / "r.html"), "--no-draw"])
    assert r.exit_code == 0, r.output
    page = Page((tmp_path / "r.html").read_text())
    assert f"{outputs / 'svm'}: skipped, a cifarlin is training into it (its lock is held)" in page.notes
    assert [row[0] for row in page.table("Other losses").rows] == ["bce"]


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_no_runs_is_one_line_and_no_file(runner, tmp_path, make):
    target = tmp_path / "outputs"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("x")
    r = runner.invoke(app, ["report", str(target), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and str(target) in r.stderr, r.output
    assert "Traceback" not in r.output and not (tmp_path / "r.html").exists()


def test_a_folder_holding_only_a_damaged_file_says_which(runner, tmp_path):
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "gradcheck-ce.json").write_text('{"kind": "gradcheck"')
    r = runner.invoke(app, ["report", str(tmp_path / "outputs"), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.output
    assert "nothing to report" in r.stderr and "gradcheck-ce.json" in r.stderr
    assert not (tmp_path / "r.html").exists()


def test_pdf_without_chromium_says_how_to_install_it(report_outputs, runner, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    monkeypatch.delenv("CIFARLIN_CHROMIUM", raising=False)
    r = runner.invoke(app, ["report", str(report_outputs), "-o", str(tmp_path / "r.pdf"), "--no-draw"])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.output
    assert "apt-get install chromium" in r.stderr
    assert os.listdir(tmp_path) == ["nothing"] or not (tmp_path / "r.pdf").exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_a_folder_in_the_way_of_the_report_is_one_line(report_outputs, runner, tmp_path):
    (tmp_path / "r.html").mkdir()
    r = runner.invoke(app, ["report", str(report_outputs), "-o", str(tmp_path / "r.html"), "--no-draw"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "r.html': is a folder" in r.stderr, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


@pytest.mark.parametrize("fmt", ["html", "md"])
def test_a_title_and_file_contents_cannot_inject_markup_or_escapes(outputs, runner, tmp_path, fmt):
    """From the title, a run folder's name (in the tables, the commands, the notes): no markup,
    no control or format character (an ESC, a bell, a right-to-left override) reaches the page
    raw: they show as escapes, so the command shown is the one a copy runs."""
    title = "<script>alert(1)</script>\x1b[31mred\x07"
    (outputs / "svm").rename(outputs / "svm<img src=x onerror=alert(1)>\x1b[2J\u202e")
    (outputs / "bce" / "history.h5").write_bytes(b"junk\x1b]0;title\x07")  # a note quoting a file
    page = tmp_path / f"r.{fmt}"
    r = runner.invoke(app, ["report", str(outputs), "-o", str(page), "--no-draw", "--title", title])
    assert r.exit_code == 0, r.output
    text = page.read_text()
    if fmt == "md":  # code spans show their text as it is; elsewhere every < is escaped
        prose = re.sub(r"``.*?``|`[^`\n]*`", "", text)
        assert not re.search(r"(?<!\\)<", prose)
    else:
        assert "<script>" not in text and "<img src=x" not in text
    assert not any(ch in text for ch in "\x1b\x07\u202e")
    assert "\\x1b[2J\\u202e" in text  # shown, not dropped


def test_data_folders_merge_the_files_runs_read_and_name_a_file_that_changed():
    """Runs read different files of one folder (batch 1 only, or all five): one folder. A file
    recorded with two MD5s changed between runs: a row each, named; the official MD5 says yes."""
    from cifarlin.data.download import OFFICIAL_FILE_MD5
    from cifarlin.report.facts import data_folders

    official = OFFICIAL_FILE_MD5["data_batch_1"]
    one = {"folder": "/d", "format": "python", "checksums": {"data_batch_1": official, "test_batch": "t"}}
    five = {"folder": "/d", "format": "python", "checksums": {"data_batch_1": "x", "data_batch_5": "y"}}
    (d,) = data_folders([one, one, five, None, {"folder": ""}])
    assert d["runs"] == 3 and d["changed"] == ["data_batch_1"] and d["official"] is False
    rows = [(f["name"], f["md5"], f["runs"], f["official"]) for f in d["files"]]
    assert rows == [
        ("data_batch_1", official, 2, True),
        ("data_batch_1", "x", 1, False),
        ("data_batch_5", "y", 1, False),
        ("test_batch", "t", 2, False),
    ]
