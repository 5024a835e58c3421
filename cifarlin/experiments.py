"""Workflows over run folders: plan the runs of a ``train`` command, run a plan, write the
comparison of several runs, and draw the figures of a run folder.

The command line turns its options into a call here and renders what comes back; everything
in this module works, and is tested, without it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cifarlin import data
from cifarlin.checkpoint import Snapshot, load_history
from cifarlin.config import SETTINGS, TrainConfig, solver_defaults
from cifarlin.drawer import FigureDrawer
from cifarlin.errors import ConfigError, Interrupted, ModelFileError, RunExistsError, bad_value, stopped
from cifarlin.figures import stale_figures
from cifarlin.files import check_path, json_ready, write_text
from cifarlin.history import TrainState
from cifarlin.runs import (
    CHECKPOINT,
    HISTORY,
    MODEL,
    Outcome,
    check_outside,
    check_run_folder,
    default_out,
    pin_start,
    recover,
    resume_point,
    run,
)
from cifarlin.train import is_complete, metrics_thread_fits, one_blas_thread

EpochCallback = Callable[[TrainState], None]
BatchCallback = Callable[[int, int, int], None]


@dataclass
class PlannedRun:
    """One run of a plan: its configuration, its folder, and the checkpoint it continues."""

    config: TrainConfig
    out: Path
    start: Snapshot | None = None
    reuse: bool = False  # a complete run of this configuration is in the folder: nothing to train

    @property
    def first_epoch(self) -> int:
        """Epochs already done (0 for a new run)."""
        return self.start.state.epoch if self.start is not None else 0


def plan_runs(
    setting: int | str | None,
    overrides: dict[str, Any],
    *,
    out: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    root: Path = Path("outputs"),
    on_notice: Callable[[str], None] | None = None,
) -> list[PlannedRun]:
    """The runs of one ``train`` command, their folders checked.

    ``setting``: a reference setting (1-4) or a recipe ('bonus'), ``'all'`` for the four into ``out`` (default
    ``root``)/setting-N, or None for a run of ``overrides`` alone. With ``resume``, runs that have
    a checkpoint continue from it (for ``'all'``, the others start afresh); ``overrides`` must
    then agree with the checkpoint, but for ``epochs``. Nothing is written, except that a run
    an interrupted ``--overwrite`` set aside is put back first (see :func:`runs.recover`).
    """
    if setting is not None and overrides.get("solver", "gd") != "gd":
        raise bad_value(
            "solver", overrides["solver"], "the settings are gradient-descent recipes: leave --setting out"
        )
    overrides = solver_defaults(overrides)
    if setting == "all":
        configs = [TrainConfig.for_setting(s, **overrides) for s in SETTINGS]
        outs = [default_out(c, out or root) for c in configs]
    else:
        if resume and out is None and setting is None:
            raise ConfigError("resume=True needs the run folder (out=DIR) or a setting to find the run")
        c = TrainConfig.for_setting(setting, **overrides) if setting is not None else TrainConfig(**overrides)
        configs, outs = [c], [out or default_out(c, root)]
    plan = []
    notice = on_notice or (lambda m: None)
    fmap = None
    if configs[0].features is not None:  # a bad feature-map file is refused before any data is read
        from cifarlin.features import load

        fmap = load(Path(configs[0].features))
    if configs[0].init is not None:
        check_outside(configs[0].init, outs)
    pinned: dict[Any, str] = {}
    for c, o in zip(configs, outs, strict=True):
        check_path(o)
        resume_this = resume and (setting != "all" or (o / CHECKPOINT).is_file())
        if not resume_this:  # so is a bad or mismatched start model
            c = pin_start(c, fmap, pinned)
        if (put_back := recover(o)) is not None:
            notice(put_back)
        done = complete_config(o)
        if not resume_this and not overwrite and done is not None and _other_start(done, c):
            raise RunExistsError(
                f"{o} holds this run started from other weights than {c.init} holds now (the start "
                "model changed since): --overwrite trains it again from them, or --out DIR"
            )
        if not resume_this and not overwrite and done is not None and same_run(done, c):
            notice(
                f"{o} holds a complete run with these parameters: reusing it (--overwrite trains it again)"
            )
            plan.append(PlannedRun(done, o, reuse=True))
            continue
        check_run_folder(o, resume=resume_this, overwrite=overwrite)
        if resume_this:
            requested = {**overrides, "setting": c.setting} if setting is not None else overrides
            c, start = resume_point(o, requested)
            done = is_complete(c, start.state) and (o / MODEL).is_file() and complete_config(o) == c
            if done:
                notice(f"{o} is complete ({start.state.epoch} epochs): nothing to resume, nothing changed")
            plan.append(PlannedRun(c, o, start, reuse=done))
        else:
            plan.append(PlannedRun(c, o))
    return plan


def _other_start(done: TrainConfig, requested: TrainConfig) -> bool:
    """Whether the finished run ``done`` is ``requested`` but for the start model's weights."""
    return (
        requested.init is not None
        and done.init_checksum != requested.init_checksum
        and same_run(done, requested.replace(init_checksum=done.init_checksum))
    )


def same_run(done: TrainConfig, requested: TrainConfig) -> bool:
    """Whether a finished run of config ``done`` is the run ``requested`` (whose lambda, when the
    solver chooses it, is whatever the finished run chose)."""
    return done == (requested.replace(lam=done.lam) if requested.choose_lam else requested)


def complete_config(out: Path) -> TrainConfig | None:
    """The configuration of the complete run in ``out`` (its history says complete and its model
    is there), or None."""
    if not ((out / HISTORY).is_file() and (out / MODEL).is_file() and (out / CHECKPOINT).is_file()):
        return None
    try:
        h = load_history(out / HISTORY)
    except ModelFileError:
        return None
    return h.config if h.status == "complete" else None


@dataclass
class PlanResult:
    outcomes: list[Outcome]
    summaries: list[dict[str, Any]]  # one per run, as :meth:`Outcome.summary` plus its figures
    files: list[Path] = field(default_factory=list)  # the comparison files of a plan of several runs


def run_plan(
    plan: Sequence[PlannedRun],
    dataset: data.Dataset,
    *,
    overwrite: bool = False,
    resume_hint: str | None = None,
    figures: bool = True,
    compare: bool = False,
    compare_dir: Path | None = None,
    workers: int = 1,
    on_loading: Callable[[data.Dataset, str], None] | None = None,
    on_run: Callable[
        [PlannedRun, int], AbstractContextManager[tuple[EpochCallback | None, BatchCallback | None]]
    ]
    | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
    feature_cache: Path | None = None,
    on_features: Callable[[str, bool], None] | None = None,
    background: bool = True,
) -> PlanResult:
    """Train the runs of ``plan``: one after another, or ``workers`` at a time.

    The data are read and normalised once for all runs that share a split and precision (one
    copy in memory at a time). ``on_loading(dataset, description)`` is called before reading,
    ``on_features(batch name, cached)`` before the features of a batch file are read or extracted
    (into and from ``feature_cache``, see :func:`cifarlin.features.prepare`),
    ``on_run(run, n_train)`` gives a context holding the run's (on_epoch, on_batch) callbacks,
    ``on_done(summary)`` is called after each run, in plan order. With ``figures``, each run's
    curves and weight montage are drawn into its folder; with ``compare``, ``summary.md``,
    ``summary.json`` and (with figures) ``settings.png`` compare the runs in ``compare_dir``.
    With ``background`` (and ``fork``), the figures are drawn in a child process that imported
    matplotlib while the runs trained (see :mod:`cifarlin.drawer`).

    With ``workers`` > 1 (and runs that share their data), runs train in threads, each with one
    BLAS thread, so two settings use both cores; their numbers are those of runs one after
    another, bit for bit. Ctrl-C stops every running run at its next batch, each keeping its
    last finished epoch as usual.
    """
    cache: dict[tuple[Any, ...], data.Prepared] = {}

    def prepared(cfg: TrainConfig) -> data.Prepared:
        key = data.prepared_key(cfg)
        if key not in cache:
            if on_loading is not None:
                on_loading(dataset, cfg.split.describe())
            cache.clear()  # one copy of the data in memory
            extra = {"cache_dir": feature_cache, "on_batch": on_features} if cfg.features else {}
            cache[key] = data.prepare_run(dataset, cfg, **extra)
            drawer.warm_up()  # now that the data are read: matplotlib loads while the runs train
        return cache[key]

    at_once = min(workers, sum(not r.reuse for r in plan))  # runs trained at the same time

    def train_one(planned: PlannedRun, stop: threading.Event | None = None) -> tuple[Outcome, list[str]]:
        """Train one run; ``stop`` is given when it trains beside others, which may keep the other
        cores busy (its metrics are then computed on its own thread)."""
        if planned.reuse:
            return Outcome.from_folder(planned.out, planned.config), load_history(
                planned.out / HISTORY
            ).class_names
        p = prepared(planned.config)
        context = on_run(planned, len(p.y["train"])) if on_run is not None else nullcontext((None, None))
        with context as (on_epoch, on_batch):

            def batch_done(epoch: int, j: int, n: int) -> None:
                if stop is not None and stop.is_set():
                    raise KeyboardInterrupt  # stopped from the main thread (Ctrl-C, SIGTERM)
                if on_batch is not None:
                    on_batch(epoch, j, n)

            outcome = run(
                planned.config,
                planned.out,
                p,
                start=planned.start,
                overwrite=overwrite,
                resume_hint=resume_hint,
                on_epoch=on_epoch,
                on_batch=batch_done,
                metrics_thread=stop is None or metrics_thread_fits(at_once),
            )
        return outcome, p.class_names

    def finish(outcome: Outcome, names: list[str], reused: bool) -> None:
        s = outcome.summary()
        done = [f for f in ("curves.png", "montage.png") if (outcome.out / f).exists()]
        if figures and not (reused and len(done) == 2):
            s["figures"] = [str(f) for f in drawer.training(outcome, names)]
        elif not figures and not reused:
            s["stale_figures"] = stale_figures(outcome.out)
        result.outcomes.append(outcome)
        result.summaries.append(s)
        if on_done is not None:
            on_done(s)

    result = PlanResult([], [])
    names: list[str] = []
    shared = len({data.prepared_key(r.config) for r in plan}) == 1
    # matplotlib is imported in a child while the runs train (if something will be drawn)
    with FigureDrawer(background and figures and any(not r.reuse for r in plan)) as drawer:
        if workers > 1 and shared and sum(not r.reuse for r in plan) > 1:
            names = _run_parallel(plan, workers, prepared, train_one, finish)
        else:
            for planned in plan:
                outcome, names = train_one(planned)
                finish(outcome, names, planned.reuse)
        if compare and result.outcomes:
            folder = compare_dir if compare_dir is not None else result.outcomes[0].out.parent
            result.files = write_comparison(
                folder,
                result.outcomes,
                result.summaries,
                str(dataset.folder),
                names,
                drawer=drawer if figures else None,
            )
    return result


def _run_parallel(
    plan: Sequence[PlannedRun],
    workers: int,
    prepared: Callable[[TrainConfig], data.Prepared],
    train_one: Callable[..., tuple[Outcome, list[str]]],
    finish: Callable[[Outcome, list[str], bool], None],
) -> list[str]:
    """The runs of ``plan`` in ``workers`` threads, finished (figures, callbacks) in plan order on
    this thread (matplotlib is not thread-safe). BLAS is held at one thread for the whole plan:
    runs that start and end at different times must not change each other's BLAS threads."""
    first = next(r for r in plan if not r.reuse)
    prepared(first.config)  # read once, before the threads share it
    stop = threading.Event()
    names: list[str] = []
    with one_blas_thread(), ThreadPoolExecutor(workers, thread_name_prefix="cifarlin-run") as pool:
        futures = [pool.submit(train_one, r, stop) for r in plan]
        try:
            for planned, future in zip(plan, futures, strict=True):
                outcome, names = future.result()
                finish(outcome, names, planned.reuse)
        except BaseException as e:
            stop.set()  # every running run stops at its next batch and keeps its last epoch
            for f in futures:
                f.cancel()
            messages = []
            for f in futures:
                if f.cancelled():
                    continue
                try:
                    f.result()
                except Interrupted as stopped_run:
                    messages.append(str(stopped_run))
                except BaseException:
                    pass
            if isinstance(e, KeyboardInterrupt | Interrupted) and messages:
                code = e.exit_code if isinstance(e, Interrupted) else stopped(e)[1]
                raise Interrupted("; ".join(messages), code) from None
            raise
    return names


def summary_markdown(summaries: Sequence[dict[str, Any]], data_folder: str) -> str:
    """The comparison table of several runs (``train --setting all``) in markdown."""
    lines = [
        f"Test accuracy measured by cifarlin on `{data_folder}` against the original work.",
        "",
        "| setting | lambda | eta | epochs | batch | seed | best val epoch | val acc | test acc | original "
        "| difference |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        c, ref, acc = s["config"], s["reference_test_accuracy"], s["test"]["accuracy"]
        diff = (
            f"{100 * (acc - ref):+.2f} pt"
            if ref is not None and s["comparable_to_reference"]
            else "(not comparable)"
        )
        lines.append(
            f"| {s['setting'] or '-'} | {c['lam']:g} | {c['eta']:g} | {c['epochs']} | {c['batch_size']} "
            f"| {c['seed']} "
            f"| {s['best_epoch']} | {s['val']['accuracy']:.4f} | {acc:.4f} | "
            f"{'' if ref is None else f'{ref:.4f}'} | {diff} |"
        )
    return "\n".join(lines) + "\n"


def write_comparison(
    folder: Path,
    outcomes: Sequence[Outcome],
    summaries: Sequence[dict[str, Any]],
    data_folder: str,
    class_names: Sequence[str],
    *,
    drawer: FigureDrawer | None = None,
) -> list[Path]:
    """``summary.md``, ``summary.json`` and (with a drawer for the figures) ``settings.png`` in
    ``folder``."""
    write_text(folder / "summary.md", summary_markdown(summaries, data_folder))
    write_text(
        folder / "summary.json", json.dumps(json_ready(list(summaries)), indent=2, allow_nan=False) + "\n"
    )
    files = [folder / "summary.md", folder / "summary.json"]
    if drawer is not None:
        files.append(drawer.comparison(outcomes, class_names, folder / "settings.png"))
    return files
