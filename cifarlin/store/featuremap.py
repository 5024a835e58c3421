"""The feature-map file: a :class:`~cifarlin.core.kmeans.FeatureMap` as an HDF5 file of its own
(:func:`save`, :func:`load`: untrusted input, validated) or as a group inside a model file
(:func:`write_group`, :func:`read_group`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cifarlin import __version__
from cifarlin.core.kmeans import (
    CHANNELS,
    ENCODERS,
    LEGACY,
    MAX_CENTROIDS,
    MAX_PATCH,
    FeatureMap,
    check_choices,
    mirror_index,
)
from cifarlin.errors import ConfigError
from cifarlin.store import h5safe
from cifarlin.store.files import atomic_h5

KIND = "feature-map"
FORMAT_VERSION = 1


def write_group(group: Any, fmap: FeatureMap) -> None:
    """Write the map into an open HDF5 group: datasets centroids (the dictionary's atoms),
    zca_mean, zca; parameters, the encoder, the pooling and the checksum as attributes (a map of
    the first format's choices is written as that format wrote it)."""
    group.create_dataset("centroids", data=fmap.centroids.astype(np.float32))
    group.create_dataset("zca_mean", data=fmap.zca_mean.astype(np.float64))
    group.create_dataset("zca", data=fmap.zca.astype(np.float64))
    for name, value in fmap.params().items():
        group.attrs[name] = int(value) if isinstance(value, bool) else value
    group.attrs["stride"] = 1
    group.attrs["activation"] = fmap.encoder
    group.attrs["pooling"] = pooling(fmap.pool, fmap.mirror)
    group.attrs["checksum"] = fmap.checksum


def pooling(pool: int, mirror: bool) -> str:
    """The file's name of a grid: the first format's 2 x 2 quadrants, or the mirror-symmetric cells."""
    return "quadrant-sum" if (pool, mirror) == (2, False) else "grid-sum"


def read_group(r: h5safe.Reader) -> FeatureMap:
    """The map in an HDF5 group opened with :mod:`cifarlin.store.h5safe`, every value checked before
    it is used; :class:`~cifarlin.errors.ModelFileError` naming the file for anything wrong."""
    encoder, grid = r.text("activation", ""), r.text("pooling", "")
    if r.int("stride", 0) != 1 or encoder not in ENCODERS or grid not in ("quadrant-sum", "grid-sum"):
        raise r.fail(
            f"not a feature map cifarlin computes (stride 1, a {'/'.join(ENCODERS)} encoder, grid sums)"
        )
    choices = {
        "dictionary": r.text("dictionary", LEGACY["dictionary"]),
        "encoder": encoder,
        "alpha": r.float("alpha", LEGACY["alpha"]),
        "pool": r.int("pool", LEGACY["pool"]),
        "mirror": bool(r.int("mirror", int(LEGACY["mirror"]))),
    }
    patch = r.int("patch")
    if not 1 <= patch <= MAX_PATCH:
        raise r.fail(f"attribute 'patch' is {patch}, expected 1 to {MAX_PATCH}")
    width = CHANNELS * patch * patch
    c = r.dataset("centroids", 2, "f", MAX_CENTROIDS * width)
    if c.shape[1] != width or len(c) == 0:
        raise r.fail(f"dataset 'centroids' has shape {c.shape}, expected (k, {width}) with k >= 1")
    arrays = {
        "centroids": c,
        "zca_mean": r.dataset("zca_mean", 1, "f", width, (width,)),
        "zca": r.dataset("zca", 2, "f", width * width, (width, width)),
    }
    for name, a in arrays.items():
        if not np.isfinite(a).all():
            raise r.fail(f"dataset '{name}' holds NaN or infinite values")
    params: dict[str, Any] = {e: r.float(e) for e in ("norm_eps", "zca_eps")}
    params |= {e: r.int(e) for e in ("seed", "iterations", "n_patches")}
    if not all(np.isfinite(params[e]) and params[e] > 0 for e in ("norm_eps", "zca_eps")):
        raise r.fail("attributes 'norm_eps' and 'zca_eps' must be finite and > 0")
    if not all(0 <= params[e] < 2**63 for e in ("seed", "iterations", "n_patches")):
        raise r.fail("attributes 'seed', 'iterations' and 'n_patches' must be >= 0")
    try:
        check_choices(**choices, k=len(c))
    except ConfigError as e:
        raise r.fail(str(e)) from None
    want = pooling(choices["pool"], choices["mirror"])
    if grid != want:
        raise r.fail(f"attribute 'pooling' is {grid}, but 'pool' and 'mirror' make it {want}")
    h = len(c) // 2
    if choices["mirror"] and not np.array_equal(c[h:], c[:h][:, mirror_index(patch)]):
        raise r.fail("its atoms are not closed under the mirror, as its attribute 'mirror' says")
    fmap = FeatureMap(
        c.astype(np.float32),
        arrays["zca_mean"].astype(np.float64),
        arrays["zca"].astype(np.float64),
        patch,
        **params,
        **choices,
    )
    if r.text("checksum") != fmap.checksum:
        raise r.fail("its checksum does not match its contents (damaged or edited)")
    return fmap


def save(path: Path, fmap: FeatureMap, attrs: dict[str, Any] | None = None) -> None:
    """Write a feature-map file atomically (``attrs``: e.g. the training data's checksums)."""
    with atomic_h5(Path(path)) as f:
        f.attrs["format"] = "cifarlin"
        f.attrs["kind"] = KIND
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["cifarlin_version"] = __version__
        f.attrs["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        for name, value in (attrs or {}).items():
            f.attrs[name] = value
        write_group(f, fmap)


def _read_file(path: Path) -> FeatureMap:
    with h5safe.open_file(path, "feature map") as r:
        if r.attr("format", "OUS", None) != "cifarlin" or r.attr("kind", "OUS", None) != KIND:
            raise r.fail("not a cifarlin feature map (make one with 'cifarlin features fit')")
        version = r.int("format_version")
        if version != FORMAT_VERSION:
            raise r.fail(
                f"feature-map format version {version}; this cifarlin reads version {FORMAT_VERSION}"
            )
        return read_group(r)


def load(path: Path, probe: bool = True) -> FeatureMap:
    """Read and validate a feature-map file (first in a child process with ``probe``, so a file
    that crashes or hangs the HDF5 library gives a one-line error)."""
    path = Path(path)
    if probe:
        h5safe.probe(path, _read_file, "feature map")
    return _read_file(path)
