"""What makes the training loop (:func:`cifarlin.core.train.fit`) fast without changing a bit of
its numbers, behind the few calls the loop makes:

- :func:`cifarlin.core.threads.one_blas_thread` around it: BLAS single-threaded, the same
  numbers on any machine;
- :func:`epoch_metrics` (:class:`EpochMetrics`): each epoch's metrics computed on a second thread
  while the next epoch trains, the training set's gathered by the next epoch's forward passes
  (:class:`Forward`, one product by [W^T | W'^T]; :class:`TrainScores`);
- :class:`Batches`: an epoch's batches, augmented views made a few batches ahead on a thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cifarlin.core import augment, model
from cifarlin.core.config import TrainConfig
from cifarlin.core.losses import LOSSES
from cifarlin.errors import wait_held

if TYPE_CHECKING:  # annotations only
    from cifarlin.core.prepared import Prepared

GATHER_CHUNK = 20  # batches whose training-set sums go to the metrics thread as one task


# ---------------------------------------------------------------------------------------------
# The forward pass by [W^T | W'^T]: a batch's scores under the previous epoch's weights too
# ---------------------------------------------------------------------------------------------


def fused_matrix(W: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Wt = [W^T | W'^T] (d, 2K), W' = ``other``: :func:`cifarlin.core.model.forward_matrix`'s
    zero columns filled with W'^T."""
    k = W.shape[0]
    Wt = model.forward_matrix(W)  # (d, 2K)
    Wt[:, k : 2 * k] = other.T
    return Wt


def scores_of_step(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The scores (N, K) a :class:`Forward` gathering (W, b) gives them, bit for bit, computed on
    their own (the step's own columns zero)."""
    Wt = fused_matrix(np.zeros_like(W), W)
    return (X @ Wt)[:, len(W) : 2 * len(W)] + b


class Forward:
    """S = X W^T + b for an epoch's batches, W changing from batch to batch.

    The product is one by [W^T | W'^T] (d, 2K) (:func:`fused_matrix`) with the previous epoch's
    weights W' (fixed for the epoch) when ``gather`` holds them: their scores, computed while
    the batch is in cache, go to ``gather``. A GEMM's column depends on its own column's values
    only, for a given shape, so S is the same either way, and W''s scores are those of
    :func:`scores_of_step`. Without ``gather``, [W^T | 0] (d, 2K), or padded to 16 columns only
    with ``narrow`` (a loop on augmented views: it never scores other weights), 20% fewer flops.
    The matrix is kept from batch to batch: each batch writes W^T into its first K columns.
    """

    def __init__(
        self, W: np.ndarray, gather: TrainScores | None, narrow: bool, loss: str, pool: Pool
    ) -> None:
        if gather is None:
            self._Wt = model.forward_matrix(W, narrow=narrow)  # (d, 16) or (d, 2K)
        else:
            self._Wt = fused_matrix(W, gather.W)  # (d, 2K)
        self._gather, self._loss, self._pool = gather, loss, pool

    def __call__(self, W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """S (n, K) of the batch X (n, d), y (n,); the scores under W' queued for the metrics thread."""
        k = W.shape[0]
        self._Wt[:, :k] = W.T
        P = X @ self._Wt  # (n, 2K): [S - b | S' - b']
        if self._gather is not None:
            self._gather.queue(P[:, k : 2 * k] + self._gather.b, y, self._loss, self._pool)
        return P[:, :k] + b


# ---------------------------------------------------------------------------------------------
# Each epoch's metrics, beside the training
# ---------------------------------------------------------------------------------------------


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
    next epoch trains: its forward passes score each batch with those weights too (:class:`Forward`,
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
            wait_held(f.result, f.done)
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
            out.add(scores_of_step(X[rows], self.W, self.b), y[rows], loss)
        return out


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


@dataclass(frozen=True)
class Finished:
    """An epoch's weights with their metrics (and, with the first epoch's, the initial weights')."""

    epoch: int
    W: np.ndarray  # (K, d)
    b: np.ndarray  # (K,)
    rng_state: dict[str, Any]  # the run's generator after the epoch
    seconds: float
    eta: float  # the mean learning rate of the epoch's updates
    train: model.Metrics
    val: model.Metrics
    initial: tuple[model.Metrics, model.Metrics] | None  # (train, val) of the initial weights


class EpochMetrics:
    """Cost, loss and accuracy of each epoch's weights on the training and validation sets,
    computed on a second thread while the next epoch trains (or on the training thread: see
    :func:`epoch_metrics`). With ``gather`` the training set's are summed from the next epoch's
    own forward passes (:meth:`forward`), else evaluated as the validation set's.

    The loop calls :meth:`start` with the initial weights (epoch 0 of the curves), then per
    epoch :meth:`forward` for its scores, :meth:`take` after its batches for the previous epoch's
    metrics, and :meth:`submit` with its final weights; :meth:`take` once more at the end.
    """

    def __init__(self, cfg: TrainConfig, data: Prepared, rng: np.random.Generator, pool: Pool, gather: bool):
        self._cfg, self._data, self._rng, self._pool, self._gather = cfg, data, rng, pool, gather
        self._pending: _Pending | None = None
        # the initial weights' (train or None, val) and training-set sums to gather
        self._initial: tuple[Future[tuple[model.Metrics | None, model.Metrics]], TrainScores] | None = None

    def start(self, W: np.ndarray, b: np.ndarray) -> None:
        """The metrics of the initial weights, beside the first epoch: validation on the other
        thread, training gathered by the first epoch's passes (or evaluated without ``gather``)."""
        cfg = self._cfg
        self._initial = (
            self._pool.submit(_metrics, W.copy(), b.copy(), self._data, cfg.lam, cfg.loss, not self._gather),
            TrainScores(W.copy(), b.copy()),
        )

    def forward(self, W: np.ndarray, order: np.ndarray | None) -> Forward:
        """The scores of an epoch's batches, taken in ``order`` (N,) (None: as stored), gathering
        the training-set sums of the previous epoch's weights (or of the initial ones)."""
        gather = None
        if self._gather:
            p, initial = self._pending, self._initial
            gather = p.train if p is not None else initial[1] if initial is not None else None
        if gather is not None:
            gather.gathering, gather.order = True, order
        return Forward(W, gather, not self._gather, self._cfg.loss, self._pool)

    def submit(
        self, epoch: int, W: np.ndarray, b: np.ndarray, rng_state: dict[str, Any], started: float, eta: float
    ) -> None:
        """Begin the metrics of epoch ``epoch``'s final weights W (K, d), b (K,)."""
        cfg, train = self._cfg, not self._gather  # training-set metrics evaluated, not gathered
        p = _Pending(epoch, W, b, rng_state, started, eta, None if train else TrainScores(W, b))
        self._pending = p  # pending before its metrics: on this thread (inline), a Ctrl-C may come meanwhile
        p.metrics = self._pool.submit(_metrics, W, b, self._data, cfg.lam, cfg.loss, train)

    def take(self, ended: float) -> Finished | None:
        """The epoch submitted last, with its metrics (waiting for them), or None; ``ended`` is
        when its time stops (``perf_counter``)."""
        p, self._pending = self._pending, None
        if p is None:
            return None
        lam, loss = self._cfg.lam, self._cfg.loss
        if p.metrics is None:  # a Ctrl-C stopped their computation on this thread
            p.metrics = self._pool.submit(_metrics, p.W, p.b, self._data, lam, loss, p.train is None)
        train, val = wait_held(p.metrics.result, p.metrics.done)
        if train is None:
            train = self._gathered(p.train).metrics(lam)
        initial = None
        if self._initial is not None:
            start_train, start_val = wait_held(self._initial[0].result, self._initial[0].done)
            initial = (start_train or self._gathered(self._initial[1]).metrics(lam), start_val)
            self._initial = None
        return Finished(p.epoch, p.W, p.b, p.rng_state, ended - p.started, p.eta, train, val, initial)

    def _next_order(self) -> np.ndarray | None:
        """The permutation the next epoch will draw (on a copy of the generator: nothing drawn)."""
        if not self._cfg.shuffle:
            return None
        peek = np.random.default_rng()
        peek.bit_generator.state = self._rng.bit_generator.state
        return peek.permutation(len(self._data.y["train"]))

    def _gathered(self, scores: TrainScores) -> TrainScores:
        """``scores`` complete: as gathered by the next epoch, or computed alike on their own."""
        X, y = self._data.X["train"], self._data.y["train"]
        scores.flush(self._cfg.loss, self._pool)
        if scores.wait().seen == len(y):
            return scores
        order = scores.order if scores.gathering else self._next_order()
        return scores.standalone(X, y, order, self._cfg.batch_size, self._cfg.loss)


@contextmanager
def epoch_metrics(
    cfg: TrainConfig, data: Prepared, rng: np.random.Generator, thread: bool = True, gather: bool = True
) -> Iterator[EpochMetrics]:
    """:class:`EpochMetrics` computed on a second thread (or, without ``thread``, on the
    training thread itself); ``rng`` is the run's generator (the next epoch's order is read
    from it, nothing drawn). Wants BLAS single-threaded around it
    (:func:`cifarlin.core.threads.one_blas_thread`).

    A training pass's small GEMMs use a second core poorly, the metrics' large ones use it well:
    computing epoch e's metrics on one core while epoch e + 1 trains on the other beats doing
    both in turn with two BLAS threads each (about 15% of the run here). When other runs keep
    the other cores busy (two runs at a time on two cores), the metrics are better computed in
    turn with the training: four threads on two cores cost 7% more CPU than two. The same
    functions in the same order either way: the same numbers, bit for bit. One BLAS thread also
    makes the numbers independent of how many cores the machine has.
    """
    if not thread:
        yield EpochMetrics(cfg, data, rng, _Inline(), gather)
        return
    with ThreadPoolExecutor(1, "cifarlin-metrics") as pool:
        yield EpochMetrics(cfg, data, rng, pool, gather)


# ---------------------------------------------------------------------------------------------
# An epoch's batches, augmented views made ahead
# ---------------------------------------------------------------------------------------------


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
        got = wait_held(lambda timeout: self._ready.get(timeout=timeout))
        if isinstance(got, BaseException):
            raise got
        self._current, n = got
        return self._slots[self._current, :n]

    def close(self) -> None:
        self._stop = True
        self._free.put(0)  # wakes a producer waiting for a free slot
        self._thread.join()


class Batches:
    """An epoch's batches (X_b (n, d), y_b (n,)) of ``B`` rows in ``order`` (N,) (None: as
    stored), the last one possibly smaller: rows of the training matrix or, with ``flips`` and
    ``moves`` (per image, from :func:`cifarlin.core.augment.draw`), the images' views in pixel
    space, then normalised as ever, made a few batches ahead (:class:`_Views`). Each X_b is valid
    until the next one. A context manager: leaving it stops the views' thread."""

    def __init__(
        self,
        data: Prepared,
        order: np.ndarray | None,
        B: int,
        flips: np.ndarray | None = None,
        moves: np.ndarray | None = None,
    ):
        N = len(data.y["train"])
        self._data = data
        self._rows = [slice(s, s + B) if order is None else order[s : s + B] for s in range(0, N, B)]
        self._views = None if flips is None else _Views(data, self._rows, flips, moves, min(B, N))

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        X, y = self._data.X["train"], self._data.y["train"]  # (N, d), (N,)
        for rows in self._rows:
            yield (X[rows] if self._views is None else self._views.next()), y[rows]

    def __enter__(self) -> Batches:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._views is not None:
            self._views.close()
