"""cifarlin runs: every run folder under a folder, its values equal to its own files, damaged
files listed as such, and nothing in the folders changed.

Each test names the bug it would catch.
"""

from __future__ import annotations

import faulthandler
import json
import os
import shutil
import signal
import statistics
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cifarlin.cli import app
from cifarlin.core import config
from cifarlin.core.config import TrainConfig
from cifarlin.data import cifar as data
from cifarlin.errors import Interrupted
from cifarlin.store import checkpoint
from cifarlin.work import catalog, folder, runs
from cifarlin.work.prepare import prepare
from cli_helpers import train

TRAIN = ["--batch-size", "10", "--no-plots", "--quiet"]


@pytest.fixture(scope="module")
def outputs(tiny_py, tmp_path_factory) -> Path:
    """outputs/ with two finished runs: setting 3 with the hinge loss, and a plain run."""
    root = tmp_path_factory.mktemp("runs") / "outputs"
    train(tiny_py, root / "setting-3-svm", *TRAIN, "--setting", "3", "--loss", "svm", "--epochs", "3")
    train(tiny_py, root / "sweep" / "eta-0.01", *TRAIN, "--eta", "0.01", "--epochs", "4", "--keep", "best")
    (root / "examples").mkdir()  # figures only: not a run
    (root / "examples" / "curves.png").write_bytes(b"png")
    return root


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def listing(root: Path, *args: str) -> dict:
    r = CliRunner().invoke(app, ["runs", str(root), "--json", *args])
    assert r.exit_code == 0, r.output
    assert r.stdout.count("\n") == 1
    return json.loads(r.stdout)


def snapshot_of_tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


def test_lists_each_run_with_the_values_of_its_files(outputs):
    """Bug: the last epoch's validation accuracy shown as the best, a test accuracy not the
    model's, the loss or the setting missing, a folder of figures listed as a run, or a
    listing that writes (a lock file, a recovered stash) into the folders it reads."""
    before = snapshot_of_tree(outputs)
    got = listing(outputs)
    assert snapshot_of_tree(outputs) == before
    assert [r["folder"] for r in got["runs"]] == [
        str(outputs / "setting-3-svm"),
        str(outputs / "sweep" / "eta-0.01"),
    ]
    for r in got["runs"]:
        folder = Path(r["folder"])
        h = checkpoint.load_history(folder / "history.h5")
        model = checkpoint.load_snapshot(folder / "model.h5")
        assert r["status"] == "complete" and r["reason"] is None
        assert r["best_val_acc"] == h.history.best_val_acc == max(h.history.columns["val_acc"])
        assert r["best_epoch"] == h.history.best_epoch
        assert r["test_acc"] == model.test.accuracy
        assert r["epochs_done"] == len(h.history)
        assert r["config"] == model.config.to_dict()
        assert r["files"] == ["model.h5", "checkpoint.h5", "history.h5"]
    svm, sweep = got["runs"]
    assert (svm["setting"], svm["lam"], svm["eta"], svm["loss"], svm["epochs"], svm["batch_size"]) == (
        3,
        0.1,
        0.001,
        "svm",
        3,
        10,
    )
    assert (sweep["setting"], sweep["lam"], sweep["eta"], sweep["loss"], sweep["epochs"]) == (
        None,
        0,
        0.01,
        "ce",
        4,
    )


def test_best_validation_accuracy_is_the_best_not_the_last(outputs, tmp_path):
    """Bug: the last epoch's validation accuracy (or epoch) shown as the best."""
    peaked = copy_run(outputs / "setting-3-svm", tmp_path / "o" / "peaked")
    h = checkpoint.load_history(peaked / "history.h5")
    h.history.columns["val_acc"] = [0.5, 0.9, 0.7]
    checkpoint.save_history(peaked / "history.h5", h.history, h.config, h.class_names, "complete", h.test)
    (r,) = listing(tmp_path / "o")["runs"]
    assert (r["best_val_acc"], r["best_epoch"], r["epochs_done"]) == (0.9, 2, 3)


def test_the_table_on_stdout(outputs):
    """Bug: the listing on stderr (lost in `> file`), or a run's numbers not on its row (with
    room for every column: the paths as given, the start time, the settings)."""
    r = CliRunner().invoke(app, ["runs", str(outputs)], env={"COLUMNS": "250"})
    assert r.exit_code == 0 and r.stderr == ""
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[2:]}
    h = checkpoint.load_history(outputs / "setting-3-svm" / "history.h5")
    row = rows[str(outputs / "setting-3-svm")]
    (started,) = [
        x["started"] for x in listing(outputs)["runs"] if x["folder"] == str(outputs / "setting-3-svm")
    ]
    assert row[1:3] == datetime.fromisoformat(started).astimezone().strftime("%m-%d %H:%M").split()
    assert row[3:9] == ["3", "svm", "0.1", "0.001", "10", "3/3"]
    saved = h.history.columns["val_acc"][-1]  # keep=last: the model holds the last epoch
    assert row[9:] == [f"{saved:.4f}", f"{h.test.accuracy:.4f}", "complete"]


def interrupted_run(tiny_py: Path, out: Path) -> Path:
    prepared = prepare(data.Dataset(tiny_py, "python"), config.SplitSpec())

    def stop(state):
        if state.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        runs.run(TrainConfig(epochs=5, batch_size=10), out, prepared, on_epoch=stop)
    return out


def test_statuses(outputs, tiny_py, tmp_path):
    """Bug: an interrupted, diverged, still-running or set-aside run shown as complete (or not
    listed at all), or its epochs counted from the wrong file."""
    root = tmp_path / "o"
    interrupted_run(tiny_py, root / "interrupted")

    diverged = copy_run(outputs / "sweep" / "eta-0.01", root / "diverged")
    h = checkpoint.load_history(diverged / "history.h5")
    checkpoint.save_history(diverged / "history.h5", h.history, h.config, h.class_names, "diverged")
    (diverged / "model.h5").unlink()

    running = interrupted_run(tiny_py, root / "running")  # then resumed: its checkpoint is newer
    ckpt = running / "checkpoint.h5"
    os.utime(ckpt, ns=(ckpt.stat().st_atime_ns, (running / "history.h5").stat().st_mtime_ns + 10**9))

    killed = copy_run(outputs / "setting-3-svm", root / "killed")  # killed in its first run
    (killed / "model.h5").unlink()
    (killed / "history.h5").unlink()

    stashed = copy_run(outputs / "setting-3-svm", root / "stashed")
    (stashed / ".previous-run-abc").mkdir()
    for name in folder.RUN_FILES:
        os.replace(stashed / name, stashed / ".previous-run-abc" / name)

    got = {Path(r["folder"]).name: r for r in listing(root)["runs"]}
    status = {name: (r["status"], r["epochs_done"]) for name, r in got.items()}
    assert status == {
        "interrupted": ("interrupted", 2),
        "diverged": ("diverged", 4),
        "running": ("running-or-stopped", 2),
        "killed": ("running-or-stopped", 3),
        "stashed": ("stashed-overwrite", 3),
    }
    assert got["interrupted"]["test_acc"] is None and got["interrupted"]["files"] == [
        "checkpoint.h5",
        "history.h5",
    ]
    assert got["running"]["source"] == str(running / "checkpoint.h5")
    assert (
        got["killed"]["best_val_acc"]
        == checkpoint.load_history(outputs / "setting-3-svm" / "history.h5").history.best_val_acc
    )
    assert (
        got["stashed"]["test_acc"]
        == checkpoint.load_snapshot(outputs / "setting-3-svm" / "model.h5").test.accuracy
    )
    assert (stashed / ".previous-run-abc" / "model.h5").exists()  # listed, not put back


DAMAGE = {
    "history-truncated": ("history.h5", lambda b: b[: len(b) // 2], "truncated"),
    "history-text": ("history.h5", lambda b: b"epoch,val_acc\n1,0.5\n", "not an HDF5 file"),
    "model-truncated": ("model.h5", lambda b: b[:1000], "truncated"),
    "model-zeros": ("model.h5", lambda b: bytes(len(b)), "not an HDF5 file"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_files_are_listed_with_the_reason(outputs, tmp_path, kind):
    """Bug: one damaged file stopping the listing (a traceback, or exit 1 hiding the good runs),
    or a run whose model is torn shown as complete."""
    root = tmp_path / "o"
    copy_run(outputs / "setting-3-svm", root / "good")
    bad = copy_run(outputs / "setting-3-svm", root / "bad")
    name, damage, why = DAMAGE[kind]
    (bad / name).write_bytes(damage((bad / name).read_bytes()))
    got = {Path(r["folder"]).name: r for r in listing(root)["runs"]}
    assert got["good"]["status"] == "complete"
    assert got["bad"]["status"] == "damaged"
    assert got["bad"]["reason"].startswith(f"{bad / name}: ") and why in got["bad"]["reason"]
    r = CliRunner().invoke(app, ["runs", str(root)])
    assert r.exit_code == 0 and f"{bad}: damaged: {bad / name}: " in r.stdout


_real_read_history = checkpoint._read_history_file
_real_summaries = catalog._summaries


def crash_on_b(path):
    """A history read that crashes the process on run b's file (only ever run in a probe's child:
    the helper imports this module afresh, with the real reader)."""
    if path.parent.name == "b":
        faulthandler.disable()  # no traceback dump from the child in the test's output
        os.kill(os.getpid(), signal.SIGSEGV)
    return _real_read_history(path)


def summaries_crash_on_b(folders, path):
    """The whole listing's child, crashing when it meets run b."""
    checkpoint._read_history_file = crash_on_b
    return _real_summaries(folders, path)


def test_a_file_that_crashes_the_reader_is_found_and_the_rest_listed(outputs, tmp_path, monkeypatch):
    """Bug: a file that crashes the HDF5 library taking the whole listing down with it (the
    listing reads all runs in one child process; when that dies, each run is read on its own)."""
    root = tmp_path / "o"
    for name in ("a", "b", "c"):
        copy_run(outputs / "setting-3-svm", root / name)
    # the children of the probes run these (the functions are handed to them by name)
    monkeypatch.setattr(catalog, "_summaries", summaries_crash_on_b)
    monkeypatch.setattr(checkpoint, "_read_history_file", crash_on_b)
    got = {Path(r["folder"]).name: r for r in listing(root)["runs"]}
    assert {n: r["status"] for n, r in got.items()} == {"a": "complete", "b": "damaged", "c": "complete"}
    assert "crashed" in got["b"]["reason"] and "SIGSEGV" in got["b"]["reason"]


def test_one_child_process_reads_the_whole_listing(outputs, tmp_path, monkeypatch):
    """Bug: a child per file (a few ms each, most of the time of a long listing), or every
    file read twice."""
    root = tmp_path / "o"
    for i in range(4):
        copy_run(outputs / "setting-3-svm", root / f"r{i}")
    calls = []
    real = catalog.h5safe.probe
    monkeypatch.setattr(catalog.h5safe, "probe", lambda *a, **k: (calls.append(a[0]), real(*a, **k))[1])
    reads = []
    load = catalog.load_history
    monkeypatch.setattr(catalog, "load_history", lambda p, probe=True: (reads.append(p), load(p, probe))[1])
    assert [r["status"] for r in listing(root)["runs"]] == ["complete"] * 4
    assert len(calls) == 1 and reads == []  # in this process: nothing read, the child did it all


def test_links_hidden_folders_and_depth(outputs, tmp_path):
    """Bug: a symbolic link loop followed forever (or a run listed twice through a link),
    a stash or hidden folder listed as a run of its own, or no bound on the depth."""
    root = tmp_path / "o"
    copy_run(outputs / "setting-3-svm", root / "a")
    (root / "a" / "loop").symlink_to(root)  # a -> loop -> root -> a ...
    (root / "link-to-a").symlink_to(root / "a")
    copy_run(outputs / "setting-3-svm", root / ".hidden")
    deep = copy_run(outputs / "setting-3-svm", root / "1" / "2" / "3" / "4" / "5")
    assert [r["folder"] for r in listing(root)["runs"]] == [str(root / "a")]
    assert [r["folder"] for r in listing(root, "--depth", "5")["runs"]] == [str(deep), str(root / "a")]
    assert [r["folder"] for r in listing(root / "a")["runs"]] == [str(root / "a")]  # DIR itself a run


def test_natural_order(outputs, tmp_path):
    """Bug: setting-10 listed before setting-2 (text order)."""
    for n in (10, 2, 1):
        copy_run(outputs / "setting-3-svm", tmp_path / "o" / f"setting-{n}")
    names = [Path(r["folder"]).name for r in listing(tmp_path / "o")["runs"]]
    assert names == ["setting-1", "setting-2", "setting-10"]


def test_no_runs_missing_folder_and_a_file(tmp_path):
    """Bug: a traceback for a missing folder, or an empty listing that is not valid JSON."""
    (tmp_path / "empty").mkdir()
    assert listing(tmp_path / "empty") == {"root": str(tmp_path / "empty"), "runs": []}
    r = CliRunner().invoke(app, ["runs", str(tmp_path / "empty")])
    assert r.exit_code == 0 and "no run folders in" in r.stdout
    r = CliRunner().invoke(app, ["runs"])  # the default: outputs/ of the working folder
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "outputs: no such folder" in r.stderr
    assert r.stderr.rstrip().endswith("give the folder that holds your runs: cifarlin runs DIR")
    (tmp_path / "f").write_text("x")
    r = CliRunner().invoke(app, ["runs", str(tmp_path / "f")])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "not a folder" in r.stderr
    r = CliRunner().invoke(app, ["runs", str(tmp_path), "--depth", "99"])
    assert r.exit_code == 2 and "--depth 99" in r.stderr


def test_the_default_depth_is_the_librarys():
    """Bug: `cifarlin runs` and catalog.list_runs searching to different depths by default."""
    from cifarlin.cli import runs as cli_runs

    assert cli_runs.MAX_DEPTH == catalog.MAX_DEPTH


# ---------------------------------------------------------------------------------------------
# The runs as a table to query: --filter, --sort, --group-by, --diff, the start time, the width
# ---------------------------------------------------------------------------------------------

SEEDS = ((0, 1), (0, 2), (0, 3), (0.1, 1), (0.1, 2))


@pytest.fixture(scope="module")
def seeds(tiny_py, tmp_path_factory) -> Path:
    """Runs of two lambdas over seeds, and a hinge-loss run."""
    root = tmp_path_factory.mktemp("seeds")
    for lam, seed in SEEDS:
        train(tiny_py, root / f"lam{lam}-seed{seed}", *TRAIN, "--lam", lam, "--seed", seed, "--epochs", "2")
    train(tiny_py, root / "svm", *TRAIN, "--loss", "svm", "--epochs", "2", "--seed", "4")
    return root


def names(root: Path, *args: str) -> list[str]:
    return [str(Path(r["folder"]).relative_to(root)) for r in listing(root, *args)["runs"]]


def test_val_is_what_the_saved_model_holds(outputs, tmp_path):
    """Bug (issue 27): a keep-last run shown with its best epoch's validation accuracy (0.4220)
    where its model holds the last epoch's (0.4140); a sweep shows the saved model's."""
    from cifarlin.core.history import history_metrics

    root = tmp_path / "o"
    last = copy_run(outputs / "setting-3-svm", root / "last")  # keep=last
    best = copy_run(outputs / "sweep" / "eta-0.01", root / "best")  # keep=best
    for run, accs in ((last, [0.5, 0.9, 0.7]), (best, [0.5, 0.9, 0.7, 0.6])):
        h = checkpoint.load_history(run / "history.h5")
        h.history.columns["val_acc"] = accs
        checkpoint.save_history(run / "history.h5", h.history, h.config, h.class_names, "complete", h.test)
    got = {Path(r["folder"]).name: r for r in listing(root)["runs"]}
    assert (got["last"]["keep"], got["last"]["val_acc"], got["last"]["best_val_acc"]) == ("last", 0.7, 0.9)
    assert (got["best"]["keep"], got["best"]["val_acc"], got["best"]["best_val_acc"]) == ("best", 0.9, 0.9)
    for run in (last, best):  # the sweep's numbers
        h = checkpoint.load_history(run / "history.h5")
        assert got[run.name]["val_acc"] == history_metrics(h.history, h.config.keep)["val_accuracy"]
    r = CliRunner().invoke(app, ["runs", str(root)], env={"COLUMNS": "120"})
    (row,) = [line for line in r.stdout.splitlines() if line.split()[0].endswith("last")]
    assert "0.7000" in row.split() and "0.9000" not in row.split()


def test_filters(seeds):
    """Bug: a filter ignored, compared as text (10 < 9), or not reaching the settings (seed)."""
    assert names(seeds, "--filter", "loss=svm") == ["svm"]
    assert names(seeds, "--filter", "lam>0") == ["lam0.1-seed1", "lam0.1-seed2"]
    assert names(seeds, "--filter", "lambda=0", "--filter", "seed!=2", "--filter", "loss==ce") == [
        "lam0-seed1",
        "lam0-seed3",
    ]
    assert names(seeds, "--filter", "seed<=1") == ["lam0-seed1", "lam0.1-seed1"]
    assert names(seeds, "--filter", "seed >= 3", "--filter", "keep=last") == ["lam0-seed3", "svm"]
    runs = listing(seeds)["runs"]
    cut = sorted(r["test_acc"] for r in runs)[len(runs) // 2]
    above = [Path(r["folder"]).name for r in runs if r["test_acc"] > cut]
    assert names(seeds, "--filter", f"test_acc>{cut!r}") == above and 0 < len(above) < len(runs)
    assert names(seeds, "--filter", "status=diverged") == []
    r = CliRunner().invoke(app, ["runs", str(seeds), "--filter", "test_acc>1"])
    assert r.exit_code == 0 and "no run folders matching the filters in" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--filter", "bogus=1"], "--filter 'bogus=1': no column 'bogus'; the columns: folder, status,"),
        (["--filter", "test_acc"], "--filter 'test_acc': write COLUMN OP VALUE, OP one of <= >= != = < >"),
        (["--filter", "lam>small"], "--filter 'lam>small': lam is a number; compare it with a number"),
        (["--sort", "bogus"], "--sort 'bogus': no column 'bogus'; the columns: folder, status,"),
        (["--sort", "lam,-bogus"], "--sort 'lam,-bogus': no column 'bogus'; the columns:"),
        (["--group-by", "lam,bogus"], "--group-by 'lam,bogus': no column 'bogus'; the columns:"),
        (["--desc"], "--desc sorts nothing alone: give the column too, e.g. --sort test_acc --desc"),
    ],
)
def test_bad_queries_are_one_line_errors(seeds, args, message):
    """Bug: a traceback, an empty listing or a silent ignore for a column that does not exist."""
    r = CliRunner().invoke(app, ["runs", str(seeds), *args])
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r.output
    assert message in r.stderr
    if "no column" in message:
        assert all(c in r.stderr for c in ("test_acc", "val_acc", "started", "seed", "keep"))


def test_sort(seeds):
    """Bug: --sort ignored, descending ignored, or a second key not breaking ties."""
    acc = [r["test_acc"] for r in listing(seeds, "--sort", "test_acc")["runs"]]
    assert acc == sorted(acc) and acc != sorted(acc, reverse=True)
    desc = listing(seeds, "--sort=-test_acc")["runs"]
    assert [r["test_acc"] for r in desc] == sorted(acc, reverse=True)
    assert listing(seeds, "--sort", "test", "--desc")["runs"] == desc  # the table's heading too
    keyed = [(r["lam"], r["config"]["seed"]) for r in listing(seeds, "--sort", "lam,-seed")["runs"]]
    assert keyed == sorted(keyed, key=lambda k: (k[0], -k[1]))
    r = CliRunner().invoke(app, ["runs", str(seeds), "--sort=-test_acc"], env={"COLUMNS": "120"})
    shown = [line.split()[-2] for line in r.stdout.splitlines()[2:]]
    assert shown == [f"{r['test_acc']:.4f}" for r in desc]


def test_group_by_averages_over_seeds(seeds):
    """Bug: groups that mix lambdas, a population sd for a sample, or a mean over the wrong runs."""
    got = listing(seeds, "--group-by", "lam,eta", "--filter", "loss=ce")
    assert got["group_by"] == ["lam", "eta"]
    assert [(g["by"], g["count"]) for g in got["groups"]] == [
        ({"lam": 0, "eta": 0.001}, 3),
        ({"lam": 0.1, "eta": 0.001}, 2),
    ]
    r = CliRunner().invoke(
        app, ["runs", str(seeds), "--group-by", "lam", "--group-by", "eta", "--filter", "loss=ce"]
    )
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["lam", "eta", "runs", "val", "test", "best", "val"]
    for g, line in zip(got["groups"], lines[2:], strict=True):
        members = [r for r in got["runs"] if r["lam"] == g["by"]["lam"]]
        assert g["folders"] == [r["folder"] for r in members]
        for m in ("val_acc", "test_acc", "best_val_acc"):
            xs = [r[m] for r in members]
            assert g[m]["n"] == len(xs)
            assert g[m]["mean"] == pytest.approx(statistics.mean(xs), abs=1e-12)
            assert g[m]["sd"] == pytest.approx(statistics.stdev(xs), abs=1e-12)
        val, test = g["val_acc"], g["test_acc"]
        assert f"{val['mean']:.4f} ± {val['sd']:.4f}  {test['mean']:.4f} ± {test['sd']:.4f}" in line
        assert line.split()[:3] == [f"{g['by']['lam']:g}", "0.001", str(g["count"])]


def test_diff_shows_only_the_settings_that_differ(seeds):
    """Bug: --diff showing settings all runs share, or missing one that differs."""
    got = listing(seeds, "--diff", "--filter", "loss=ce")
    assert got["differ"] == ["lam", "seed"]
    r = CliRunner().invoke(app, ["runs", str(seeds), "--diff", "--filter", "loss=ce"], env={"COLUMNS": "80"})
    header = r.stdout.splitlines()[0].split()
    assert {"lam", "seed"} <= set(header) and not {"eta", "loss", "batch", "epochs"} & set(header)
    row = next(line.split() for line in r.stdout.splitlines() if line.startswith("lam0.1-seed2"))
    at = {h: i - len(header) for i, h in enumerate(header)}  # from the end (started is two words)
    assert row[at["lam"]] == "0.1" and row[at["seed"]] == "2"
    assert listing(seeds, "--diff", "--filter", "lam>0", "--filter", "seed=1")["differ"] == []
    r = CliRunner().invoke(app, ["runs", str(seeds), "--diff", "--filter", "seed=1", "--filter", "lam=0"])
    assert "have the same settings" in r.stdout


def test_a_diff_too_wide_for_the_terminal_is_a_line_a_run(seeds):
    """Bug: --diff of many differing settings at 80 columns wrapped every row of its table in two:
    too wide, each run is one line of name=value pairs (a terminal wraps it at spaces)."""
    r = CliRunner().invoke(app, ["runs", str(seeds), "--diff"], env={"COLUMNS": "40"})
    assert r.exit_code == 0, r.output
    got = listing(seeds, "--diff")
    lines = r.stdout.splitlines()
    assert len(lines) == len(got["runs"]) and "─" not in r.stdout  # no table, a line a run
    for run, line in zip(got["runs"], lines, strict=True):
        assert line.startswith(f"{run['folder'].rsplit('/', 1)[-1]}: "), line
        for s in got["differ"]:
            v = run["config"][s]
            assert f"{s}={v:g}" in line if isinstance(v, float) else f"{s}={v}" in line, (s, line)
        assert line.endswith(f"val {run['val_acc']:.4f}  test {run['test_acc']:.4f}")


def test_started_is_read_from_the_files(seeds, tmp_path):
    """Bug: no start time, the time of listing, or the time the run ended shown as its start."""
    run = copy_run(seeds / "lam0-seed1", tmp_path / "o" / "old")
    written = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    for f in run.iterdir():
        os.utime(f, (written, written))
    (r,) = listing(tmp_path / "o")["runs"]
    h = checkpoint.load_history(run / "history.h5")
    assert r["seconds"] == pytest.approx(sum(h.history.columns["seconds"]))
    assert r["modified"] == "2020-01-02T03:04:05+00:00"
    assert r["started"] == datetime.fromtimestamp(written - r["seconds"], UTC).isoformat(timespec="seconds")
    out = CliRunner().invoke(app, ["runs", str(tmp_path / "o")], env={"COLUMNS": "120"}).stdout
    local = datetime.fromisoformat(r["started"]).astimezone().strftime("%Y-%m-%d %H:%M")
    assert local in out.splitlines()[2]
    copy_run(seeds / "lam0-seed2", tmp_path / "o" / "new")
    assert names(tmp_path / "o", "--sort", "started") == ["old", "new"]
    assert names(tmp_path / "o", "--filter", "started<2021") == ["old"]


@pytest.mark.parametrize("columns", [80, 120])
def test_each_run_on_one_line_with_its_numbers_whole(seeds, tmp_path, columns):
    """Bug (issue 27): at 80 columns each run printed on two lines, its path broken mid-word; or
    a number cut short to make the table fit."""
    root = tmp_path / "a-folder-with-a-rather-long-name"
    shutil.copytree(seeds, root / "experiments-of-the-week")
    runs = listing(root)["runs"]
    r = CliRunner().invoke(app, ["runs", str(root)], env={"COLUMNS": str(columns)})
    lines = r.stdout.splitlines()
    assert r.exit_code == 0 and max(map(len, lines)) <= columns, r.stdout
    for run in runs:
        numbers = [f"{run['lam']:g}", f"{run['eta']:g}", f"{run['val_acc']:.4f}", f"{run['test_acc']:.4f}"]
        name = Path(run["folder"]).name
        (row,) = [line.split() for line in lines if line.split()[0].endswith(name)]
        assert row[-3:-1] == numbers[2:]  # val and test, before the status
        assert numbers[0] in row and numbers[1] in row
