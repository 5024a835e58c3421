"""A sweep running on the client (:class:`RunningSweep`): its trials' state, read back from their
folders when a sweep continues; the Dask workers checked (the data, the sweep folder, the same
cifarlin); trials handed to the workers as their threads free up and followed through their events
until each has a result; Ctrl-C (running trials save their last finished epoch); and the sweep
folder's files rewritten as trials finish (:mod:`cifarlin.search.results`). Dask is imported where
it is used.
"""

from __future__ import annotations

import contextlib
import math
import queue
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from cifarlin import __version__
from cifarlin.core.history import history_metrics
from cifarlin.errors import CifarlinError, DataError, WriteError, bad_value, one_line
from cifarlin.search.plan import Box, SweepSpec, TrialResult
from cifarlin.search.results import config_json, write_tables
from cifarlin.search.trial import probe_worker, trial_state

WAIT_FOR_WORKERS_SECONDS = 60
POLL_SECONDS = 0.1
STOP_GRACE_SECONDS = 5.0  # how long Ctrl-C waits for running trials to save their last epoch
ALIVE_PREFIX = ".sweep-alive-"  # present while a sweep runs; trials stop when it goes

TrialCallback = Callable[[str, TrialResult], None]  # (event, trial): see cifarlin.search.sweep.run_sweep


class RunningSweep:
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
        self.previous: dict[str, dict[str, str]] = {}  # trials an earlier run recorded (read_previous)
        self.token = uuid.uuid4().hex[:12]  # names this run's Dask keys, events and alive file
        self.alive_file = abs_out / f"{ALIVE_PREFIX}{self.token}"

    def scan(self, results: Sequence[TrialResult]) -> None:
        """Read what earlier runs left in the trial folders (checking they are this sweep's)."""
        for r in results:
            status, found = trial_state(r.run_dir, r.trial.config)
            if status in ("done", "diverged"):
                r.status = status
                r.update(history_metrics(found.history, r.trial.config.keep))
                r.seconds = sum(found.history.columns["seconds"])  # its epochs', as its run timed them
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
            probe_worker, str(self.data_folder), str(self.alive_file)
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
