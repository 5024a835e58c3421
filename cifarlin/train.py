"""Mini-batch gradient descent, exactly as the original work: no I/O, no printing.

The loop reports through callbacks (``on_epoch`` after every epoch, ``on_batch`` after every
batch), so checkpointing and progress display live with the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cifarlin import model
from cifarlin.config import TrainConfig
from cifarlin.data import Prepared
from cifarlin.errors import ConfigError, DivergenceError

HISTORY_KEYS = ("train_cost", "train_loss", "train_acc", "val_cost", "val_loss", "val_acc", "seconds")


@dataclass
class History:
    """One value per epoch for each of :data:`HISTORY_KEYS`."""

    columns: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in HISTORY_KEYS})

    def __len__(self) -> int:
        return len(self.columns["train_cost"])

    def append(self, train: model.Metrics, val: model.Metrics, seconds: float) -> None:
        row = {
            "train_cost": train.cost, "train_loss": train.loss, "train_acc": train.accuracy,
            "val_cost": val.cost, "val_loss": val.loss, "val_acc": val.accuracy,
            "seconds": seconds,
        }
        for k in HISTORY_KEYS:
            self.columns[k].append(float(row[k]))

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.float64) for k, v in self.columns.items()}

    def last(self) -> dict[str, float]:
        return {k: v[-1] for k, v in self.columns.items()}

    @property
    def best_epoch(self) -> int:
        """1-based epoch with the highest validation accuracy (the first, on ties); 0 if empty."""
        acc = self.columns["val_acc"]
        return int(np.argmax(acc)) + 1 if acc else 0

    def copy(self) -> History:
        return History({k: list(v) for k, v in self.columns.items()})

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> History:
        return cls({k: [float(x) for x in arrays[k]] for k in HISTORY_KEYS})


@dataclass
class TrainState:
    """Everything needed to continue a run: parameters, epochs done, history, RNG state."""

    W: np.ndarray  # (K, d)
    b: np.ndarray  # (K,)
    epoch: int
    history: History
    rng_state: dict[str, Any]


def init_state(cfg: TrainConfig, d: int = model.D) -> TrainState:
    """W, b from N(0, init_std^2) drawn from ``np.random.default_rng(cfg.seed)``."""
    rng = np.random.default_rng(cfg.seed)
    W, b = model.init_params(rng, d=d, std=cfg.init_std, dtype=np.dtype(cfg.dtype))
    return TrainState(W, b, 0, History(), rng.bit_generator.state)


def check_batch_size(cfg: TrainConfig, n_train: int) -> None:
    if cfg.batch_size > n_train:
        raise ConfigError(f"--batch-size {cfg.batch_size}: larger than the training set ({n_train} images)")


def _finite(*values: np.ndarray | float) -> bool:
    return all(np.isfinite(v).all() for v in values)


def _metrics(W: np.ndarray, b: np.ndarray, data: Prepared, lam: float) -> tuple[model.Metrics, model.Metrics]:
    """Cost, loss and accuracy on the training and the validation set."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):  # per thread
        return (model.evaluate(W, b, data.X["train"], data.y["train"], lam),
                model.evaluate(W, b, data.X["val"], data.y["val"], lam))


@contextmanager
def _metrics_thread() -> Iterator[ThreadPoolExecutor]:
    """A second thread for the per-epoch metrics, with BLAS single-threaded in both threads.

    A training pass's small GEMMs use a second core poorly, the metrics' large ones use it well:
    computing epoch e's metrics on one core while epoch e + 1 trains on the other beats doing
    both in turn with two BLAS threads each (about 15% of the run here). One BLAS thread also
    makes the numbers independent of how many cores the machine has.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(1, "cifarlin-metrics") as pool:
        yield pool


@dataclass
class _Pending:
    """An epoch whose weights are final and whose metrics are being computed."""

    epoch: int
    W: np.ndarray
    b: np.ndarray
    rng_state: dict[str, Any]
    started: float
    metrics: Future[tuple[model.Metrics, model.Metrics]]


def fit(
    cfg: TrainConfig,
    data: Prepared,
    state: TrainState,
    on_epoch: Callable[[TrainState], None] | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> TrainState:
    """Train from ``state`` up to ``cfg.epochs`` epochs; returns the final state.

    Per epoch: the batches in order (or in a permutation drawn from the run's generator when
    ``cfg.shuffle``), ``W -= eta * dW``, ``b -= eta * db``; then cost, loss and accuracy on the
    training and validation sets. ``on_epoch(state)`` is called with each new state,
    ``on_batch(epoch, batch, n_batches)`` after each batch. Raises :class:`DivergenceError`
    (leaving the last good state to the caller) when the parameters or the cost stop being finite.

    An epoch's metrics are computed on a second thread while the next epoch trains, so
    ``on_epoch`` for epoch e runs once epoch e + 1's batches are done (at the latest at the end,
    or on Ctrl-C, which waits the few milliseconds the last finished epoch's metrics need).
    """
    X, y = data.X["train"], data.y["train"]  # (N, d) float, (N,)
    N, B = len(y), cfg.batch_size
    check_batch_size(cfg, N)
    if X.dtype != np.dtype(cfg.dtype):
        raise ValueError(f"data are {X.dtype}, the config asks for {cfg.dtype}")
    rng = np.random.default_rng()
    rng.bit_generator.state = state.rng_state
    W, b = state.W.copy(), state.b.copy()
    history = state.history.copy()
    n_batches = -(-N // B)
    last = state
    pending: _Pending | None = None

    def diverged(epoch: int) -> DivergenceError:
        smaller = "--eta" if cfg.lam == 0 else "--eta or --lam"
        return DivergenceError(
            f"training diverged in epoch {epoch} (eta={cfg.eta:g}, lambda={cfg.lam:g}): the cost or "
            f"the weights became NaN or infinite; try a smaller {smaller}",
            epoch,
        )

    def finish(p: _Pending, ended: float) -> None:
        nonlocal last
        train, val = p.metrics.result()
        if not _finite(train.cost, val.cost):
            raise diverged(p.epoch)
        history.append(train, val, ended - p.started)
        last = TrainState(p.W, p.b, p.epoch, history.copy(), p.rng_state)
        if on_epoch is not None:
            on_epoch(last)

    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"), _metrics_thread() as pool:
        try:
            for epoch in range(state.epoch + 1, cfg.epochs + 1):
                t0 = time.perf_counter()
                order = rng.permutation(N) if cfg.shuffle else None
                for j, start in enumerate(range(0, N, B)):
                    rows = slice(start, start + B) if order is None else order[start : start + B]
                    dW, db = model.gradients(W, b, X[rows], y[rows], cfg.lam)
                    dW *= cfg.eta  # in place: W -= eta * dW without a temporary
                    W -= dW
                    db *= cfg.eta
                    b -= db
                    if on_batch is not None:
                        on_batch(epoch, j + 1, n_batches)
                if pending is not None:
                    done, pending = pending, None
                    finish(done, t0)
                if not _finite(W, b):
                    raise diverged(epoch)
                We, be = W.copy(), b.copy()
                future = pool.submit(_metrics, We, be, data, cfg.lam)
                pending = _Pending(epoch, We, be, rng.bit_generator.state, t0, future)
            if pending is not None:
                done, pending = pending, None
                finish(done, time.perf_counter())
        except KeyboardInterrupt:
            if pending is not None:  # a finished epoch still counts: its metrics take a few ms more
                done, pending = pending, None
                try:
                    finish(done, time.perf_counter())
                except DivergenceError:
                    pass
            raise
    return last
