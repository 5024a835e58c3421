"""A training run: starting it (random or from a trained model), resuming it, Ctrl-C and
divergence, and what it reports (:class:`Outcome`).

This is the layer between a caller (the command line, a sweep) and the pure training loop: it
turns Ctrl-C and divergence into clean, resumable states, in a run folder
(:mod:`cifarlin.work.folder`) it writes through :class:`~cifarlin.work.folder.RunFolder`.
Display stays with the caller, through callbacks.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cifarlin.core import model, solve
from cifarlin.core.config import REFERENCE_TEST_ACCURACY, TrainConfig
from cifarlin.core.history import TrainState
from cifarlin.core.prepared import Prepared
from cifarlin.core.ridge import LambdaScore
from cifarlin.core.threads import one_blas_thread
from cifarlin.core.train import fit, init_state, warm_state
from cifarlin.errors import (
    DataError,
    DivergenceError,
    Interrupted,
    ModelFileError,
    WriteError,
    bad_value,
    stopped,
)
from cifarlin.store.checkpoint import DataInfo, Snapshot, load_snapshot, save_history, save_snapshot
from cifarlin.work.folder import CHECKPOINT, HISTORY, MODEL, RunFolder, model_file
from cifarlin.work.summary import RunSummary

if TYPE_CHECKING:
    from cifarlin.core.kmeans import FeatureMap

# checkpoint.h5 is rewritten at most this often (and always after the last epoch, and when a run
# stops: Ctrl-C, SIGTERM, divergence): a kill -9 loses at most this much training
CHECKPOINT_SECONDS = 1.0


def first_state(cfg: TrainConfig, prepared: Prepared) -> TrainState:
    """The start of a new run: random W, b, or with ``cfg.init`` a trained model's, checked to
    read the same inputs (pixels, or features of the same map), to be the model the run was
    planned with (``cfg.init_checksum``), and re-expressed for this run's normaliser
    (:func:`cifarlin.core.train.warm_state`)."""
    d = prepared.X["train"].shape[1]
    if cfg.init is None:
        return init_state(cfg, d=d)
    src = check_start(cfg, prepared.features)
    shape = (len(prepared.class_names), d)
    if src.state.W.shape != shape:
        raise bad_value("init", cfg.init, f"that model's W has shape {src.state.W.shape}, this run's {shape}")
    return warm_state(cfg, src.state.W, src.state.b, src.config.loss, src.normalizer, prepared.normalizer)


def start_checksum(snap: Snapshot) -> str:
    """SHA-256 of a start model's W and b (little-endian float64): which weights a run began from."""
    h = hashlib.sha256()
    for a in (snap.state.W, snap.state.b):
        h.update(np.ascontiguousarray(a, dtype="<f8").tobytes())
    return h.hexdigest()


def pin_start(cfg: TrainConfig, fmap: FeatureMap | None, pinned: dict[Any, str]) -> TrainConfig:
    """``cfg`` with the SHA-256 of its start model's weights (``init_checksum``), the model
    checked by :func:`check_start` once per (path, feature map) in ``pinned``; ``cfg`` itself
    without ``init``."""
    if cfg.init is None:
        return cfg
    key = (cfg.init, cfg.features)
    if key not in pinned:
        pinned[key] = start_checksum(check_start(cfg, fmap))
    return cfg.replace(init_checksum=pinned[key])


def check_outside(init: str, outs: list[Path]) -> None:
    """Refuse a start model inside one of the folders the runs write (and may replace)."""
    for out in outs:
        if Path(init).resolve().is_relative_to(Path(out).resolve()):
            raise bad_value(
                "init",
                init,
                f"lies inside the run folder {out}, which a run replaces; copy it elsewhere first",
            )


def check_start(cfg: TrainConfig, fmap: FeatureMap | None) -> Snapshot:
    """The model ``cfg.init`` names (a model file or its run folder), refused unless it reads what
    the run reads (pixels, or the features of the map ``fmap``) and, when ``cfg.init_checksum``
    is set, still holds those weights. Checked before any data is read."""
    src = load_snapshot(model_file(Path(cfg.init)))

    def reads(m: FeatureMap | None) -> str:
        return "pixels" if m is None else f"the features of feature map {m.checksum[:12]}"

    if reads(src.features) != reads(fmap):
        why = f"that model reads {reads(src.features)}, this run {reads(fmap)}"
        raise bad_value("init", cfg.init, f"{why}; start from a model of the same inputs")
    if cfg.init_checksum is not None and start_checksum(src) != cfg.init_checksum:
        raise bad_value(
            "init",
            cfg.init,
            "holds other weights than when this run was planned from it; start over with --overwrite",
        )
    return src


def resume_point(out: Path, requested: dict[str, Any]) -> tuple[TrainConfig, Snapshot]:
    """The checkpoint of ``out`` and its config; ``requested`` options must agree with it.

    Only ``epochs`` may change (to train longer); any other option that differs is refused.
    """
    snap = load_snapshot(out / CHECKPOINT, kinds=("checkpoint",))
    cfg = snap.config
    for name, value in requested.items():
        if name in ("epochs", "init") or value is None:  # a resumed run does not read its start model
            continue
        have = getattr(cfg, name)
        if (tuple(value) if isinstance(have, tuple) else value) != have:
            raise bad_value(
                name,
                value,
                f"the run in {out} uses {have!r}; a resumed run keeps its settings "
                "(start over with --overwrite)",
            )
    epochs = requested.get("epochs")
    if epochs is not None:
        if epochs < snap.state.epoch:
            raise bad_value("epochs", epochs, f"{out} has already trained {snap.state.epoch} epochs")
        cfg = cfg.replace(epochs=epochs)
    return cfg, snap


@dataclass
class Outcome:
    """A finished run."""

    out: Path
    config: TrainConfig
    state: TrainState
    test: model.Metrics
    started_at_epoch: int
    loop_seconds: float  # wall time of the training loop: epochs, their metrics, the test evaluation
    checkpoint_seconds: float  # time spent writing checkpoint.h5 after each epoch (not in loop_seconds)
    model_epoch: int = 0  # the epoch whose weights model.h5 holds (the last, or the best one kept)
    lambdas: list[LambdaScore] = field(default_factory=list)  # ridge: each candidate's validation accuracy
    features: FeatureMap | None = None  # a model on features: their map

    reused: bool = False  # a complete run found in its folder, not trained again

    @classmethod
    def from_folder(cls, out: Path, cfg: TrainConfig, probe: bool = True) -> Outcome:
        """The complete run in ``out`` as if it had just finished (its checkpoint holds the last
        epoch and the history, its model the test metrics); ``probe`` as in :func:`load_snapshot`."""
        last = load_snapshot(out / CHECKPOINT, kinds=("checkpoint",), probe=probe)
        final = load_snapshot(out / MODEL, kinds=("model",), probe=probe)
        if final.test is None:
            raise ModelFileError(f"{out / MODEL}: has no test metrics; not the model of a complete run")
        epoch = final.kept_epoch or last.state.epoch
        return cls(
            out,
            cfg,
            last.state,
            final.test,
            last.state.epoch,
            0.0,
            0.0,
            epoch,
            features=final.features,
            reused=True,
        )

    def warnings(self) -> list[str]:
        """What the user should know although the run finished: a cost that grew by orders of
        magnitude (without becoming NaN) says the step is too large."""
        h = self.state.history
        start = h.initial["train_cost"] if h.initial else h.columns["train_cost"][0]
        end = h.columns["train_cost"][-1]
        if end > 100 * start:
            return [f"the training cost rose from {start:.3g} to {end:.3g}: eta too large?"]
        return []

    def summary(self) -> RunSummary:
        h = self.state.history
        last = h.last()
        s = self.config.setting
        return RunSummary(
            setting=s,
            run_dir=self.out,
            config=self.config,
            epochs=self.state.epoch,
            resumed_from_epoch=self.started_at_epoch,
            train=model.Metrics(last["train_cost"], last["train_loss"], last["train_acc"]),
            val=model.Metrics(last["val_cost"], last["val_loss"], last["val_acc"]),
            test=self.test,
            best_epoch=h.best_epoch,
            model_epoch=self.model_epoch,
            stopped_early=self.state.epoch < self.config.epochs,
            best_val_accuracy=h.best_val_acc,
            lambda_search=tuple(self.lambdas),
            reference_test_accuracy=REFERENCE_TEST_ACCURACY.get(s) if s else None,
            comparable_to_reference=self.config.is_reference,
            training_seconds=self.loop_seconds,
            checkpoint_seconds=self.checkpoint_seconds,
            epoch_seconds=sum(h.columns["seconds"]),
            model_file=self.out / MODEL,
            checkpoint_file=self.out / CHECKPOINT,
            history_file=self.out / HISTORY,
            reused=self.reused,
            warnings=tuple(self.warnings()),
            history=h,
        )


def run(
    cfg: TrainConfig,
    out: Path,
    prepared: Prepared,
    *,
    start: Snapshot | None = None,
    overwrite: bool = False,
    resume_hint: str | None = None,
    on_epoch: Callable[[TrainState], None] | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
    checkpoint_seconds: float | None = None,
    metrics_thread: bool = True,
) -> Outcome:
    """Train ``cfg`` into the (checked) folder ``out``, from scratch or from ``start``.

    Writes ``checkpoint.h5`` after an epoch when the last was written ``checkpoint_seconds``
    ago or more (default ``CHECKPOINT_SECONDS``; 0: after every epoch; at 40 ms an epoch, one
    per epoch would be a tenth of the run) and after the last epoch, and ``model.h5`` and
    ``history.h5`` at the end. Ctrl-C, SIGTERM and divergence first save the last finished epoch
    (unless the stop came while saving), then leave a history marked as such and a message
    saying which epoch the checkpoint holds (``resume_hint``: the command that continues the
    run). A failed write leaves the checkpoint before it. Without ``metrics_thread``, the
    metrics of each epoch are computed on the training thread (for runs that share the cores
    with others; the same numbers, see :func:`cifarlin.core.train.fit`).
    """
    info = DataInfo(str(prepared.dataset.folder), prepared.dataset.format, dict(prepared.checksums))
    if start is not None and (changed := start.data.changed(prepared.checksums)):
        raise DataError(
            f"{prepared.dataset.folder / changed[0]} differs from the file the run in {out} was trained on "
            "(MD5 mismatch): resume with the same data, or start over with --overwrite"
        )
    cfg.check_training_set(len(prepared.y["train"]))  # before the folder is touched
    resume_hint = resume_hint or f"cifarlin train --out {out} --resume"
    state = start.state if start is not None else first_state(cfg, prepared)
    first = state.epoch
    last_good = state  # the last epoch in checkpoint.h5 (or the start)
    finished = state  # the last epoch trained
    saved_at = time.monotonic()
    pace = CHECKPOINT_SECONDS if checkpoint_seconds is None else checkpoint_seconds
    lambdas: list[LambdaScore] = []
    io_seconds = 0.0

    def snapshot(
        st: TrainState, kind: str, test: model.Metrics | None = None, kept: int | None = None
    ) -> Snapshot:
        return Snapshot(
            cfg,
            st,
            prepared.normalizer,
            prepared.class_names,
            info,
            test=test,
            kind=kind,
            kept_epoch=kept,
            features=prepared.features,
        )

    def kept() -> str:
        if last_good.epoch == first == 0:
            return "no epoch was saved" if finished.epoch > 0 else "no epoch finished, so nothing was saved"
        return f"{out / CHECKPOINT} holds epoch {last_good.epoch}"

    with RunFolder(out, overwrite=overwrite and start is None) as folder:

        def save(st: TrainState) -> None:
            nonlocal io_seconds, last_good, saved_at
            t = time.perf_counter()
            save_snapshot(out / CHECKPOINT, snapshot(st, "checkpoint"))
            folder.saved()
            io_seconds += time.perf_counter() - t
            last_good, saved_at = st, time.monotonic()

        def epoch_done(st: TrainState) -> None:
            nonlocal finished
            finished = st
            if time.monotonic() - saved_at >= pace or st.epoch >= cfg.epochs:
                save(st)
            if on_epoch is not None:
                on_epoch(st)

        def save_finished() -> None:
            """The last finished epoch into checkpoint.h5 before the run stops, also when the stop
            came during its write (best effort: the checkpoint before it stays if this cannot be
            written, or a second Ctrl-C comes)."""
            if finished.epoch > last_good.epoch:
                try:
                    save(finished)
                except (WriteError, KeyboardInterrupt):
                    pass

        def history_as(status: str) -> None:
            if last_good.epoch > 0:
                save_history(out / HISTORY, last_good.history, cfg, prepared.class_names, status)

        t0 = time.perf_counter()
        try:
            if cfg.solver == "ridge":
                solution = solve.fit(cfg, prepared)
                cfg, final, lambdas = solution.config, solution.state, solution.lambdas
                epoch_done(final)
            else:
                final = fit(
                    cfg,
                    prepared,
                    state,
                    on_epoch=epoch_done,
                    on_batch=on_batch,
                    metrics_thread=metrics_thread,
                )
            if final.epoch > last_good.epoch:  # ended before cfg.epochs: early stopping, ridge
                save(final)
        except KeyboardInterrupt as e:
            save_finished()
            history_as("interrupted")
            resume = f": resume with '{resume_hint}'" if last_good.epoch > 0 else ""
            how, code = stopped(e)
            epoch = min(finished.epoch + 1, cfg.epochs)  # the last epoch: stopped while saving it
            raise Interrupted(
                f"{how} in epoch {epoch}; {kept()}{resume}", code, folder=str(out), epoch=epoch, kept=kept()
            ) from None
        except DivergenceError as e:
            save_finished()
            history_as("diverged")
            again = " (start again with other values with --overwrite)" if last_good.epoch > 0 else ""
            raise DivergenceError(f"{e}; {kept()}{again}", e.epoch, kept()) from None
        except WriteError as e:
            raise WriteError(f"{e}; {kept()}") from None
        chosen = final_model(cfg, final)
        with one_blas_thread():
            test = model.evaluate(
                chosen.W, chosen.b, prepared.X["test"], prepared.y["test"], cfg.lam, cfg.loss
            )
        loop_seconds = time.perf_counter() - t0 - io_seconds  # epochs, metrics, test evaluation
        kept_epoch = chosen.epoch if cfg.keep == "best" else None
        save_snapshot(out / MODEL, snapshot(chosen, "model", test, kept_epoch))
        save_history(out / HISTORY, final.history, cfg, prepared.class_names, "complete", test)
    return Outcome(
        out, cfg, final, test, first, loop_seconds, io_seconds, chosen.epoch, lambdas, prepared.features
    )


def final_model(cfg: TrainConfig, final: TrainState) -> TrainState:
    """What model.h5 holds: the last epoch, or with ``keep="best"`` the best epoch's weights (its
    epoch is then the kept one; the history in history.h5 says how long the run trained)."""
    if cfg.keep != "best" or final.best is None:
        return final
    return TrainState(final.best.W, final.best.b, final.best.epoch, final.history, final.rng_state)
