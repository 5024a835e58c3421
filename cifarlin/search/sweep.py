"""Hyperparameter search on a Dask cluster (:mod:`cifarlin.search.cluster`): a plan of
:mod:`cifarlin.search.plan` trained trial by trial, each trial by :func:`cifarlin.search.trial.run_trial`
on a worker, into an ordinary run folder, exactly as ``cifarlin train`` trains it.

This module is the client's side, from start to end (:func:`run_sweep`): it plans the trials
(their start models checked first), continues an earlier run into the same folder, extracts the
features the trials need first, runs the trials (:class:`cifarlin.search.running.RunningSweep`
follows them, handles Ctrl-C and lost workers), a second, refining round, picks the best trial by
validation accuracy and reports its test accuracy once, and leaves the sweep folder's files
(:mod:`cifarlin.search.results`): ``sweep.h5``, ``results.csv`` and ``sweep.png``. NumPy, h5py and
Dask are imported where they are used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cifarlin.core.threads import metrics_thread_fits
from cifarlin.errors import CifarlinError, Interrupted, bad_value, stopped
from cifarlin.figures.drawer import FigureDrawer
from cifarlin.search.cluster import check_cluster, dask_client, local_workers
from cifarlin.search.plan import (
    RETRIES,
    Box,
    SweepSpec,
    Trial,
    TrialResult,
    best_of,
    plan,
    plan_random,
    refine_box,
)
from cifarlin.search.results import (
    FIGURE_FILE,
    RESULTS_FILE,
    SWEEP_FILE,
    SweepResult,
    figure_args,
    read_previous,
    stored_box,
)
from cifarlin.search.running import RunningSweep, TrialCallback
from cifarlin.search.space import ranged_fields, separator, show
from cifarlin.search.trial import run_trial
from cifarlin.store.files import check_path, make_folder


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
    feature_cache: Path | None = None,
    on_notice: Callable[[str], None] | None = None,
    on_trial: TrialCallback | None = None,
    trial_fn: Callable[..., dict[str, Any]] = run_trial,
) -> SweepResult:
    """Run the sweep ``spec`` into ``out``: each trial a run folder ``out/trial-NNN``.

    Trials that finished in an earlier run into ``out`` are not run again; interrupted ones
    continue from their checkpoints. ``data_folder`` and ``out`` must be the same paths on every
    worker. ``on_trial(event, trial)`` reports 'planned', 'skipped' (already finished),
    'started', 'restarted' (its worker died), 'epoch' and 'finished'; ``on_notice`` the rest.
    Ctrl-C cancels the queued trials, lets the running ones save their last finished epoch (for
    up to :data:`cifarlin.search.running.STOP_GRACE_SECONDS`), stops the workers, keeps what
    finished and raises :class:`Interrupted` naming ``resume_hint``, the command that continues.
    With ``figures``, ``sweep.png`` is drawn (with ``background``, by a child process started at
    the start, see :mod:`cifarlin.figures.drawer`). Returns every trial's result and the best
    trial (by the validation accuracy of the model it saved) with its test metrics.
    ``feature_cache`` is where trials on k-means features find theirs, extracted first (the
    command line's; by default that of this process's environment).
    """
    from cifarlin.work.folder import folder_lock

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
    data = Path(os.path.abspath(data_folder))
    state = RunningSweep(spec, out, abs_out, data, results, notice, report, trial_fn)
    # a child started now imports matplotlib during the sweep
    with FigureDrawer(background and figures) as drawer, folder_lock(out):
        drawer.warm_up()
        previous = read_previous(out)  # before sweep.h5 is rewritten
        state.previous = previous.trials
        state.box = stored_box(spec, previous) if spec.refine else None
        planned = not spec.refine  # every trial of the sweep is in results (round 2 is planned late)
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
                        extract_features(client(), state.data_folder, todo, notice, feature_cache)
                    state.run(client(), todo)
                if spec.refine:
                    box = state.box if state.box is not None else refine_box(spec, results)
                    planned = box is None
                    if box is None:
                        notice("no second round: no trial of the first finished")
                    else:
                        state.box = box
                        round2 = [
                            TrialResult(t, out / t.name)
                            for t in _starts_checked(plan_random(spec, 2, spec.refine, box))
                        ]
                        results.extend(round2)
                        planned = True
                        state.scan(round2)
                        state.save()
                        todo = [r for r in round2 if not r.finished]
                        if todo:
                            notice(f"round 2: {len(round2)} trials in {describe_box(box)}")
                            state.run(client(), todo)
        except KeyboardInterrupt as e:
            how, code = stopped(e)
            if not (planned and all(r.finished for r in results)):
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
            # stopped as the workers closed, say: a sweep whose trials all finished is finished
            notice(f"{how} after every trial had finished: the sweep is complete")
        best = best_of(results)
        test = state.best_test(best)
        state.save(best, test)
        files = [out / SWEEP_FILE, out / RESULTS_FILE]
        if figures and results:
            files.append(drawer.sweep(figure_args(spec, results, best), out / FIGURE_FILE))
    return SweepResult(spec, out, results, best, test, state.box, files, state.cluster)


def extract_features(
    client: Any,
    data_folder: Path,
    todo: Sequence[TrialResult],
    notice: Callable[[str], None],
    cache_dir: Path | None = None,
) -> None:
    """Trials on k-means features: their features extracted first, as Dask tasks across the
    local cluster, into this machine's feature cache, where its workers find them (instead of
    every worker extracting the same files at once). A feature map that cannot be read is left
    to its trials, which fail with its error. The cache is the one the local cluster's workers
    read (:func:`cifarlin.search.trial.cached_data`): ``cache_dir``, the command line's (read from
    the environment the local workers inherit), or that of this process's environment."""
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
            FeatureCache(cache_dir or feature_cache_dir(os.environ)),
            extraction.dask_extractor(client),
            on_batch,
        )


def describe_box(box: Box) -> str:
    parts = []
    for k, v in box.items():
        if len(v) == 2 and all(isinstance(x, float) for x in v) and k in ranged_fields():
            parts.append(f"{k}={v[0]:.3g}..{v[1]:.3g}")
        else:
            parts.append(f"{k}={separator(k).join(show(k, x) for x in v)}")
    return ", ".join(parts)
