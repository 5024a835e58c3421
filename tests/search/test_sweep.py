"""Hyperparameter sweeps: planning (pure, fast) and whole sweeps on Dask clusters of worker
processes on 127.0.0.1 (slow: each cluster takes a second or two to start)."""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import h5py
import numpy as np
import pytest

from cifarlin.cli import app, group
from cifarlin.core.config import TrainConfig
from cifarlin.core.history import history_metrics
from cifarlin.errors import ConfigError, Interrupted
from cifarlin.search import running, sweep
from cifarlin.search import trial as sweep_trial
from cifarlin.search.plan import (
    SweepSpec,
    TrialResult,
    best_of,
    plan,
    plan_random,
    refine_box,
)
from cifarlin.search.results import write_tables
from cifarlin.search.space import KINDS, SWEEPABLE, kind, parse_axis, show
from cifarlin.search.trial import run_trial

TINY = ["--epochs", "3", "--batch-size", "10"]


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, text, values",
    [
        ("lam", "0, 0.001,1e-2", (0.0, 0.001, 0.01)),
        ("epochs", "10,20", (10, 20)),
        ("shuffle", "true,no", (True, False)),
        ("loss", "ce,svm", ("ce", "svm")),
        ("val_size", "none,1000", (None, 1000)),
        ("train_batches", "1/1-5/1,3", ((1,), (1, 2, 3, 4, 5), (1, 3))),
        ("dtype", "float64", ("float64",)),
    ],
)
def test_lists_are_read_by_the_fields_type(name, text, values):
    """Catches a value read as the wrong type (a string epoch, 'no' as True) or a list split at
    the commas inside a train_batches value."""
    axis = parse_axis(name, text)
    assert axis.values == values and not axis.is_range
    assert all(type(v) is type(w) for v, w in zip(axis.values, values, strict=True))
    sep = kind(name).sep
    assert parse_axis(name, sep.join(show(name, v) for v in values)).values == values  # shown back


def test_numbers_show_as_typed_and_read_back_exactly():
    """Catches lambda 0 shown as '0.0' (`cifarlin runs` shows '0'), and a short form that reads
    back as another number (0.1 + 0.2 is not 0.3)."""
    assert [show("lam", v) for v in (0.0, 0.1, 1e-06, 3e-4, 1e38)] == ["0", "0.1", "1e-06", "0.0003", "1e+38"]
    for v in (0.1 + 0.2, 1 / 3, 123456789.0, 0.00316):
        assert float(show("eta", v)) == v and parse_axis("eta_max", show("eta_max", v)).values == (v,)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("lam", "1..0", "lam='1..0': an empty range"),
        ("lam", "0..1", "lam='0..1': a log-uniform range needs LOW > 0"),
        ("epochs", "10..20", "epochs='10..20': a range LOW..HIGH is for real numbers (e.g. lam=1e-5..1"),
        ("epochs", "10,abc", "epochs='abc': not a whole number"),
        ("eta", "0.1,x", "eta='x': not a number"),
        ("lam", "0.1,,1", "lam='0.1,,1': an empty value"),
        ("lam", "0.1,0.1", "lam='0.1,0.1': 0.1 is given twice"),
        ("shuffle", "maybe", "shuffle='maybe': use true or false"),
        ("setting", "1,2", "setting='1,2': cannot be swept"),
    ],
)
def test_bad_lists_and_ranges_name_the_value(name, text, message):
    with pytest.raises(ConfigError) as e:
        parse_axis(name, text)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(trials=0, axes=(parse_axis("lam", "1e-5..1"),)), "trials=0: must be between 1 and 10000"),
        (dict(axes=(parse_axis("lam", "1e-5..1"),)), "lam='1e-5..1': a range is for a random search"),
        (dict(trials=5, axes=(parse_axis("lam", "0,1"),)), "trials=5: a random search draws from a range"),
        (dict(refine=3, axes=(parse_axis("lam", "0,1"),)), "refine=3: narrows a random search"),
    ],
)
def test_inconsistent_sweeps_are_refused(kw, message):
    with pytest.raises(ConfigError) as e:
        SweepSpec(**kw)
    assert str(e.value).startswith(message)


def test_the_grid_is_every_combination_validated():
    """Catches a grid that drops or repeats combinations, and an invalid value that is only
    noticed by a worker."""
    spec = SweepSpec((parse_axis("lam", "0,0.1,1"), parse_axis("eta", "0.001,0.01")))
    trials = plan(spec)
    assert [t.name for t in trials] == [f"trial-00{i}" for i in range(1, 7)]
    assert [(t.config.lam, t.config.eta) for t in trials] == [
        (lam, eta) for lam in (0.0, 0.1, 1.0) for eta in (0.001, 0.01)
    ]
    assert all(t.config.epochs == TrainConfig().epochs for t in trials)
    with pytest.raises(ConfigError, match=r"^loss='hinge': use one of ce, svm, bce"):
        plan(SweepSpec((parse_axis("loss", "ce,hinge"),)))
    with pytest.raises(ConfigError, match=r"^eta=0.0: the learning rate must be > 0"):
        plan(SweepSpec((parse_axis("eta", "0,0.1"),)))


def test_random_search_is_log_uniform_reproducible_and_extensible():
    """Catches draws that are uniform instead of log-uniform, that depend on anything but the
    sweep seed, or that change when more trials are asked for."""
    axes = (parse_axis("lam", "1e-5..1"), parse_axis("eta", "1e-4..0.1"), parse_axis("loss", "ce,svm"))
    a = plan(SweepSpec(axes, trials=400, sweep_seed=3))
    b = plan(SweepSpec(axes, trials=10, sweep_seed=3))
    c = plan(SweepSpec(axes, trials=10, sweep_seed=4))
    assert [t.config for t in a[:10]] == [t.config for t in b]
    assert [t.config for t in b] != [t.config for t in c]
    lam = np.array([t.config.lam for t in a])
    assert lam.min() >= 1e-5 and lam.max() <= 1
    assert 0.3 < np.mean(lam < 1e-3) < 0.5  # 2 of the 5 decades; a uniform draw gives 0.001
    assert all(float(f"{v:.3g}") == v for v in lam)  # types back exactly on a command line
    assert {t.config.loss for t in a} == {"ce", "svm"}


def result(trial, acc, status="done"):
    r = TrialResult(trial, Path(trial.name), status=status)
    r.val_accuracy, r.val_cost = acc, 1.0
    return r


def test_refinement_narrows_the_box_around_the_best_trials():
    """Catches a second round that centres on the worst trials, leaves the original range, or
    ignores which list values did best."""
    spec = SweepSpec((parse_axis("lam", "1e-5..1"), parse_axis("loss", "ce,svm")), trials=40, refine=8)
    trials = plan(spec)
    # Accuracy peaks at lam = 1e-3 with the cross-entropy: the box must hold it and be narrower.
    results = [
        result(t, 0.5 - abs(math.log10(t.config.lam) + 3) / 10 - (t.config.loss == "svm") / 2) for t in trials
    ]
    results[0].status = "failed"  # not finished: no part in the box
    box = refine_box(spec, results)
    lo, hi = box["lam"]
    assert 1e-5 <= lo < 1e-3 < hi <= 1 and math.log10(hi / lo) < 5
    assert box["loss"] == ("ce",)
    round2 = plan_random(spec, 2, spec.refine, box)
    assert [t.name for t in round2][:2] == ["refine-001", "refine-002"] and len(round2) == 8
    assert all(lo <= t.config.lam <= hi and t.config.loss == "ce" for t in round2)
    assert refine_box(spec, [result(t, 0.3, "diverged") for t in trials]) is None


def test_selection_uses_validation_accuracy_of_finished_trials_only():
    trials = plan(SweepSpec((parse_axis("lam", "0,0.1,1"),)))
    rs = [result(trials[0], 0.30), result(trials[1], 0.35), result(trials[2], 0.9, "diverged")]
    assert best_of(rs) is rs[1]
    rs[0].val_accuracy = 0.35
    rs[0].val_cost = 0.5  # a tie: the lower validation cost wins
    assert best_of(rs) is rs[0]


def test_selection_uses_the_saved_models_accuracy():
    """With keep=best the model a trial saves is its best epoch's: that accuracy selects, not
    the last epoch's (which would rank the trial by a model it does not have)."""
    from cifarlin.core.history import History
    from cifarlin.core.model import Metrics

    h = History()
    for acc, cost in ((0.3, 2.0), (0.5, 1.5), (0.4, 1.8)):
        h.append(Metrics(cost, cost, 0.9), Metrics(cost, cost, acc), 0.1, 0.01)
    last, best = history_metrics(h, "last"), history_metrics(h, "best")
    assert (last["val_accuracy"], last["val_cost"]) == (0.4, 1.8) == (last["final_val_accuracy"], 1.8)
    assert (best["val_accuracy"], best["val_cost"], best["best_epoch"]) == (0.5, 1.5, 2)
    assert best["best_val_cost"] == 1.5 and best["epochs_trained"] == 3


def test_a_new_config_field_needs_one_line_to_be_swept():
    """Every TrainConfig field type has a reader (so a new field of a known type is one line in
    SWEEPABLE), and the command has one option per sweepable field."""
    types = {str(f.type) for f in fields(TrainConfig) if f.name != "setting"}
    assert types <= set(KINDS), types - set(KINDS)
    options = {o for p in group().commands["sweep"].params for o in p.opts}
    assert {"--" + f.replace("_", "-") for f in SWEEPABLE} <= options


def test_a_trial_is_train_bit_for_bit_with_the_newer_options(runner, tiny_py, tmp_path):
    """A trial run in-process with augmentation, a schedule and keep=best equals `cifarlin train`
    with the same options: the options reach runs.run and nothing else changes the numbers."""
    spec = SweepSpec(
        (
            parse_axis("augment", "none/flip,translate:2"),
            parse_axis("schedule", "cosine"),
            parse_axis("keep", "best"),
            parse_axis("shuffle", "true"),
            *(parse_axis(k, v) for k, v in (("epochs", "3"), ("batch_size", "10"), ("eta", "0.01"))),
        )
    )
    trial = plan(spec)[1]
    assert trial.config.augment == "flip,translate:2"
    row = run_trial(trial, str(tmp_path / "s"), str(tiny_py))
    assert row["status"] == "done", row
    args = ["train", "--augment", "flip,translate:2", "--schedule", "cosine", "--keep", "best", "--shuffle"]
    args += [*TINY, "--eta", "0.01", "--data-dir", str(tiny_py), "--out", str(tmp_path / "alone")]
    assert runner.invoke(app, [*args, "--no-plots", "--quiet"]).exit_code == 0
    assert same_bits(tmp_path / "s" / trial.name, tmp_path / "alone")


@pytest.mark.parametrize(
    "args, value",
    [
        (["--lam", "1..0"], "--lam '1..0'"),
        (["--lam", "1e-5..1", "--trials", "0"], "--trials 0"),
        (["--loss", "ce,foo"], "--loss 'foo'"),
        (["--epochs", "5,x"], "--epochs 'x'"),
        (["--lam", "1e-5..1"], "--trials N"),
        (["--lam", "0,1", "--trials", "3"], "--trials 3"),
        (["--lam", "0,1", "--refine", "2"], "--refine 2"),
        (["--scheduler", "localhost:8786"], "--scheduler 'localhost:8786'"),
        (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "--workers 2"),
        (["--workers", "0"], "--workers 0"),
    ],
)
def test_cli_bad_values_exit_2_naming_the_value(runner, tiny_py, tmp_path, args, value):
    """Catches a traceback, exit 1, or a message in library words instead of the flags."""
    r = runner.invoke(app, ["sweep", *args, "--data-dir", str(tiny_py), "--out", str(tmp_path / "s")])
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and value in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "s" / "trial-001").exists()


def test_help_does_not_import_dask_or_numpy():
    """`cifarlin --help` stays fast: the sweep imports Dask only when it runs, and its options'
    defaults are read without making (and so validating) a TrainConfig, which imports NumPy."""
    code = (
        "import sys, cifarlin.cli; print([m for m in ('dask', 'distributed', 'numpy') if m in sys.modules])"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Whole sweeps on clusters of worker processes
# ---------------------------------------------------------------------------------------------


def read_run(run: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(run / "model.h5", "r") as f:
        out["W"], out["b"] = f["W"][()], f["b"][()]
    with h5py.File(run / "history.h5", "r") as f:
        out.update({k: f[k][()] for k in f if k != "seconds"})
    return out


def same_bits(a: Path, b: Path) -> bool:
    x, y = read_run(a), read_run(b)
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


@pytest.mark.slow
def test_grid_on_a_local_cluster(runner, disagreeing_py, tmp_path):
    """Two worker processes: finished and diverged trials are results, the files and the JSON are
    as documented, each worker reads the data once, the best trial equals `cifarlin train` bit for
    bit, and running the command again trains nothing. On disagreeing_py (on tiny_py both finished
    trials scored 1.00 on validation and on test, so any pick passed): lambda 0 is better on
    validation, 0.1 on test."""
    args = ["sweep", "--lam", "0,0.1", "--eta", "0.01,1e38", *TINY, "--workers", "2"]
    args += ["--data-dir", str(disagreeing_py), "--out", "s", "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    trials = {t["name"]: t for t in doc["trials"]}
    assert [t["params"]["lam"] for t in doc["trials"]] == [0.0, 0.0, 0.1, 0.1]
    assert [t["status"] for t in doc["trials"]] == ["done", "diverged", "done", "diverged"]
    assert "diverged in epoch 1" in trials["trial-002"]["error"]
    assert sum(t["data"] == "loaded" for t in doc["trials"]) <= 2  # once per worker, not per trial
    assert len({t["worker"] for t in doc["trials"]} - {""}) >= 1
    best = doc["best"]
    assert best["name"] in ("trial-001", "trial-003") and best["status"] == "done"
    assert 0 <= best["test_accuracy"] <= 1 and best["val_accuracy"] == max(
        t["val_accuracy"] for t in doc["trials"] if t["status"] == "done"
    )
    assert trials["trial-001"]["val_accuracy"] != trials["trial-003"]["val_accuracy"]  # no tie
    assert all("test_accuracy" not in t for t in doc["trials"])  # selection never sees the test set
    out = Path("s")
    # The diverged trials saved no epoch, so their folders are gone; sweep.h5 keeps their rows.
    files = {p.name for p in out.iterdir()}
    assert files >= {"sweep.h5", "results.csv", "sweep.png", "trial-001", "trial-003"}
    with h5py.File(out / "sweep.h5", "r") as f:
        assert [s.decode() for s in f["status"][()]] == ["done", "diverged", "done", "diverged"]
        assert list(f["params/eta"][()]) == [0.01, 1e38, 0.01, 1e38]
        assert f.attrs["best"] == best["name"] and f.attrs["selected_by"] == "val_accuracy"
    assert (out / "results.csv").read_text().splitlines()[0].startswith("name,round,lam,eta,")
    assert "test accuracy of the best trial alone" in r.stderr

    lam = best["params"]["lam"]
    alone = ["train", "--lam", str(lam), "--eta", "0.01", *TINY, "--data-dir", str(disagreeing_py)]
    assert runner.invoke(app, [*alone, "--out", "alone", "--no-plots", "--quiet"]).exit_code == 0
    assert same_bits(Path(best["run_dir"]), Path("alone"))
    e = runner.invoke(
        app, ["evaluate", best["run_dir"], "--data-dir", str(disagreeing_py), "--json", "--quiet"]
    )
    assert e.exit_code == 0 and json.loads(e.stdout)["accuracy"] == best["test_accuracy"]
    other = trials["trial-003" if best["name"] == "trial-001" else "trial-001"]
    o = runner.invoke(
        app, ["evaluate", other["run_dir"], "--data-dir", str(disagreeing_py), "--json", "--quiet"]
    )
    assert o.exit_code == 0 and json.loads(o.stdout)["accuracy"] > best["test_accuracy"]  # test would differ

    before = (out / "trial-001" / "model.h5").stat().st_mtime_ns
    t0 = time.perf_counter()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert again.stderr.count("not run again") == 4 and "running on" not in again.stderr  # no cluster
    assert time.perf_counter() - t0 < 20
    assert (out / "trial-001" / "model.h5").stat().st_mtime_ns == before
    assert json.loads(again.stdout)["best"]["name"] == best["name"]


def die_for_lam_one(trial, *args, **kwargs):
    """A trial function whose worker process dies when lambda is 1 (imported by the workers)."""
    if trial.config.lam == 1.0:
        os._exit(3)
    return run_trial(trial, *args, **kwargs)


@pytest.mark.slow
def test_a_trial_whose_worker_dies_is_retried_then_failed(tiny_py, tmp_path):
    """Catches a sweep that crashes, or hangs, when a worker dies: Dask retries the trial on a
    fresh worker, then it is marked failed and the others finish."""
    spec = SweepSpec((parse_axis("lam", "0,1"), parse_axis("epochs", "2"), parse_axis("batch_size", "10")))
    events = []
    result = sweep.run_sweep(
        spec,
        tmp_path / "s",
        tiny_py,
        workers=2,
        retries=1,
        figures=False,
        on_trial=lambda e, r: events.append((e, r.trial.name)),
        trial_fn=die_for_lam_one,
    )
    died = result.results[1]
    assert result.results[0].status == "done"
    assert died.status == "failed" and "its worker died 2 times" in died.error
    assert ("finished", "trial-002") in events and result.best is result.results[0]


def _result(trial, status, **kw):
    return {"name": trial.name, "worker": "w", "status": status, "seconds": 0.1, **kw}


def done_at_once(trial, out, data_folder, alive=None, topic=None, metrics_thread=True):
    """A trial that says it started and is done at once (imported by the workers)."""
    sweep_trial._poster(topic)({"name": trial.name, "event": "started", "worker": "w", "epoch": 0})
    time.sleep(0.02)
    return _result(trial, "done", val_accuracy=0.5, best_val_accuracy=0.5, val_cost=1.0, epochs_trained=1)


def tells_its_metrics_thread(trial, out, data_folder, alive=None, topic=None, metrics_thread=True):
    """A trial that leaves what it was told of the metrics thread (imported by the workers)."""
    Path(out, f"{trial.name}.metrics_thread").write_text(str(metrics_thread))
    return _result(trial, "done", val_accuracy=0.5, best_val_accuracy=0.5, val_cost=1.0, epochs_trained=1)


@pytest.mark.slow
@pytest.mark.parametrize("fits", [False, True])
def test_trials_keep_a_metrics_thread_only_when_the_workers_leave_cores_for_it(
    tiny_py, tmp_path, monkeypatch, fits
):
    """Catches: two trials at a time on two cores each with a metrics thread (four threads for two
    cores), or trials that have the cores losing theirs."""
    asked = []
    monkeypatch.setattr(sweep, "metrics_thread_fits", lambda n: asked.append(n) or fits)
    spec = SweepSpec((parse_axis("lam", "0,0.1"),))
    sweep.run_sweep(
        spec, tmp_path / "s", tiny_py, workers=2, figures=False, trial_fn=tells_its_metrics_thread
    )
    assert asked == [2]
    told = {f.name: f.read_text() for f in (tmp_path / "s").glob("*.metrics_thread")}
    assert told == {f"trial-00{i}.metrics_thread": str(fits) for i in (1, 2)}


def notes_when_it_began(trial, out, data_folder, alive=None, topic=None, metrics_thread=True):
    """A trial that leaves the time it began and is done at once (imported by the workers)."""
    Path(out, f"{trial.name}.began").write_text(repr(time.time()))
    return _result(trial, "done", val_accuracy=0.5, best_val_accuracy=0.5, val_cost=1.0, epochs_trained=1)


@pytest.mark.slow
def test_the_next_trial_starts_before_the_tables_are_written(tiny_py, tmp_path, monkeypatch):
    """Catches: workers left idle while the sweep writes sweep.h5 and results.csv after each
    finished trial (slow here on purpose), instead of being handed the next trial first."""
    writes = []
    real = write_tables
    out = tmp_path / "s"

    def slow_write(*args, **kw):
        began = time.time()
        if (out / "trial-001.began").exists() and not (out / "trial-002.began").exists():
            time.sleep(1.0)  # the write after trial-001: trial-002 must not wait for it
        real(*args, **kw)
        writes.append((began, time.time()))

    monkeypatch.setattr(running, "write_tables", slow_write)
    spec = SweepSpec((parse_axis("lam", "0,0.1"),))
    sweep.run_sweep(spec, out, tiny_py, workers=1, figures=False, trial_fn=notes_when_it_began)
    first, second = (float((out / f"trial-00{i}.began").read_text()) for i in (1, 2))
    after_first = [w for w in writes if w[0] > first]  # the writes once trial-001 was running
    assert after_first and second < after_first[0][1]


def runs_until_stopped(trial, out, data_folder, alive=None, topic=None, metrics_thread=True):
    """A trial that trains until the sweep's alive file goes, then leaves a mark and stops.
    trial-001 says it started only once trial-002 runs too (on a loaded machine the second
    worker may otherwise take it after the Ctrl-C, when 'queued' is the right record)."""
    if not os.path.exists(alive):
        return _result(trial, "queued", error="the sweep stopped before this trial started")
    Path(out, f"{trial.name}.began").touch()
    deadline = time.monotonic() + 30
    while (
        trial.name == "trial-001"
        and not Path(out, "trial-002.began").exists()
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    sweep_trial._poster(topic)({"name": trial.name, "event": "started", "worker": "w", "epoch": 0})
    while os.path.exists(alive):
        time.sleep(0.05)
    Path(out, f"{trial.name}.stopped").touch()
    return _result(trial, "interrupted", error="stopped")


@pytest.mark.slow
@pytest.mark.parametrize("fn", [done_at_once, runs_until_stopped])
def test_ctrl_c_waits_for_every_submitted_trial_and_records_it(tiny_py, tmp_path, fn):
    """Ctrl-C as the first trial's 'started' event arrives, with two trials on two workers (or
    as the first result is read, when a result comes before its trial's event: a finished trial's
    slot is refilled at once, so a later Ctrl-C would find a third trial legitimately submitted).
    Catches: a trial that finished just before the Ctrl-C recorded as interrupted (its result
    not read yet), and a trial that had started but whose event was not read yet cancelled (its
    worker killed before it saved) and recorded as queued."""
    spec = SweepSpec((parse_axis("lam", "0,0.1,1,2"),))

    pressed = []

    def on_trial(event, r):  # Ctrl-C once: a second one stops the waiting, by design
        if not pressed and (event == "finished" or (event == "started" and r.trial.name == "trial-001")):
            pressed.append(event)
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        sweep.run_sweep(
            spec, tmp_path / "s", tiny_py, workers=2, figures=False, on_trial=on_trial, trial_fn=fn
        )
    with h5py.File(tmp_path / "s" / "sweep.h5", "r") as f:
        statuses = [s.decode() for s in f["status"][()]]
    if fn is done_at_once:
        assert statuses == ["done", "done", "queued", "queued"]
    else:
        assert statuses == ["interrupted", "interrupted", "queued", "queued"]
        assert all((tmp_path / "s" / f"trial-00{i}.stopped").exists() for i in (1, 2))


@pytest.mark.slow
def test_ctrl_c_keeps_finished_trials_and_prints_the_command_that_continues(runner, tiny_py, monkeypatch):
    """Ctrl-C while the second trial trains: exit 130, the first trial kept, the second stopped
    with its checkpoint, the third never started; the printed command skips the first, continues
    the second to exactly the numbers of an uninterrupted `cifarlin train`, and runs the third."""
    from cifarlin.cli import sweep as cli_sweep

    on_trial = cli_sweep._Display.on_trial
    pressed = []

    def ctrl_c_in_trial_2(self, event, r):  # one Ctrl-C (a second one would stop the waiting)
        on_trial(self, event, r)
        if event == "epoch" and r.trial.name == "trial-002" and r.epochs_trained >= 3 and not pressed:
            pressed.append(r.epochs_trained)
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_sweep._Display, "on_trial", ctrl_c_in_trial_2)
    # long enough that trial 2 cannot finish before the stop reaches it, even on a loaded machine
    opts = ["--epochs", "600", "--batch-size", "10", "--data-dir", str(tiny_py)]
    r = runner.invoke(app, ["sweep", "--lam", "0,0.1,1", *opts, "--workers", "1", "--out", "s"])
    assert r.exit_code == 130, r.output
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: interrupted: 1 of 3 trials finished, kept in s")
    with h5py.File("s/sweep.h5", "r") as f:
        assert [s.decode() for s in f["status"][()]] == ["done", "interrupted", "queued"]
    assert Path("s/trial-002/checkpoint.h5").is_file() and not Path("s/trial-002/model.h5").exists()
    assert not list(Path("s").glob(".sweep-alive-*"))

    monkeypatch.setattr(cli_sweep._Display, "on_trial", on_trial)
    words = shlex.split(line.split("continue with '")[1].rstrip("'"))
    assert words[:2] == ["cifarlin", "sweep"] and words[words.index("--out") + 1] == "s"
    again = runner.invoke(app, [*words[1:], "--json"])
    assert again.exit_code == 0, again.output
    doc = json.loads(again.stdout)
    assert [t["status"] for t in doc["trials"]] == ["done"] * 3
    assert again.stderr.count("not run again") == 1 and doc["trials"][1]["resumed_from_epoch"] >= 3
    alone = runner.invoke(app, ["train", "--lam", "0.1", *opts, "--out", "alone", "--no-plots", "--quiet"])
    assert alone.exit_code == 0 and same_bits(Path("s/trial-002"), Path("alone"))


@pytest.mark.slow
def test_no_finished_trial_is_exit_1(runner, tiny_py):
    r = runner.invoke(
        app, ["sweep", "--eta", "1e38", *TINY, "--workers", "1", "--data-dir", str(tiny_py), "--out", "s"]
    )
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1].startswith("Error: no trial finished (1 diverged)")
    assert Path("s/sweep.h5").is_file()


@pytest.mark.slow
def test_a_sweep_on_an_existing_dask_cluster(runner, tiny_py, dask_cluster):
    """The same sweep through `--scheduler`: a trial that raises (a batch larger than the training
    set) is recorded with its one-line error and the sweep goes on."""
    args = ["sweep", "--lam", "0,0.1", "--batch-size", "10,60", "--epochs", "2", "--scheduler", dask_cluster]
    r = runner.invoke(app, [*args, "--data-dir", str(tiny_py), "--out", "s", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [t["status"] for t in doc["trials"]] == ["done", "failed", "done", "failed"]
    assert doc["trials"][1]["error"] == "batch_size=60: larger than the training set (50 images)"
    assert all(t["worker"].startswith("tcp://127.0.0.1:") for t in doc["trials"])
    assert f"running on the Dask cluster at {dask_cluster}" in r.stderr
    assert Path(doc["best"]["run_dir"], "model.h5").is_file()


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_the_workers_quietly(tiny_py, tmp_path):
    """A real SIGINT to the whole process group, as a terminal sends it: exit 130, no traceback
    of a worker, the command that continues on the last line, no process left."""
    cmd = [sys.executable, "-m", "cifarlin", "sweep", "--lam", "0,0.1,1", "--epochs", "100000"]
    cmd += ["--batch-size", "10", "--workers", "2", "--data-dir", str(tiny_py), "--out", str(tmp_path / "s")]
    p = subprocess.Popen(
        cmd,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        lines = []
        while not any("started on" in ln for ln in lines):
            line = p.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        deadline = time.monotonic() + 60  # a trial's folder: its worker has the data and trains
        while not any(d.is_dir() for d in (tmp_path / "s").glob("trial-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # epochs of 40 images: a finished epoch to keep, saved by the stop
        os.killpg(p.pid, signal.SIGINT)
        rest = p.communicate(timeout=30)[1]
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    err = "".join(lines) + rest
    assert p.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "continue with 'cifarlin sweep" in err.strip().splitlines()[-1]
    assert any((tmp_path / "s").glob("trial-*/checkpoint.h5"))
    deadline = time.monotonic() + 10
    while True:  # the workers went with the command
        try:
            os.killpg(p.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "worker processes outlived the sweep"
        time.sleep(0.1)


@pytest.mark.slow
def test_random_search_with_a_second_round_continues_with_the_same_box(runner, tiny_py):
    """Round 2 is recorded as such, and running the command again finds the same round-2 trials
    (the box is kept in sweep.h5, not drawn again from changed results)."""
    args = ["sweep", "--lam", "1e-3..1", "--eta", "1e-3..0.1", "--trials", "3", "--refine", "2"]
    args += [*TINY, "--workers", "2", "--data-dir", str(tiny_py), "--out", "s", "--json", "--no-plots"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [(t["name"], t["round"]) for t in doc["trials"]] == [
        ("trial-001", 1),
        ("trial-002", 1),
        ("trial-003", 1),
        ("refine-001", 2),
        ("refine-002", 2),
    ]
    lo, hi = doc["round2_box"]["lam"]
    assert all(lo <= t["params"]["lam"] <= hi for t in doc["trials"][3:])
    with h5py.File("s/sweep.h5", "r") as f:
        assert list(f["round"][()]) == [1, 1, 1, 2, 2] and json.loads(f.attrs["round2_box"])["lam"] == [
            lo,
            hi,
        ]
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert again.stderr.count("not run again") == 5

    def facts(d):
        return [(t["name"], t["params"], t["status"], t["val_accuracy"]) for t in d["trials"]]

    assert facts(json.loads(again.stdout)) == facts(doc)


@pytest.mark.slow
def test_sweep_figures_show_plain_numbers_and_every_trial(tmp_path):
    """Catches log-axis labels printed as raw math text (cifarlin turns math text off), a lambda of
    0 that a log axis cannot show, and trials without an accuracy that break the drawing."""
    from cifarlin.figures import common, plots

    common.use_backend()
    lam, eta = [0.0, 0.0, 0.01, 0.01], [0.001, 0.01, 0.001, 0.01]
    acc, status = [0.30, None, 0.35, 0.32], ["done", "diverged", "done", "done"]
    for grid in (True, False):
        fig = plots.sweep_figure(lam, eta, acc, status, 2, grid=grid, title="t")
        ax = fig.axes[0]
        fig.canvas.draw()
        labels = [t.get_text() for t in (*ax.get_xticklabels(), *ax.get_yticklabels()) if t.get_text()]
        assert labels and not any("$" in t or "mathdefault" in t for t in labels), labels
        assert common.save(fig, tmp_path / f"{grid}.png").stat().st_size > 1000


class _Done:
    """A Dask future that finished at once with ``row``."""

    status = "finished"

    def __init__(self, key, row):
        self.key, self.row = key, row

    def result(self):
        return self.row

    def done(self):
        return True


class _AsCompleted:
    def __init__(self):
        self.futures = []

    def update(self, futures):
        self.futures += list(futures)

    def add(self, f):
        self.futures.append(f)

    def next_batch(self, block=False):
        out, self.futures = self.futures, []
        return out

    def count(self):
        return len(self.futures)

    def is_empty(self):
        return not self.futures


class _SchedulerGoneOnSecondMap:
    """A Dask client whose first trial diverges at once and whose scheduler is gone when the sweep
    hands it the second."""

    maps = 0

    def subscribe_topic(self, topic, callback):
        pass

    def unsubscribe_topic(self, topic):
        pass

    def nthreads(self):
        return {"w": 1}

    def cancel(self, futures):
        pass

    def map(self, fn, trials, key, **kw):
        self.maps += 1
        if self.maps == 2:
            raise OSError("scheduler connection closed")
        row = {"worker": "w", "status": "diverged", "error": "diverged in epoch 1", "seconds": 0.1}
        return [_Done(k, {"name": k[1], **row}) for k in key]


def test_trials_finished_before_an_error_are_in_the_files(tmp_path, monkeypatch):
    """Catches: a sweep that stops on an error other than Ctrl-C (its scheduler gone) with a
    finished trial not yet written to sweep.h5: a diverged trial is known from sweep.h5 alone, so
    it would run again."""
    import distributed

    monkeypatch.setattr(distributed, "as_completed", _AsCompleted)
    spec = SweepSpec((parse_axis("lam", "0,0.1"),))
    results = [TrialResult(t, tmp_path / t.name) for t in plan(spec)]
    state = running.RunningSweep(
        spec, tmp_path, tmp_path, tmp_path, results, lambda m: None, lambda e, r: None, None
    )
    state.save()
    with pytest.raises(OSError, match="scheduler connection closed"):
        state.run(_SchedulerGoneOnSecondMap(), results)
    with h5py.File(tmp_path / "sweep.h5", "r") as f:
        statuses = [s.decode() for s in f["status"][()]]
    assert statuses[0] == "diverged" and results[0].status == "diverged"
