"""The training loop on tiny data: plain mini-batch gradient descent, the cost going down, the
same bits for the same seed, shuffling, divergence, and a Ctrl-C that Python swallowed."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest

from cifarlin.core import model, train
from cifarlin.errors import ConfigError, DivergenceError
from tiny_runs import cfg


def test_a_few_epochs_lower_the_cost(prepared):
    c = cfg(epochs=5)
    st = train.fit(c, prepared, train.init_state(c))
    costs = st.history.columns["train_cost"]
    st0 = train.init_state(c)
    start = model.evaluate(st0.W, st0.b, prepared.X["train"], prepared.y["train"], 0.0).cost
    assert len(costs) == 5 and st.epoch == 5
    assert costs[0] < start and all(b < a for a, b in itertools.pairwise(costs))
    assert st.history.columns["train_acc"][-1] > 0.5


def test_update_rule_is_plain_minibatch_gradient_descent(prepared):
    c = cfg(epochs=1, lam=0.3)
    st0 = train.init_state(c)
    W, b = st0.W.copy(), st0.b.copy()
    X, y = prepared.X["train"], prepared.y["train"]
    for s in range(0, len(y), 10):
        dW, db = model.gradients(W, b, X[s : s + 10], y[s : s + 10], 0.3)
        W -= c.eta * dW
        b -= c.eta * db
    st = train.fit(c, prepared, st0)
    assert np.array_equal(st.W, W) and np.array_equal(st.b, b)


def test_same_seed_same_bits_different_seed_differs(prepared):
    a = train.fit(cfg(shuffle=True), prepared, train.init_state(cfg(shuffle=True)))
    b = train.fit(cfg(shuffle=True), prepared, train.init_state(cfg(shuffle=True)))
    c = train.fit(cfg(shuffle=True, seed=1), prepared, train.init_state(cfg(shuffle=True, seed=1)))
    assert np.array_equal(a.W, b.W) and a.history.columns["val_cost"] == b.history.columns["val_cost"]
    assert not np.array_equal(a.W, c.W)


def test_shuffle_changes_the_order(prepared):
    a = train.fit(cfg(), prepared, train.init_state(cfg()))
    b = train.fit(cfg(shuffle=True), prepared, train.init_state(cfg(shuffle=True)))
    assert not np.array_equal(a.W, b.W)


def test_divergence_raises_with_the_epoch(prepared):
    c = cfg(eta=1e38)
    with pytest.raises(DivergenceError, match=r"epoch 1 \(eta=1e\+38, lam=0.0\).*try a smaller eta$") as e:
        train.fit(c, prepared, train.init_state(c))
    assert e.value.epoch == 1


def test_batch_larger_than_training_set(prepared):
    c = cfg(batch_size=51)
    with pytest.raises(ConfigError, match=r"batch_size=51: larger than the training set \(50 images\)"):
        train.fit(c, prepared, train.init_state(c))


def test_a_ctrl_c_swallowed_by_a_weakref_callback_still_stops_training(prepared, monkeypatch):
    """Bug: SIGINT landing in a weakref callback (h5py's, numpy's) is printed as 'Exception
    ignored' and lost, and the run went on to its end: the loop raises it at the next batch."""
    import weakref

    from cifarlin import errors

    class Thing:
        pass

    ignored = []
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)  # where 'Exception ignored' goes
    thing = Thing()
    ref = weakref.ref(thing, lambda _: errors.stop_signal(terminate=False))  # as the CLI's handler
    try:
        del thing  # the callback raises KeyboardInterrupt, which Python reports and ignores
        assert ref() is None and [type(u.exc_value) for u in ignored] == [KeyboardInterrupt]
        batches = []
        with pytest.raises(KeyboardInterrupt):
            train.fit(cfg(), prepared, train.init_state(cfg()), on_batch=lambda *a: batches.append(a))
        assert batches == []  # stopped at the first batch
    finally:
        errors.reset_stop()
    assert train.fit(cfg(epochs=1), prepared, train.init_state(cfg())).epoch == 1
