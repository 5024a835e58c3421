"""Figures made of images: a model's weights as images (the montage), k-means centroids, and
sample images with their true and predicted classes. What figures share (backend, style,
saving) is in :mod:`cifarlin.figures.common`.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt  # no backend yet: cifarlin.figures.common (below) chooses Agg
import numpy as np
from matplotlib.figure import Figure

from cifarlin.errors import printable
from cifarlin.figures.common import WRONG_COLOR, style


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


def montage(W: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """The ten rows of W as images, one row of tiles titled with the class names."""
    class_names = [printable(n) for n in class_names]  # from a file: no control characters
    style()
    imgs = weight_images(W)
    k = len(imgs)
    fig = plt.figure(figsize=(1.3 * k, 1.9))
    pad = 0.05 / k  # each tile centred in its 1/K of the width
    for i, (img, name) in enumerate(zip(imgs, class_names, strict=True)):
        ax = fig.add_axes((i / k + pad, 0.04, 1 / k - 2 * pad, 0.64))
        ax.imshow(img, interpolation="nearest")
        ax.set_axis_off()
        # a figure text, not an axes title: placing titles measures every (hidden) tick of the axes
        fig.text((i + 0.5) / k, 0.72, name, fontsize=9, ha="center", va="baseline")
    fig.suptitle(title, fontsize=10, parse_math=True)
    return fig


def centroids(patches: np.ndarray, title: str) -> Figure:
    """k-means centroids (k, p, p, 3) in [0, 1] as a near-square grid of tiles, as in Coates and
    Ng's figure of whitened centroids."""
    style()
    k = len(patches)
    cols = int(np.ceil(np.sqrt(k)))
    rows = -(-k // cols)
    side = max(min(0.3, 9.0 / cols), 3.0 / cols)  # inches per tile: 3 to 9 inches wide
    width, height = cols * side + 0.2, rows * side + 0.7
    top = 1 - 0.6 / height  # the grid's top, below a two-line title
    w, h = 0.98 / cols, top * 0.98 / rows  # one cell, in figure fractions
    fig = plt.figure(figsize=(width, height))
    for i, img in enumerate(patches):
        r, c = divmod(i, cols)
        ax = fig.add_axes((0.01 + c * w, top - (r + 1) * h, w * 0.92, h * 0.92))
        ax.imshow(img, interpolation="nearest")
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return fig


def samples(
    images: np.ndarray,
    labels: np.ndarray,
    preds: np.ndarray,
    class_names: Sequence[str],
    title: str,
    confidence: np.ndarray | None = None,
    cols: int = 8,
    count_right: bool = True,
) -> Figure:
    """A grid of images with true and predicted labels and the probability of the prediction;
    a wrong prediction is marked by a cross, the word 'wrong' and a red dashed frame (not by
    colour alone). ``count_right``: the title says how many are right (not for images picked
    because they are wrong)."""
    class_names = [printable(n) for n in class_names]  # from a file: no control characters
    style()
    n = len(images)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.45 * cols, 1.9 * rows + 0.6))
    axes = np.atleast_1d(axes).ravel()
    for i, (ax, img, t, p) in enumerate(zip(axes, images_rgb(images), labels, preds, strict=False)):
        ax.imshow(img, interpolation="nearest")
        wrong = t != p
        prob = "" if confidence is None else f" ({confidence[i]:.0%})"
        mark = "\u2717 wrong: " if wrong else "\u2713 "
        ax.set_title(
            f"{class_names[t]}\n{mark}{class_names[p]}{prob}",
            fontsize=7,
            color=WRONG_COLOR if wrong else "black",
        )
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(bool(wrong))
            spine.set_edgecolor(WRONG_COLOR)
            spine.set_linestyle("--")
            spine.set_linewidth(2.2)
    for ax in axes[n:]:
        ax.set_axis_off()
    right = int(np.sum(labels[:n] == preds[:n]))
    what = "each image: its true class, then \u2713 or \u2717 and the predicted class" + (
        "" if confidence is None else " with its probability"
    )
    head = f"{title}: {right} of {n} right" if count_right else title
    fig.suptitle(f"{head}\n{what}", fontsize=10, parse_math=True)
    fig.subplots_adjust(
        left=0.01, right=0.99, bottom=0.01, top=1 - 0.85 / (1.9 * rows + 0.6), hspace=0.55, wspace=0.1
    )
    return fig
