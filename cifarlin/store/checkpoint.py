"""HDF5 files of a run: the model, the checkpoint to resume from, and the history.

Every file is written to a temporary file in the same folder, flushed to disk and then renamed
over the target with ``os.replace``: a crash leaves the old file or the new one, never a torn one.

Layout (see the README):

    model.h5 / checkpoint.h5
        W (K, d), b (K,), mean (d,), std (d,)     datasets; x_norm = (x / 255 - mean) / std
        attrs: format, format_version, kind ('model' | 'checkpoint'), cifarlin_version, created,
               arithmetic (JSON: numpy, blas, blas_version, blas_kernel, python),
               epoch, class_names, every TrainConfig field (val_size and setting only when set),
               data_dir, data_format, rng_state (JSON), test_cost/test_loss/test_acc (model only)
        data_files/ attrs: batch file name -> MD5 of the file trained on
        history/    (checkpoint only) one dataset per metric, one value per epoch
    history.h5
        epoch, train_cost, train_loss, train_acc, val_cost, val_loss, val_acc, seconds
        attrs: format, kind='history', config fields, class_names, status, best_epoch,
               best_val_acc, test_cost/test_loss/test_acc once known
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from cifarlin import __version__
from cifarlin.core.config import TrainConfig
from cifarlin.core.history import HISTORY_KEYS, INITIAL_KEYS, OPTIONAL_KEYS, History, Kept, TrainState
from cifarlin.core.model import D, K, Metrics
from cifarlin.core.normalize import Normalizer
from cifarlin.errors import ConfigError, ModelFileError
from cifarlin.store import h5safe, machine
from cifarlin.store.files import atomic_h5
from cifarlin.store.h5safe import Reader, open_file

if TYPE_CHECKING:
    from cifarlin.core.kmeans import FeatureMap

FORMAT = "cifarlin"
FORMAT_VERSION = 2  # 2: the loss (a file of version 1 holds a cross-entropy model)


@dataclass
class DataInfo:
    """Which data a model was trained on."""

    folder: str = ""
    format: str = "python"
    checksums: dict[str, str] = field(default_factory=dict)

    def changed(self, checksums: dict[str, str]) -> list[str]:
        """The files of ``checksums`` whose MD5 differs from the one trained on."""
        return [name for name, md5 in checksums.items() if self.checksums.get(name, md5) != md5]


@dataclass
class Snapshot:
    """What a model or checkpoint file holds."""

    config: TrainConfig
    state: TrainState
    normalizer: Normalizer
    class_names: list[str]
    data: DataInfo
    test: Metrics | None = None
    kind: str = "model"
    version: str = __version__
    kept_epoch: int | None = None  # a model of keep="best": the epoch whose weights it holds
    features: FeatureMap | None = None  # a model on k-means features: the map from images to them
    arithmetic: dict[str, str] = field(default_factory=dict)  # NumPy and BLAS it was computed with

    def inputs(self, images: np.ndarray, dtype: np.dtype | None = None, **extract: Any) -> np.ndarray:
        """The model's inputs X (n, d) for raw images (n, 3072) uint8: normalised pixels, or the
        features of its feature map, standardised (``extract``: arguments of core.encode.extract)."""
        dtype = np.dtype(dtype or self.config.dtype)
        if self.features is None:
            return self.normalizer.apply(images, dtype)
        from cifarlin.core.encode import extract as extract_features

        F = extract_features(self.features, images, **extract)  # (n, 4k) float32
        return self.normalizer.apply(F, dtype, out=F if dtype == F.dtype else None)


def _write_config(attrs: h5py.AttributeManager, cfg: TrainConfig) -> None:
    for name, value in cfg.to_dict().items():
        if value is None:
            continue
        attrs[name] = np.asarray(value, dtype=np.int64) if name == "train_batches" else value


#: Attributes a file must have: the values that change what its numbers mean.
REQUIRED = ("lam", "eta", "epochs", "batch_size", "seed", "shuffle", "init_std", "train_batches", "dtype")
#: The NumPy kinds an attribute of each type may be stored as, and the Python type it becomes.
_KINDS: dict[str, tuple[str, type]] = {
    "int": ("iu", int),
    "float": ("fiu", float),
    "bool": ("b", bool),
    "str": ("OUS", str),
}


def _typed(r: Reader, name: str, declared: str) -> Any:
    """Attribute ``name`` as one of the ``declared`` types ('int | str | None' and the like)."""
    kind = r.node.attrs.get_id(name).dtype.kind
    kind = "O" if kind == "S" else kind
    for t in declared.split(" | "):
        if t in _KINDS and kind in _KINDS[t][0]:
            return _KINDS[t][1](r.attr(name, _KINDS[t][0]))
    raise r.fail(f"attribute '{name}' is not of type {declared}")


def _read_config(r: Reader) -> TrainConfig:
    """The configuration stored in the attributes, each checked for its type before it is used."""
    missing = [name for name in REQUIRED if name not in r.node.attrs]
    if missing:
        raise r.fail(f"no '{missing[0]}' attribute")
    d: dict[str, Any] = {}
    for f in fields(TrainConfig):
        if f.name not in r.node.attrs:
            continue
        if f.name == "train_batches":
            aid = r.node.attrs.get_id(f.name)
            shape = aid.shape if len(aid.shape) == 1 and aid.shape[0] <= 16 else (1,)
            d[f.name] = tuple(int(i) for i in r.attr(f.name, "iu", shape=shape))
            continue
        try:
            d[f.name] = _typed(r, f.name, str(f.type))
        except ModelFileError:
            raise r.fail(f"attribute '{f.name}' is not of type {f.type}") from None
    try:
        return TrainConfig(**d)
    except ConfigError as e:
        raise r.fail(f"holds an invalid configuration ({e})") from None


def _write_common(f: h5py.File, kind: str, cfg: TrainConfig, class_names: list[str]) -> None:
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["kind"] = kind
    f.attrs["cifarlin_version"] = __version__
    f.attrs["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    f.attrs["arithmetic"] = json.dumps(machine.arithmetic())  # NumPy and BLAS: see cifarlin.store.machine
    f.attrs["class_names"] = np.array(class_names, dtype=h5py.string_dtype())
    _write_config(f.attrs, cfg)


def _write_metrics(attrs: h5py.AttributeManager, prefix: str, m: Metrics | None) -> None:
    if m is not None:
        attrs[f"{prefix}_cost"], attrs[f"{prefix}_loss"], attrs[f"{prefix}_acc"] = m.cost, m.loss, m.accuracy


def _write_history(group: h5py.Group, history: History) -> None:
    if history.initial is not None:
        for k, v in history.initial.items():
            group.attrs[f"initial_{k}"] = v
    arrays = history.arrays()
    group.create_dataset("epoch", data=np.arange(1, len(history) + 1, dtype=np.int64))
    for k in HISTORY_KEYS:
        group.create_dataset(k, data=arrays[k])


def save_snapshot(path: Path, snap: Snapshot) -> None:
    """Write a model (``kind='model'``) or checkpoint (``kind='checkpoint'``) file atomically."""
    with atomic_h5(path) as f:
        _write_common(f, snap.kind, snap.config, snap.class_names)
        f.create_dataset("W", data=snap.state.W)
        f.create_dataset("b", data=snap.state.b)
        f.create_dataset("mean", data=snap.normalizer.mean)
        f.create_dataset("std", data=snap.normalizer.std)
        if snap.features is not None:
            from cifarlin.store.featuremap import write_group

            f.attrs["normalizer_scale"] = snap.normalizer.scale
            write_group(f.create_group("features"), snap.features)
        f.attrs["epoch"] = snap.state.epoch
        f.attrs["rng_state"] = json.dumps(snap.state.rng_state)
        f.attrs["data_dir"] = snap.data.folder
        f.attrs["data_format"] = snap.data.format
        files = f.create_group("data_files")
        for name, md5 in snap.data.checksums.items():
            files.attrs[name] = md5
        _write_metrics(f.attrs, "test", snap.test)
        if snap.kind == "model" and snap.kept_epoch is not None:
            f.attrs["kept_epoch"] = snap.kept_epoch
        if snap.kind == "checkpoint":
            _write_history(f.create_group("history"), snap.state.history)
            if snap.state.best is not None:
                f.create_dataset("best_W", data=snap.state.best.W)
                f.create_dataset("best_b", data=snap.state.best.b)
                f.attrs["best_epoch_kept"] = snap.state.best.epoch


def save_history(
    path: Path,
    history: History,
    cfg: TrainConfig,
    class_names: list[str],
    status: str,
    test: Metrics | None = None,
) -> None:
    """Write ``history.h5`` atomically. ``status``: 'running', 'complete' or 'diverged'."""
    with atomic_h5(path) as f:
        _write_common(f, "history", cfg, class_names)
        _write_history(f, history)
        f.attrs["status"] = status
        f.attrs["best_epoch"] = history.best_epoch
        if len(history):
            f.attrs["best_val_acc"] = history.best_val_acc
        _write_metrics(f.attrs, "test", test)


# ---------------------------------------------------------------------------------------------
# Reading: every value checked before it is used (see h5safe)
# ---------------------------------------------------------------------------------------------

MAX_EPOCHS = 1_000_000  # TrainConfig's limit: no history is longer


@contextmanager
def _open(path: Path, what: str) -> Iterator[Reader]:
    with open_file(path, what) as r:
        if r.attr("format", "OUS", None) != FORMAT:
            raise r.fail(f"an HDF5 file, but not a cifarlin {what} (no format attribute)")
        try:
            version = r.int("format_version")
        except ModelFileError:
            raise r.fail(f"its format version is not a whole number; expected a cifarlin {what}") from None
        if not 1 <= version <= FORMAT_VERSION:
            raise r.fail(
                f"format version {version}; this cifarlin reads versions 1 to {FORMAT_VERSION} "
                "(a newer cifarlin wrote it?)"
            )
        yield r


def _weights(r: Reader, name: str, shape: tuple[int, ...]) -> np.ndarray:
    a = r.dataset(name, len(shape), "f", int(np.prod(shape)), shape)
    if a.dtype not in (np.float32, np.float64):
        raise r.fail(f"dataset '{name}' has type {a.dtype}, expected float32 or float64")
    if not np.isfinite(a).all():
        raise r.fail(f"dataset '{name}' holds NaN or infinite values")
    return a


def _read_history(r: Reader, cfg: TrainConfig) -> History:
    missing = [k for k in HISTORY_KEYS if k not in r and k not in OPTIONAL_KEYS]
    if missing:
        raise r.fail(f"history has no '{missing[0]}' dataset")
    arrays = {
        k: np.asarray(r.dataset(k, 1, "fiu", MAX_EPOCHS), dtype=np.float64) for k in HISTORY_KEYS if k in r
    }
    if len({len(a) for a in arrays.values()}) != 1:
        raise r.fail("history datasets have different lengths")
    if "eta" not in arrays:  # written before the schedules: the constant rate
        arrays["eta"] = np.full(len(arrays["val_acc"]), cfg.eta)
    initial = None
    if all(f"initial_{k}" in r.node.attrs for k in INITIAL_KEYS):
        initial = {k: r.float(f"initial_{k}") for k in INITIAL_KEYS}
    return History.from_arrays(arrays, initial)


def _read_metrics(r: Reader, prefix: str) -> Metrics | None:
    keys = [f"{prefix}_cost", f"{prefix}_loss", f"{prefix}_acc"]
    if not all(k in r.node.attrs for k in keys):
        return None
    return Metrics(*(r.float(k) for k in keys))


def _names(r: Reader) -> list[str]:
    try:
        return list(r.attr("class_names", "OUS", shape=(K,)))
    except ModelFileError:
        raise r.fail(f"attribute 'class_names' does not hold {K} names") from None


def _read_snapshot(path: Path, kinds: tuple[str, ...]) -> Snapshot:
    what = "model" if "model" in kinds else "checkpoint"
    with _open(path, what) as r:
        kind = r.text("kind", "")
        if kind not in kinds:
            raise r.fail(f"a cifarlin {kind or 'unknown'} file, expected a {what}")
        cfg = _read_config(r)
        fmap = None
        if "features" in r:
            from cifarlin.store.featuremap import read_group

            fmap = read_group(r.group("features"))
        if (fmap is None) != (cfg.features is None):
            raise r.fail("its configuration and its feature map disagree (one is missing)")
        d = D if fmap is None else fmap.n_features
        W = _weights(r, "W", (K, d))
        b = _weights(r, "b", (K,))
        scale = 255.0 if fmap is None else r.float("normalizer_scale")
        norm = Normalizer(_weights(r, "mean", (d,)), _weights(r, "std", (d,)), scale)
        if (norm.std <= 0).any():
            raise r.fail("dataset 'std' holds values <= 0")
        if not (np.isfinite(scale) and scale > 0):
            raise r.fail(f"attribute 'normalizer_scale' is {scale}, expected a number > 0")
        if W.dtype != cfg.dtype or b.dtype != cfg.dtype:
            raise r.fail(f"weights are {W.dtype}, but the file says dtype={cfg.dtype}")
        history = _read_history(r.group("history"), cfg) if "history" in r else History()
        best = None
        if kind == "checkpoint" and cfg.keep == "best" and len(history):
            kept = r.int("best_epoch_kept")
            if kept != history.best_epoch:
                raise r.fail(f"its kept epoch {kept} is not the history's best ({history.best_epoch})")
            best = Kept(_weights(r, "best_W", (K, d)), _weights(r, "best_b", (K,)), kept)
        try:
            rng_state = json.loads(r.text("rng_state"))
            np.random.default_rng().bit_generator.state = rng_state  # raises for a state not PCG64's
        except (ValueError, TypeError, KeyError) as e:
            raise r.fail(f"attribute 'rng_state' is not a generator state ({type(e).__name__})") from None
        epoch = r.int("epoch")
        if not 0 <= epoch <= cfg.epochs or (kind == "checkpoint" and len(history) != epoch):
            raise r.fail(f"epoch {epoch} does not fit its history ({len(history)} epochs)")
        return Snapshot(
            config=cfg,
            state=TrainState(W, b, epoch, history, rng_state, best),
            normalizer=norm,
            class_names=_names(r),
            data=_data_of(r),
            test=_read_metrics(r, "test"),
            kind=kind,
            version=r.text("cifarlin_version", ""),
            kept_epoch=r.int("kept_epoch", None) if kind == "model" else None,
            features=fmap,
            arithmetic=machine.from_file(r.text("arithmetic", "")),
        )


def _data_of(r: Reader) -> DataInfo:
    files = r.group("data_files") if "data_files" in r else None
    checksums = {k: files.text(k) for k in files.attr_names()} if files is not None else {}
    return DataInfo(r.text("data_dir", ""), r.text("data_format", "python"), checksums)


def _read_data_info(path: Path) -> DataInfo:
    with _open(path, "model") as r:
        return _data_of(r)


def _read_feature_map(path: Path) -> FeatureMap | None:
    from cifarlin.store.featuremap import read_group

    with _open(path, "model") as r:
        return read_group(r.group("features")) if "features" in r else None


def read_feature_map(path: Path, probe: bool = True) -> FeatureMap | None:
    """Only the feature map a model file carries (None for a model on pixels)."""
    path = Path(path)
    if probe:
        h5safe.probe(path, _read_feature_map, "model")
    return _read_feature_map(path)


def read_data_info(path: Path, probe: bool = True) -> DataInfo:
    """Only which data a model or checkpoint file was trained on (no weights read)."""
    path = Path(path)
    if probe:
        h5safe.probe(path, _read_data_info, "model")
    return _read_data_info(path)


def load_snapshot(
    path: Path, kinds: tuple[str, ...] = ("model", "checkpoint"), probe: bool = True
) -> Snapshot:
    """Read and validate a model or checkpoint file; :class:`ModelFileError` for anything wrong.

    With ``probe`` the file is first read in a child process (see :func:`h5safe.probe`), so a
    damaged file that crashes or hangs the HDF5 library gives an error instead.
    """
    path = Path(path)
    if probe:
        h5safe.probe(path, partial(_read_snapshot, kinds=kinds), "model")
    return _read_snapshot(path, kinds)


@dataclass
class HistoryFile:
    history: History
    config: TrainConfig
    class_names: list[str]
    status: str
    test: Metrics | None
    arithmetic: dict[str, str] = field(default_factory=dict)  # NumPy and BLAS it was computed with


def _read_history_file(path: Path) -> HistoryFile:
    with _open(path, "history") as r:
        kind = r.text("kind", "")
        if kind != "history":
            raise r.fail(f"a cifarlin {kind or 'unknown'} file, expected a history")
        cfg = _read_config(r)
        return HistoryFile(
            history=_read_history(r, cfg),
            config=cfg,
            class_names=_names(r),
            status=r.text("status", ""),
            test=_read_metrics(r, "test"),
            arithmetic=machine.from_file(r.text("arithmetic", "")),
        )


def load_history(path: Path, probe: bool = True) -> HistoryFile:
    """Read and validate a ``history.h5`` file (first in a child process, with ``probe``)."""
    path = Path(path)
    if probe:
        h5safe.probe(path, _read_history_file, "history")
    return _read_history_file(path)
