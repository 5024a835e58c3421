"""What a run on features will hold in memory, said before any of it is allocated
(:func:`check`): the feature rows, and for the ridge solver its (d, d) matrices."""

from __future__ import annotations

import os

from cifarlin.core.config import TrainConfig
from cifarlin.core.kmeans import FeatureMap
from cifarlin.errors import RunError

GB = 1e9
#: (d, d) float64 matrices the ridge solver holds at its peak: the Gram sums (made the centred
#: matrix in place, core.ridge.path) and LAPACK's eigendecomposition: NumPy's copy of its input,
#: the eigenvectors, and syevd's workspace of 1 + 6 d + 2 d^2.
RIDGE_MATRICES = 5


def available() -> int | None:
    """Bytes the kernel says can be allocated without swapping (MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def needed(
    fmap: FeatureMap, cfg: TrainConfig, n_train: int, n_val: int, n_test: int, n_batch: int = 10_000
) -> dict[str, int]:
    """Bytes by what holds them: the training rows (with their mirrored copies for gradient
    descent with --augment flip), the validation and test rows, one batch file's features in
    flight (``n_batch`` images), and the ridge solver's matrices; float64 runs hold their rows in
    both types at once."""
    d = fmap.n_features
    copies = 2 if cfg.augment == "flip" and cfg.solver != "ridge" else 1
    width = 4 if cfg.dtype == "float32" else 12
    out = {
        "training features": copies * n_train * d * width,
        "validation and test features": (n_val + n_test) * d * width,
        "a batch file's features": n_batch * d * 4,
    }
    if cfg.solver == "ridge":
        out["the ridge solver's matrices"] = RIDGE_MATRICES * d * d * 8
    return out


def size(n: float) -> str:
    """Bytes as a person reads them: 1.2 GB, 340 MB."""
    return f"{n / GB:.1f} GB" if n >= 0.1 * GB else f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def check(fmap: FeatureMap, cfg: TrainConfig, n_train: int, n_val: int, n_test: int, n_batch: int) -> None:
    """:class:`RunError` naming the size and what to do when the run would need more memory than
    is available."""
    parts = needed(fmap, cfg, n_train, n_val, n_test, n_batch)
    total, free = sum(parts.values()), available()
    if free is None or total <= free:
        return
    ridge = parts.get("the ridge solver's matrices", 0)
    fixes = ["a map with fewer centroids (features fit --centroids)", "fewer --train-batches"]
    if ridge > total / 2:  # the (d, d) matrices: only fewer features or another solver help
        fixes = [fixes[0], "--solver gd"]
    elif cfg.augment == "flip" and cfg.solver != "ridge":
        fixes.append("no --augment flip (a map fitted with --mirror has the mirrored images for free)")
    held = ", ".join(f"{what} {size(n)}" for what, n in sorted(parts.items(), key=lambda p: -p[1]) if n)
    raise RunError(
        f"this run needs about {size(total)} for {fmap.n_features} features an image ({held}) and "
        f"{size(free)} is available: use {', or '.join(fixes)}"
    )
