"""Figures of a run: learning curves, the weight montage, the confusion matrix, sample images.

Importing this module imports matplotlib (about a second), so only the workflows that draw do, when
they draw. Figures are drawn with the non-interactive Agg backend unless the
caller asks for a window, and saved atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from cifarlin.config import TrainConfig
from cifarlin.evaluation import per_class_accuracy
from cifarlin.files import atomic_path
from cifarlin.history import History
from cifarlin.losses import LOSSES

TRAIN_COLOR, VAL_COLOR, BEST_COLOR = "#1f77b4", "#d62728", "#555555"


def use_backend(show: bool = False) -> None:
    """Agg (files only, no display needed) unless a window is wanted."""
    if not show:
        matplotlib.use("Agg", force=True)


def show() -> None:
    """Open every figure drawn so far in a window (blocks until they are closed)."""
    plt.show()


def can_show() -> bool:
    """Whether the current backend opens windows (it does not without a display)."""
    return matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "ps", "cairo", "template")


def _style() -> None:
    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "svg.hashsalt": "cifarlin",  # reproducible SVG ids
            "text.parse_math": False,  # class names and paths from files are text, never math
            "text.usetex": False,
        }
    )


def run_title(cfg: TrainConfig) -> str:
    setting = f"setting {cfg.setting}: " if cfg.setting else ""
    return f"{setting}lambda = {cfg.lam:g}, eta = {cfg.eta:g}, batch = {cfg.batch_size}, {cfg.epochs} epochs"


def weight_images(W: np.ndarray) -> np.ndarray:
    """Each row of W (K, 3072) as a 32 x 32 RGB image scaled to [0, 1] on its own: (K, 32, 32, 3).

    A row holds 1024 red, then 1024 green, then 1024 blue weights, each block row-major over the
    image, as CIFAR-10 stores pixels.
    """
    imgs = np.asarray(W, dtype=np.float64).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (K, 32, 32, 3)
    lo = imgs.min(axis=(1, 2, 3), keepdims=True)
    span = imgs.max(axis=(1, 2, 3), keepdims=True) - lo
    return (imgs - lo) / np.where(span > 0, span, 1.0)


def images_rgb(images: np.ndarray) -> np.ndarray:
    """CIFAR-10 rows (n, 3072) uint8 as (n, 32, 32, 3) images."""
    return np.asarray(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def curves(history: History, cfg: TrainConfig) -> Figure:
    """Cost, loss and accuracy per epoch, training and validation in each panel; the best
    validation epoch marked."""
    _style()
    h = history.arrays()
    epochs = np.arange(1, len(history) + 1)
    best = history.best_epoch
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
    for ax, key, label in zip(
        axes,
        ("cost", "loss", "acc"),
        ("cost (loss + lambda |W|^2)", f"loss ({LOSSES[cfg.loss].label.removesuffix(' loss')})", "accuracy"),
        strict=True,
    ):
        ax.plot(epochs, h[f"train_{key}"], color=TRAIN_COLOR, label="training", lw=1.8)
        ax.plot(epochs, h[f"val_{key}"], color=VAL_COLOR, label="validation", lw=1.8)
        ax.axvline(best, color=BEST_COLOR, ls="--", lw=1)
        ax.plot(
            [best],
            [h[f"val_{key}"][best - 1]],
            "o",
            color=VAL_COLOR,
            ms=6,
            label=f"best validation accuracy (epoch {best})",
        )
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label.split(" (")[0].capitalize())
        ax.set_xlim(0.5, max(len(epochs), 1) + 0.5)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle(run_title(cfg))
    return fig


def montage(W: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """The ten rows of W as images, one row of tiles titled with the class names."""
    _style()
    imgs = weight_images(W)
    fig, axes = plt.subplots(1, len(imgs), figsize=(1.3 * len(imgs), 1.9), layout="constrained")
    for ax, img, name in zip(np.atleast_1d(axes), imgs, class_names, strict=True):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    return fig


def confusion(cm: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """The confusion matrix as a heatmap with counts, and the per-class accuracy beside it."""
    _style()
    k = len(class_names)
    acc = per_class_accuracy(cm)
    fig, (ax, side) = plt.subplots(1, 2, figsize=(9.5, 7), width_ratios=[k, 1.6], layout="constrained")
    im = ax.imshow(cm, cmap="Blues", vmin=0)
    ax.grid(False)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    high = cm.max() * 0.55 if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if cm[i, j] > high else "black",
            )
    side.barh(range(k), acc, color=TRAIN_COLOR)
    side.set_ylim(k - 0.5, -0.5)
    side.set_xlim(0, 1)
    side.set_yticks(range(k), [f"{a:.1%}" for a in acc])
    side.yaxis.tick_right()
    side.tick_params(axis="y", length=0)
    side.set_xlabel("per-class accuracy")
    side.grid(False)
    fig.colorbar(im, ax=ax, shrink=0.7, label="images")
    total = np.trace(cm) / max(cm.sum(), 1)
    fig.suptitle(f"{title}\naccuracy {total:.2%} over {cm.sum()} images")
    return fig


def samples(
    images: np.ndarray,
    labels: np.ndarray,
    preds: np.ndarray,
    class_names: Sequence[str],
    title: str,
    cols: int = 8,
) -> Figure:
    """A grid of images with true and predicted labels; wrong predictions in red with a red frame."""
    _style()
    n = len(images)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.45 * cols, 1.75 * rows + 0.5), layout="constrained")
    axes = np.atleast_1d(axes).ravel()
    for ax, img, t, p in zip(axes, images_rgb(images), labels, preds, strict=False):
        ax.imshow(img, interpolation="nearest")
        wrong = t != p
        ax.set_title(
            f"{class_names[t]}\n-> {class_names[p]}", fontsize=8, color="#c00000" if wrong else "black"
        )
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(bool(wrong))
            spine.set_edgecolor("#c00000")
            spine.set_linewidth(2.5)
    for ax in axes[n:]:
        ax.set_axis_off()
    right = int(np.sum(labels[:n] == preds[:n]))
    fig.suptitle(f"{title}: {right} of {n} right (true -> predicted; wrong ones in red)", fontsize=10)
    return fig


def probabilities(p_true: np.ndarray, correct: np.ndarray, loss: str, title: str) -> Figure:
    """Histograms of the probability the model gives the true class, for the images it classifies
    right and for those it gets wrong, side by side (softmax for ce, the class's sigmoid for bce)."""
    _style()
    what = {"ce": "softmax probability", "bce": "sigmoid output"}.get(loss, "probability")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True, layout="constrained")
    bins = np.linspace(0, 1, 26)
    for ax, mask, name, color in (
        (axes[0], correct, "classified right", TRAIN_COLOR),
        (axes[1], ~correct, "classified wrong", VAL_COLOR),
    ):
        values = p_true[mask]
        ax.hist(values, bins=bins, color=color, edgecolor="white")
        mean = f", mean {values.mean():.3f}" if len(values) else ""
        ax.set_title(f"{name}: {len(values)} images{mean}")
        ax.set_xlabel(f"{what} of the true class")
        ax.set_ylabel("images")
        ax.set_xlim(0, 1)
    fig.suptitle(title)
    return fig


def comparison(runs: Sequence[tuple[TrainConfig, History, np.ndarray]], class_names: Sequence[str]) -> Figure:
    """The settings side by side, like the original work's figures: per row, the training and
    validation loss per epoch, and the weight montage."""
    _style()
    n = len(runs)
    fig = plt.figure(figsize=(16, 2.3 * n), layout="constrained")
    grid = fig.add_gridspec(n, 1 + 10, width_ratios=[4] + [1] * 10)
    for r, (cfg, history, W) in enumerate(runs):
        ax = fig.add_subplot(grid[r, 0])
        h = history.arrays()
        e = np.arange(1, len(history) + 1)
        ax.plot(e, h["train_loss"], color=TRAIN_COLOR, label="training loss")
        ax.plot(e, h["val_loss"], color=VAL_COLOR, label="validation loss")
        ax.set_title(f"{run_title(cfg)}\nval acc {h['val_acc'][-1]:.3f}", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        if r == 0:
            ax.legend(fontsize=8)
        for c, (img, name) in enumerate(zip(weight_images(W), class_names, strict=True)):
            t = fig.add_subplot(grid[r, 1 + c])
            t.imshow(img, interpolation="nearest")
            t.set_axis_off()
            if r == 0:
                t.set_title(name, fontsize=8)
    fig.suptitle("The reference settings: loss per epoch and the learnt weights as images")
    return fig


def save(fig: Figure, path: Path, fmt: str = "png", dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` atomically and close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata={"Software": None} if fmt == "png" else None)
    finally:
        plt.close(fig)
    return path


def sweep_figure(
    lam: Sequence[float],
    eta: Sequence[float],
    accuracy: Sequence[float | None],
    status: Sequence[str],
    best: int | None,
    *,
    grid: bool,
    title: str,
) -> Figure:
    """Validation accuracy of a sweep's trials over (lambda, eta), the best trial marked: a heat
    map of the grid's values (each cell the best of its trials; lambda = 0 gets its own row) or a
    scatter of a random search on log axes. Trials without an accuracy are grey, named by status."""
    _style()
    fig, ax = plt.subplots(figsize=(7.5, 5.5), layout="constrained")
    acc = np.array([np.nan if a is None else a for a in accuracy], dtype=np.float64)
    finite = acc[np.isfinite(acc)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    if vmax - vmin < 1e-3:
        vmin, vmax = vmin - 0.005, vmax + 0.005
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    if grid:
        lams, etas = sorted(set(lam)), sorted(set(eta))
        cells = np.full((len(lams), len(etas)), np.nan)
        labels: dict[tuple[int, int], str] = {}
        for la, et, a, st in zip(lam, eta, acc, status, strict=True):
            i, j = lams.index(la), etas.index(et)
            if np.isfinite(a):
                cells[i, j] = a if np.isnan(cells[i, j]) else max(cells[i, j], a)
            else:
                labels.setdefault((i, j), st)
        image = ax.imshow(cells, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", aspect="auto")
        if cells.size <= 144:
            for (i, j), v in np.ndenumerate(cells):
                text = f"{v:.3f}" if np.isfinite(v) else labels.get((i, j), "")
                dark = np.isfinite(v) and (v - vmin) / (vmax - vmin) < 0.6
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
        ax.set_xticks(range(len(etas)), [f"{e:g}" for e in etas])
        ax.set_yticks(range(len(lams)), [f"{v:g}" for v in lams])
        ax.grid(False)
        if best is not None:
            i, j = lams.index(lam[best]), etas.index(eta[best])
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="#d62728", lw=3))
            ax.plot([], [], "s", mfc="none", mec="#d62728", mew=2, label=f"best: {acc[best]:.4f}")
        ax.set_xlabel("eta (learning rate)")
        ax.set_ylabel("lambda (penalty weight)")
    else:
        x, y = np.asarray(eta, dtype=np.float64), np.asarray(lam, dtype=np.float64)
        ok = np.isfinite(acc)
        image = ax.scatter(
            x[ok], y[ok], c=acc[ok], cmap=cmap, vmin=vmin, vmax=vmax, s=40, edgecolors="k", lw=0.3
        )
        if (~ok).any():
            ax.scatter(x[~ok], y[~ok], marker="x", color="#888888", s=30, label="diverged or failed")
        ax.set_xscale("log")
        if (y > 0).all():
            ax.set_yscale("log")
        else:
            ax.set_yscale("symlog", linthresh=float(y[y > 0].min()) if (y > 0).any() else 1e-6)
        from matplotlib.ticker import FuncFormatter

        for axis in (ax.xaxis, ax.yaxis):  # plain numbers: math text is off (text.parse_math)
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        if best is not None:
            ax.plot(
                x[best], y[best], "*", ms=20, mfc="none", mec="#d62728", mew=2, label=f"best: {acc[best]:.4f}"
            )
        ax.set_xlabel("eta (learning rate, log scale)")
        ax.set_ylabel("lambda (penalty weight, log scale)")
    fig.colorbar(image, ax=ax, label="final validation accuracy")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.12), ncol=2, frameon=False, fontsize=9)
    ax.set_title(title, fontsize=9, wrap=True)
    return fig
