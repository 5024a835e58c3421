"""``cifarlin evaluate`` and ``cifarlin visualize``: looking at a saved run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from cifarlin.cli.common import DataDirOpt, JsonOpt, NoDownloadOpt, QuietOpt, ensure_data
from cifarlin.cli.display import add_row, console, emit_json, fmt_cost, print_table, say, table
from cifarlin.config import FIGURE_FORMATS, FIGURES, SPLITS, FigureRequest

FIGURE_DEFAULTS = FigureRequest()


def evaluate(
    ctx: typer.Context,
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="A model.h5 (or its run folder).")],
    split: Annotated[Literal[SPLITS], typer.Option("--split", help="Which images.")] = SPLITS[0],  # type: ignore[valid-type]
    data_dir: DataDirOpt = None,
    no_download: NoDownloadOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Accuracy, per-class accuracy and confusion matrix of a saved model.

    The model file carries the normalisation (mean, std) and the data split it was trained with,
    so it evaluates raw images alone.

    **Example:** cifarlin evaluate outputs/setting-2/model.h5 --split test
    """
    from cifarlin.checkpoint import load_snapshot
    from cifarlin.errors import ModelFileError
    from cifarlin.evaluation import evaluate_split
    from cifarlin.runs import CHECKPOINT, run_files

    path = run_files(model_path).model
    if path is None:
        raise ModelFileError(f"{model_path}: no model.h5 or checkpoint.h5 in this folder")
    snap = load_snapshot(path)
    c = console()
    if path.name == CHECKPOINT and not quiet:
        say(
            c,
            f"note: {model_path} has no model.h5 (unfinished run); "
            f"evaluating {path} (epoch {snap.state.epoch})",
        )
    dataset = ensure_data(ctx, data_dir, no_download, quiet)
    ev = evaluate_split(snap, dataset, split)
    m, cm, names = ev.metrics, ev.confusion, snap.class_names
    from cifarlin.losses import LOSSES

    loss = LOSSES[snap.config.loss]
    p_true = None if ev.true_class_prob is None else float(ev.true_class_prob.mean())
    result = {
        "model": str(path),
        "loss_function": snap.config.loss,
        "mean_true_class_probability": p_true,
        "split": split,
        "images": len(ev.labels),
        "data_dir": str(dataset.folder),
        "cost": m.cost,
        "loss": m.loss,
        "accuracy": m.accuracy,
        "per_class_accuracy": {n: float(a) for n, a in zip(names, ev.per_class_accuracy, strict=True)},
        "class_names": names,
        "confusion_matrix": cm.tolist(),
        "same_data_as_training": not ev.changed_files,
    }
    if ev.changed_files:
        say(c, f"note: {dataset.folder / ev.changed_files[0]} differs from the file the model was trained on")
    if not quiet:
        say(c, f"per-class accuracy ({split}, {len(ev.labels)} images):")
        t = table("class", "accuracy", "images", left=("class",))
        for n, a, k in zip(names, ev.per_class_accuracy, cm.sum(axis=1), strict=True):
            add_row(t, n, f"{a:.4f}", k)
        print_table(c, t)
        say(c, "confusion matrix (rows: true class, columns: predicted class):")
        t = table("", *(n[:5] for n in names), left=("",))
        for n, row in zip(names, cm, strict=True):
            add_row(t, n, *row)
        print_table(c, t)
    probability = "" if p_true is None else f", mean probability of the true class {p_true:.4f}"
    say(
        c,
        f"{path} on {split}: accuracy {m.accuracy:.4f}, cost {fmt_cost(m.cost)}, "
        f"{loss.label} {fmt_cost(m.loss)}{probability}",
    )
    if json_out:
        emit_json(result)


def visualize(
    ctx: typer.Context,
    target: Annotated[
        Path, typer.Argument(metavar="RUN_DIR_OR_MODEL", help="A run folder (from train) or a model.h5.")
    ],
    what: Annotated[
        Literal[(*FIGURES, "all")], typer.Option("--what", help="Which figure.")  # type: ignore[valid-type]
    ] = "all",
    out: Annotated[
        Path | None, typer.Option("--out", metavar="DIR", help="Where to write. Default: the run folder.")
    ] = None,
    format: Annotated[
        Literal[FIGURE_FORMATS], typer.Option("--format", help="File format.")  # type: ignore[valid-type]
    ] = FIGURE_DEFAULTS.format,
    dpi: Annotated[int, typer.Option("--dpi", help="Resolution of PNG files.")] = FIGURE_DEFAULTS.dpi,
    split: Annotated[
        Literal[SPLITS], typer.Option("--split", help="Images for the confusion matrix and samples.")  # type: ignore[valid-type]
    ] = FIGURE_DEFAULTS.split,
    n_samples: Annotated[
        int, typer.Option("--n", help="Number of sample images.")
    ] = FIGURE_DEFAULTS.n_samples,
    show: Annotated[bool, typer.Option("--show", help="Also open each figure in a window.")] = False,
    data_dir: DataDirOpt = None,
    no_download: NoDownloadOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Draw the learning curves, the weight montage, the confusion matrix and sample predictions.

    curves: cost, loss and accuracy per epoch from history.h5, the best validation epoch marked.
    montage: each class's weights as a 32x32 colour image. confusion and samples classify the
    images of --split. Works without a display; --show opens windows too.

    **Example:** cifarlin visualize outputs/setting-2 --what all --format png
    """
    from cifarlin.experiments import draw_figures

    kinds = FIGURES if what == "all" else (what,)
    request = FigureRequest(
        kinds=kinds,
        out=out.expanduser() if out is not None else None,
        format=format,
        dpi=dpi,
        split=split,
        n_samples=n_samples,
        show=show,
    )
    c = console()
    written = draw_figures(
        target,
        request,
        lambda: ensure_data(ctx, data_dir, no_download, quiet),
        on_notice=None if quiet else (lambda m: say(c, f"note: {m}")),
    )
    for path in written:
        say(c, f"wrote {path}")
    if json_out:
        emit_json(
            {
                "files": [str(p) for p in written],
                "out": str(written[0].parent if written else target),
                "format": format,
            }
        )
