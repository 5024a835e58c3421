"""`cifarlin train --setting all`: the four runs one after another or two at a time (the same bits,
a metrics thread only with the cores for it), resumed as a whole, and the summary comparing them."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from cifarlin.cli import app
from cifarlin.core import threads
from cifarlin.store import checkpoint
from cifarlin.work import runs
from cli_helpers import TINY
from tiny_runs import read_arrays


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

    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    real, seen = runs.fit, []

    def record(*args, metrics_thread=True, **kw):
        seen.append(metrics_thread)
        return real(*args, metrics_thread=metrics_thread, **kw)

    monkeypatch.setattr(runs, "fit", record)
    assert experiments.metrics_thread_fits is threads.metrics_thread_fits
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
