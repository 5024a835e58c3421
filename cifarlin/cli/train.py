"""``cifarlin train``: options -> configuration -> :func:`cifarlin.experiments.run_plan` -> display."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console

from cifarlin.cli.common import DataDirOpt, JsonOpt, NoDownloadOpt, QuietOpt, ensure_data
from cifarlin.cli.display import (
    add_row,
    clean,
    console,
    emit_json,
    fmt_cost,
    print_table,
    say,
    table,
    train_progress,
)
from cifarlin.config import DTYPES, KEEP, LOSS_NAMES, SCHEDULES, SETTINGS, TrainConfig, parse_batches

DEFAULTS = TrainConfig()
SETTING_CHOICES = (*map(str, SETTINGS), "all")


def _summary_table(s: dict[str, Any]) -> Any:
    from cifarlin.losses import LOSSES

    t = table("set", "cost", LOSSES[s["config"]["loss"]].label, "accuracy", left=("set",))
    for name in ("train", "val", "test"):
        m = s[name]
        add_row(t, name, fmt_cost(m["cost"]), fmt_cost(m["loss"]), f"{m['accuracy']:.4f}")
    return t


def _print_summary(c: Console, s: dict[str, Any]) -> None:
    c.print(f"[bold]{clean(s['run_dir'])}[/]: {s['epochs']} epochs", soft_wrap=True)
    print_table(c, _summary_table(s))
    ref = s["reference_test_accuracy"]
    if ref is None:
        ref_text = ""
    elif s["comparable_to_reference"]:
        ref_text = f"; the original work reports {ref:.4f} ({100 * (s['test']['accuracy'] - ref):+.2f} pt)"
    else:
        ref_text = f"; the original work reports {ref:.4f} for the unchanged setting (40 epochs, batch 100)"
    say(
        c,
        f"test accuracy {s['test']['accuracy']:.4f}{ref_text}; best validation accuracy "
        f"{s['best_val_accuracy']:.4f} at epoch {s['best_epoch']}; training loop "
        f"{s['seconds']['training']:.2f} s (and {s['seconds']['checkpoints']:.2f} s writing checkpoints)",
    )
    if s["stopped_early"]:
        say(
            c,
            f"stopped early after epoch {s['epochs']}: {s['config']['patience']} epochs without a better "
            "validation accuracy",
        )
    if s["config"]["keep"] == "best":
        say(c, f"model.h5 holds epoch {s['model_epoch']}, the best by validation accuracy")
    files = [s["files"]["model"], s["files"]["history"], s["files"]["checkpoint"], *s.get("figures", [])]
    say(c, "wrote " + ", ".join(files))


def train(
    ctx: typer.Context,
    setting: Annotated[
        Literal[SETTING_CHOICES] | None,  # type: ignore[valid-type]
        typer.Option(
            "--setting", help="A reference setting of the original work (40 epochs, batch 100), or all four."
        ),
    ] = None,
    lam: Annotated[
        float | None,
        typer.Option("--lam", help=f"Penalty weight lambda. [default: {DEFAULTS.lam:g}]", show_default=False),
    ] = None,
    eta: Annotated[
        float | None,
        typer.Option("--eta", help=f"Learning rate. [default: {DEFAULTS.eta:g}]", show_default=False),
    ] = None,
    loss: Annotated[
        Literal[LOSS_NAMES] | None,  # type: ignore[valid-type]
        typer.Option(
            "--loss",
            help="ce: softmax cross-entropy, svm: multi-class hinge, bce: binary cross-entropy per class "
            f"(a setting keeps its lambda and eta). [default: {DEFAULTS.loss}]",
            show_default=False,
        ),
    ] = None,
    schedule: Annotated[
        Literal[SCHEDULES] | None,  # type: ignore[valid-type]
        typer.Option(
            "--schedule",
            help="Learning rate per epoch or update: constant, step (--decay every --decay-every epochs), "
            "cosine (down to --eta-min), cyclic (--eta-min to --eta-max, --step-size updates up, then down). "
            f"[default: {DEFAULTS.schedule}]",
            show_default=False,
        ),
    ] = None,
    decay: Annotated[
        float | None,
        typer.Option(
            "--decay", help=f"step: factor applied to eta. [default: {DEFAULTS.decay:g}]", show_default=False
        ),
    ] = None,
    decay_every: Annotated[
        int | None,
        typer.Option(
            "--decay-every",
            metavar="EPOCHS",
            help=f"step: epochs between decays. [default: {DEFAULTS.decay_every}]",
            show_default=False,
        ),
    ] = None,
    eta_min: Annotated[
        float | None,
        typer.Option(
            "--eta-min",
            help=f"cosine and cyclic: the lowest eta. [default: {DEFAULTS.eta_min:g}]",
            show_default=False,
        ),
    ] = None,
    eta_max: Annotated[
        float | None,
        typer.Option("--eta-max", help="cyclic: the highest eta. [default: --eta]", show_default=False),
    ] = None,
    step_size: Annotated[
        int | None,
        typer.Option(
            "--step-size",
            metavar="UPDATES",
            help="cyclic: updates per half cycle. [default: two epochs]",
            show_default=False,
        ),
    ] = None,
    keep: Annotated[
        Literal[KEEP] | None,  # type: ignore[valid-type]
        typer.Option(
            "--keep",
            help="model.h5 holds the last epoch, or the best by validation accuracy. "
            f"[default: {DEFAULTS.keep}]",
            show_default=False,
        ),
    ] = None,
    patience: Annotated[
        int | None,
        typer.Option(
            "--patience",
            metavar="EPOCHS",
            help="Stop after this many epochs without a better validation accuracy.",
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help=f"Epochs. [default: {DEFAULTS.epochs}]", show_default=False)
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", help=f"Images per batch. [default: {DEFAULTS.batch_size}]", show_default=False
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help=f"Seed of the initial W, b (and of shuffling). [default: {DEFAULTS.seed}]",
            show_default=False,
        ),
    ] = None,
    shuffle: Annotated[
        bool | None,
        typer.Option(
            "--shuffle/--no-shuffle",
            help="Shuffle the batches each epoch. [default: no-shuffle]",
            show_default=False,
        ),
    ] = None,
    train_batches: Annotated[
        str | None,
        typer.Option(
            "--train-batches",
            metavar="LIST",
            help="Training batches, e.g. 1-5 or 1,3. [default: 1]",
            show_default=False,
        ),
    ] = None,
    val_size: Annotated[
        int | None,
        typer.Option(
            "--val-size", metavar="N", help="Validate on the last N training images instead of data_batch_2."
        ),
    ] = None,
    dtype: Annotated[
        Literal[DTYPES] | None,  # type: ignore[valid-type]
        typer.Option(
            "--dtype", help=f"Precision of data and weights. [default: {DEFAULTS.dtype}]", show_default=False
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Run folder. Default: outputs/setting-N, or a new outputs/run-DATE-TIME; "
            "with --setting all, the parent of setting-1..4.",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.h5.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run in --out.")] = False,
    no_plots: Annotated[
        bool, typer.Option("--no-plots", help="Do not draw the curves and the weight montage.")
    ] = False,
    data_dir: DataDirOpt = None,
    no_download: NoDownloadOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train with mini-batch gradient descent; checkpoints and history go to HDF5.

    Writes model.h5, checkpoint.h5 (every epoch) and history.h5 into the run folder. Ctrl-C keeps
    the last checkpoint; --resume continues it exactly.

    **Example:** cifarlin train --setting 2
    """
    from cifarlin import experiments

    overrides: dict[str, Any] = {
        "lam": lam,
        "eta": eta,
        "loss": loss,
        "schedule": schedule,
        "decay": decay,
        "decay_every": decay_every,
        "eta_min": eta_min,
        "eta_max": eta_max,
        "step_size": step_size,
        "keep": keep,
        "patience": patience,
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "shuffle": shuffle,
        "val_size": val_size,
        "dtype": dtype,
        "train_batches": parse_batches(train_batches) if train_batches is not None else None,
    }
    given = {k: v for k, v in overrides.items() if v is not None}
    out = out.expanduser() if out is not None else None
    c = console()
    plan = experiments.plan_runs(
        setting if setting == "all" else (int(setting) if setting else None),
        given,
        out=out,
        resume=resume,
        overwrite=overwrite,
        on_notice=lambda m: say(c, f"note: {m}"),
    )
    data_opt = f" --data-dir {data_dir}" if data_dir is not None else ""
    if setting == "all":
        hint = f"cifarlin train --setting all --out {out or Path('outputs')} --resume{data_opt}"
    else:
        hint = f"cifarlin train --out {plan[0].out} --resume{data_opt}"

    dataset = ensure_data(ctx, data_dir, no_download, quiet)

    def on_loading(ds: Any, what: str) -> None:
        if not quiet:
            say(c, f"loading CIFAR-10 from {ds.folder}: {what}")

    def on_run(p: experiments.PlannedRun, n_train: int) -> Any:
        cfg = p.config
        if not quiet:
            what = f"setting {cfg.setting}" if cfg.setting else "run"
            resumed = f", resuming after epoch {p.first_epoch}" if p.start is not None else ""
            c.print(f"[bold]{what}[/]: {cfg.describe()}{resumed} -> {clean(p.out)}", soft_wrap=True)
        return train_progress(c, quiet, cfg.epochs, p.first_epoch, n_train, cfg.batch_size)

    def on_done(s: dict[str, Any]) -> None:
        _print_summary(c, s)
        if json_out:
            emit_json(s)

    result = experiments.run_plan(
        plan,
        dataset,
        overwrite=overwrite,
        resume_hint=hint,
        figures=not no_plots,
        compare=setting == "all",
        compare_dir=out or Path("outputs"),
        on_loading=on_loading,
        on_run=on_run,
        on_done=on_done,
    )
    if result.files:
        if not quiet:
            say(c, experiments.summary_markdown(result.summaries, str(dataset.folder)))
        say(c, "wrote " + ", ".join(str(f) for f in result.files))
