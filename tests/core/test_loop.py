"""Details of the training loop against a reference loop written here: the last, partial batch,
one permutation per epoch from the run's generator, and the metrics the history records.

The reference loop repeats, operation for operation and in the same order, what
``cifarlin/train.py`` and ``cifarlin/model.py`` compute (scores through a K padded to 16 columns,
the shifted softmax, ``dW *= eta; W -= dW``), with BLAS single-threaded as the loop runs it, so
float32 runs can be compared bit for bit. Each test's docstring names the bug it catches.
"""

from __future__ import annotations

import itertools

import h5py
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from cifarlin.core import config, speed, threads, train
from cifarlin.core.config import TrainConfig
from cifarlin.data import cifar as data
from cifarlin.work import runs
from cifarlin.work.prepare import prepare
from oracles import cost_naive
from tolerances import U32, U64, assert_within, cost_rounding, min_gap, product_error, sum_error

N_TRAIN = 50  # images in the tiny training batch


@pytest.fixture(scope="module")
def prepared32(tiny_py):
    return prepare(data.Dataset(tiny_py, "python"), config.SplitSpec(), dtype=np.float32)


@pytest.fixture(scope="module")
def prepared64(tiny_py):
    return prepare(data.Dataset(tiny_py, "python"), config.SplitSpec(), dtype=np.float64)


def ref_gradients(W, b, X, y, lam):
    """dJ/dW, dJ/db on a batch, in the operations and order of model.gradients."""
    k, d = W.shape
    Wt = np.zeros((d, 2 * k), dtype=W.dtype)  # [W^T | 0], 2K columns, as model.step_scores multiplies by
    Wt[:, :k] = W.T
    S = (X @ Wt)[:, :k]
    S += b
    G = S - S.max(axis=1, keepdims=True)
    np.exp(G, out=G)
    G /= G.sum(axis=1, keepdims=True)
    G[np.arange(len(y)), y] -= 1
    G /= len(y)
    dW = G.T @ X
    if lam:
        dW += (2 * lam) * W
    return dW, G.sum(axis=0)


def reference_run(c: TrainConfig, X, y, drop_last=False, same_order=False):
    """Mini-batch gradient descent written out: W then b from N(0, init_std^2) drawn from
    default_rng(seed), then per epoch one permutation from that same generator (when shuffling)
    and every batch of B rows in turn, the last one possibly smaller.

    Returns the weights after each epoch, the generator's state after each epoch and the orders
    the epochs used. For contrast, the bugs: ``drop_last`` leaves out a last, partial batch,
    ``same_order`` uses the first epoch's permutation in every epoch.
    """
    dtype = np.dtype(c.dtype)
    rng = np.random.default_rng(c.seed)
    W = rng.normal(0.0, c.init_std, size=(10, X.shape[1])).astype(dtype)
    b = rng.normal(0.0, c.init_std, size=10).astype(dtype)
    N, B = len(y), c.batch_size
    weights, states, orders = [], [], []
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(c.epochs):
            if not c.shuffle:
                order = np.arange(N)
            elif not (same_order and orders):
                order = rng.permutation(N)
            orders.append(order)
            stop = N - N % B if drop_last else N
            for start in range(0, stop, B):
                rows = order[start : start + B]
                Xb = X[rows] if c.shuffle else X[start : start + B]
                dW, db = ref_gradients(W, b, Xb, y[rows], c.lam)
                dW *= c.eta
                W -= dW
                db *= c.eta
                b -= db
            weights.append((W.copy(), b.copy()))
            states.append(rng.bit_generator.state)
    return weights, states, orders


def assert_bits_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Same dtype, shape and bits; otherwise say how many entries differ and by how much."""
    assert got.dtype == want.dtype and got.shape == want.shape, what
    if not np.array_equal(got, want):
        diff = np.abs(got.astype(np.float64) - want)
        raise AssertionError(f"{what}: {np.count_nonzero(diff)} of {got.size} differ, max {diff.max():.3g}")


def fit_recording(c: TrainConfig, prepared):
    """train.fit from init_state, recording every on_epoch state and every on_batch call."""
    epochs, batches = [], []
    final = train.fit(
        c,
        prepared,
        train.init_state(c),
        on_epoch=epochs.append,
        on_batch=lambda e, j, n: batches.append((e, j, n)),
    )
    return final, epochs, batches


def test_the_last_partial_batch_trains_bit_for_bit(prepared32):
    """Catches: the last, partial batch of an epoch dropped (range(0, N - N % B, B)), and a
    wrong batch count reported to on_batch (N // B instead of ceil(N / B)).

    N = 50 with batch 7: seven batches of 7 and a last one of 1 image, 8 per epoch.
    """
    c = TrainConfig(epochs=3, batch_size=7, eta=0.05, lam=0.1)
    assert N_TRAIN % c.batch_size == 1  # the last batch holds exactly one image
    final, epochs, batches = fit_recording(c, prepared32)
    X, y = prepared32.X["train"], prepared32.y["train"]
    ref, _, _ = reference_run(c, X, y)
    assert final.W.dtype == np.float32
    assert [st.epoch for st in epochs] == [1, 2, 3]
    for st, (W, b) in zip(epochs, ref, strict=True):
        assert_bits_equal(st.W, W, f"W after epoch {st.epoch}")
        assert_bits_equal(st.b, b, f"b after epoch {st.epoch}")
    assert_bits_equal(final.W, ref[-1][0], "final W")
    assert batches == [(e, j, 8) for e in (1, 2, 3) for j in range(1, 9)]
    # the one-image batch moves the weights: a loop without it ends elsewhere
    dropped, _, _ = reference_run(c, X, y, drop_last=True)
    assert not np.array_equal(dropped[-1][0], ref[-1][0])


def test_shuffle_draws_one_permutation_per_epoch_from_the_run_generator(prepared32):
    """Catches: --shuffle re-seeding its generator every epoch (the same permutation in every
    epoch), a permutation drawn from another generator than the one W and b came from, and a
    checkpointed generator state that is not the one after the epoch's permutation (a resume
    would then shuffle differently).
    """
    c = TrainConfig(epochs=4, batch_size=7, eta=0.05, shuffle=True, seed=3)
    final, epochs, batches = fit_recording(c, prepared32)
    X, y = prepared32.X["train"], prepared32.y["train"]
    ref, states, orders = reference_run(c, X, y)
    assert len({tuple(o) for o in orders}) == 4  # four different permutations: the test has teeth
    for st, (W, b), state in zip(epochs, ref, states, strict=True):
        assert_bits_equal(st.W, W, f"W after epoch {st.epoch}")
        assert_bits_equal(st.b, b, f"b after epoch {st.epoch}")
        assert st.rng_state == state, f"generator state after epoch {st.epoch}"
    assert_bits_equal(final.W, ref[-1][0], "final W")
    assert final.rng_state == states[-1]
    assert batches == [(e, j, 8) for e in range(1, 5) for j in range(1, 9)]
    # the same permutation in every epoch (the bug) trains to other weights
    repeated, _, _ = reference_run(c, X, y, same_order=True)
    assert not np.array_equal(repeated[-1][0], ref[-1][0])


def independent_metrics(W, b, X, y, lam):
    """Cost, loss and accuracy by the sample-by-sample oracle, in float64."""
    W, b, X = (np.asarray(a, dtype=np.float64) for a in (W, b, X))
    acc = float(np.mean([np.argmax(W @ x + b) == label for x, label in zip(X, y, strict=True)]))
    return cost_naive(W, b, X, y, lam), cost_naive(W, b, X, y, 0.0), acc


def test_history_file_holds_the_metrics_of_each_epochs_weights(prepared64, tmp_path):
    """Catches: the validation (or training) cost recorded without the penalty lam * ||W||^2,
    cost and loss swapped, a metric computed on the other split, and metrics computed from
    another epoch's weights (the metrics run on a second thread while the next epoch trains).

    lam = 0.5 makes the penalty (about 1.5) as large as the loss itself. float64 makes the
    independent evaluation agree to rounding.
    """
    c = TrainConfig(epochs=3, batch_size=10, eta=0.01, lam=0.5, dtype="float64")
    out = tmp_path / "run"
    runs.run(c, out, prepared64)
    X, y = prepared64.X, prepared64.y
    ref, _, _ = reference_run(c, X["train"], y["train"])
    expected = {k: [] for k in ("train_cost", "train_loss", "train_acc", "val_cost", "val_loss", "val_acc")}
    for W, b in ref:
        for split in ("train", "val"):
            cost, loss, acc = independent_metrics(W, b, X[split], y[split], c.lam)
            expected[f"{split}_cost"].append(cost)
            expected[f"{split}_loss"].append(loss)
            expected[f"{split}_acc"].append(acc)
    with h5py.File(out / "history.h5", "r") as f:
        got = {k: f[k][()] for k in expected}
        assert f["epoch"][()].tolist() == [1, 2, 3]
    # The run's float64 metrics and the oracle's, each within cost_rounding of the exact ones
    # (other products, other sums); the accuracies exact where no two top scores are that close.
    bounds = {k: [] for k in expected}
    for W, b in ref:
        for split in ("train", "val"):
            for k, lam in ((f"{split}_cost", c.lam), (f"{split}_loss", 0.0)):
                bounds[k].append(2 * cost_rounding("ce", W, b, X[split], y[split], lam, U64))
            E = product_error(X[split], W.T, U64, b)
            assert (min_gap(X[split] @ W.T + b) > 4 * E.max(axis=1)).all()
            bounds[f"{split}_acc"].append(0.0)
    for k, values in expected.items():
        assert_within(got[k], values, bounds[k], k)
    penalty = np.array([c.lam * float(np.sum(W.astype(np.float64) ** 2)) for W, _ in ref])
    assert min(penalty) > 1.0  # the penalty is large enough to matter
    # cost and loss share their mean to the bit: cost - loss rounds the penalty's addition and
    # the subtraction, and the penalty is summed in another order here
    bound = U64 * (got["val_cost"] + penalty) + 2 * (sum_error(ref[0][0].size, U64) + 2 * U64) * penalty
    assert_within(got["val_cost"] - got["val_loss"], penalty, bound, "penalty")


@pytest.mark.parametrize("shuffle", [False, True])
def test_training_set_sums_in_chunks_on_the_metrics_thread(prepared32, monkeypatch, shuffle):
    """Catches: the chunks of batches sent to the metrics thread summed out of order, twice or
    not at all (25 batches an epoch: a chunk of 20 and a rest), against the sums of one chunk
    per batch, of one chunk per epoch, and an independent float64 evaluation of each epoch."""
    c = TrainConfig(epochs=3, batch_size=2, eta=0.01, lam=0.1, shuffle=shuffle)
    assert -(-N_TRAIN // c.batch_size) > speed.GATHER_CHUNK  # more batches than a chunk
    runs_by_chunk = {}
    for chunk in (1, speed.GATHER_CHUNK, 10**9):
        monkeypatch.setattr(speed, "GATHER_CHUNK", chunk)
        st = train.fit(c, prepared32, train.init_state(c))
        runs_by_chunk[chunk] = st.history.columns
    first = runs_by_chunk[1]
    for columns in runs_by_chunk.values():
        for k in ("train_cost", "train_loss", "train_acc"):
            assert np.array_equal(columns[k], first[k]), k
    X, y = prepared32.X["train"], prepared32.y["train"]
    ref, _, _ = reference_run(c, X, y)
    for e, (W, b) in enumerate(ref):
        cost, loss, acc = independent_metrics(W, b, X, y, c.lam)
        # the run's scores are float32 products (the rest float64), the oracle's float64
        run_loss, run_cost = (cost_rounding("ce", W, b, X, y, lam, U64, U32) for lam in (0.0, c.lam))
        ref_loss, ref_cost = (cost_rounding("ce", W, b, X, y, lam, U64) for lam in (0.0, c.lam))
        assert_within(first["train_loss"][e], loss, run_loss + ref_loss, f"train_loss {e}")
        assert_within(first["train_cost"][e], cost, run_cost + ref_cost, f"train_cost {e}")
        E = product_error(X, W.T, U32, b) + product_error(X, W.T, U64, b)
        assert (min_gap(X.astype(np.float64) @ W.T.astype(np.float64) + b) > 2 * E.max(axis=1)).all()
        assert first["train_acc"][e] == acc


@pytest.mark.parametrize(
    "options",
    [
        {"shuffle": True},
        {"augment": "flip,translate:1"},  # views made on a thread; training metrics not gathered
        {"patience": 1, "keep": "best", "eta": 0.5},  # early stopping drops the epoch trained meanwhile
    ],
)
def test_metrics_on_the_training_thread_are_the_same_bits(tiny_py, options):
    """Catches: a run whose metrics are computed on its own thread (runs sharing the cores) that
    differs from one with a metrics thread in any bit of W, b or any column of its history, or
    stops at another epoch."""
    prepared = prepare(data.Dataset(tiny_py, "python"), config.SplitSpec(), dtype=np.float32, keep_raw=True)
    c = TrainConfig(**{"epochs": 6, "batch_size": 7, "eta": 0.02, "lam": 0.01, **options})
    a = train.fit(c, prepared, train.init_state(c), metrics_thread=True)
    b = train.fit(c, prepared, train.init_state(c), metrics_thread=False)
    assert a.epoch == b.epoch and len(a.history) == len(b.history)
    assert np.array_equal(a.W, b.W) and np.array_equal(a.b, b.b)
    for k, v in a.history.columns.items():
        if k != "seconds":
            assert np.array_equal(v, b.history.columns[k]), k
    assert a.history.initial == b.history.initial


def test_metrics_thread_only_when_every_run_has_two_cores(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    assert threads.metrics_thread_fits(1) and threads.metrics_thread_fits(2)
    assert not threads.metrics_thread_fits(3)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert threads.metrics_thread_fits(1) and not threads.metrics_thread_fits(2)


def test_ctrl_c_while_an_epochs_metrics_are_computed_inline_keeps_that_epoch(prepared32, monkeypatch):
    """Catches: a run computing its metrics on its own thread that loses the epoch just trained
    when Ctrl-C comes while its metrics are computed (a threaded run keeps it: its metrics are
    awaited)."""
    import signal

    real, calls = speed._metrics, []

    def metrics(*args):
        calls.append(1)
        if len(calls) == 3:  # epoch 2's (1: the initial weights', 2: epoch 1's)
            signal.raise_signal(signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(speed, "_metrics", metrics)
    seen = []
    c = TrainConfig(epochs=6, batch_size=7, eta=0.02, lam=0.01)
    with pytest.raises(KeyboardInterrupt):
        train.fit(c, prepared32, train.init_state(c), on_epoch=seen.append, metrics_thread=False)
    assert [st.epoch for st in seen] == [1, 2] and len(calls) == 4  # epoch 2's computed again
    monkeypatch.setattr(speed, "_metrics", real)
    whole = train.fit(c.replace(epochs=2), prepared32, train.init_state(c))
    assert np.array_equal(seen[-1].W, whole.W)
    for k in ("train_cost", "train_acc", "val_cost", "val_acc"):
        assert np.array_equal(seen[-1].history.columns[k], whole.history.columns[k]), k


def test_the_last_epochs_training_metrics_are_summed_in_the_next_epochs_order(prepared32):
    """Catches: the last epoch's training-set sums (computed on their own: no next epoch gathers
    them) taken in the batch order of an earlier epoch, as when that order was looked up by the
    id() of an object since freed, whose address a new one reused: the last bits of the cost then
    changed from run to run. The order must be the permutation the next epoch would draw."""
    X, y = prepared32.X["train"], prepared32.y["train"]
    for epochs, thread, _ in itertools.product(range(2, 7), (True, False), range(3)):  # addresses
        c = TrainConfig(epochs=epochs, batch_size=7, eta=0.02, lam=0.01, shuffle=True)  # vary
        st = train.fit(c, prepared32, train.init_state(c), metrics_thread=thread)
        rng = np.random.default_rng()
        rng.bit_generator.state = st.rng_state
        want = speed.TrainScores(st.W, st.b).standalone(X, y, rng.permutation(len(y)), c.batch_size, c.loss)
        with threads.one_blas_thread():  # the penalty's dot product as the loop sums it
            assert st.history.columns["train_cost"][-1] == want.metrics(c.lam).cost, (epochs, thread)
