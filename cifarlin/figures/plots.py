"""Figures of a run's numbers: the learning curves, the comparison of several runs (their loss
curves beside their weights), the confusion matrix, the probability histograms, and the map of a
sweep's validation accuracy. What they share (backend, style, saving) is in
:mod:`cifarlin.figures.common`; figures made of images are in :mod:`cifarlin.figures.images`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt  # no backend yet: cifarlin.figures.common (below) chooses Agg
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cifarlin.core.config import TrainConfig
from cifarlin.core.history import History
from cifarlin.core.losses import LOSSES
from cifarlin.errors import printable
from cifarlin.figures.common import (
    BEST_COLOR,
    TRAIN_COLOR,
    VAL_COLOR,
    plain_log_ticks,
    run_title,
    style,
    wrap_title,
)
from cifarlin.figures.images import weight_images
from cifarlin.work.evaluation import per_class_accuracy

#: Figure widths in inches: a journal's single and double column; None: a roomy screen size.
WIDTHS = {"single": 3.5, "double": 7.16}


def default_panels(history: History, cfg: TrainConfig) -> tuple[str, ...]:
    """Loss and accuracy; the cost too when lambda > 0 (else it equals the loss); the learning
    rate when it changes during the run."""
    eta = history.columns["eta"]
    changes = len(set(eta)) > 1
    return (*(("cost",) if cfg.lam > 0 else ()), "loss", "acc", *(("eta",) if changes else ()))


def _grid(n_panels: int, size: str | None) -> tuple[int, int, float, float]:
    """(rows, columns, width, height) in inches of the curves' panels: in a row on a screen, stacked
    in a single column, two by two in a double column."""
    if size == "single":
        return n_panels, 1, WIDTHS["single"], 1.75 * n_panels + 0.9
    if size == "double":
        cols = n_panels if n_panels <= 3 else 2
        rows = -(-n_panels // cols)
        return rows, cols, WIDTHS["double"], 2.35 * rows + 0.9
    return 1, n_panels, 4.2 * n_panels, 4.9


def _short(v: float) -> str:
    return f"{v:.3g}" if abs(v) >= 1 else f"{v:.3f}"


def split_lines(ax: Axes, history: History, key: str, fontsize: float = 9, **line: Any) -> None:
    """Training and validation ``key`` per epoch on ``ax``, from epoch 0 (the initial weights) when
    known. The y range is the later epochs': an epoch 0 far outside it (a cost of 2.45 before 1.7 to
    1.8) would squash them into a strip, so it is drawn off the edge and its values written there."""
    h, n = history.arrays(), len(history)
    first = history.initial
    for split, color, name in (("train", TRAIN_COLOR, "training"), ("val", VAL_COLOR, "validation")):
        x, y = np.arange(1, n + 1), h[f"{split}_{key}"]
        if first is not None:
            x, y = np.r_[0, x], np.r_[first[f"{split}_{key}"], y]
        ax.plot(x, y, color=color, label=name, lw=1.5, **line)
    ax.set_xlim(-0.3 if first is not None else 0.7, n + 0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    later = np.r_[h[f"train_{key}"], h[f"val_{key}"]]
    later = later[np.isfinite(later)]
    if first is None or not len(later):
        return
    start = np.array([first[f"train_{key}"], first[f"val_{key}"]])
    lo, hi = float(later.min()), float(later.max())
    span = max(hi - lo, 0.02 * max(abs(hi), abs(lo)), 1e-9)
    if np.all(np.isfinite(start)) and lo - span <= start.min() and start.max() <= hi + span:
        return  # on the scale of the later epochs: shown as it is
    ax.set_ylim(lo - 0.15 * span, hi + 0.35 * span)
    above = bool(np.nanmean(start) > hi)  # a loss falls from it, an accuracy climbs: the corner
    ax.annotate(  # on the right, above or below as epoch 0 is, is where the later epochs are not
        f"epoch 0 (off scale):\ntraining {_short(start[0])}, validation {_short(start[1])}",
        (0.98, 0.97 if above else 0.03),
        xycoords="axes fraction",
        ha="right",
        va="top" if above else "bottom",
        fontsize=fontsize,
        color=BEST_COLOR,
        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
    )


def curves(
    history: History, cfg: TrainConfig, panels: Sequence[str] | None = None, size: str | None = None
) -> Figure:
    """The chosen panels per epoch (training and validation; epoch 0: the initial weights, when
    known), integer epochs, markers, and the epoch with the best validation accuracy marked."""
    panels = tuple(panels or default_panels(history, cfg))
    small = size is not None
    style(small)
    h = history.arrays()
    n = len(history)
    epochs = np.arange(1, n + 1)
    best = history.best_epoch
    rows, cols, width, height = _grid(len(panels), size)
    fig, grid = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    axes = grid.ravel()
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    loss_name = LOSSES[cfg.loss].label.removesuffix(" loss")
    labels = {
        "cost": ("Cost", "cost $J$ = loss + $\\lambda\\|W\\|^2$"),
        "loss": ("Loss", f"loss ({loss_name})"),
        "acc": ("Accuracy", "accuracy"),
        "eta": ("Learning rate", "$\\eta$ (the epoch's mean)"),
    }
    marker = {"marker": "o", "ms": 2.5 if small else 3.5, "markevery": max(1, n // 40)}
    for ax, key in zip(axes, panels, strict=False):
        title, ylabel = labels[key]
        if key == "eta":
            ax.plot(epochs, h["eta"], color=BEST_COLOR, lw=1.5, **marker)
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
            ax.set_xlim(-0.3 if history.initial is not None else 0.7, n + 0.3)  # as the other panels
        else:
            split_lines(ax, history, key, fontsize=7 if small else 9, **marker)
            star = f"best validation accuracy (epoch {best})"
            ax.plot(
                [best], [h[f"val_{key}"][best - 1]], "*", color=VAL_COLOR, ms=6 if small else 9, label=star
            )
        ax.axvline(best, color=BEST_COLOR, ls="--", lw=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        if small:  # the title names the quantity; the label says what it is, where there is room
            ax.set_title(ylabel[0].upper() + ylabel[1:], parse_math=True)
        else:
            ax.set_ylabel(ylabel, parse_math=True)
            ax.set_title(title)
    metric_axes = [ax for ax, key in zip(axes, panels, strict=False) if key != "eta"]
    handles, names = metric_axes[0].get_legend_handles_labels() if metric_axes else ([], [])
    if handles:
        fig.legend(
            handles,
            names,
            loc="lower center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=3 if width > 5 else 2,
            frameon=False,
        )
    title = run_title(cfg, n, sep="\n")  # the details, if any, on lines of their own
    if size == "single":
        title = title.replace(", batch", ",\nbatch", 1)
    chars = int(width * 72 / (0.55 * plt.rcParams["font.size"] * 1.2))  # a line of the title at most
    title = "\n".join(textwrap.fill(line, chars) for line in title.split("\n"))
    fig.suptitle(title, parse_math=True)
    bottom, top = {"single": (0.95, 0.8), "double": (0.75, 0.5)}.get(size or "", (0.95, 0.55))
    top += (0.2 if small else 0.25) * (title.count("\n") - (size == "single"))  # lines beyond the first
    fig.subplots_adjust(
        left=(0.62 if small else 0.8) / width,
        right=0.98,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=0.3,
        hspace={"single": 0.75, "double": 0.55}.get(size or "", 0.3),
    )
    return fig


#: The comparison's layout in inches: its width; per row, the title, the block of loss curves and
#: weights, the epoch label below and the gap to the next row; the weights' tiles and their gap.
CMP_WIDTH, CMP_TITLE, CMP_BLOCK, CMP_BELOW, CMP_TILE, CMP_GAP = 12.0, 0.7, 2.6, 0.75, 1.0, 0.18


def comparison(
    runs: Sequence[tuple[str, TrainConfig, History, np.ndarray, float | None]], class_names: Sequence[str]
) -> Figure:
    """Runs one below the other, like the original work's figures: per row, named by its folder
    and described in full, the training and validation loss per epoch (from epoch 0, as in
    ``curves.png``) beside the weights as images (two rows of five, each named by its class)."""
    class_names = [printable(n) for n in class_names]  # from a file: no control characters
    style()
    head = 0.95  # the title and the legend
    row = CMP_TITLE + CMP_BLOCK + CMP_BELOW
    height = head + row * len(runs)
    fig = plt.figure(figsize=(CMP_WIDTH, height))

    def box(x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        return x / CMP_WIDTH, y / height, w / CMP_WIDTH, h / height  # inches from the bottom left

    tiles_x = CMP_WIDTH - 0.15 - 5 * CMP_TILE - 4 * CMP_GAP
    for r, (name, cfg, history, W, test_acc) in enumerate(runs):
        top = height - head - r * row  # the row's top, in inches
        block = top - CMP_TITLE  # the block's top
        test = "" if test_acc is None else f": test accuracy {test_acc:.3f}"
        fig.text(*box(0.15, top - 0.25, 0, 0)[:2], f"{printable(name)}{test}", fontsize=12, weight="bold")
        fig.text(*box(0.15, top - 0.52, 0, 0)[:2], run_title(cfg, len(history)), fontsize=11, parse_math=True)
        ax = fig.add_axes(box(0.85, block - CMP_BLOCK, tiles_x - 1.6, CMP_BLOCK - 0.2))
        split_lines(ax, history, "loss", fontsize=10, marker="o", ms=3, markevery=max(1, len(history) // 40))
        ax.set_xlabel("epoch", fontsize=11)
        ax.set_ylabel(f"loss ({LOSSES[cfg.loss].label.removesuffix(' loss')})", fontsize=11)
        if W.shape[1] != 3 * 32 * 32:  # a model on features: its weights are not images
            fig.text(
                *box(tiles_x + 2.5 * CMP_TILE + 2 * CMP_GAP, block - CMP_BLOCK / 2, 0, 0)[:2],
                "a model on features:\nits weights are not images",
                ha="center",
                va="center",
                fontsize=11,
                color=BEST_COLOR,
            )
            continue
        for c, (img, cls) in enumerate(zip(weight_images(W), class_names, strict=True)):
            i, j = divmod(c, 5)
            x, y = tiles_x + j * (CMP_TILE + CMP_GAP), block - 0.25 - i * (CMP_TILE + 0.3)
            t = fig.add_axes(box(x, y - CMP_TILE, CMP_TILE, CMP_TILE))
            t.imshow(img, interpolation="nearest")
            t.set_axis_off()
            fig.text(*box(x + CMP_TILE / 2, y + 0.05, 0, 0)[:2], cls, fontsize=10, ha="center")
    handles, labels = fig.axes[0].get_legend_handles_labels() if runs else ([], [])
    fig.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, 1 - 0.45 / height),
        ncol=2,
        frameon=False,
        fontsize=11,
    )
    fig.suptitle(
        "Loss per epoch and the learnt weights as images", fontsize=13, y=1 - 0.12 / height, va="top"
    )
    return fig


def confusion(cm: np.ndarray, class_names: Sequence[str], title: str, normalize: bool = False) -> Figure:
    """The confusion matrix as a heatmap (counts, or with ``normalize`` the fraction of each true
    class's images), and the per-class accuracy beside it, in the same unit and colour scale."""
    class_names = [printable(n) for n in class_names]  # from a file: no control characters
    style()
    k = len(class_names)
    acc = per_class_accuracy(cm)
    rows = np.maximum(cm.sum(axis=1, keepdims=True), 1)
    shown = cm / rows if normalize else cm
    fig = plt.figure(figsize=(9.5, 7.2))
    grid = fig.add_gridspec(
        1, 4, width_ratios=[k, 1.6, 0.25, 0.3], wspace=0.03, left=0.17, right=0.91, bottom=0.17, top=0.86
    )
    ax, side, bar = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1]), fig.add_subplot(grid[0, 3])
    vmax = 1.0 if normalize else max(cm.max(), 1)
    cmap = plt.get_cmap("Blues")
    im = ax.imshow(shown, cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(k):
        for j in range(k):
            text = f"{shown[i, j]:.0%}" if normalize else str(cm[i, j])
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if shown[i, j] > 0.55 * vmax else "black",
            )
    # the per-class accuracy (the diagonal's share of each row), on the matrix's rows
    side.barh(range(k), acc, color=cmap(0.7), height=0.9)
    for i, a in enumerate(acc):
        side.text(min(a, 0.62) + 0.03, i, f"{a:.0%}", va="center", fontsize=8)
    side.set_ylim(k - 0.5, -0.5)
    side.set_xlim(0, 1)
    side.set_yticks([])
    side.set_xticks([0, 0.5, 1], ["0", "50%", "100%"])
    side.set_xlabel("per-class\naccuracy")
    side.grid(False)
    side.spines["left"].set_visible(False)
    fig.colorbar(
        im,
        cax=bar,
        label="share of the true class" if normalize else "images",
        format="{x:.0%}" if normalize else None,
    )
    total = np.trace(cm) / max(cm.sum(), 1)
    fig.suptitle(f"{wrap_title(title, 90)}\naccuracy {total:.2%} over {cm.sum()} images", parse_math=True)
    return fig


def probabilities(p_true: np.ndarray, correct: np.ndarray, loss: str, title: str) -> Figure:
    """Histograms of the probability the model gives the true class, for the images it classifies
    right and for those it gets wrong, side by side (softmax for ce, the class's sigmoid for bce)."""
    style()
    what = {"ce": "softmax probability", "bce": "sigmoid output"}.get(loss, "probability")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
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
    fig.suptitle(wrapped := wrap_title(title, 95), parse_math=True)
    top = 0.8 - 0.07 * wrapped.count("\n")
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=top, wspace=0.22)
    return fig


#: The least range of accuracy a sweep's colour scale spans: a spread of 1.6 points must not look
#: like one from the worst colour to the best.
MIN_SPAN = 0.10


def colour_range(acc: np.ndarray) -> tuple[float, float]:
    """(vmin, vmax) of a sweep's colour scale: the accuracies' range, widened about its middle to
    at least :data:`MIN_SPAN` and kept within [0, 1]."""
    finite = acc[np.isfinite(acc)]
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    pad = max(0.0, MIN_SPAN - (hi - lo)) / 2
    lo, hi = lo - pad, hi + pad
    shift = max(0.0, -lo) - max(0.0, hi - 1.0)
    return lo + shift, hi + shift


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
    style()
    fig, ax = plt.subplots(figsize=(7.5, 5.5), layout="constrained")
    acc = np.array([np.nan if a is None else a for a in accuracy], dtype=np.float64)
    vmin, vmax = colour_range(acc)
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
                ax.text(j, i, text, ha="center", va="center", fontsize=10, color="white" if dark else "black")
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
        if ok.sum() <= 12:  # the values themselves (close colours stay readable), staggered in height
            for n, i in enumerate(np.flatnonzero(ok)[np.argsort(x[ok])]):
                shift = ((6, 5), (6, -13), (6, 15), (6, -23))[n % 4]
                ax.annotate(
                    f"{acc[i]:.3f}", (x[i], y[i]), xytext=shift, textcoords="offset points", fontsize=8
                )
        if (~ok).any():
            ax.scatter(x[~ok], y[~ok], marker="x", color="#888888", s=30, label="diverged or failed")
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)  # plain numbers: math text is off (text.parse_math)
        if len(set(y)) == 1:  # lambda not searched: one value, one tick
            ax.set_yticks([y[0]], [f"{y[0]:g}"])
        elif (y > 0).all():
            ax.set_yscale("log")
            plain_log_ticks(ax.yaxis)
        else:  # lambda = 0 among the trials: linear up to the smallest positive lambda, none below 0
            linthresh = float(y[y > 0].min())
            ax.set_yscale("symlog", linthresh=linthresh)
            plain_log_ticks(ax.yaxis)
            ax.set_ylim(-0.3 * linthresh, None)
        if best is not None:
            ax.plot(
                x[best], y[best], "*", ms=20, mfc="none", mec="#d62728", mew=2, label=f"best: {acc[best]:.4f}"
            )
        ax.set_xlabel("eta (learning rate, log scale)")
        ax.set_ylabel("lambda (penalty weight" + (")" if len(set(y)) == 1 else ", log scale)"))
    fig.colorbar(image, ax=ax, label=f"final validation accuracy (the scale at least {MIN_SPAN:g} wide)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.12), ncol=2, frameon=False, fontsize=9)
    ax.set_title(title, fontsize=9, wrap=True)
    return fig
