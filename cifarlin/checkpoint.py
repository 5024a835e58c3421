"""HDF5 files of a run: the model, the checkpoint to resume from, and the history.

Every file is written to a temporary file in the same folder, flushed to disk and then renamed
over the target with ``os.replace``: a crash leaves the old file or the new one, never a torn one.

Layout (see the README):

    model.h5 / checkpoint.h5
        W (K, d), b (K,), mean (d,), std (d,)     datasets; x_norm = (x / 255 - mean) / std
        attrs: format, format_version, kind ('model' | 'checkpoint'), cifarlin_version, created,
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
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cifarlin import __version__
from cifarlin.config import TrainConfig
from cifarlin.data import Normalizer
from cifarlin.errors import ModelFileError
from cifarlin.files import atomic_path
from cifarlin.history import HISTORY_KEYS, History, TrainState
from cifarlin.model import D, K, Metrics

FORMAT = "cifarlin"
FORMAT_VERSION = 1


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


@contextmanager
def atomic_h5(path: Path) -> Iterator[h5py.File]:
    """An HDF5 file open for writing that appears at ``path`` only once complete."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        yield f


def _write_config(attrs: h5py.AttributeManager, cfg: TrainConfig) -> None:
    for name, value in cfg.to_dict().items():
        if value is None:
            continue
        attrs[name] = np.asarray(value, dtype=np.int64) if name == "train_batches" else value


#: Attributes a file must have: the values that change what its numbers mean.
REQUIRED = ("lam", "eta", "epochs", "batch_size", "seed", "shuffle", "init_std", "train_batches", "dtype")


def _read_config(attrs: h5py.AttributeManager) -> TrainConfig:
    missing = [name for name in REQUIRED if name not in attrs]
    if missing:
        raise ValueError(f"no '{missing[0]}' attribute")
    d: dict[str, Any] = {}
    for f in fields(TrainConfig):
        if f.name not in attrs:
            continue
        v = attrs[f.name]
        if f.name == "train_batches":
            d[f.name] = tuple(int(i) for i in np.atleast_1d(v))
        elif isinstance(v, bytes | str):
            d[f.name] = v.decode() if isinstance(v, bytes) else v
        elif isinstance(v, np.bool_ | bool):
            d[f.name] = bool(v)
        elif isinstance(v, np.integer | int):
            d[f.name] = int(v)
        else:
            d[f.name] = float(v)
    return TrainConfig(**d)


def _write_common(f: h5py.File, kind: str, cfg: TrainConfig, class_names: list[str]) -> None:
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["kind"] = kind
    f.attrs["cifarlin_version"] = __version__
    f.attrs["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    f.attrs["class_names"] = np.array(class_names, dtype=h5py.string_dtype())
    _write_config(f.attrs, cfg)


def _write_metrics(attrs: h5py.AttributeManager, prefix: str, m: Metrics | None) -> None:
    if m is not None:
        attrs[f"{prefix}_cost"], attrs[f"{prefix}_loss"], attrs[f"{prefix}_acc"] = m.cost, m.loss, m.accuracy


def _write_history(group: h5py.Group, history: History) -> None:
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
        f.attrs["epoch"] = snap.state.epoch
        f.attrs["rng_state"] = json.dumps(snap.state.rng_state)
        f.attrs["data_dir"] = snap.data.folder
        f.attrs["data_format"] = snap.data.format
        files = f.create_group("data_files")
        for name, md5 in snap.data.checksums.items():
            files.attrs[name] = md5
        _write_metrics(f.attrs, "test", snap.test)
        if snap.kind == "checkpoint":
            _write_history(f.create_group("history"), snap.state.history)


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
# Reading
# ---------------------------------------------------------------------------------------------


@contextmanager
def _open(path: Path, what: str) -> Iterator[h5py.File]:
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, expected a {what} file")
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise ModelFileError(f"{path}: not an HDF5 file, or truncated; expected a cifarlin {what}") from None
    try:
        if f.attrs.get("format") != FORMAT:
            raise ModelFileError(f"{path}: an HDF5 file, but not a cifarlin {what} (no format attribute)")
        version = f.attrs.get("format_version")
        if not isinstance(version, np.integer | int) or not 1 <= version <= FORMAT_VERSION:
            raise ModelFileError(
                f"{path}: format version {version}; this cifarlin reads version {FORMAT_VERSION} "
                "(a newer cifarlin wrote it?)"
            )
        yield f
    except ModelFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as e:
        raise ModelFileError(
            f"{path}: damaged or incomplete cifarlin {what} ({type(e).__name__}: {e})"
        ) from None
    finally:
        f.close()


def _dataset(f: h5py.File, path: Path, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in f or not isinstance(f[name], h5py.Dataset):
        raise ModelFileError(f"{path}: no dataset '{name}'; not a complete cifarlin model")
    ds = f[name]
    if ds.shape != shape or ds.dtype not in (np.float32, np.float64):  # checked before reading
        raise ModelFileError(
            f"{path}: dataset '{name}' has shape {ds.shape} and type {ds.dtype}, expected float {shape}"
        )
    a = ds[()]
    if not np.isfinite(a).all():
        raise ModelFileError(f"{path}: dataset '{name}' holds NaN or infinite values")
    return a


def _read_history(group: h5py.Group, path: Path) -> History:
    missing = [k for k in HISTORY_KEYS if k not in group]
    if missing:
        raise ModelFileError(f"{path}: history has no '{missing[0]}' dataset")
    arrays = {k: np.asarray(group[k][()], dtype=np.float64) for k in HISTORY_KEYS}
    if len({len(a) for a in arrays.values()}) != 1:
        raise ModelFileError(f"{path}: history datasets have different lengths")
    return History.from_arrays(arrays)


def _read_metrics(attrs: h5py.AttributeManager, prefix: str) -> Metrics | None:
    keys = [f"{prefix}_cost", f"{prefix}_loss", f"{prefix}_acc"]
    if not all(k in attrs for k in keys):
        return None
    return Metrics(*(float(attrs[k]) for k in keys))


def _names(attrs: h5py.AttributeManager) -> list[str]:
    raw = attrs["class_names"]
    if not isinstance(raw, np.ndarray) or raw.shape != (K,):
        raise ValueError(f"class_names must hold {K} names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in raw]


def load_snapshot(path: Path, kinds: tuple[str, ...] = ("model", "checkpoint")) -> Snapshot:
    """Read and validate a model or checkpoint file; :class:`ModelFileError` for anything wrong."""
    path = Path(path)
    what = "model" if "model" in kinds else "checkpoint"
    with _open(path, what) as f:
        kind = f.attrs.get("kind")
        if kind not in kinds:
            raise ModelFileError(f"{path}: a cifarlin {kind} file, expected a {what}")
        W = _dataset(f, path, "W", (K, D))
        b = _dataset(f, path, "b", (K,))
        norm = Normalizer(_dataset(f, path, "mean", (D,)), _dataset(f, path, "std", (D,)))
        if (norm.std <= 0).any():
            raise ModelFileError(f"{path}: dataset 'std' holds values <= 0")
        cfg = _read_config(f.attrs)
        if W.dtype != cfg.dtype or b.dtype != cfg.dtype:
            raise ModelFileError(f"{path}: weights are {W.dtype}, but the file says dtype={cfg.dtype}")
        history = _read_history(f["history"], path) if "history" in f else History()
        rng_state = json.loads(f.attrs["rng_state"])
        np.random.default_rng().bit_generator.state = rng_state  # raises for a state that is not PCG64's
        epoch = int(f.attrs["epoch"])
        if not 0 <= epoch <= cfg.epochs or (kind == "checkpoint" and len(history) != epoch):
            raise ModelFileError(f"{path}: epoch {epoch} does not fit its history ({len(history)} epochs)")
        state = TrainState(W, b, epoch, history, rng_state)
        files = f["data_files"].attrs if "data_files" in f else {}
        data = DataInfo(
            folder=str(f.attrs.get("data_dir", "")),
            format=str(f.attrs.get("data_format", "python")),
            checksums={k: str(v) for k, v in files.items()},
        )
        return Snapshot(
            config=cfg,
            state=state,
            normalizer=norm,
            class_names=_names(f.attrs),
            data=data,
            test=_read_metrics(f.attrs, "test"),
            kind=str(kind),
            version=str(f.attrs.get("cifarlin_version", "")),
        )


@dataclass
class HistoryFile:
    history: History
    config: TrainConfig
    class_names: list[str]
    status: str
    test: Metrics | None


def load_history(path: Path) -> HistoryFile:
    """Read and validate a ``history.h5`` file."""
    path = Path(path)
    with _open(path, "history") as f:
        if f.attrs.get("kind") != "history":
            raise ModelFileError(f"{path}: a cifarlin {f.attrs.get('kind')} file, expected a history")
        return HistoryFile(
            history=_read_history(f, path),
            config=_read_config(f.attrs),
            class_names=_names(f.attrs),
            status=str(f.attrs.get("status", "")),
            test=_read_metrics(f.attrs, "test"),
        )
