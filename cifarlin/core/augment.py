"""Pixel-space views of CIFAR-10 images, shared by gradient descent and the closed-form solver.

An image is a (3072,) uint8 row: 1024 red, 1024 green, 1024 blue values, each row-major over
32 x 32 (``data``'s layout). Every view used here moves pixels without changing them, so it is a
*gather*: an index map ``src`` (3072,) with ``view = x[src]``. Gradient descent draws one view per
image per epoch (:func:`draw`, :func:`apply`); the closed-form solver sums the statistics of all
views exactly through the same maps (:func:`views`, :mod:`cifarlin.core.ridge`).

    flip               the image mirrored left-right: column c -> 31 - c (a permutation)
    translate:t        the image shifted by (dx, dy), |dx|, |dy| <= t pixels, all (2t+1)^2 shifts;
                       positive dx moves the content right, positive dy down. The pixels that
                       enter at the border repeat the edge row or column (edge replication:
                       view[r, c] = x[clip(r - dy, 0, 31), clip(c - dx, 0, 31)]), so every view
                       is a real image with nothing made up, and shift (0, 0) is the identity.

A view with both applies the flip first, then the shift. The set of views of an :class:`Augment`
is closed under the flip (flipping a shift by dx gives the shift by -dx of the flipped image),
which :mod:`cifarlin.core.ridge` uses to halve its eigenproblem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cifarlin.errors import bad_value

SIDE = 32  # pixels per row and column
CHANNELS = 3
D = CHANNELS * SIDE * SIDE  # 3072
MAX_TRANSLATE = 8


@dataclass(frozen=True)
class Augment:
    """Which views of each training image to train on: ``flip`` (left-right mirror, with
    probability 1/2 in gradient descent) and ``translate`` (shifts of up to that many pixels)."""

    flip: bool = False
    translate: int = 0

    def __post_init__(self) -> None:
        if type(self.translate) is not int or not 0 <= self.translate <= MAX_TRANSLATE:
            raise bad_value("augment", str(self), f"translate must be 0 to {MAX_TRANSLATE} pixels")

    @property
    def active(self) -> bool:
        return self.flip or self.translate > 0

    @property
    def n_views(self) -> int:
        """How many distinct views each image has: 2 with flips, times (2t+1)^2 shifts."""
        return (2 if self.flip else 1) * (2 * self.translate + 1) ** 2

    def __str__(self) -> str:
        """The canonical text, which :func:`parse_augment` reads back: 'flip,translate:1' or 'none'."""
        parts = (["flip"] if self.flip else []) + ([f"translate:{self.translate}"] if self.translate else [])
        return ",".join(parts) or "none"


def parse_augment(text: str) -> Augment:
    """'flip', 'translate:2', 'flip,translate:1', or 'none' / '' for no augmentation."""
    raw = text.strip().lower().replace(" ", "")
    if raw in ("", "none"):
        return Augment()
    flip, translate, seen = False, 0, set()
    for part in raw.split(","):
        m = re.fullmatch(r"(flip|translate)(?::(\d+))?", part)
        if not m:
            raise bad_value("augment", text, "use 'flip', 'translate:N' or both, e.g. 'flip,translate:1'")
        name, value = m[1], m[2]
        if name in seen:
            raise bad_value("augment", text, f"'{name}' is given twice")
        seen.add(name)
        if name == "flip":
            if value is not None:
                raise bad_value("augment", text, "flip takes no number")
            flip = True
        else:
            if value is None:
                raise bad_value("augment", text, "give the largest shift in pixels, e.g. 'translate:1'")
            translate = int(value[:4])
            if not 1 <= translate <= MAX_TRANSLATE or len(value) > 4:
                raise bad_value("augment", text, f"translate takes 1 to {MAX_TRANSLATE} pixels")
    return Augment(flip=flip, translate=translate)


# ---------------------------------------------------------------------------------------------
# Index maps: view = x[src], src (3072,) int64
# ---------------------------------------------------------------------------------------------


def _grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c, r, col = np.meshgrid(np.arange(CHANNELS), np.arange(SIDE), np.arange(SIDE), indexing="ij")
    return c.ravel(), r.ravel(), col.ravel()  # (3072,) each, in the row's order


def flip_index() -> np.ndarray:
    """src (3072,) of the left-right mirror: view[c, r, j] = x[c, r, 31 - j]. A permutation that
    is its own inverse."""
    c, r, col = _grid()
    return (c * SIDE + r) * SIDE + (SIDE - 1 - col)


def shift_index(dx: int, dy: int) -> np.ndarray:
    """src (3072,) of the shift by ``dx`` columns right and ``dy`` rows down, with edge
    replication: view[c, r, j] = x[c, clip(r - dy, 0, 31), clip(j - dx, 0, 31)]."""
    c, r, col = _grid()
    rs = np.clip(r - dy, 0, SIDE - 1)
    cs = np.clip(col - dx, 0, SIDE - 1)
    return (c * SIDE + rs) * SIDE + cs


def view_index(flip: bool, dx: int, dy: int) -> np.ndarray:
    """src of the flip (when ``flip``) followed by the shift (dx, dy)."""
    s = shift_index(dx, dy)
    return flip_index()[s] if flip else s


def shifts(translate: int) -> list[tuple[int, int]]:
    """All shifts (dx, dy) with |dx|, |dy| <= translate, (0, 0) first."""
    grid = [(dx, dy) for dy in range(-translate, translate + 1) for dx in range(-translate, translate + 1)]
    grid.remove((0, 0))
    return [(0, 0), *grid]


def views(aug: Augment) -> list[np.ndarray]:
    """The index maps of every view of ``aug``, identity first: what the solver sums over."""
    return [
        view_index(f, dx, dy)
        for f in ((False, True) if aug.flip else (False,))
        for dx, dy in shifts(aug.translate)
    ]


@lru_cache(maxsize=MAX_TRANSLATE + 1)
def _table(translate: int) -> np.ndarray:
    """src of every (flip, dx, dy) for shifts up to ``translate``: (2, 2t+1, 2t+1, 3072) int32,
    indexed [flip, dy + t, dx + t]; read-only (it is shared)."""
    t = translate
    out = np.empty((2, 2 * t + 1, 2 * t + 1, D), dtype=np.int32)
    for f in (0, 1):
        for dy in range(-t, t + 1):
            for dx in range(-t, t + 1):
                out[f, dy + t, dx + t] = view_index(bool(f), dx, dy)
    out.flags.writeable = False
    return out


# ---------------------------------------------------------------------------------------------
# Random views for gradient descent
# ---------------------------------------------------------------------------------------------


def draw(rng: np.random.Generator, n: int, aug: Augment) -> tuple[np.ndarray, np.ndarray]:
    """One random view per image: flips (n,) bool, each True with probability 1/2 (all False
    without ``aug.flip``), and shifts (n, 2) int64 of (dx, dy), uniform over the (2t+1)^2 shifts
    (all zero without translation). Draws from ``rng`` only what ``aug`` uses, flips first, so a
    run without augmentation consumes nothing; the solver's sum over :func:`views` is exactly the
    expectation over this distribution."""
    flips = rng.random(n) < 0.5 if aug.flip else np.zeros(n, dtype=bool)
    t = aug.translate
    moves = rng.integers(-t, t + 1, size=(n, 2)) if t else np.zeros((n, 2), dtype=np.int64)
    return flips, moves


def apply(
    images: np.ndarray, flips: np.ndarray, shifts: np.ndarray, rows: np.ndarray | slice | None = None
) -> np.ndarray:
    """The view of each image: images (n, 3072) uint8, flips (n,) bool, shifts (n, 2) ints
    (dx, dy) -> (n, 3072) uint8, one gather for the whole batch (no loop over images). With
    ``rows``, the views of ``images[rows]`` (flips and shifts then one per row), gathered
    straight from ``images`` without copying those rows first."""
    images = np.ascontiguousarray(images)
    if images.ndim != 2 or images.shape[1] != D:
        raise bad_value("images", images.shape, f"expected (n, {D}) rows")
    picked = np.arange(len(images))[rows] if rows is not None else None
    n = len(images) if picked is None else len(picked)
    flips = np.asarray(flips, dtype=bool).reshape(-1)
    shifts = np.asarray(shifts)
    if flips.shape != (n,) or shifts.shape != (n, 2) or shifts.dtype.kind not in "iu":
        raise bad_value("shifts", shifts.shape, f"expected flips ({n},) and integer shifts ({n}, 2)")
    t = int(np.abs(shifts).max()) if n else 0
    if t > MAX_TRANSLATE:
        raise bad_value("shifts", t, f"shifts are at most {MAX_TRANSLATE} pixels")
    src = _table(t)[flips.astype(np.intp), shifts[:, 1] + t, shifts[:, 0] + t]  # (n, 3072) int32
    wide = np.int32 if images.size < 2**31 else np.int64
    src = src.astype(wide, copy=False)
    first = np.arange(n, dtype=wide) if picked is None else picked.astype(wide)
    src += (first * D)[:, None]  # offsets into the flat images: one 1-D take
    return np.take(images.reshape(-1), src)  # (n, 3072) uint8; 2.4x faster than take_along_axis
