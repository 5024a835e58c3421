"""Workflows over run folders: plan the runs of a ``train`` command, run a plan, write the
comparison of several runs, and draw the figures of a run folder.

The command line turns its options into a call here and renders what comes back; everything
in this module works, and is tested, without it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cifarlin import data
from cifarlin.checkpoint import Snapshot, load_history, load_snapshot
from cifarlin.config import FIGURES, SETTINGS, FigureRequest, TrainConfig
from cifarlin.errors import ConfigError, ModelFileError, RunError, WriteError, bad_value
from cifarlin.evaluation import evaluate_split
from cifarlin.files import check_path, write_text
from cifarlin.history import TrainState
from cifarlin.losses import LOSSES
from cifarlin.runs import (
    CHECKPOINT,
    Outcome,
    check_run_folder,
    default_out,
    recover,
    resume_point,
    run,
    run_files,
)

EpochCallback = Callable[[TrainState], None]
BatchCallback = Callable[[int, int, int], None]


@dataclass
class PlannedRun:
    """One run of a plan: its configuration, its folder, and the checkpoint it continues."""

    config: TrainConfig
    out: Path
    start: Snapshot | None = None

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

    ``setting``: a reference setting (1-4), ``'all'`` for the four into ``out`` (default
    ``root``)/setting-N, or None for a run of ``overrides`` alone. With ``resume``, runs that have
    a checkpoint continue from it (for ``'all'``, the others start afresh); ``overrides`` must
    then agree with the checkpoint, but for ``epochs``. Nothing is written, except that a run
    an interrupted ``--overwrite`` set aside is put back first (see :func:`runs.recover`).
    """
    if setting == "all":
        configs = [TrainConfig.for_setting(s, **overrides) for s in SETTINGS]
        outs = [default_out(c, out or root) for c in configs]
    else:
        if resume and out is None and setting is None:
            raise ConfigError("resume=True needs the run folder (out=DIR) or a setting to find the run")
        c = (
            TrainConfig.for_setting(int(setting), **overrides)
            if setting is not None
            else TrainConfig(**overrides)
        )
        configs, outs = [c], [out or default_out(c, root)]
    plan = []
    for c, o in zip(configs, outs, strict=True):
        check_path(o)
        if (done := recover(o)) is not None and on_notice is not None:
            on_notice(done)
        resume_this = resume and (setting != "all" or (o / CHECKPOINT).is_file())
        check_run_folder(o, resume=resume_this, overwrite=overwrite)
        if resume_this:
            requested = {**overrides, "setting": c.setting} if setting is not None else overrides
            c, start = resume_point(o, requested)
            plan.append(PlannedRun(c, o, start))
        else:
            plan.append(PlannedRun(c, o))
    return plan


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
    on_loading: Callable[[data.Dataset, str], None] | None = None,
    on_run: Callable[
        [PlannedRun, int], AbstractContextManager[tuple[EpochCallback | None, BatchCallback | None]]
    ]
    | None = None,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> PlanResult:
    """Train the runs of ``plan`` one after another.

    The data are read and normalised once for all runs that share a split and precision (one
    copy in memory at a time). ``on_loading(dataset, description)`` is called before reading,
    ``on_run(run, n_train)`` gives a context holding the run's (on_epoch, on_batch) callbacks,
    ``on_done(summary)`` is called after each run. With ``figures``, each run's curves and weight
    montage are drawn into its folder; with ``compare``, ``summary.md``, ``summary.json`` and
    (with figures) ``settings.png`` compare the runs in ``compare_dir``.
    """
    cache: dict[tuple[Any, str], data.Prepared] = {}

    def prepared(cfg: TrainConfig) -> data.Prepared:
        key = (cfg.split, cfg.dtype)
        if key not in cache:
            if on_loading is not None:
                on_loading(dataset, cfg.split.describe())
            cache.clear()  # one copy of the data in memory
            cache[key] = data.prepare(dataset, cfg.split, dtype=np.dtype(cfg.dtype))
        return cache[key]

    result = PlanResult([], [])
    for planned in plan:
        p = prepared(planned.config)
        context = on_run(planned, len(p.y["train"])) if on_run is not None else nullcontext((None, None))
        with context as (on_epoch, on_batch):
            outcome = run(
                planned.config,
                planned.out,
                p,
                start=planned.start,
                overwrite=overwrite,
                resume_hint=resume_hint,
                on_epoch=on_epoch,
                on_batch=on_batch,
            )
        s = outcome.summary()
        if figures:
            s["figures"] = [str(f) for f in draw_training_figures(outcome, p.class_names)]
        result.outcomes.append(outcome)
        result.summaries.append(s)
        if on_done is not None:
            on_done(s)
    if compare and result.outcomes:
        folder = compare_dir if compare_dir is not None else result.outcomes[0].out.parent
        names = prepared(plan[0].config).class_names if figures else []
        result.files = write_comparison(
            folder, result.outcomes, result.summaries, str(dataset.folder), names, figures=figures
        )
    return result


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
    figures: bool = True,
) -> list[Path]:
    """``summary.md``, ``summary.json`` and (with figures) ``settings.png`` in ``folder``."""
    write_text(folder / "summary.md", summary_markdown(summaries, data_folder))
    write_text(folder / "summary.json", json.dumps(list(summaries), indent=2) + "\n")
    files = [folder / "summary.md", folder / "summary.json"]
    if figures:
        from cifarlin import plots

        plots.use_backend()
        runs_ = [(o.config, o.state.history, o.state.W) for o in outcomes]
        files.append(plots.save(plots.comparison(runs_, class_names), folder / "settings.png"))
    return files


def draw_training_figures(outcome: Outcome, class_names: Sequence[str]) -> list[Path]:
    """``curves.png`` and ``montage.png`` into the run's folder."""
    from cifarlin import plots

    plots.use_backend()
    cfg, st = outcome.config, outcome.state
    return [
        plots.save(plots.curves(st.history, cfg), outcome.out / "curves.png"),
        plots.save(
            plots.montage(st.W, class_names, f"weights as images, {plots.run_title(cfg)}"),
            outcome.out / "montage.png",
        ),
    ]


def draw_figures(
    target: Path,
    request: FigureRequest,
    dataset: Callable[[], data.Dataset],
    *,
    on_notice: Callable[[str], None] | None = None,
) -> list[Path]:
    """Draw ``request.kinds`` for the run folder or model file ``target``; returns the files.

    ``dataset()`` is called only when a figure needs images (confusion, samples). Asked for every
    kind, a model file without a history gets every figure but the curves (with a notice).
    """
    from cifarlin import plots

    if request.out is not None:
        check_path(request.out)
        if request.out.exists() and not request.out.is_dir():
            raise bad_value("out", str(request.out), "exists and is not a folder")
    notice = on_notice or (lambda m: None)
    files = run_files(target)
    kinds = list(request.kinds)
    if set(kinds) == set(FIGURES) and files.history is None and not Path(target).is_dir():
        kinds.remove("curves")
        notice(f"no history.h5 beside {target}, so no curves")
    if "curves" in kinds and files.history is None:
        raise RunError(
            f"{files.folder}: no history.h5 for the curves (cifarlin train writes it); "
            "draw montage, confusion or samples for a model alone"
        )
    needs_model = [k for k in kinds if k != "curves"]
    if needs_model and files.model is None:
        raise ModelFileError(f"{files.folder}: no model.h5 or checkpoint.h5 to draw from")
    snap = load_snapshot(files.model) if needs_model and files.model is not None else None
    hist = load_history(files.history) if "curves" in kinds and files.history is not None else None
    out_dir = request.out or files.folder
    plots.use_backend(request.show)
    if request.show and not plots.can_show():
        notice("no display here, so no window opens; the files are written as usual")

    def name(stem: str) -> Path:
        return out_dir / f"{stem}.{request.format}"

    figs = []
    if hist is not None:
        figs.append((plots.curves(hist.history, hist.config), name("curves")))
    if snap is not None and "montage" in kinds:
        title = f"weights as images, {plots.run_title(snap.config)}"
        figs.append((plots.montage(snap.state.W, snap.class_names, title), name("montage")))
    if snap is not None and "probs" in kinds and LOSSES[snap.config.loss].probs is None:
        kinds.remove("probs")
        notice(f"a {snap.config.loss} model gives scores, not probabilities, so no probability histograms")
    if snap is not None and {"confusion", "samples", "probs"} & set(kinds):
        split = request.split
        ev = evaluate_split(snap, dataset(), split)
        label = f"{plots.run_title(snap.config)}; {split} split"
        if "confusion" in kinds:
            figs.append((plots.confusion(ev.confusion, snap.class_names, label), name(f"confusion-{split}")))
        if "samples" in kinds:
            k = min(request.n_samples, len(ev.labels))
            fig = plots.samples(
                ev.images[:k],
                ev.labels[:k],
                ev.predictions[:k],
                snap.class_names,
                f"first {k} {split} images",
            )
            figs.append((fig, name(f"samples-{split}")))
        if "probs" in kinds and ev.true_class_prob is not None:
            title = f"probability of the true class, {label}"
            fig = plots.probabilities(
                ev.true_class_prob, ev.predictions == ev.labels, snap.config.loss, title
            )
            figs.append((fig, name(f"probs-{split}")))
    if request.show and plots.can_show():
        plots.show()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)  # only now: a failure above leaves no empty folder
    except OSError as e:
        raise WriteError(f"{out_dir}: cannot create the folder ({e.strerror or e})") from None
    return [plots.save(fig, path, request.format, request.dpi) for fig, path in figs]
