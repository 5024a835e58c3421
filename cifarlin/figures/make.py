"""Which figures a run folder gets, drawn from its files: the ones ``train`` draws after a run,
everything ``visualize`` is asked for, and the comparison of the runs in a parent folder.

The drawing itself is in :mod:`cifarlin.figures.plots` and :mod:`cifarlin.figures.images`
(imported here only when drawing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cifarlin.core.config import TrainConfig
from cifarlin.core.history import TrainState
from cifarlin.core.losses import LOSSES
from cifarlin.data.cifar import Dataset
from cifarlin.errors import ModelFileError, RunError, bad_value
from cifarlin.figures.request import FIGURES, FigureRequest
from cifarlin.store.checkpoint import Snapshot, load_history, load_snapshot
from cifarlin.store.files import check_path, is_dir, make_folder
from cifarlin.work.evaluation import Evaluation, evaluate_split
from cifarlin.work.folder import MODEL, run_files
from cifarlin.work.runs import Outcome, final_model

if TYPE_CHECKING:
    from cifarlin.core.kmeans import FeatureMap


def stale_figures(out: Path) -> list[str]:
    """Figures in a run folder drawn before its model was last written (--no-plots after a resume)."""
    try:
        written = (out / MODEL).stat().st_mtime
    except OSError:
        return []
    return [str(p) for p in sorted(out.glob("*.png")) if p.stat().st_mtime < written]


def training_figures(outcome: Outcome, class_names: Sequence[str]) -> list[tuple[Path, Callable[[], Path]]]:
    """The figures ``train`` draws into the run's folder, each as (its path, what draws and
    saves it): ``curves.png``, and ``montage.png`` of the weights model.h5 holds."""
    from cifarlin.figures import common, plots

    common.use_backend()
    cfg, st = outcome.config, outcome.state
    curves, montage = outcome.out / "curves.png", outcome.out / "montage.png"
    return [
        (curves, lambda: common.save(plots.curves(st.history, cfg), curves)),
        (
            montage,
            lambda: common.save(_montage(cfg, final_model(cfg, st), outcome.features, class_names), montage),
        ),
    ]


def draw_training_figures(outcome: Outcome, class_names: Sequence[str]) -> list[Path]:
    """Draw :func:`training_figures`, one after the other; their paths."""
    return [draw() for _, draw in training_figures(outcome, class_names)]


def _montage(cfg: TrainConfig, st: TrainState, fmap: FeatureMap | None, class_names: Sequence[str]) -> Any:
    """The weights as images; for a model on features (whose weights are not images), the
    centroids of its feature map."""
    from cifarlin.figures import common, images

    if fmap is None:
        return images.montage(st.W, class_names, f"weights as images, {common.run_title(cfg, st.epoch)}")
    from cifarlin.core.kmeans import centroid_images

    what = "k-means centroids" if fmap.dictionary == "kmeans" else "random patches"
    pairs = f", {fmap.k // 2} and their mirrors" if fmap.mirror else ""
    title = f"{fmap.k} {what}\n(whitened {fmap.patch}x{fmap.patch} patches{pairs})"
    return images.centroids(centroid_images(fmap), title)


def comparison_figure(
    outcomes: Sequence[Outcome], class_names: Sequence[str], path: Path, fmt: str = "png", dpi: int = 150
) -> Path:
    """The runs side by side (loss curves and weights), as ``settings.png``."""
    from cifarlin.figures import common, plots

    rows = [
        (o.out.name, o.config, o.state.history, final_model(o.config, o.state).W, o.test.accuracy)
        for o in outcomes
    ]
    return common.save(plots.comparison(rows, class_names), path, fmt, dpi)


def outcomes_from(folders: Sequence[Path], probe: bool = True) -> tuple[list[Outcome], list[str]]:
    """The complete runs in ``folders`` as just finished, and the class names of the first
    (``probe``: each file read first in a child process, see :func:`cifarlin.store.h5safe.probe`)."""
    histories = [load_history(folder / "history.h5", probe=probe) for folder in folders]
    outcomes = [
        Outcome.from_folder(f, h.config, probe=probe) for f, h in zip(folders, histories, strict=True)
    ]
    return outcomes, histories[0].class_names if histories else []


def child_runs(folder: Path) -> list[Path]:
    """The run folders directly inside ``folder`` that hold a complete run, in name order."""
    try:
        subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []
    return [
        p
        for p in subs
        if (p / MODEL).is_file() and (p / "history.h5").is_file() and (p / "checkpoint.h5").is_file()
    ]


def _pick(ev: Evaluation, request: FigureRequest) -> np.ndarray:
    """The indices of the sample images: the first, random ones, or the misclassified ones."""
    n = len(ev.labels)
    if request.pick == "random":
        return np.sort(
            np.random.default_rng(request.seed).choice(n, size=min(request.n_samples, n), replace=False)
        )
    if request.pick == "errors":
        return np.flatnonzero(ev.predictions != ev.labels)[: request.n_samples]
    return np.arange(min(request.n_samples, n))


def draw_figures(
    target: Path,
    request: FigureRequest,
    dataset: Callable[[], Dataset],
    *,
    on_notice: Callable[[str], None] | None = None,
    feature_cache: Path | None = None,
) -> list[Path]:
    """Draw ``request.kinds`` for the run folder or model file ``target``; returns the files.

    ``dataset()`` is called only when a figure needs images (confusion, samples, probs); a model
    on features reads theirs from ``feature_cache`` (:func:`cifarlin.work.evaluation.evaluate_split`).
    Asked for every kind, a model file without a history gets every figure but the curves (with a
    notice).
    A folder holding several runs (and none itself) gets their comparison, ``settings.png``.
    """
    from cifarlin.figures import common, plots

    if request.out is not None:
        check_path(request.out)
        if request.out.exists() and not request.out.is_dir():
            raise bad_value("out", str(request.out), "exists and is not a folder")
    notice = on_notice or (lambda m: None)
    target = Path(target).expanduser()
    if is_dir(target) and not (target / MODEL).exists() and not (target / "checkpoint.h5").exists():
        children = child_runs(target)
        if len(children) >= 2:
            return [_draw_comparison(children, request, notice)]
    files = run_files(target)
    kinds = list(request.kinds)
    if set(kinds) == set(FIGURES) and files.history is None and not target.is_dir():
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
    common.use_backend(request.show)
    if request.show and not common.can_show():
        notice("no display here, so no window opens; the files are written as usual")

    def name(stem: str) -> Path:
        return out_dir / f"{stem}.{request.format}"

    figs: list[tuple[Any, Path]] = []
    if hist is not None:
        figs.append((plots.curves(hist.history, hist.config, request.panels, request.size), name("curves")))
    if snap is not None and "montage" in kinds:
        figs.append((_montage(snap.config, snap.state, snap.features, snap.class_names), name("montage")))
    if snap is not None and "probs" in kinds and LOSSES[snap.config.loss].probs is None:
        kinds.remove("probs")
        notice(f"a {snap.config.loss} model gives scores, not probabilities, so no probability histograms")
    if snap is not None and {"confusion", "samples", "probs"} & set(kinds):
        figs += _image_figures(
            snap, evaluate_split(snap, dataset(), request.split, feature_cache), kinds, request, name
        )
    if request.show and common.can_show():
        common.show()
    make_folder(out_dir)  # only now: a failure above leaves no empty folder
    return [common.save(fig, path, request.format, request.dpi) for fig, path in figs]


def _image_figures(
    snap: Snapshot, ev: Evaluation, kinds: list[str], request: FigureRequest, name: Callable[[str], Path]
) -> list[tuple[Any, Path]]:
    """The figures that classify images: confusion matrix, samples, probability histograms."""
    from cifarlin.figures import common, images, plots

    split = request.split
    label = f"{common.run_title(snap.config, snap.state.epoch)}; {split} split"
    figs: list[tuple[Any, Path]] = []
    if "confusion" in kinds:
        fig = plots.confusion(ev.confusion, snap.class_names, label, request.normalize)
        figs.append((fig, name(f"confusion-{split}")))
    if "samples" in kinds:
        rows = _pick(ev, request)
        confidence = (
            None
            if ev.outputs is None or LOSSES[snap.config.loss].probs is None
            else (ev.outputs[rows, ev.predictions[rows]])
        )
        errors = request.pick == "errors"
        n, what = len(rows), f"{split} images"
        title = {
            "first": f"the first {n} {what}",
            "random": f"{n} random {what}",
            "errors": f"{n} error{'' if n == 1 else 's'}: misclassified {what}",
        }[request.pick]
        fig = images.samples(
            ev.images[rows],
            ev.labels[rows],
            ev.predictions[rows],
            snap.class_names,
            title,
            confidence,
            count_right=not errors,
        )
        figs.append((fig, name(f"samples-{split}")))
    if "probs" in kinds and ev.true_class_prob is not None:
        title = f"probability of the true class, {label}"
        fig = plots.probabilities(ev.true_class_prob, ev.predictions == ev.labels, snap.config.loss, title)
        figs.append((fig, name(f"probs-{split}")))
    return figs


def _draw_comparison(children: list[Path], request: FigureRequest, notice: Callable[[str], None]) -> Path:
    from cifarlin.figures import common

    outcomes, names = outcomes_from(children)
    out_dir = request.out or children[0].parent
    notice(f"{children[0].parent} holds {len(children)} runs: drawing their comparison")
    common.use_backend()
    make_folder(out_dir)
    return comparison_figure(
        outcomes, names, out_dir / f"settings.{request.format}", request.format, request.dpi
    )
