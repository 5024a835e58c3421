"""Mini-batch gradient descent, exactly as the original work: no I/O, no printing.

The loop reports through callbacks (``on_epoch`` after every epoch, ``on_batch`` after every
batch), so checkpointing and progress display live with the caller.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cifarlin.core import augment, model
from cifarlin.core.augment import parse_augment
from cifarlin.core.config import TrainConfig
from cifarlin.core.history import History, Kept, TrainState
from cifarlin.core.losses import LOSSES
from cifarlin.core.normalize import Normalizer, Prepared
from cifarlin.core.schedules import learning_rates
from cifarlin.errors import DivergenceError, bad_value, check_stop

GATHER_CHUNK = 20  # batches whose training-set sums go to the metrics thread as one task


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


def _metrics(
    W: np.ndarray, b: np.ndarray, data: Prepared, lam: float, loss: str, train: bool = True
) -> tuple[model.Metrics | None, model.Metrics]:
    """Cost, loss and accuracy on the validation set, and on the training set unless ``train`` is
    False (when the next epoch's passes over it gather them, see :class:`TrainScores`)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):  # per thread
        return (
            model.evaluate(W, b, data.X["train"], data.y["train"], lam, loss) if train else None,
            model.evaluate(W, b, data.X["val"], data.y["val"], lam, loss),
        )


class _Inline:
    """An executor that runs each task at once, on the calling thread."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        done: Future[Any] = Future()
        try:
            done.set_result(fn(*args))
        except Exception as e:  # raised by result(), as a thread's would be; Ctrl-C at once
            done.set_exception(e)
        return done


Pool = ThreadPoolExecutor | _Inline  # where an epoch's metrics are computed


@dataclass
class TrainScores:
    """The training-set metrics of one epoch's final weights, gathered batch by batch while the
    next epoch trains: its forward passes score each batch with those weights too (model.step,
    while the batch is in cache), so the 123 MB training matrix is read once per epoch, not twice. The sums
    run in the batches' order, so the costs can differ from a separate evaluation of the
    training set in their last bits (about 1e-7 relative); accuracy counts are exact."""

    W: np.ndarray
    b: np.ndarray
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    queued: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # batches not yet summed
    summing: list[Future[None]] = field(default_factory=list)
    gathering: bool = False  # an epoch's passes began gathering them, in ``order``
    order: np.ndarray | None = None  # (N,) the batch order they are gathered in (None: as stored)

    def add(self, S: np.ndarray, y: np.ndarray, loss: str) -> None:
        self.loss_sum += float(LOSSES[loss].losses(S, y).sum())
        self.correct += int(np.count_nonzero(S.argmax(axis=1) == y))
        self.seen += len(y)

    def queue(self, S: np.ndarray, y: np.ndarray, loss: str, pool: Pool) -> None:
        """:meth:`add` on the metrics thread, a few batches at a time (in order: it has one
        thread), while this one trains; ``S`` and ``y`` must not change meanwhile."""
        self.queued.append((S, y))
        if len(self.queued) == GATHER_CHUNK:
            self.flush(loss, pool)

    def flush(self, loss: str, pool: Pool) -> None:
        chunk, self.queued = self.queued, []
        if chunk:
            self.summing.append(pool.submit(self._add_all, chunk, loss))

    def _add_all(self, chunk: list[tuple[np.ndarray, np.ndarray]], loss: str) -> None:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):  # per thread
            for S, y in chunk:
                self.add(S, y, loss)

    def wait(self) -> TrainScores:
        """These sums, once the metrics thread has added every batch queued."""
        for f in self.summing:
            f.result()
        return self

    def metrics(self, lam: float) -> model.Metrics:
        value = self.loss_sum / self.seen
        return model.Metrics(value + model.penalty(self.W, lam), value, self.correct / self.seen)

    def standalone(
        self, X: np.ndarray, y: np.ndarray, order: np.ndarray | None, B: int, loss: str
    ) -> TrainScores:
        """The same sums computed on their own (the run ended, or stopped, before the next epoch
        finished gathering them): the same batches in the same order through the same wide
        product, with zero weights in the step's columns, so the same bits as gathered."""
        out = TrainScores(self.W, self.b)
        for start in range(0, len(y), B):
            rows = slice(start, start + B) if order is None else order[start : start + B]
            out.add(model.scores_of_step(X[rows], self.W, self.b), y[rows], loss)
        return out


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS single-threaded in this block: the same numbers whatever the machine's core count, and
    the same as the training loop computes (a GEMM's summation order depends on its threads)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def metrics_thread_fits(runs_at_once: int) -> bool:
    """Whether ``runs_at_once`` runs on this machine each have a core for a metrics thread."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 2 * runs_at_once <= cores


@contextmanager
def _metrics_pool(thread: bool = True) -> Iterator[Pool]:
    """A second thread for the per-epoch metrics (or, without ``thread``, the training thread
    itself), with BLAS single-threaded in every thread.

    A training pass's small GEMMs use a second core poorly, the metrics' large ones use it well:
    computing epoch e's metrics on one core while epoch e + 1 trains on the other beats doing
    both in turn with two BLAS threads each (about 15% of the run here). When other runs keep
    the other cores busy (two runs at a time on two cores), the metrics are better computed in
    turn with the training: four threads on two cores cost 7% more CPU than two. The same
    functions in the same order either way: the same numbers, bit for bit. One BLAS thread also
    makes the numbers independent of how many cores the machine has.
    """
    with one_blas_thread():
        if not thread:
            yield _Inline()
            return
        with ThreadPoolExecutor(1, "cifarlin-metrics") as pool:
            yield pool


@dataclass
class _Pending:
    """An epoch whose weights are final and whose metrics are being computed."""

    epoch: int
    W: np.ndarray
    b: np.ndarray
    rng_state: dict[str, Any]
    started: float
    eta: float  # the mean learning rate of the epoch's updates
    train: TrainScores | None = None  # its training-set metrics, gathered during the next epoch
    # (train or None, val); None while an inline pool computes them (a Ctrl-C then: again)
    metrics: Future[tuple[model.Metrics | None, model.Metrics]] | None = None


class _Views:
    """The normalised views of one epoch's batches, made ``ahead`` batches in advance on a thread
    of their own (the gather and the arithmetic release the GIL): the training loop's products
    and the making of the next batches' views then share the two cores. The views are the same
    whichever thread makes them, so the numbers do not change."""

    def __init__(
        self,
        data: Prepared,
        batches: list[Any],
        flips: np.ndarray,
        moves: np.ndarray,
        size: int,
        ahead: int = 4,
    ):
        self._free: queue.Queue[int] = queue.Queue()
        self._ready: queue.Queue[tuple[int, int] | BaseException] = queue.Queue()
        X = data.X["train"]
        self._slots = np.empty((ahead + 1, size, X.shape[1]), dtype=X.dtype)  # a ring of batches
        for k in range(ahead + 1):
            self._free.put(k)
        self._stop = False
        self._current: int | None = None

        def make() -> None:
            try:
                for rows in batches:
                    k = self._free.get()
                    if self._stop:
                        return
                    views = augment.apply(data.raw_train, flips[rows], moves[rows], rows)
                    data.normalizer.apply(views, out=self._slots[k, : len(views)])
                    self._ready.put((k, len(views)))
            except BaseException as e:  # handed to the loop, which raises it
                self._ready.put(e)

        self._thread = threading.Thread(target=make, name="cifarlin-views", daemon=True)
        self._thread.start()

    def next(self) -> np.ndarray:
        """The next batch's normalised views (n, d); valid until the following call."""
        if self._current is not None:
            self._free.put(self._current)
        got = self._ready.get()
        if isinstance(got, BaseException):
            raise got
        self._current, n = got
        return self._slots[self._current, :n]

    def close(self) -> None:
        self._stop = True
        self._free.put(0)  # wakes a producer waiting for a free slot
        self._thread.join()


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
    update; then cost, loss and accuracy on the training and validation sets. With
    ``cfg.keep == "best"`` the state also carries the weights of the epoch with the highest
    validation accuracy (the earliest on ties). ``on_epoch(state)`` is called with each new
    state, ``on_batch(epoch, batch, n_batches)`` after each batch. Raises
    :class:`DivergenceError` (leaving the last good state to the caller) when the parameters or
    the cost stop being finite.

    An epoch's metrics are computed on a second thread while the next epoch trains (on this
    one without ``metrics_thread``, for runs that share the cores with others), so
    ``on_epoch`` for epoch e runs once epoch e + 1's batches are done (at the latest at the end,
    or on Ctrl-C, which waits the few milliseconds the last finished epoch's metrics need). When
    early stopping ends the run at epoch e, the epoch trained meanwhile is dropped.
    """
    X, y = data.X["train"], data.y["train"]  # (N, d) float, (N,)
    N, B = len(y), cfg.batch_size
    cfg.check_training_set(N)
    if X.dtype != np.dtype(cfg.dtype):
        raise bad_value("dtype", cfg.dtype, f"the data are {X.dtype}; prepare them in {cfg.dtype}")
    # pixel views per batch; a run on features has its mirrored copies among the rows instead
    aug = parse_augment(cfg.augment if cfg.features is None else "none")
    if aug.active and data.raw_train is None:
        raise bad_value(
            "augment", cfg.augment, "the data were prepared without their raw images (keep_raw=True)"
        )
    rng = np.random.default_rng()
    rng.bit_generator.state = state.rng_state
    W, b = state.W.copy(), state.b.copy()
    history = state.history.copy()
    n_batches = -(-N // B)
    last = state
    pending: _Pending | None = None

    def diverged(epoch: int) -> DivergenceError:
        smaller = "eta" if cfg.lam == 0 else "eta or lam"
        return DivergenceError(
            f"training diverged in epoch {epoch} (eta={cfg.eta!r}, lam={cfg.lam!r}): the cost or "
            f"the weights became NaN or infinite; try a smaller {smaller}",
            epoch,
        )

    def finish(p: _Pending, ended: float) -> None:
        nonlocal last, initial
        if p.metrics is None:  # a Ctrl-C stopped their computation on this thread
            p.metrics = pool.submit(_metrics, p.W, p.b, data, cfg.lam, cfg.loss, p.train is None)
        train, val = p.metrics.result()
        if train is None:
            train = gathered(p.train).metrics(cfg.lam)
        if not _finite(train.cost, val.cost):
            raise diverged(p.epoch)
        if initial is not None:
            start_train, start_val = initial[0].result()
            history.set_initial(start_train or gathered(initial[1]).metrics(cfg.lam), start_val)
            initial = None
        history.append(train, val, ended - p.started, p.eta)
        best = last.best
        if cfg.keep == "best" and history.best_epoch == p.epoch:
            best = Kept(p.W, p.b, p.epoch)
        last = TrainState(p.W, p.b, p.epoch, history.copy(), p.rng_state, best)
        if on_epoch is not None:
            on_epoch(last)

    def next_order() -> np.ndarray | None:
        """The permutation the next epoch will draw (on a copy of the generator: nothing drawn)."""
        if not cfg.shuffle:
            return None
        peek = np.random.default_rng()
        peek.bit_generator.state = rng.bit_generator.state
        return peek.permutation(N)

    def gathered(scores: TrainScores) -> TrainScores:
        """``scores`` complete: as gathered by the next epoch, or computed alike on their own."""
        scores.flush(cfg.loss, pool)
        if scores.wait().seen == N:
            return scores
        order = scores.order if scores.gathering else next_order()
        return scores.standalone(X, y, order, B, cfg.loss)

    if is_complete(cfg, state):
        return state
    with (
        np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"),
        _metrics_pool(metrics_thread) as pool,
    ):
        # the metrics of the initial weights (epoch 0 of the curves), beside the first epoch:
        # (validation on the other thread, training gathered by the first epoch's passes)
        initial = None
        if state.epoch == 0:
            initial = (
                pool.submit(_metrics, W.copy(), b.copy(), data, cfg.lam, cfg.loss, aug.active),
                TrainScores(W.copy(), b.copy()),
            )
        try:
            for epoch in range(state.epoch + 1, cfg.epochs + 1):
                t0 = time.perf_counter()
                etas = learning_rates(cfg, epoch, n_batches)  # (n_batches,)
                order = rng.permutation(N) if cfg.shuffle else None
                flips, moves = augment.draw(rng, N, aug) if aug.active else (None, None)  # per image
                # the previous epoch's weights, whose training-set metrics this epoch's passes gather
                gather = None
                if not aug.active:
                    gather = (
                        pending.train if pending is not None else initial[1] if initial is not None else None
                    )
                if gather is not None:
                    gather.gathering, gather.order = True, order
                # [W^T | W'^T]: the previous weights' columns set once, W^T rewritten per batch
                Wt = model.forward_matrix(W, None if gather is None else gather.W, narrow=aug.active)
                batches = [slice(s, s + B) if order is None else order[s : s + B] for s in range(0, N, B)]
                # the images' views in pixel space, then normalised as ever, made a few batches ahead
                views = _Views(data, batches, flips, moves, min(B, N)) if aug.active else None
                try:
                    for j, rows in enumerate(batches):
                        Xb = views.next() if views is not None else X[rows]
                        also = (gather.W, gather.b) if gather is not None else None
                        dW, db, S_prev = model.step(W, b, Xb, y[rows], cfg.lam, cfg.loss, also, Wt)
                        if gather is not None:
                            gather.queue(S_prev, y[rows], cfg.loss, pool)
                        eta = float(etas[j])  # a Python float: the update stays in the data's dtype
                        dW *= eta  # in place: W -= eta * dW without a temporary
                        W -= dW
                        db *= eta
                        b -= db
                        check_stop()  # a Ctrl-C that an 'Exception ignored' swallowed still stops here
                        if on_batch is not None:
                            on_batch(epoch, j + 1, n_batches)
                finally:
                    if views is not None:
                        views.close()
                if pending is not None:
                    done, pending = pending, None
                    finish(done, t0)
                    if should_stop(cfg, history):
                        break  # the epoch just trained is dropped: the run ends at done.epoch
                if not _finite(W, b):
                    raise diverged(epoch)
                We, be = W.copy(), b.copy()
                fused = not aug.active  # its training metrics: gathered by the next epoch's passes
                pending = _Pending(
                    epoch,
                    We,
                    be,
                    rng.bit_generator.state,
                    t0,
                    float(etas[0] if (etas == etas[0]).all() else etas.mean()),  # a constant exactly
                    TrainScores(We, be) if fused else None,
                )  # pending before its metrics: on this thread (inline), a Ctrl-C may come meanwhile
                pending.metrics = pool.submit(_metrics, We, be, data, cfg.lam, cfg.loss, not fused)
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
