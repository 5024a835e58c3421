"""How a sweep ends: a Ctrl-C that comes once every trial has finished does not make it
'interrupted', and a continued sweep knows the seconds of the trials finished earlier."""

from __future__ import annotations

import csv
import math
import time

import pytest

from cifarlin.errors import Interrupted
from cifarlin.search import sweep
from cifarlin.search import trial as sweep_trial
from cifarlin.search.plan import SweepSpec, plan
from cifarlin.search.results import FIGURE_FILE, RESULTS_FILE
from cifarlin.search.space import parse_axis
from cifarlin.search.trial import run_trial
from cifarlin.store.checkpoint import load_history


def done_soon(trial, out, data_folder, alive=None, topic=None, metrics_thread=True):
    """A trial that says it started and is done at once (imported by the workers)."""
    sweep_trial._poster(topic)({"name": trial.name, "event": "started", "worker": "w", "epoch": 0})
    time.sleep(0.02)
    acc = 0.5 + trial.index / 100
    return {
        "name": trial.name,
        "worker": "w",
        "status": "done",
        "seconds": 0.1,
        "val_accuracy": acc,
        "best_val_accuracy": acc,
        "val_cost": 1.0,
        "epochs_trained": 1,
    }


@pytest.mark.slow
@pytest.mark.parametrize("refine", [0, 1])
def test_ctrl_c_once_every_trial_finished_ends_the_sweep_as_finished(tiny_py, tmp_path, refine):
    """Ctrl-C as the last trial's result is read (the workers are closing): a sweep whose trials
    all finished is finished (its best trial, sweep.png, no Interrupted, so exit 0). Catches it
    reported as interrupted (exit 130, no figure); and with --refine, a Ctrl-C once round 1 has
    finished still interrupts (round 2 was still to run)."""
    if refine:
        spec = SweepSpec((parse_axis("lam", "1e-3..1"),), trials=2, refine=refine)
    else:
        spec = SweepSpec((parse_axis("lam", "0,0.1"),))
    notices, finished = [], []

    def on_trial(event, r):
        if event == "finished":
            finished.append(r.trial.name)
            if len(finished) == 2:  # the last of round 1
                raise KeyboardInterrupt

    run = dict(workers=1, on_trial=on_trial, on_notice=notices.append, trial_fn=done_soon)
    if refine:
        with pytest.raises(Interrupted, match="2 of 2 trials finished"):
            sweep.run_sweep(spec, tmp_path / "s", tiny_py, **run)
        assert not (tmp_path / "s" / FIGURE_FILE).exists()
        return
    result = sweep.run_sweep(spec, tmp_path / "s", tiny_py, **run)
    assert [r.status for r in result.results] == ["done", "done"]
    assert result.best is result.results[1]
    assert (tmp_path / "s" / FIGURE_FILE).is_file() and tmp_path / "s" / FIGURE_FILE in result.files
    assert "interrupted after every trial had finished: the sweep is complete" in notices


def test_a_continued_sweep_reads_the_seconds_of_finished_trials_from_their_histories(tiny_py, tmp_path):
    """Catches the seconds of trials finished in an earlier run left blank (in the table, the JSON
    and results.csv) when the sweep is run again."""
    spec = SweepSpec((parse_axis("lam", "0,0.1"), parse_axis("epochs", "2"), parse_axis("batch_size", "10")))
    out = tmp_path / "s"
    for t in plan(spec):
        assert run_trial(t, str(out), str(tiny_py))["status"] == "done"
    result = sweep.run_sweep(spec, out, tiny_py, figures=False)  # nothing to run: no cluster
    for r in result.results:
        assert r.status == "done"
        epochs = load_history(r.run_dir / "history.h5").history.columns["seconds"]
        assert r.seconds is not None and r.seconds > 0 and math.isclose(r.seconds, sum(epochs))
    with open(out / RESULTS_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(row["seconds"]) for row in rows] == pytest.approx([r.seconds for r in result.results])
