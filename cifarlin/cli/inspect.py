"""``cifarlin evaluate`` and ``cifarlin visualize``: looking at a saved run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from cifarlin.cli.common import DataDirOpt, JsonOpt, NoDownloadOpt, QuietOpt, ensure_data, flag, option
from cifarlin.cli.display import add_row, console, emit_json, fmt_cost, print_table, results, say, table
from cifarlin.core.config import FIGURE_FORMATS, SPLITS
from cifarlin.figures.request import FIGURES, PANELS, PICKS, SIZES, FigureRequest, parse_list
from cifarlin.store import machine

F = FigureRequest()  # the defaults


def evaluate(
    ctx: typer.Context,
    model_paths: Annotated[
        list[Path], typer.Argument(metavar="MODEL", help="Model files (model.h5) or run folders.")
    ],
    split: Annotated[
        Literal[SPLITS],  # type: ignore[valid-type]
        option("--split", metavar="NAME", help="Which images.", choices=SPLITS, default=SPLITS[0]),
    ] = SPLITS[0],
    ensemble: Annotated[
        bool,
        flag(
            "--ensemble", help="Also the models together: their class probabilities (hinge: scores) averaged."
        ),
    ] = False,
    data_dir: DataDirOpt = None,
    no_download: NoDownloadOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Accuracy, per-class accuracy and confusion matrix of saved models.

    A model file carries the normalisation (mean, std) and the data split it was trained with, so
    it evaluates raw images alone. Several models give one table, a row per model (and one for
    the ensemble with --ensemble); one model also gets its per-class accuracy and confusion matrix.

    **Example:** cifarlin evaluate outputs/setting-2/model.h5 --split test
    """
    from cifarlin.errors import ModelFileError
    from cifarlin.store.checkpoint import load_snapshot
    from cifarlin.work import evaluation
    from cifarlin.work.folder import CHECKPOINT, run_files

    c = console()
    snaps, paths = [], []
    for given in model_paths:
        path = run_files(given).model
        if path is None:
            raise ModelFileError(f"{given}: no model.h5 or checkpoint.h5 in this folder")
        snap = load_snapshot(path)
        if path.name == CHECKPOINT and not quiet:
            say(
                c,
                f"note: {given} has no model.h5 (unfinished run); "
                f"evaluating {path} (epoch {snap.state.epoch})",
            )
        snaps.append(snap)
        paths.append(path)
    dataset = ensure_data(
        ctx,
        data_dir,
        no_download,
        quiet,
        lambda notice: evaluation.recorded_dataset(snaps, split, notice),
        len(snaps),
    )
    evals = [evaluation.evaluate_split(snap, dataset, split, ctx.obj.feature_cache) for snap in snaps]
    rows = [
        {**_report(str(p), s.config.loss, ev, s.class_names), "arithmetic": s.arithmetic}
        for p, s, ev in zip(paths, snaps, evals, strict=True)
    ]
    for p, ev in zip(paths, evals, strict=True):
        if ev.changed_files:
            say(c, f"note: {dataset.folder / ev.changed_files[0]} differs from the file {p} was trained on")
    together = None
    if ensemble:
        losses = [s.config.loss for s in snaps]
        ens = evaluation.ensemble(evals, losses)
        together = _report(
            f"ensemble of {len(snaps)}", evaluation.ensemble_loss(losses), ens, snaps[0].class_names
        )
    out = results(json_out)
    if len(rows) == 1 and together is None:
        _print_one(out, rows[0], evals[0], snaps[0].class_names, quiet)
        if not quiet:
            say(out, _arithmetic_line(snaps[0].arithmetic))
    else:
        t = table("model", "loss fn", "accuracy", "cost", "loss", "p(true)", left=("model", "loss fn"))
        for r in [*rows, *([together] if together else [])]:
            p = r["mean_true_class_probability"]
            add_row(
                t,
                r["model"],
                r["loss_function"],
                f"{r['accuracy']:.4f}",
                "-" if r["cost"] != r["cost"] else fmt_cost(r["cost"]),  # NaN: no loss (ce+bce)
                "-" if r["loss"] != r["loss"] else fmt_cost(r["loss"]),
                "-" if p is None else f"{p:.4f}",
            )
        say(out, f"{split} split, {len(evals[0].labels)} images, data: {dataset.folder}")
        print_table(out, t)
        if not quiet:
            if together is not None:
                say(out, _ensemble_line(together["loss_function"]))
            if all(s.arithmetic == snaps[0].arithmetic for s in snaps):
                say(out, f"every model: {_arithmetic_line(snaps[0].arithmetic)}")
            else:  # other machines' models: their last bits may differ (see cifarlin.store.machine)
                for p, s in zip(paths, snaps, strict=True):
                    say(out, f"{p}: {_arithmetic_line(s.arithmetic)}")
    if json_out:
        base = {
            "split": split,
            "images": len(evals[0].labels),
            "data_dir": str(dataset.folder),
            "evaluated_with": machine.arithmetic(),
        }
        if len(rows) == 1 and together is None:
            emit_json({**rows[0], **base})
        else:
            emit_json({**base, "models": rows, "ensemble": together})


def _ensemble_line(loss: str) -> str:
    """What the ensemble row's cost and loss are."""
    from cifarlin.core.losses import LOSSES

    if loss not in LOSSES:
        return f"ensemble: no cost or loss ({loss}: probabilities of two kinds averaged)"
    what = "probabilities" if LOSSES[loss].probs is not None else "scores"
    return f"ensemble: {LOSSES[loss].label} of the mean {what}; cost = loss, no penalty"


def _arithmetic_line(recorded: dict[str, str]) -> str:
    """Which arithmetic trained the model, and this machine's when it differs (the last bits of
    a run depend on it: see cifarlin.store.machine)."""
    here = machine.arithmetic()
    if not recorded.get("numpy"):
        old = "the NumPy and BLAS that trained it are not recorded (an older file)"
        return f"{old}; evaluated with {machine.describe(here)}"
    line = f"trained with {machine.describe(recorded)}"
    if any(recorded.get(k) != here[k] for k in ("numpy", "blas", "blas_version", "blas_kernel")):
        line += f"; evaluated with {machine.describe(here)}"
    return line


def _report(name: str, loss: str, ev: Any, class_names: list[str]) -> dict[str, Any]:
    """What evaluate reports of one model (or an ensemble) on a split."""
    m, cm = ev.metrics, ev.confusion
    return {
        "model": name,
        "loss_function": loss,
        "cost": m.cost,
        "loss": m.loss,
        "accuracy": m.accuracy,
        "mean_true_class_probability": None
        if ev.true_class_prob is None
        else float(ev.true_class_prob.mean()),
        "per_class_accuracy": {n: float(a) for n, a in zip(class_names, ev.per_class_accuracy, strict=True)},
        "class_names": class_names,
        "confusion_matrix": cm.tolist(),
        "same_data_as_training": not ev.changed_files,
    }


def _print_one(out: Any, r: dict[str, Any], ev: Any, names: list[str], quiet: bool) -> None:
    from cifarlin.core.losses import LOSSES

    cm = ev.confusion
    if not quiet:
        say(out, f"per-class accuracy ({ev.split}, {len(ev.labels)} images):")
        t = table("class", "accuracy", "images", left=("class",))
        for n, a, k in zip(names, ev.per_class_accuracy, cm.sum(axis=1), strict=True):
            add_row(t, n, f"{a:.4f}", k)
        print_table(out, t)
        say(out, "confusion matrix (rows: true class, columns: predicted class):")
        t = table("", *(n[:5] for n in names), left=("",))
        for n, row in zip(names, cm, strict=True):
            add_row(t, n, *row)
        print_table(out, t)
    p = r["mean_true_class_probability"]
    probability = "" if p is None else f", mean probability of the true class {p:.4f}"
    say(
        out,
        f"{r['model']} on {ev.split}: accuracy {r['accuracy']:.4f}, cost {fmt_cost(r['cost'])}, "
        f"{LOSSES[r['loss_function']].label} {fmt_cost(r['loss'])}{probability}",
    )


def visualize(
    ctx: typer.Context,
    target: Annotated[
        Path,
        typer.Argument(metavar="RUN", help="A run folder (from train), a model.h5, or a folder of runs."),
    ],
    what: Annotated[
        str,
        option(
            "--what",
            metavar="LIST",
            help="Which figures, a comma list.",
            choices=(*FIGURES, "all"),
            default="all",
        ),
    ] = "all",
    out: Annotated[
        Path | None, option("--out", "-o", metavar="DIR", help="Where to write. Default: the run folder.")
    ] = None,
    format: Annotated[
        Literal[FIGURE_FORMATS],  # type: ignore[valid-type]
        option("--format", metavar="TYPE", help="File format.", choices=FIGURE_FORMATS, default=F.format),
    ] = F.format,
    dpi: Annotated[int, option("--dpi", metavar="N", help="Resolution of PNG files.", default=F.dpi)] = F.dpi,
    split: Annotated[
        Literal[SPLITS],  # type: ignore[valid-type]
        option(
            "--split",
            metavar="NAME",
            help="Images for confusion, samples and probs.",
            choices=SPLITS,
            default=F.split,
        ),
    ] = F.split,
    n_samples: Annotated[
        int, option("--n", metavar="N", help="Number of sample images.", default=F.n_samples)
    ] = F.n_samples,
    pick: Annotated[
        Literal[PICKS],  # type: ignore[valid-type]
        option(
            "--pick",
            metavar="WHICH",
            help="samples: the first images, random ones, or misclassified ones.",
            choices=PICKS,
            default=F.pick,
        ),
    ] = F.pick,
    normalize: Annotated[
        bool, flag("--normalize", help="confusion: each true class's row as fractions.")
    ] = False,
    panels: Annotated[
        str | None,
        option(
            "--panels",
            metavar="LIST",
            help="curves: which panels, a comma list.",
            choices=PANELS,
            default="loss,acc (and cost when lambda > 0, eta when it varies)",
        ),
    ] = None,
    size: Annotated[
        Literal[SIZES] | None,  # type: ignore[valid-type]
        option(
            "--size",
            metavar="WIDTH",
            help="curves: a journal's single- or double-column width.",
            choices=SIZES,
        ),
    ] = None,
    show: Annotated[bool, flag("--show", help="Also open each figure in a window.")] = False,
    data_dir: DataDirOpt = None,
    no_download: NoDownloadOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Draw the learning curves, the weight montage, the confusion matrix, sample predictions and
    probability histograms.

    curves: cost, loss, accuracy (and eta) per epoch from history.h5, the best validation epoch
    marked. montage: each class's weights as a 32x32 colour image. confusion, samples and probs
    classify the images of --split. Given a folder of several runs, draws their comparison
    (settings.png). Works without a display; --show opens windows too.

    **Example:** cifarlin visualize outputs/setting-2 --what curves,montage
    """
    from cifarlin.figures.make import draw_figures

    kinds = FIGURES if what == "all" else parse_list(what, "what", (*FIGURES,))
    request = FigureRequest(
        kinds=kinds,
        out=out.expanduser() if out is not None else None,
        format=format,
        dpi=dpi,
        split=split,
        n_samples=n_samples,
        show=show,
        panels=parse_list(panels, "panels", PANELS) if panels is not None else None,
        size=size,
        normalize=normalize,
        pick=pick,
    )
    c = console()
    written = draw_figures(
        target,
        request,
        lambda: ensure_data(ctx, data_dir, no_download, quiet, lambda say_: _trained_on(target, split, say_)),
        on_notice=None if quiet else (lambda m: say(c, f"note: {m}")),
        feature_cache=ctx.obj.feature_cache,
    )
    res = results(json_out)
    for path in written:
        say(res, f"wrote {path}")
    if json_out:
        emit_json(
            {
                "files": [str(p) for p in written],
                "out": str(written[0].parent if written else target),
                "format": format,
            }
        )


def _trained_on(target: Path, split: str, notice: Any) -> Any:
    """The folder the model of ``target`` was trained on, when it still holds its files, or None
    (:func:`cifarlin.work.evaluation.recorded_dataset`)."""
    from cifarlin.store.checkpoint import load_snapshot
    from cifarlin.work.evaluation import recorded_dataset
    from cifarlin.work.folder import run_files

    path = run_files(Path(target).expanduser()).model
    return None if path is None else recorded_dataset([load_snapshot(path)], split, notice)
