"""``cifarlin predict`` and ``cifarlin export``: a saved model used outside training."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from cifarlin.cli.common import JsonOpt, QuietOpt, flag, option
from cifarlin.cli.display import clean, console, emit_json, error_line, results, say

if TYPE_CHECKING:
    from cifarlin.store.checkpoint import Snapshot

FITS = ("crop", "squash")  # cifarlin.work.predict.FITS (not imported here: it needs NumPy)


def _load_model(given: Path, quiet: bool) -> tuple[Path, Snapshot]:
    """The model of a run folder or model file, with a note when it is an unfinished run's
    checkpoint."""
    from cifarlin.errors import ModelFileError
    from cifarlin.store.checkpoint import load_snapshot
    from cifarlin.work.folder import CHECKPOINT, run_files

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
            metavar="IMAGE",
            help="PNG or JPEG images of any size, or .npy arrays of uint8 images, shape (n, 3072) "
            "or (n, 32, 32, 3).",
        ),
    ],
    top: Annotated[
        int, option("--top", metavar="K", help="How many classes to show per image.", default=3)
    ] = 3,
    fit: Annotated[
        Literal[FITS],  # type: ignore[valid-type]
        option(
            "--fit",
            metavar="HOW",
            help="crop: the centred square of the image; squash: all of it, stretched.",
            choices=FITS,
            default="crop",
        ),
    ] = "crop",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Classify your own images: the most likely classes of each, with their probabilities.

    Each image is turned upright (EXIF), made RGB (transparency on white) and resized to 32x32
    with Pillow's LANCZOS filter, then normalised with the model's own mean and std. A hinge-loss
    or squared-loss model (--loss svm, mse, l2svm, --solver ridge) gives scores, not probabilities.
    An image that cannot be read is named on stderr and the others are still classified; the exit
    code is then 1.

    **Example:** cifarlin predict outputs/setting-2 cat.png
    """
    from cifarlin.work.predict import predict_files

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
    from cifarlin.core.losses import LOSSES

    if report.kind == "score":
        legend = f"scores (a {LOSSES[loss].label} model gives scores, not probabilities)"
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


def export(
    model_path: Annotated[
        Path,
        typer.Argument(metavar="MODEL", help="A run folder, or its model.h5 (or checkpoint.h5)."),
    ],
    to: Annotated[
        list[Path],
        typer.Option(
            "--to",
            metavar="FILE",
            help="Where to write: NAME.npz for the model, NAME.csv for the history per epoch "
            "(repeat --to for both).",
        ),
    ],
    overwrite: Annotated[bool, flag("--overwrite", help="Replace a --to file that exists.")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a model as .npz (NumPy) or its per-epoch history as .csv, for other tools.

    model.npz holds W, b, mean, std, scale, class_names, loss and the training configuration,
    each as an array (np.load(path, allow_pickle=False) reads it), and a model on k-means
    features its feature map too (kmeans_centroids, kmeans_zca, ...: see the README), so it
    classifies images with NumPy alone; history.csv has a header line and a line per epoch. The
    suffix of --to chooses the format. Files are written whole or not at all; one that exists
    is kept unless --overwrite.

    **Example:** cifarlin export outputs/setting-2 --to model.npz --to history.csv
    """
    from cifarlin.store.files import check_path
    from cifarlin.work import export as ex

    kinds = [ex.target_kind(t) for t in to]  # every name checked before anything is read or written
    for t in to:
        check_path(t, "to", "file")
    ex.check_targets(to, overwrite)
    written: list[dict[str, Any]] = []
    snap_path, snap = None, None
    for target, kind in zip(to, kinds, strict=True):
        if kind == "model":
            if snap is None:
                snap_path, snap = _load_model(model_path, quiet)
            ex.export_model(snap, target)
            written.append({"file": str(target), "format": "npz", "from": str(snap_path)})
        else:
            source, history = _load_history(model_path, quiet)
            ex.export_history(history, target)
            written.append(
                {"file": str(target), "format": "csv", "from": str(source), "epochs": len(history)}
            )
    out = results(json_out)
    for w in written:
        say(out, f"wrote {w['file']} (from {w['from']})")
    if json_out:
        emit_json({"written": written})


def _load_history(given: Path, quiet: bool) -> tuple[Path, Any]:
    """The history of the run behind ``given``: history.h5, else the checkpoint's (a run that is
    still training or was killed has no history.h5 yet)."""
    from cifarlin.errors import ModelFileError
    from cifarlin.store.checkpoint import load_history, load_snapshot
    from cifarlin.work.folder import CHECKPOINT, run_files

    files = run_files(given)
    if files.history is not None:
        return files.history, load_history(files.history).history
    ckpt = files.folder / CHECKPOINT
    if ckpt.is_file():
        if not quiet:
            say(console(), f"note: {files.folder} has no history.h5; using the history in {ckpt}")
        return ckpt, load_snapshot(ckpt, kinds=("checkpoint",)).state.history
    raise ModelFileError(
        f"{files.folder}: no history.h5 or checkpoint.h5 beside {given}; a model alone has no history"
    )
