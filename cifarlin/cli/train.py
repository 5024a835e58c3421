"""``cifarlin train``: options -> configuration -> :func:`cifarlin.plans.experiments.run_plan` -> display."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.console import Console

from cifarlin.cli.common import DataDirOpt, JsonOpt, NoDownloadOpt, QuietOpt, ensure_data, flag, g, option
from cifarlin.cli.display import (
    add_row,
    clean,
    console,
    emit_json,
    fmt_cost,
    print_table,
    results,
    say,
    table,
    training_display,
)
from cifarlin.cli.panels import TRAIN_PANELS, in_panels
from cifarlin.cli.progress import WorkProgress
from cifarlin.cli.train_plan import PlanCommands, report_failed
from cifarlin.core.config import (
    DTYPES,
    KEEP,
    LOSS_HELP,
    LOSS_NAMES,
    SCHEDULES,
    SETTING_NAMES,
    SETTINGS,
    SOLVERS,
    TrainConfig,
    defaults,
    parse_batches,
    parse_setting,
)
from cifarlin.errors import CifarlinError

if TYPE_CHECKING:
    from cifarlin.work.summary import RunSummary

D = defaults(TrainConfig)
SETTING_CHOICES = (*map(str, SETTING_NAMES), "all")
SETTING_HELP = (
    "A reference setting of the original work (Assignment 1 of KTH's DD2424), 40 epochs of batch 100: "
    + "; ".join(f"{s}: lambda {g(v['lam'])}, eta {g(v['eta'])}" for s, v in SETTINGS.items())
    + "; all: the four, compared; bonus: the best recipe found on the validation set (all data, flips "
    "and 1-pixel shifts, a cosine schedule; about 0.42)."
)


def _summary_table(s: RunSummary) -> Any:
    from cifarlin.core.losses import LOSSES

    t = table("set", "cost", LOSSES[s.config.loss].label, "accuracy", left=("set",))
    for name, m in (("train", s.train), ("val", s.val), ("test", s.test)):
        add_row(t, name, fmt_cost(m.cost), fmt_cost(m.loss), f"{m.accuracy:.4f}")
    return t


def _print_summary(c: Console, s: RunSummary) -> None:
    cfg = s.config
    how = "reused, " if s.reused else ""
    steps = "solved" if cfg.solver == "ridge" else f"{s.epochs} epochs"
    c.print(f"[bold]{clean(str(s.run_dir))}[/]: {how}{steps}", soft_wrap=True)
    print_table(c, _summary_table(s))
    ref = s.reference_test_accuracy
    if ref is None:
        ref_text = ""
    elif s.comparable_to_reference:
        ref_text = f"; the original work reports {ref:.4f} ({100 * (s.test.accuracy - ref):+.2f} pt)"
    else:
        ref_text = f"; the original work reports {ref:.4f} for the unchanged setting"
    timing = (
        ""
        if s.reused
        else (
            f"; {'solving' if cfg.solver == 'ridge' else 'training loop'} "
            f"{s.training_seconds:.2f} s (and {s.checkpoint_seconds:.2f} s writing checkpoints)"
        )
    )
    if cfg.solver == "ridge":
        cands = s.lambda_search
        span = f"{cands[0].lam:g} to {cands[-1].lam:g}" if cands else ""
        how = f"chosen on the validation set from {len(cands)} values, {span}" if cands else "as given"
        if not cands and cfg.choose_lam:
            how = "chosen on the validation set"
        best = f"ridge solution with lambda {cfg.lam:.4g} ({how})"
    else:
        best = f"best validation accuracy {s.best_val_accuracy:.4f} at epoch {s.best_epoch}"
    say(c, f"test accuracy {s.test.accuracy:.4f}{ref_text}; {best}{timing}")
    if s.stopped_early:
        say(
            c,
            f"stopped early after epoch {s.epochs}: {cfg.patience} epochs without a better validation "
            "accuracy",
        )
    if cfg.keep == "best":
        say(c, f"model.h5 holds epoch {s.model_epoch}, the best by validation accuracy")
    if not s.reused:
        files = [str(s.model_file), str(s.history_file), str(s.checkpoint_file), *(s.figures or ())]
        say(c, "wrote " + ", ".join(files))
    if s.stale_figures:
        say(
            c,
            f"note: {', '.join(s.stale_figures)} show an earlier epoch; cifarlin visualize {s.run_dir} "
            "redraws them",
        )


def _comparison_table(summaries: list[RunSummary]) -> Any:
    """The runs of --setting all side by side, in 80 columns."""
    t = table(
        "setting", "lambda", "eta", "best ep", "val acc", "test acc", "original", "diff", left=("setting",)
    )
    for s in summaries:
        c, ref, acc = s.config, s.reference_test_accuracy, s.test.accuracy
        diff = f"{100 * (acc - ref):+.2f} pt" if ref is not None and s.comparable_to_reference else "-"
        original = f"{ref:.4f}" if ref is not None and s.comparable_to_reference else "-"
        add_row(
            t,
            s.setting,
            g(c.lam),
            g(c.eta),
            s.best_epoch,
            f"{s.val.accuracy:.4f}",
            f"{acc:.4f}",
            original,
            diff,
        )
    return t


def _config_options(ctx: typer.Context) -> dict[str, Any]:
    """The options given that set the TrainConfig field of their name ({field: value}), in the order
    the command declares them, text parsed into the field's value: an option added to ``train``
    for a field reaches the configuration without a change here. ``--setting`` picks the base
    configuration instead (see :func:`cifarlin.plans.experiments.plan_runs`)."""
    from cifarlin.work.folder import start_path

    parse: dict[str, Callable[[Any], Any]] = {
        "features": lambda path: str(path.expanduser().resolve()),
        "init": start_path,
        "train_batches": parse_batches,
    }
    config_fields = {f.name for f in fields(TrainConfig)} - {"setting"}
    given = {}
    for p in ctx.command.params:  # the declared order (ctx.params follows the command line's)
        value = ctx.params.get(p.name)
        if p.name in config_fields and value is not None:
            given[p.name] = parse[p.name](value) if p.name in parse else value
    return given


def train(
    ctx: typer.Context,
    setting: Annotated[
        Literal[SETTING_CHOICES] | None,  # type: ignore[valid-type]
        option("--setting", metavar="SETTING", help=SETTING_HELP),
    ] = None,
    lam: Annotated[
        float | None, option("--lam", metavar="LAMBDA", help="Penalty weight lambda.", default=g(D.lam))
    ] = None,
    eta: Annotated[
        float | None, option("--eta", metavar="ETA", help="Learning rate.", default=g(D.eta))
    ] = None,
    loss: Annotated[
        Literal[LOSS_NAMES] | None,  # type: ignore[valid-type]
        option(
            "--loss",
            metavar="NAME",
            help=LOSS_HELP + "; a setting keeps its lambda and eta.",
            default=D.loss,
        ),
    ] = None,
    solver: Annotated[
        Literal[SOLVERS] | None,  # type: ignore[valid-type]
        option(
            "--solver",
            metavar="NAME",
            help="gd: mini-batch gradient descent; ridge: the exact optimum of the squared loss (mse) in "
            "one step, from the training images' exact statistics with --augment's views all folded in, "
            "lambda chosen on the validation set unless --lam is given.",
            choices=SOLVERS,
            default=D.solver,
        ),
    ] = None,
    features: Annotated[
        Path | None,
        option(
            "--features",
            metavar="FILE",
            help="Train on the k-means features of this feature map (cifarlin features fit) instead of "
            "pixels; the model file carries the map. Features are cached per batch file.",
        ),
    ] = None,
    init: Annotated[
        Path | None,
        option(
            "--init",
            metavar="MODEL",
            help="Start from this trained model's weights (a model.h5 or its run folder) instead of random "
            "ones, re-expressed for this run's normalisation (same scores on every image); a squared-loss "
            "model (e.g. --solver ridge) started with --loss l2svm is mapped onto its -1/+1 targets. "
            "The same inputs only: pixels, or features of the same map.",
        ),
    ] = None,
    schedule: Annotated[
        Literal[SCHEDULES] | None,  # type: ignore[valid-type]
        option(
            "--schedule",
            metavar="NAME",
            help="The learning rate over the run: constant; step (times --decay every --decay-every epochs); "
            "cosine (down to --eta-min); cyclic (from --eta-min up to --eta-max in --step-size updates and "
            "down again).",
            default=D.schedule,
        ),
    ] = None,
    decay: Annotated[
        float | None, option("--decay", metavar="FACTOR", help="step: eta's factor.", default=g(D.decay))
    ] = None,
    decay_every: Annotated[
        int | None,
        option("--decay-every", metavar="EPOCHS", help="step: epochs between decays.", default=D.decay_every),
    ] = None,
    eta_min: Annotated[
        float | None,
        option("--eta-min", metavar="ETA", help="cosine, cyclic: the lowest eta.", default=g(D.eta_min)),
    ] = None,
    eta_max: Annotated[
        float | None, option("--eta-max", metavar="ETA", help="cyclic: the highest eta.", default="--eta")
    ] = None,
    step_size: Annotated[
        int | None,
        option(
            "--step-size", metavar="UPDATES", help="cyclic: updates per half cycle.", default="two epochs"
        ),
    ] = None,
    augment: Annotated[
        str | None,
        option(
            "--augment",
            metavar="VIEWS",
            help="Random views of each training image, drawn afresh every epoch: flip (mirrored left-right "
            "with probability 1/2), translate:K (shifted by up to K pixels in x and y, edges repeated), or "
            "both (flip,translate:2); augmented in pixel space, then normalised.",
            default=D.augment,
        ),
    ] = None,
    keep: Annotated[
        Literal[KEEP] | None,  # type: ignore[valid-type]
        option(
            "--keep",
            metavar="WHICH",
            help="What model.h5 holds: the last epoch, or the best by validation accuracy.",
            choices=KEEP,
            default=D.keep,
        ),
    ] = None,
    patience: Annotated[
        int | None,
        option(
            "--patience",
            metavar="EPOCHS",
            help="Stop after this many epochs without a better validation accuracy.",
        ),
    ] = None,
    epochs: Annotated[int | None, option("--epochs", metavar="N", help="Epochs.", default=D.epochs)] = None,
    batch_size: Annotated[
        int | None, option("--batch-size", metavar="N", help="Images per batch.", default=D.batch_size)
    ] = None,
    seed: Annotated[
        int | None,
        option("--seed", metavar="N", help="Seed of the initial W, b and of shuffling.", default=D.seed),
    ] = None,
    shuffle: Annotated[
        bool | None,
        typer.Option(
            "--shuffle/--no-shuffle",
            metavar="",
            help="Shuffle the batches each epoch. [default: no-shuffle]",
            show_default=False,
        ),
    ] = None,
    train_batches: Annotated[
        str | None,
        option("--train-batches", metavar="LIST", help="Training batches, e.g. 1-5 or 1,3.", default="1"),
    ] = None,
    val_size: Annotated[
        int | None,
        option(
            "--val-size", metavar="N", help="Validate on the last N training images instead of data_batch_2."
        ),
    ] = None,
    dtype: Annotated[
        Literal[DTYPES] | None,  # type: ignore[valid-type]
        option(
            "--dtype", metavar="TYPE", help="Precision of data and weights.", choices=DTYPES, default=D.dtype
        ),
    ] = None,
    out: Annotated[
        Path | None,
        option(
            "--out",
            "-o",
            metavar="DIR",
            help="Run folder. Default: outputs/setting-N (setting-N-LOSS for another loss), or a new "
            "outputs/run-DATE-TIME; with --setting all, the parent of setting-1..4.",
        ),
    ] = None,
    resume: Annotated[
        bool, flag("--resume", help="Continue the run in --out from its checkpoint.h5.")
    ] = False,
    overwrite: Annotated[bool, flag("--overwrite", help="Replace the run in --out.")] = False,
    no_plots: Annotated[
        bool, flag("--no-plots", help="Do not draw the curves and the weight montage.")
    ] = False,
    workers: Annotated[
        int | None,
        option(
            "--workers",
            metavar="N",
            help="Runs trained at the same time, each on one core.",
            default="2 with --setting all (1 on one core), else 1",
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    no_download: NoDownloadOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train with mini-batch gradient descent (or solve exactly); checkpoints and history go to HDF5.

    Writes model.h5, checkpoint.h5 (at most once a second, and at the end) and history.h5 into the
    run folder. Ctrl-C keeps the last checkpoint; --resume continues it exactly. A folder that
    holds a complete run with the same parameters is reused, one with other parameters is refused
    (--resume, --overwrite).

    **Example:** cifarlin train --setting 2
    """
    from cifarlin.plans import experiments

    given = _config_options(ctx)
    out = out.expanduser() if out is not None else None
    c = console()
    plan = experiments.plan_runs(
        setting if setting == "all" else (parse_setting(setting) if setting else None),
        given,
        out=out,
        resume=resume,
        overwrite=overwrite,
        on_notice=lambda m: say(c, f"note: {m}"),
    )
    data_opt = f" --data-dir {data_dir}" if data_dir is not None else ""
    hint = None if setting == "all" else f"cifarlin train --out {plan[0].out} --resume{data_opt}"

    def overwrite_needed() -> bool:
        """Whether the same command without --overwrite would be refused (runs it was to replace)."""
        try:
            experiments.plan_runs("all", given, out=out, overwrite=False)
        except CifarlinError:
            return True
        return False

    commands = PlanCommands(ctx, overwrite_needed)
    dataset = ensure_data(ctx, data_dir, no_download, quiet)
    res = results(json_out)

    def on_loading(ds: Any, what: str) -> None:
        if not quiet:
            say(c, f"loading CIFAR-10 from {ds.folder}: {what}")

    def on_features(name: str, cached: bool) -> Any:
        if not cached:  # a bar with the images done and the time left (plain lines in a log)
            return work.task(f"features of {name}", "images", verb="extracted")
        if not quiet:
            say(c, f"features of {name}: from the cache")

    def on_done(s: RunSummary) -> None:
        _print_summary(display.through(res), s)
        for warning in s.warnings:
            say(c, f"warning: {warning}")

    n_workers = workers if workers is not None else (min(2, os.cpu_count() or 1) if setting == "all" else 1)
    with training_display(c, quiet, labelled=n_workers > 1) as display, WorkProgress(c, quiet) as work:

        def on_run(p: experiments.PlannedRun, n_train: int) -> Any:
            cfg = p.config
            what = f"setting {cfg.setting}" if cfg.setting else "run"
            if not quiet:
                resumed = f", resuming after epoch {p.first_epoch}" if p.start is not None else ""
                c.print(
                    f"[bold]{clean(what)}[/]: {cfg.describe()}{resumed} -> {clean(p.out)}", soft_wrap=True
                )
                if cfg.solver == "ridge" and cfg.features is not None:  # minutes without a bar
                    say(
                        c,
                        "solving: one eigendecomposition of the features' Gram matrix (minutes for 10,000+)",
                    )
            return display.run(what, cfg.epochs, p.first_epoch, n_train, cfg.batch_size)

        failed: experiments.PlanFailed | None = None
        try:
            result = experiments.run_plan(
                plan,
                dataset,
                overwrite=overwrite,
                resume_hint=hint,
                commands=commands,
                figures=not no_plots,
                compare=setting == "all",
                compare_dir=out or Path("outputs"),
                workers=n_workers,
                on_loading=on_loading,
                on_features=on_features,
                feature_cache=ctx.obj.feature_cache,
                on_run=on_run,
                on_done=on_done,
            )
        except experiments.PlanFailed as e:  # runs of --setting all did not finish; the others did
            result, failed = e.result, e
    if setting == "all" and result.summaries:
        say(res, "the reference settings against the original work's test accuracy:")
        print_table(res, _comparison_table(result.summaries))
        say(res, "wrote " + ", ".join(str(f) for f in result.files))
    if failed is not None:
        report_failed(ctx, failed, result, json_out)
    if json_out:
        if setting == "all":
            emit_json(
                {"runs": [s.to_json() for s in result.summaries], "files": [str(f) for f in result.files]}
            )
        else:
            emit_json(result.summaries[0].to_json())


in_panels(train, TRAIN_PANELS)
