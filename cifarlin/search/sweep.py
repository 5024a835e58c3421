"""Hyperparameter search on a Dask cluster (:mod:`cifarlin.search.cluster`): a plan of
:mod:`cifarlin.search.plan` trained trial by trial, each trial by :func:`cifarlin.search.trial.run_trial`
on a worker, into an ordinary run folder, exactly as ``cifarlin train`` trains it.

This module is the client's side: it runs a plan (continuing an earlier run into the same folder,
following the trials, handling Ctrl-C and lost workers), extracts the features the trials need
first, picks the best trial by validation accuracy and reports its test accuracy once, and writes
the sweep folder: ``sweep.h5`` and ``results.csv`` (one row per trial, rewritten atomically as
trials finish) and ``sweep.png``. NumPy, h5py and Dask are imported where they are used.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import queue
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cifarlin import __version__
from cifarlin.core.config import TrainConfig
from cifarlin.core.train import metrics_thread_fits
from cifarlin.errors import (
    CifarlinError,
    DataError,
    Interrupted,
    WriteError,
    bad_value,
    one_line,
    stopped,
)
from cifarlin.figures.drawer import FigureDrawer
from cifarlin.search.cluster import check_cluster, dask_client, local_workers
from cifarlin.search.plan import (  # noqa: F401 - the planning API, reachable as cifarlin.search.sweep.*
    _FIELD_TYPES,
    KINDS,
    MAX_TRIALS,
    METRICS,
    RETRIES,
    SELECTED_BY,
    SIGNIFICANT,
    STATUSES,
    SWEEPABLE,
    TOP_FRACTION,
    Axis,
    Box,
    Kind,
    Sweepable,
    SweepSpec,
    Trial,
    TrialResult,
    best_of,
    default_out,
    history_metrics,
    kind,
    parse_axis,
    plan,
    plan_grid,
    plan_random,
    ranged_fields,
    ranked,
    refine_box,
    separator,
    show,
    trial_name,
)
from cifarlin.search.trial import _probe_worker, cached_data, clear_data_cache, run_trial, trial_state  # noqa: F401
from cifarlin.store.files import check_path, make_folder, write_text

SWEEP_FILE, RESULTS_FILE, FIGURE_FILE = "sweep.h5", "results.csv", "sweep.png"
WAIT_FOR_WORKERS_SECONDS = 60
POLL_SECONDS = 0.1
STOP_GRACE_SECONDS = 5.0  # how long Ctrl-C waits for running trials to save their last epoch
ALIVE_PREFIX = ".sweep-alive-"  # present while a sweep runs; trials stop when it goes


# ---------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------

TrialCallback = Callable[[str, TrialResult], None]  # (event, trial): see run_sweep


@dataclass
class SweepResult:
    spec: SweepSpec
    out: Path
    results: list[TrialResult]
    best: TrialResult | None
    test: Any  # the best trial's test metrics (model.Metrics), read once, for it alone
    box: Box | None = None
    files: list[Path] = field(default_factory=list)
    cluster: str = ""

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.results) for s in STATUSES}

    def document(self) -> dict[str, Any]:
        """``{"trials": [...], "best": {... "test_accuracy": ...}}`` and the sweep's facts."""
        best = None
        if self.best is not None:
            best = self.best.row()
            if self.test is not None:
                best.update(
                    test_accuracy=self.test.accuracy, test_cost=self.test.cost, test_loss=self.test.loss
                )
        return {
            "trials": [r.row() for r in self.results],
            "best": best,
            "selected_by": SELECTED_BY,
            "sweep": self.spec.to_dict(),
            "round2_box": _box_json(self.box),
            "out": str(self.out),
            "counts": self.counts(),
            "files": [str(f) for f in self.files],
        }


def config_json(cfg: TrainConfig) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True)


def _decode(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _box_json(box: Box | None) -> dict[str, list[Any]] | None:
    return None if box is None else {k: list(v) for k, v in box.items()}


def _starts_checked(trials: list[Trial]) -> list[Trial]:
    """The trials, their start models (``init``) checked first, each once, and their weights'
    checksums pinned in the trials' configurations (:func:`cifarlin.work.runs.pin_start`: a changed
    model makes them other runs)."""
    from cifarlin.store.featuremap import load as load_map
    from cifarlin.work import runs

    pinned: dict[Any, str] = {}
    maps: dict[str, Any] = {}  # each feature map read once
    checked = []
    for t in trials:
        if t.config.init is not None:
            f = t.config.features
            if f is not None and f not in maps:
                maps[f] = load_map(Path(f))
            t = replace(t, config=runs.pin_start(t.config, maps.get(f), pinned))
        checked.append(t)
    return checked


def run_sweep(
    spec: SweepSpec,
    out: Path,
    data_folder: Path,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    retries: int = RETRIES,
    figures: bool = True,
    background: bool = True,
    resume_hint: str | None = None,
    on_notice: Callable[[str], None] | None = None,
    on_trial: TrialCallback | None = None,
    trial_fn: Callable[..., dict[str, Any]] = run_trial,
) -> SweepResult:
    """Run the sweep ``spec`` into ``out``: each trial a run folder ``out/trial-NNN``.

    Trials that finished in an earlier run into ``out`` are not run again; interrupted ones
    continue from their checkpoints. ``data_folder`` and ``out`` must be the same paths on every
    worker. ``on_trial(event, trial)`` reports 'planned', 'skipped' (already finished),
    'started', 'restarted' (its worker died), 'epoch' and 'finished'; ``on_notice`` the rest.
    Ctrl-C cancels the queued trials, lets the running ones save their last finished epoch
    (for up to ``STOP_GRACE_SECONDS``), stops the workers, keeps what finished and raises
    :class:`Interrupted` naming ``resume_hint``, the command that continues. With ``figures``,
    ``sweep.png`` is drawn (with ``background``, by a child process started at the start, see
    :mod:`cifarlin.figures.drawer`). Returns every trial's result and the best
    trial (by the validation accuracy of the model it saved) with its test metrics.
    """
    from cifarlin.work import runs

    notice = on_notice or (lambda m: None)
    report = on_trial or (lambda e, r: None)
    out = Path(out)
    check_path(out)
    check_cluster(scheduler, workers, retries)
    trials = _starts_checked(plan(spec))
    if out.exists() and not out.is_dir():
        raise bad_value("out", str(out), "exists and is not a folder")
    make_folder(out, "the sweep folder")
    abs_out = Path(os.path.abspath(out))
    results = [TrialResult(t, out / t.name) for t in trials]
    state = _Sweep(spec, out, abs_out, Path(os.path.abspath(data_folder)), results, notice, report, trial_fn)
    # a child started now imports matplotlib during the sweep
    with FigureDrawer(background and figures) as drawer, runs.folder_lock(out):
        drawer.warm_up()
        state.read_previous()  # before sweep.h5 is rewritten
        state.box = state.stored_box() if spec.refine else None
        try:
            with contextlib.ExitStack() as stack:
                state.scan(results)
                state.save()
                todo = [r for r in results if not r.finished]

                def client() -> Any:
                    if state.client is None:
                        n = local_workers(workers, [r.trial for r in todo]) if scheduler is None else 0
                        # a local cluster's trials keep a metrics thread only if they have the cores
                        state.metrics_thread = scheduler is not None or metrics_thread_fits(n)
                        state.client = stack.enter_context(dask_client(scheduler, n, retries))
                        state.cluster = (
                            f"the Dask cluster at {scheduler}"
                            if scheduler is not None
                            else f"a local Dask cluster of {n} worker process{'es' if n > 1 else ''}"
                        )
                        stack.enter_context(state.alive())
                        state.probe()
                        notice(f"running on {state.cluster}")
                    return state.client

                if todo:
                    if scheduler is None:
                        extract_features(client(), state.data_folder, todo, notice)
                    state.run(client(), todo)
                if spec.refine:
                    box = state.box if state.box is not None else refine_box(spec, results)
                    if box is None:
                        notice("no second round: no trial of the first finished")
                    else:
                        state.box = box
                        round2 = [
                            TrialResult(t, out / t.name)
                            for t in _starts_checked(plan_random(spec, 2, spec.refine, box))
                        ]
                        results.extend(round2)
                        state.scan(round2)
                        state.save()
                        todo = [r for r in round2 if not r.finished]
                        if todo:
                            notice(f"round 2: {len(round2)} trials in {describe_box(box)}")
                            state.run(client(), todo)
        except KeyboardInterrupt as e:
            how, code = stopped(e)
            for r in results:
                if r.status == "running":
                    r.status = "interrupted"
            state.save()
            done = sum(r.finished for r in results)
            again = f"; continue with '{resume_hint}'" if resume_hint else ""
            raise Interrupted(
                f"{how}: {done} of {len(results)} trials finished, kept in {out}; trials stopped "
                f"in the middle continue from their last epoch{again}",
                code,
            ) from None
        best = best_of(results)
        test = state.best_test(best)
        state.save(best, test)
        files = [out / SWEEP_FILE, out / RESULTS_FILE]
        if figures and results:
            files.append(drawer.sweep(figure_args(spec, results, best), out / FIGURE_FILE))
    return SweepResult(spec, out, results, best, test, state.box, files, state.cluster)


def extract_features(
    client: Any, data_folder: Path, todo: Sequence[TrialResult], notice: Callable[[str], None]
) -> None:
    """Trials on k-means features: their features extracted first, as Dask tasks across the
    local cluster, into this machine's feature cache, where its workers find them (instead of
    every worker extracting the same files at once). A feature map that cannot be read is left
    to its trials, which fail with its error. The cache is the one the local cluster's workers
    read (:func:`cifarlin.search.trial.cached_data`): that of their (and this process's) environment."""
    from cifarlin.core.config import feature_cache_dir
    from cifarlin.data.cifar import find
    from cifarlin.features import extraction
    from cifarlin.features.cache import FeatureCache
    from cifarlin.store.featuremap import load as load_map

    seen = set()
    for r in todo:
        cfg = r.trial.config
        key = (cfg.features, cfg.split, cfg.augment)
        if cfg.features is None or key in seen:
            continue
        seen.add(key)
        try:
            fmap = load_map(Path(cfg.features))
            dataset = find(data_folder)
        except CifarlinError:
            continue

        def on_batch(name: str, view: str, cached: bool) -> None:
            if not cached:
                notice(f"features of {name}{' (mirrored)' if view else ''}: extracting on the cluster")

        extraction.fill_cache(
            dataset,
            fmap,
            cfg.split,
            cfg.augment,
            FeatureCache(feature_cache_dir(os.environ)),
            extraction.dask_extractor(client),
            on_batch,
        )


def describe_box(box: Box) -> str:
    parts = []
    for k, v in box.items():
        if len(v) == 2 and all(isinstance(x, float) for x in v) and k in ranged_fields():
            parts.append(f"{k} {v[0]:.3g}..{v[1]:.3g}")
        else:
            parts.append(f"{k} {','.join(show(k, x) for x in v)}")
    return ", ".join(parts)


class _Sweep:
    """The running sweep's state on the client: its trials, the Dask client, the files."""

    def __init__(
        self,
        spec: SweepSpec,
        out: Path,
        abs_out: Path,
        data_folder: Path,
        results: list[TrialResult],
        notice: Callable[[str], None],
        report: TrialCallback,
        trial_fn: Callable[..., dict[str, Any]],
    ):
        self.spec, self.out, self.abs_out, self.data_folder = spec, out, abs_out, data_folder
        self.results, self.notice, self.report, self.trial_fn = results, notice, report, trial_fn
        self.metrics_thread = True  # trials compute their metrics on a thread of their own
        self.unsaved = False  # results read since sweep.h5 was last written
        self.client: Any = None
        self.cluster = ""
        self.box: Box | None = None
        self.previous_spec: dict[str, Any] = {}
        self.previous_box: Any = None
        self.previous: dict[str, dict[str, str]] = {}
        self.token = uuid.uuid4().hex[:12]  # names this run's Dask keys, events and alive file
        self.alive_file = abs_out / f"{ALIVE_PREFIX}{self.token}"

    def scan(self, results: Sequence[TrialResult]) -> None:
        """Read what earlier runs left in the trial folders (checking they are this sweep's)."""
        for r in results:
            status, found = trial_state(r.run_dir, r.trial.config)
            if status in ("done", "diverged"):
                r.status = status
                r.update(history_metrics(found.history, r.trial.config.keep))
                self.report("skipped", r)
            elif (
                status == "new"
                and self.previous.get(r.trial.name, {}).get("status") == "diverged"
                and (self.previous[r.trial.name]["config"] == config_json(r.trial.config))
            ):
                r.status, r.error = "diverged", self.previous[r.trial.name]["error"]
                self.report("skipped", r)
            else:
                if status == "resume":
                    r.resumed_from_epoch = found.state.epoch
                    r.update(history_metrics(found.state.history, r.trial.config.keep))
                self.report("planned", r)

    @contextlib.contextmanager
    def alive(self) -> Iterator[None]:
        """The file whose presence lets trials run; removed when the sweep ends or stops."""
        for old in self.out.glob(ALIVE_PREFIX + "*"):  # of sweeps killed before removing theirs
            old.unlink(missing_ok=True)
        try:
            self.alive_file.touch()
        except OSError as e:
            raise WriteError(f"{self.out}: cannot write into the sweep folder ({e.strerror or e})") from None
        try:
            yield
        finally:
            self.alive_file.unlink(missing_ok=True)

    def probe(self) -> None:
        """Every worker must see the data, the sweep folder and run this cifarlin."""
        if self.client.scheduler_info().get("workers") == {}:
            self.notice(f"waiting for Dask workers to join {self.client.scheduler.address}")
        try:
            self.client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_SECONDS)
        except TimeoutError:
            raise CifarlinError(
                f"no Dask worker joined the scheduler in {WAIT_FOR_WORKERS_SECONDS} s; start some with "
                f"'dask worker {self.client.scheduler.address}'"
            ) from None
        for worker, facts in self.client.run(
            _probe_worker, str(self.data_folder), str(self.alive_file)
        ).items():
            if facts["version"] != __version__:
                raise CifarlinError(
                    f"worker {worker} runs cifarlin {facts['version']}, this is {__version__}: install the "
                    "same version everywhere (a trial's numbers depend on it)"
                )
            if facts["data"]:
                raise DataError(
                    f"on worker {worker}: {facts['data']}; give data_dir=DIR a folder every worker can read"
                )
            if facts["out"]:
                raise bad_value(
                    "out",
                    str(self.abs_out),
                    f"on worker {worker}: {facts['out']}; give a folder all workers share, at the same path",
                )

    def run(self, client: Any, todo: list[TrialResult]) -> None:
        """Train ``todo`` on the cluster and follow it until every trial has a result.

        Trials go to the scheduler as workers' threads free up (re-read every second, so workers
        that join are used): each worker holds one trial at a time, so a trial never waits behind
        a long one while another worker idles, and a trial that kills its worker takes no other
        trial with it. Trials that share data go together.
        """
        from distributed import as_completed

        topic = f"cifarlin-sweep-{self.token}"
        events: queue.Queue[Any] = queue.Queue()
        client.subscribe_topic(topic, events.put)
        from cifarlin.work.prepare import prepared_key

        waiting = sorted(todo, key=lambda r: repr(prepared_key(r.trial.config)))
        by_name = {r.trial.name: r for r in waiting}
        for r in waiting:
            r.status = "queued"
        submitted: list[Any] = []
        running = as_completed()
        slots, counted = 1, -math.inf
        try:
            while waiting or not running.is_empty():
                finished = 0
                for f in running.next_batch(block=False):
                    if f.status == "lost":  # its result was on a worker that died: Dask computes it
                        running.add(f)  # again (a finished trial just reads its files)
                        continue
                    self._events(events, by_name)
                    self._finish(f, by_name[f.key[1]], save=False)
                    finished += 1
                if time.monotonic() - counted > 1:
                    slots, counted = max(1, sum(client.nthreads().values())), time.monotonic()
                if waiting and running.count() < slots:
                    batch, waiting = waiting[: slots - running.count()], waiting[slots - running.count() :]
                    futures = client.map(
                        self.trial_fn,
                        [r.trial for r in batch],
                        out=str(self.abs_out),
                        data_folder=str(self.data_folder),
                        alive=str(self.alive_file),
                        topic=topic,
                        metrics_thread=self.metrics_thread,
                        key=[(f"cifarlin-trial-{self.token}", r.trial.name) for r in batch],
                        pure=False,
                    )
                    submitted += futures
                    running.update(futures)
                if finished:  # the files after the next trials are on their way: workers never wait for them
                    self.save()
                self._events(events, by_name)
                if not finished:
                    time.sleep(POLL_SECONDS)
            self._events(events, by_name)
        except KeyboardInterrupt:
            self._let_running_trials_stop(client, submitted, events, by_name)
            raise
        finally:
            if self.unsaved:  # Ctrl-C or an error on the way (a scheduler gone): what finished is kept
                with contextlib.suppress(Exception):
                    self.save()
            client.cancel(submitted)
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(topic)

    def _let_running_trials_stop(
        self, client: Any, submitted: list[Any], events: queue.Queue[Any], by_name: dict[str, TrialResult]
    ) -> None:
        """Ctrl-C: the running trials see the alive file go at their next batch and stop, saving
        their last finished epoch, and the submitted ones not yet started return at once (as
        'queued'); the sweep waits for them up to ``STOP_GRACE_SECONDS`` (a second Ctrl-C stops
        waiting) and records every result that came back, those finished just before included."""
        self.alive_file.unlink(missing_ok=True)
        pending = [f for f in submitted if not f.done()]  # at most one per worker thread
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while any(not f.done() for f in pending) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        self._events(events, by_name)
        for f in submitted:
            r = by_name[f.key[1]]
            if f.status == "finished" and r.status in ("queued", "running"):
                self._finish(f, r)

    def _events(self, events: queue.Queue[Any], by_name: dict[str, TrialResult]) -> None:
        while True:
            try:
                _, msg = events.get_nowait()
            except queue.Empty:
                return
            except (TypeError, ValueError):
                continue
            r = by_name.get(msg.get("name")) if isinstance(msg, dict) else None
            if r is None or r.finished:
                continue
            if msg.get("event") == "started":
                again = r.status == "running"
                r.status, r.worker = "running", str(msg.get("worker", ""))
                r.epochs_trained = r.resumed_from_epoch = int(msg.get("epoch", 0))
                self.report("restarted" if again else "started", r)
            elif msg.get("event") == "epoch" and r.status == "running":
                r.epochs_trained = int(msg.get("epoch", 0))
                r.val_accuracy = r.final_val_accuracy = float(msg.get("val_acc", math.nan))
                self.report("epoch", r)

    def _finish(self, future: Any, r: TrialResult, save: bool = True) -> None:
        if future.status == "finished":
            r.update(future.result())
        else:
            e = future.exception() if future.status == "error" else None
            r.status = "failed"
            if type(e).__name__ == "KilledWorker":
                tries = getattr(e, "allowed_failures", 0) + 1
                r.error = (
                    f"its worker died {tries} time{'s' if tries > 1 else ''} while training it "
                    "(killed, or out of memory?)"
                )
            else:
                r.error = one_line(e) if e is not None else f"Dask reports it {future.status}"
        self.unsaved = True
        self.report("finished", r)
        if save:
            self.save()

    def read_previous(self) -> None:
        """What an earlier run of this sweep recorded in sweep.h5: round 2's box, and the trials
        that diverged before saving anything (their folders are gone; they are not run again)."""
        from cifarlin.store.h5safe import open_file

        path = self.out / SWEEP_FILE
        if not path.is_file():
            return
        columns = ("name", "status", "error", "config")
        try:
            with open_file(path, "sweep") as r:
                self.previous_spec = json.loads(r.text("spec", "{}"))
                self.previous_box = json.loads(r.text("round2_box", "null"))
                if all(c in r for c in columns):
                    cols = [[_decode(v) for v in r.dataset(c, 1, "OSU", 4 * MAX_TRIALS)] for c in columns]
                    self.previous = {
                        row[0]: dict(zip(columns, row, strict=True)) for row in zip(*cols, strict=True)
                    }
        except (CifarlinError, ValueError, TypeError):
            self.previous_spec, self.previous_box, self.previous = {}, None, {}

    def stored_box(self) -> Box | None:
        """Round 2's box as an earlier run of the same sweep drew it (so its trials are the same)."""
        spec, box = self.previous_spec, self.previous_box
        same = {k: v for k, v in self.spec.to_dict().items() if k != "refine"}
        if not isinstance(box, dict) or {k: v for k, v in spec.items() if k != "refine"} != same:
            return None
        try:
            out = {}
            for k, v in box.items():
                if k in ranged_fields() and any(a.field == k and a.is_range for a in self.spec.axes):
                    out[k] = (float(v[0]), float(v[1]))
                else:
                    out[k] = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            return out
        except (TypeError, ValueError, IndexError):
            return None

    def best_test(self, best: TrialResult | None) -> Any:
        """The test metrics of the best trial (written by its run): read for it alone."""
        if best is None:
            return None
        from cifarlin.store.checkpoint import load_history

        try:
            return load_history(best.run_dir / "history.h5").test
        except CifarlinError as e:
            self.notice(f"the best trial's test accuracy is unknown: {e}")
            return None

    def save(self, best: TrialResult | None = None, test: Any = None) -> None:
        write_tables(self.out, self.spec, self.results, best, test, self.box)
        self.unsaved = False


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

CSV_COLUMNS = ("name", "round", *SWEEPABLE, "status", *METRICS, "seconds", "worker", "run_dir", "error")


def write_tables(
    out: Path,
    spec: SweepSpec,
    results: Sequence[TrialResult],
    best: TrialResult | None = None,
    test: Any = None,
    box: Box | None = None,
) -> None:
    """``sweep.h5`` and ``results.csv`` in ``out``, each written whole or not at all.

    sweep.h5: one dataset per column, one value per trial (``name``, ``round``, ``status``,
    ``error``, ``worker``, ``run_dir``, the metrics, ``seconds``, ``config``: the trial's whole
    TrainConfig as JSON; ``params/<field>`` for every
    sweepable field: numbers as numbers, ``val_size`` 0 for none, ``train_batches`` as text),
    NaN where a trial has no value; attributes: the sweep (``spec`` as JSON), ``selected_by``,
    ``best`` and its ``best_test_*`` metrics once known, ``round2_box`` (JSON).
    """
    import h5py
    import numpy as np

    from cifarlin.store.checkpoint import atomic_h5

    text = h5py.string_dtype()

    def nums(values: list[Any], dtype: Any) -> Any:
        return np.array([np.nan if v is None else v for v in values], dtype=dtype)

    with atomic_h5(out / SWEEP_FILE) as f:
        f.attrs.update(
            {
                "format": "cifarlin",
                "format_version": 1,
                "kind": "sweep",
                "cifarlin_version": __version__,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "spec": json.dumps(spec.to_dict()),
                "selected_by": SELECTED_BY,
                "best": best.trial.name if best is not None else "",
            }
        )
        if box is not None:
            f.attrs["round2_box"] = json.dumps(_box_json(box))
        if test is not None:
            f.attrs["best_test_accuracy"], f.attrs["best_test_cost"] = test.accuracy, test.cost
            f.attrs["best_test_loss"] = test.loss
        for name in ("status", "error", "worker"):
            f.create_dataset(
                name, data=np.array([getattr(r, name) for r in results], dtype=object), dtype=text
            )
        f.create_dataset("name", data=np.array([r.trial.name for r in results], dtype=object), dtype=text)
        configs = [config_json(r.trial.config) for r in results]
        f.create_dataset("config", data=np.array(configs, dtype=object), dtype=text)
        f.create_dataset(
            "run_dir", data=np.array([str(r.run_dir) for r in results], dtype=object), dtype=text
        )
        f.create_dataset("round", data=np.array([r.trial.round for r in results], dtype=np.int64))
        for m in METRICS:
            is_int = m in ("best_epoch", "epochs_trained")
            f.create_dataset(
                m, data=nums([getattr(r, m) for r in results], np.int64 if is_int else np.float64)
            )
        f.create_dataset("seconds", data=nums([r.seconds for r in results], np.float64))
        params = f.create_group("params")
        for name in SWEEPABLE:
            values = [getattr(r.trial.config, name) for r in results]
            t = _FIELD_TYPES[name]
            if t == "float":
                params.create_dataset(name, data=np.array(values, dtype=np.float64))
            elif t in ("int", "int | None"):
                params.create_dataset(name, data=np.array([v or 0 for v in values], dtype=np.int64))
            elif t == "bool":
                params.create_dataset(name, data=np.array(values, dtype=bool))
            else:
                shown = [show(name, v) for v in values]
                params.create_dataset(name, data=np.array(shown, dtype=object), dtype=text)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in results:
        row = r.row()
        cells = {**{k: show(k, getattr(r.trial.config, k)) for k in SWEEPABLE}, **row}
        w.writerow(["" if cells[c] is None else cells[c] for c in CSV_COLUMNS])
    write_text(out / RESULTS_FILE, buf.getvalue())


def figure_args(spec: SweepSpec, results: Sequence[TrialResult], best: TrialResult | None) -> dict[str, Any]:
    """The arguments of :func:`cifarlin.figures.plots.sweep_figure` for ``sweep.png``, as plain values:
    validation accuracy over (lambda, eta), the best trial marked."""
    others = [
        a.field for a in spec.axes if a.field not in ("lam", "eta") and (a.is_range or len(a.values) > 1)
    ]
    return {
        "lam": [r.trial.config.lam for r in results],
        "eta": [r.trial.config.eta for r in results],
        "accuracy": [r.val_accuracy if r.status == "done" else None for r in results],
        "status": [r.status for r in results],
        "best": None if best is None else results.index(best),
        "grid": spec.mode == "grid",
        "title": f"{spec.describe()}; {len(results)} trials"
        + (f" (each cell: the best over {', '.join(others)})" if others and spec.mode == "grid" else ""),
    }
