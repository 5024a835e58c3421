"""A sweep's trial, on whichever worker runs it: its run folder's state, the data read once per
worker process, and the training itself through :func:`cifarlin.work.runs.run`, exactly as
``cifarlin train`` does (one BLAS thread: the same numbers bit for bit).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cifarlin import __version__
from cifarlin.core.config import TrainConfig, feature_cache_dir
from cifarlin.core.history import history_metrics
from cifarlin.errors import CifarlinError, ConfigError, Interrupted, bad_value, one_line
from cifarlin.features.extraction import malloc_as_usual
from cifarlin.search.plan import Trial

STOP_CHECK_SECONDS = 0.1  # how often a running trial looks whether the sweep was stopped


def _check_same(folder: Path, have: TrainConfig, want: TrainConfig) -> None:
    """The run in ``folder`` must be this trial's (its epochs may differ: a sweep may train longer)."""
    if have.replace(epochs=want.epochs, setting=want.setting) == want:
        return
    a, b = have.to_dict(), want.to_dict()
    name = next(k for k in b if k not in ("epochs", "setting") and a[k] != b[k])
    if name == "init_checksum":
        raise ConfigError(
            f"{folder} holds a run started from other weights than {want.init} holds now (the start "
            "model changed since): give another out=DIR, or put the start model back"
        )
    raise ConfigError(
        f"{folder} holds a run with {name}={a[name]!r}, but this sweep's trial there has "
        f"{name}={b[name]!r}: it is another sweep's folder; give another out=DIR"
    )


def trial_state(folder: Path, cfg: TrainConfig) -> tuple[str, Any]:
    """Where the trial in ``folder`` stands: ('new', None), ('resume', its checkpoint's
    Snapshot), ('done', HistoryFile) or ('diverged', HistoryFile). A folder holding another
    configuration is a :class:`ConfigError`."""
    from cifarlin.store.checkpoint import load_history, load_snapshot
    from cifarlin.work.folder import CHECKPOINT, HISTORY, MODEL, check_run_folder, recover

    if not folder.exists():
        return "new", None
    recover(folder)  # a run an interrupted --overwrite set aside
    if (folder / HISTORY).is_file():
        h = load_history(folder / HISTORY)
        _check_same(folder, h.config, cfg)
        if h.status == "diverged":
            return "diverged", h
        if h.status == "complete" and h.config.epochs == cfg.epochs and (folder / MODEL).is_file():
            return "done", h
    if (folder / CHECKPOINT).is_file():
        snap = load_snapshot(folder / CHECKPOINT, kinds=("checkpoint",))
        _check_same(folder, snap.config, cfg)
        if snap.state.epoch > cfg.epochs:
            raise bad_value(
                "epochs",
                cfg.epochs,
                f"{folder} has already trained {snap.state.epoch} epochs; give another out=DIR",
            )
        return "resume", snap
    check_run_folder(folder, resume=False, overwrite=False)
    return "new", None


_cache: dict[tuple[Any, ...], Any] = {}
_cache_lock = threading.Lock()


def cached_data(folder: str, cfg: TrainConfig) -> tuple[Any, bool]:
    """The prepared data of ``cfg`` from the dataset in ``folder``, read and normalised once per
    process: (Prepared, whether this call read them). One copy is kept (a sweep submits trials
    that share data together). Features come from this worker's feature cache (its
    $XDG_CACHE_HOME: a local cluster's workers share the sweep's, where it extracted them)."""
    from cifarlin.data.cifar import find
    from cifarlin.work.prepare import prepare_run, prepared_key

    key = (folder, *prepared_key(cfg))
    with _cache_lock:
        if key in _cache:
            return _cache[key], False
        _cache.clear()  # one copy of the data in memory
        extra = {"cache_dir": feature_cache_dir(os.environ)} if cfg.features else {}
        _cache[key] = prepare_run(find(Path(folder)), cfg, **extra)
        return _cache[key], True


def clear_data_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return ""


def _poster(topic: str | None) -> Callable[[dict[str, Any]], None]:
    """Sends progress to the sweep's client (structured events of Dask); nothing outside a worker."""
    worker = None
    if topic is not None:
        try:
            from distributed import get_worker

            worker = get_worker()
        except (ImportError, ValueError):
            worker = None

    def post(msg: dict[str, Any]) -> None:
        if worker is not None:
            try:
                worker.log_event(topic, msg)
            except Exception:  # progress is a nicety: it never stops a trial
                pass

    return post


def run_trial(
    trial: Trial,
    out: str,
    data_folder: str,
    alive: str | None = None,
    topic: str | None = None,
    metrics_thread: bool = True,
) -> dict[str, Any]:
    """Train ``trial`` into ``out/<trial.name>`` with :func:`cifarlin.work.runs.run`, as ``cifarlin
    train`` does (continuing its checkpoint when it has one); returns its result as plain values.
    Without ``metrics_thread``, its metrics are computed on its training thread (for workers that
    share the cores: the same numbers, see :func:`cifarlin.core.train.fit`).

    Divergence and errors are results ('diverged', 'failed' with the one-line error), not
    exceptions. The trial stops, keeping its last checkpoint ('interrupted'), when the file
    ``alive`` disappears (the sweep was stopped). Progress goes to the Dask event ``topic``.
    """
    from cifarlin.core.threads import one_blas_thread
    from cifarlin.errors import DivergenceError
    from cifarlin.work import runs

    t0 = time.perf_counter()
    folder = Path(out) / trial.name
    worker = _worker_address()
    row: dict[str, Any] = {"name": trial.name, "worker": worker}
    post = _poster(topic)

    def gone() -> bool:
        return alive is not None and not os.path.exists(alive)

    def result(status: str, **kw: Any) -> dict[str, Any]:
        return {**row, "status": status, "seconds": time.perf_counter() - t0, **kw}

    if gone():
        return result("queued", error="the sweep stopped before this trial started")
    malloc_as_usual()
    try:
        with one_blas_thread():
            state, found = trial_state(folder, trial.config)
            if state in ("done", "diverged"):  # finished on another worker before a retry
                return result(state, **history_metrics(found.history, trial.config.keep))
            start = found if state == "resume" else None
            first = start.state.epoch if start is not None else 0
            post({"name": trial.name, "event": "started", "worker": worker, "epoch": first})
            prepared, loaded = cached_data(data_folder, trial.config)
            row.update(resumed_from_epoch=first, data="loaded" if loaded else "cached")
            last_check = time.monotonic()

            def on_batch(epoch: int, j: int, n: int) -> None:
                nonlocal last_check
                if time.monotonic() - last_check > STOP_CHECK_SECONDS:
                    last_check = time.monotonic()
                    if gone():
                        raise KeyboardInterrupt

            def on_epoch(st: Any) -> None:
                post(
                    {
                        "name": trial.name,
                        "event": "epoch",
                        "epoch": st.epoch,
                        "val_acc": st.history.columns["val_acc"][-1],
                    }
                )

            outcome = runs.run(
                trial.config,
                folder,
                prepared,
                start=start,
                resume_hint="the same cifarlin sweep command",
                on_epoch=on_epoch,
                on_batch=on_batch,
                metrics_thread=metrics_thread,
            )
        return result("done", **history_metrics(outcome.state.history, trial.config.keep))
    except DivergenceError as e:
        why = f"diverged in epoch {e.epoch}: the cost or the weights became NaN or infinite"
        return result("diverged", error=why, **_saved_metrics(folder, trial.config.keep))
    except Interrupted as e:
        return result("interrupted", error=one_line(e), **_saved_metrics(folder, trial.config.keep))
    except Exception as e:
        return result("failed", error=one_line(e))


def _saved_metrics(folder: Path, keep: str) -> dict[str, Any]:
    """The metrics of the epochs a stopped trial saved (its history.h5), if any."""
    from cifarlin.store.checkpoint import load_history

    try:
        return history_metrics(load_history(folder / "history.h5").history, keep)
    except CifarlinError:
        return {}


def probe_worker(data_folder: str, alive: str) -> dict[str, str]:
    """Run on every worker before a sweep: can it see the data and the sweep folder?"""
    from cifarlin.data.cifar import find

    out = {"version": __version__, "data": "", "out": ""}
    try:
        find(Path(data_folder))
    except CifarlinError as e:
        out["data"] = one_line(e)
    if not os.path.exists(alive):
        out["out"] = f"{Path(alive).parent} is not there (or not the same folder) on this worker"
    return out
