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
from dataclasses import replace
from pathlib import Path
from typing import Any

from cifarlin.core.config import SETTINGS, TrainConfig, solver_defaults
from cifarlin.core.history import TrainState
from cifarlin.core.kmeans import Progress
from cifarlin.core.prepared import Prepared
from cifarlin.core.threads import metrics_thread_fits, one_blas_thread
from cifarlin.data.cifar import Dataset
from cifarlin.errors import ConfigError, DivergenceError, Interrupted, ModelFileError, bad_value
from cifarlin.figures.drawer import FigureDrawer
from cifarlin.figures.make import stale_figures
from cifarlin.plans.ending import (
    CallCommands,
    Commands,
    Failed,
    Halted,
    PlanFailed,
    PlanResult,
    failed_message,
    stop_error,
)
from cifarlin.plans.held import PlannedRun, in_folder, resumed
from cifarlin.store.checkpoint import load_history
from cifarlin.store.files import check_path, json_ready, write_text
from cifarlin.work.folder import CHECKPOINT, HISTORY, check_run_folder, default_out, recover
from cifarlin.work.prepare import prepare_run, prepared_key
from cifarlin.work.runs import Outcome, check_outside, pin_start, run
from cifarlin.work.summary import RunSummary

EpochCallback = Callable[[TrainState], None]
BatchCallback = Callable[[int, int, int], None]
Trained = Outcome | Failed  # what became of a run of a plan


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
    an interrupted ``--overwrite`` set aside is put back first (see :func:`cifarlin.work.folder.recover`).

    A folder that holds a complete run of the same configuration is reused; one that holds
    another run is refused, naming the settings that differ (:func:`cifarlin.plans.held.refusal`).
    For ``'all'``, what an earlier command left is taken up where it stopped, so that the same
    command run again finishes it: a run stopped part-way with a checkpoint of the same
    configuration is resumed, and a run that diverged or whose files cannot be read is planned
    with its ``problem`` (:func:`run_plan` trains the others and reports it).
    """
    if setting is not None and overrides.get("solver", "gd") != "gd":
        raise bad_value(
            "solver", overrides["solver"], "the settings are gradient-descent recipes: leave --setting out"
        )
    overrides = solver_defaults(overrides)
    several = setting == "all"
    if several:
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
        from cifarlin.store.featuremap import load

        fmap = load(Path(configs[0].features))
    if configs[0].init is not None:
        check_outside(configs[0].init, outs)
    pinned: dict[Any, str] = {}
    for c, o in zip(configs, outs, strict=True):
        check_path(o)
        requested = {**overrides, "setting": c.setting} if setting is not None else overrides
        resume_this = resume and (not several or (o / CHECKPOINT).is_file())
        if not resume_this:  # so is a bad or mismatched start model
            c = pin_start(c, fmap, pinned)
        if (put_back := recover(o)) is not None:
            notice(put_back)
        if resume_this or overwrite:
            check_run_folder(o, resume=resume_this, overwrite=overwrite)
        if resume_this:
            plan.append(resumed(c, o, requested, several, notice))
        elif overwrite:
            plan.append(PlannedRun(c, o))
        else:
            plan.append(in_folder(c, o, requested, several, notice))
    return plan


def run_plan(
    plan: Sequence[PlannedRun],
    dataset: Dataset,
    *,
    overwrite: bool = False,
    resume_hint: str | None = None,
    commands: Commands | None = None,
    figures: bool = True,
    compare: bool = False,
    compare_dir: Path | None = None,
    workers: int = 1,
    on_loading: Callable[[Dataset, str], None] | None = None,
    on_run: Callable[
        [PlannedRun, int], AbstractContextManager[tuple[EpochCallback | None, BatchCallback | None]]
    ]
    | None = None,
    on_done: Callable[[RunSummary], None] | None = None,
    feature_cache: Path | None = None,
    on_features: Callable[[str, bool], Progress | None] | None = None,
    background: bool = True,
) -> PlanResult:
    """Train the runs of ``plan``: one after another, or ``workers`` at a time.

    The data are read and normalised once for all runs that share a split and precision (one
    copy in memory at a time). ``on_loading(dataset, description)`` is called before reading,
    ``on_features(batch name, cached)`` before the features of a batch file are read or extracted
    (into and from ``feature_cache``, see :func:`cifarlin.features.prepare.prepare_features`; it
    may return an ``on_rows(done, n)`` that follows the extraction),
    ``on_run(run, n_train)`` gives a context holding the run's (on_epoch, on_batch) callbacks,
    ``on_done(summary)`` is called after each run, in plan order. With ``figures``, each run's
    curves and weight montage are drawn into its folder; with ``compare``, ``summary.md``,
    ``summary.json`` and (with figures) ``settings.png`` compare the runs in ``compare_dir``.
    With ``background`` (where child processes can be had), the figures are drawn in a child
    process that imported matplotlib while the runs trained (see :mod:`cifarlin.figures.drawer`).

    With ``workers`` > 1 (and runs that share their data), runs train in threads, each with one
    BLAS thread, so two settings use both cores; their numbers are those of runs one after
    another, bit for bit. Ctrl-C stops every running run at its next batch, each keeping its
    last finished epoch as usual.

    A plan of several runs goes on past a run that diverges or whose files cannot be read (and
    past those :func:`plan_runs` found so): the others train and are compared, then
    :class:`PlanFailed` names each such run and the command that tries it again (``commands``).
    Ctrl-C, SIGTERM or an error stops the plan with one message that says where each running run
    stopped and, once, the command that continues it all (:func:`cifarlin.plans.ending.stop_error`).
    A plan of one run raises as the run does (with ``resume_hint`` in its message).
    """
    cache: dict[tuple[Any, ...], Prepared] = {}
    several = len(plan) > 1

    def prepared(cfg: TrainConfig) -> Prepared:
        key = prepared_key(cfg)
        if key not in cache:
            if on_loading is not None:
                on_loading(dataset, cfg.split.describe())
            cache.clear()  # one copy of the data in memory
            extra = {"cache_dir": feature_cache, "on_batch": on_features} if cfg.features else {}
            cache[key] = prepare_run(dataset, cfg, **extra)
            drawer.warm_up()  # now that the data are read: matplotlib loads while the runs train
        return cache[key]

    trained = [r for r in plan if r.trains]
    at_once = min(workers, len(trained))  # runs trained at the same time

    def train_one(planned: PlannedRun, stop: threading.Event | None = None) -> tuple[Trained, list[str]]:
        """Train one run; ``stop`` is given when it trains beside others, which may keep the other
        cores busy (its metrics are then computed on its own thread)."""
        if planned.problem is not None:
            return Failed(planned, planned.problem, planned.diverged), []
        if planned.reuse:
            try:
                return Outcome.from_folder(planned.out, planned.config), load_history(
                    planned.out / HISTORY
                ).class_names
            except ModelFileError as e:
                if not several:
                    raise
                return Failed(planned, str(e), diverged=False), []
        p = prepared(planned.config)
        context = on_run(planned, len(p.y["train"])) if on_run is not None else nullcontext((None, None))
        try:
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
        except DivergenceError as e:
            if not several:
                raise
            c = planned.config
            kept = f"; {e.kept}" if e.kept else ""
            why = f"{planned.out} diverged in epoch {e.epoch} (eta={c.eta!r}, lam={c.lam!r}){kept}"
            return Failed(planned, why, diverged=True), []
        return outcome, p.class_names

    def finish(got: Trained, names: list[str], reused: bool) -> None:
        if isinstance(got, Failed):
            result.failed.append(got)
            return
        s = got.summary()
        done = [f for f in ("curves.png", "montage.png") if (got.out / f).exists()]
        if figures and not (reused and len(done) == 2):
            s = replace(s, figures=tuple(str(f) for f in drawer.training(got, names)))
        elif not figures and not reused:
            s = replace(s, stale_figures=tuple(stale_figures(got.out)))
        result.outcomes.append(got)
        result.summaries.append(s)
        if on_done is not None:
            on_done(s)

    result = PlanResult([], [])
    names: list[str] = []
    shared = len({prepared_key(r.config) for r in plan}) == 1
    # matplotlib is imported in a child while the runs train (if something will be drawn)
    with FigureDrawer(background and figures and bool(trained)) as drawer:
        try:
            if workers > 1 and shared and len(trained) > 1:
                names = _run_parallel(plan, workers, prepared, train_one, finish)
            else:
                for planned in plan:
                    got, got_names = train_one(planned)
                    names = got_names or names
                    finish(got, got_names, planned.reuse)
            if compare and result.outcomes:
                folder = compare_dir if compare_dir is not None else result.outcomes[0].out.parent
                result.files = write_comparison(
                    folder,
                    result.outcomes,
                    result.summaries,
                    str(dataset.folder),
                    names,
                    drawer=drawer if figures else None,
                    left_out=[f.message for f in result.failed],
                )
        except BaseException as e:
            if not several:
                raise
            cause, stopped = (e.cause, e.stopped) if isinstance(e, Halted) else (e, [])
            raise stop_error(cause, stopped, plan, commands or CallCommands()) from None
    if result.failed:
        raise PlanFailed(failed_message(result.failed, commands or CallCommands()), result)
    return result


def _run_parallel(
    plan: Sequence[PlannedRun],
    workers: int,
    prepared: Callable[[TrainConfig], Prepared],
    train_one: Callable[..., tuple[Trained, list[str]]],
    finish: Callable[[Trained, list[str], bool], None],
) -> list[str]:
    """The runs of ``plan`` in ``workers`` threads, finished (figures, callbacks) in plan order on
    this thread (matplotlib is not thread-safe). BLAS is held at one thread for the whole plan:
    runs that start and end at different times must not change each other's BLAS threads.

    A failure (Ctrl-C, SIGTERM, an error) stops every running run at its next batch; it is raised
    as :class:`Halted`, with the runs that stopped."""
    first = next(r for r in plan if r.trains)
    prepared(first.config)  # read once, before the threads share it
    stop = threading.Event()
    names: list[str] = []
    with one_blas_thread(), ThreadPoolExecutor(workers, thread_name_prefix="cifarlin-run") as pool:
        futures = [pool.submit(train_one, r, stop) for r in plan]
        try:
            for planned, future in zip(plan, futures, strict=True):
                got, got_names = future.result()
                names = got_names or names
                finish(got, got_names, planned.reuse)
        except BaseException as e:
            stop.set()  # every running run stops at its next batch and keeps its last epoch
            for f in futures:
                f.cancel()
            stopped = []
            for f in futures:
                if f.cancelled():
                    continue
                try:
                    f.result()
                except Interrupted as stopped_run:
                    if stopped_run is not e:
                        stopped.append(stopped_run)
                except BaseException:
                    pass
            raise Halted(e, stopped) from None
    return names


def summary_markdown(summaries: Sequence[RunSummary], data_folder: str) -> str:
    """The comparison table of several runs (``train --setting all``) in markdown."""
    lines = [
        f"Test accuracy measured by cifarlin on `{data_folder}` against the original work.",
        "",
        "| setting | lambda | eta | epochs | batch | seed | best val epoch | val acc | test acc | original "
        "| difference |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        c, ref, acc = s.config, s.reference_test_accuracy, s.test.accuracy
        comparable = ref is not None and s.comparable_to_reference
        diff = f"{100 * (acc - ref):+.2f} pt" if comparable else "(not comparable)"
        lines.append(
            f"| {s.setting or '-'} | {c.lam:g} | {c.eta:g} | {c.epochs} | {c.batch_size} "
            f"| {c.seed} "
            f"| {s.best_epoch} | {s.val.accuracy:.4f} | {acc:.4f} | "
            f"{'' if ref is None else f'{ref:.4f}'} | {diff} |"
        )
    return "\n".join(lines) + "\n"


def write_comparison(
    folder: Path,
    outcomes: Sequence[Outcome],
    summaries: Sequence[RunSummary],
    data_folder: str,
    class_names: Sequence[str],
    *,
    drawer: FigureDrawer | None = None,
    left_out: Sequence[str] = (),
) -> list[Path]:
    """``summary.md``, ``summary.json`` and (with a drawer for the figures) ``settings.png`` in
    ``folder``; ``left_out``: why runs of the plan are not among them, a line each in summary.md."""
    text = summary_markdown(summaries, data_folder)
    if left_out:
        text += "\nNot in the table:\n\n" + "".join(f"- {line}\n" for line in left_out)
    write_text(folder / "summary.md", text)
    runs = json_ready([s.to_json() for s in summaries])
    write_text(folder / "summary.json", json.dumps(runs, indent=2, allow_nan=False) + "\n")
    files = [folder / "summary.md", folder / "summary.json"]
    if drawer is not None:
        files.append(drawer.comparison(outcomes, class_names, folder / "settings.png"))
    return files
