"""Mini-batch gradient descent, exactly as the original work: no I/O, no printing.

The loop reports through callbacks (``on_epoch`` after every epoch, ``on_batch`` after every
batch), so checkpointing and progress display live with the caller. What makes it fast without
changing its numbers (metrics on a second thread, views made ahead) is in
:mod:`cifarlin.core.speed`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from cifarlin.core import augment, model, speed, threads
from cifarlin.core.augment import Augment, parse_augment
from cifarlin.core.config import TrainConfig
from cifarlin.core.history import History, Kept, TrainState
from cifarlin.core.normalize import Normalizer
from cifarlin.core.prepared import Prepared
from cifarlin.core.schedules import learning_rates
from cifarlin.errors import DivergenceError, bad_value, check_stop


def init_state(cfg: TrainConfig, d: int = model.D) -> TrainState:
    """W, b from N(0, init_std^2) drawn from ``np.random.default_rng(cfg.seed)``."""
    rng = np.random.default_rng(cfg.seed)
    W, b = model.init_params(rng, d=d, std=cfg.init_std, dtype=np.dtype(cfg.dtype))
    return TrainState(W, b, 0, History(), rng.bit_generator.state)


def warm_state(
    cfg: TrainConfig, W: np.ndarray, b: np.ndarray, source_loss: str, source: Normalizer, target: Normalizer
) -> TrainState:
    """:func:`init_state` with W (K, d), b (K,) replaced by a trained model's (``--init``),
    re-expressed for this run's inputs so that every image gets the same scores as before:

        s = W (x/c - m1)/sd1 + b = W' (x/c - m2)/sd2 + b',  W' = W sd2/sd1,  b' = b + W (m2 - m1)/sd1

    (normalisers (m1, sd1) of the source, (m2, sd2) of this run, c their common scale). A
    squared-loss model (fit to 0/1 targets) started for the squared hinge (targets -1/+1) is
    mapped onto those targets, s -> 2 s - 1: the ridge solution for -1/+1 targets exactly. The
    generator is drawn from as for a random start, so shuffling and augmentation follow the same
    stream."""
    state = init_state(cfg, d=W.shape[1])
    W64 = np.asarray(W, dtype=np.float64)  # (K, d)
    W2 = W64 * (target.std / source.std)  # (K, d)
    b2 = np.asarray(b, dtype=np.float64) + W64 @ ((target.mean - source.mean) / source.std)  # (K,)
    if source_loss == "mse" and cfg.loss == "l2svm":
        W2, b2 = 2 * W2, 2 * b2 - 1
    dtype = np.dtype(cfg.dtype)
    return TrainState(W2.astype(dtype), b2.astype(dtype), 0, History(), state.rng_state)


def _finite(*values: np.ndarray | float) -> bool:
    return all(np.isfinite(v).all() for v in values)


def _diverged(cfg: TrainConfig, epoch: int) -> DivergenceError:
    smaller = "eta" if cfg.lam == 0 else "eta or lam"
    return DivergenceError(
        f"training diverged in epoch {epoch} (eta={cfg.eta!r}, lam={cfg.lam!r}): the cost or "
        f"the weights became NaN or infinite; try a smaller {smaller}",
        epoch,
    )


def _checked(cfg: TrainConfig, data: Prepared) -> Augment:
    """The views a run of ``cfg`` trains on, once its data are checked to suit it."""
    X = data.X["train"]
    cfg.check_training_set(len(data.y["train"]))
    if X.dtype != np.dtype(cfg.dtype):
        raise bad_value("dtype", cfg.dtype, f"the data are {X.dtype}; prepare them in {cfg.dtype}")
    # pixel views per batch; a run on features has its mirrored copies among the rows instead
    aug = parse_augment(cfg.augment if cfg.features is None else "none")
    if aug.active and data.raw_train is None:
        raise bad_value(
            "augment", cfg.augment, "the data were prepared without their raw images (keep_raw=True)"
        )
    return aug


def _record(cfg: TrainConfig, history: History, last: TrainState, done: speed.Finished) -> TrainState:
    """The state after epoch ``done.epoch``, its metrics appended to ``history`` (in place). With
    ``cfg.keep == "best"`` it also carries the weights of the epoch with the highest validation
    accuracy (the earliest on ties)."""
    if not _finite(done.train.cost, done.val.cost):
        raise _diverged(cfg, done.epoch)
    if done.initial is not None:
        history.set_initial(*done.initial)
    history.append(done.train, done.val, done.seconds, done.eta)
    best = last.best
    if cfg.keep == "best" and history.best_epoch == done.epoch:
        best = Kept(done.W, done.b, done.epoch)
    return TrainState(done.W, done.b, done.epoch, history.copy(), done.rng_state, best)


def should_stop(cfg: TrainConfig, history: History) -> bool:
    """Early stopping: ``cfg.patience`` epochs have passed without a better validation accuracy."""
    return cfg.patience is not None and len(history) - history.best_epoch >= cfg.patience


def is_complete(cfg: TrainConfig, state: TrainState) -> bool:
    """Whether the run of ``cfg`` has nothing left to train from ``state``."""
    return state.epoch >= cfg.epochs or should_stop(cfg, state.history)


def fit(
    cfg: TrainConfig,
    data: Prepared,
    state: TrainState,
    on_epoch: Callable[[TrainState], None] | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
    metrics_thread: bool = True,
) -> TrainState:
    """Train from ``state`` up to ``cfg.epochs`` epochs (or until ``cfg.patience`` says stop);
    returns the final state.

    Per epoch: the batches in order (or in a permutation drawn from the run's generator when
    ``cfg.shuffle``), ``W -= eta_t * dW``, ``b -= eta_t * db`` with the schedule's eta_t of each
    update; then cost, loss and accuracy on the training and validation sets (:func:`_record`).
    ``on_epoch(state)`` is called with each new state, ``on_batch(epoch, batch, n_batches)``
    after each batch. Raises :class:`DivergenceError` (the last good state left to the caller)
    when the parameters or the cost stop being finite.

    An epoch's metrics are computed while the next epoch trains, on a second thread unless not
    ``metrics_thread`` (runs sharing the cores), so ``on_epoch`` for epoch e runs once epoch
    e + 1's batches are done (at the latest at the end, or on Ctrl-C, which waits the few ms the
    last finished epoch's metrics need); when early stopping ends the run at epoch e, the epoch
    trained meanwhile is dropped.
    """
    aug = _checked(cfg, data)
    if is_complete(cfg, state):
        return state
    N, B = len(data.y["train"]), cfg.batch_size
    n_batches = -(-N // B)
    rng = np.random.default_rng()
    rng.bit_generator.state = state.rng_state
    W, b = state.W.copy(), state.b.copy()  # (K, d), (K,)
    history, last = state.history.copy(), state

    def record(done: speed.Finished | None) -> None:
        nonlocal last
        if done is not None:
            last = _record(cfg, history, last, done)
            if on_epoch is not None:
                on_epoch(last)

    with (
        np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"),
        threads.one_blas_thread(),  # the same numbers on any machine
        speed.epoch_metrics(cfg, data, rng, metrics_thread, gather=not aug.active) as metrics,
    ):
        if state.epoch == 0:
            metrics.start(W, b)  # epoch 0 of the curves, computed beside the first epoch
        try:
            for epoch in range(state.epoch + 1, cfg.epochs + 1):
                t0 = time.perf_counter()
                etas = learning_rates(cfg, epoch, n_batches)  # (n_batches,)
                order = rng.permutation(N) if cfg.shuffle else None  # (N,)
                flips, moves = augment.draw(rng, N, aug) if aug.active else (None, None)  # per image
                scores = metrics.forward(W, order)  # also scores the previous epoch's weights
                with speed.Batches(data, order, B, flips, moves) as batches:
                    for j, (Xb, yb) in enumerate(batches):  # (n, d), (n,)
                        S = scores(W, b, Xb, yb)  # (n, K) = Xb W^T + b
                        dW, db = model.backward(Xb, yb, S, W, cfg.lam, cfg.loss)  # (K, d), (K,)
                        eta = float(etas[j])  # a Python float: the update stays in the data's dtype
                        dW *= eta  # in place: W -= eta * dW without a temporary
                        W -= dW
                        db *= eta
                        b -= db
                        check_stop()  # a Ctrl-C that an 'Exception ignored' swallowed still stops here
                        if on_batch is not None:
                            on_batch(epoch, j + 1, n_batches)
                record(metrics.take(t0))  # the previous epoch's, computed meanwhile
                if should_stop(cfg, history):
                    break  # the epoch just trained is dropped: the run ends at the previous one
                if not _finite(W, b):
                    raise _diverged(cfg, epoch)
                eta_mean = etas[0] if (etas == etas[0]).all() else etas.mean()  # a constant exactly
                metrics.submit(epoch, W.copy(), b.copy(), rng.bit_generator.state, t0, float(eta_mean))
            record(metrics.take(time.perf_counter()))
        except KeyboardInterrupt:
            try:  # a finished epoch still counts: its metrics take a few ms more
                record(metrics.take(time.perf_counter()))
            except DivergenceError:
                pass
            raise
    return last
