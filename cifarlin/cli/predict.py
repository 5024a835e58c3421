"""``cifarlin predict``: a saved model used outside training."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from cifarlin.cli.common import JsonOpt, QuietOpt
from cifarlin.cli.display import clean, console, emit_json, error_line, results, say

if TYPE_CHECKING:
    from cifarlin.checkpoint import Snapshot

FITS = ("crop", "squash")  # cifarlin.predict.FITS (not imported here: it needs NumPy)


def _load_model(given: Path, quiet: bool) -> tuple[Path, Snapshot]:
    """The model of a run folder or model file, with a note when it is an unfinished run's
    checkpoint."""
    from cifarlin.checkpoint import load_snapshot
    from cifarlin.errors import ModelFileError
    from cifarlin.runs import CHECKPOINT, run_files

    path = run_files(given).model
    if path is None:
        raise ModelFileError(f"{given}: no model.h5 or checkpoint.h5 in this folder")
    snap = load_snapshot(path)
    if path.name == CHECKPOINT and not quiet:
        say(
            console(),
            f"note: {given} has no model.h5 (unfinished run); using {path} (epoch {snap.state.epoch})",
        )
    return path, snap


def predict(
    model_path: Annotated[
        Path, typer.Argument(metavar="MODEL", help="A model file (model.h5) or a run folder.")
    ],
    images: Annotated[
        list[Path],
        typer.Argument(
            metavar="IMAGE...",
            help="PNG or JPEG images of any size, or .npy arrays of uint8 images, shape (n, 3072) "
            "or (n, 32, 32, 3).",
        ),
    ],
    top: Annotated[int, typer.Option("--top", help="How many classes to show per image.")] = 3,
    fit: Annotated[
        Literal[FITS],  # type: ignore[valid-type]
        typer.Option("--fit", help="crop: the centred square of the image; squash: all of it, stretched."),
    ] = "crop",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Classify your own images: the most likely classes of each, with their probabilities.

    Each image is turned upright (EXIF), made RGB (transparency on white) and resized to 32x32
    with Pillow's LANCZOS filter, then normalised with the model's own mean and std. A hinge-loss
    (--loss svm) model gives scores, not probabilities. An image that cannot be read is named on
    stderr and the others are still classified; the exit code is then 1.

    **Example:** cifarlin predict outputs/setting-2 cat.png
    """
    from cifarlin.predict import predict_files

    path, snap = _load_model(model_path, quiet)
    report = predict_files(snap, images, top, fit)
    for _, message in report.errors:
        error_line(message)
    if not (json_out and quiet):  # with --json the listing goes to stderr; --quiet drops it there
        _print_predictions(results(json_out), path, snap.config.loss, report)
    if json_out:
        emit_json(
            {
                "model": str(path),
                "loss_function": snap.config.loss,
                "predictions": [
                    {
                        "file": str(p.file),
                        **({} if p.index is None else {"index": p.index}),
                        "top": [{"class": name, report.kind: value} for name, value in p.top],
                    }
                    for p in report.predictions
                ],
                "errors": [{"file": str(f), "error": message} for f, message in report.errors],
            }
        )
    if report.errors:
        raise typer.Exit(1)


def _print_predictions(out: Any, path: Path, loss: str, report: Any) -> None:
    from cifarlin.losses import LOSSES

    if report.kind == "score":
        legend = "scores (a hinge-loss model gives scores, not probabilities)"
    elif loss == "bce":
        legend = "probabilities (one sigmoid per class: they need not sum to 1)"
    else:
        legend = "probabilities"
    lines = [clean(f"{path} ({LOSSES[loss].label}): the top classes of each image with their {legend}")]
    for p in report.predictions:
        name = f"{p.file}" if p.index is None else f"{p.file}[{p.index}]"
        lines.append(clean(f"{name}: " + ", ".join(f"{c} {v:.4f}" for c, v in p.top)))
    if report.predictions:
        out.print("\n".join(lines), soft_wrap=True)  # one call: fast for 10,000 rows of an array
