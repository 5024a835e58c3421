"""Learning-rate schedules, keeping the best epoch, early stopping, and resuming all of them.

Each test names the bug it would catch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cifarlin.core import config, train
from cifarlin.core.config import TrainConfig
from cifarlin.core.prepared import Prepared
from cifarlin.core.schedules import learning_rates
from cifarlin.data import cifar as data
from cifarlin.errors import ConfigError
from cifarlin.store import checkpoint
from cifarlin.work import runs
from cifarlin.work.prepare import prepare
from tolerances import U64


@pytest.fixture(scope="module")
def prepared(tiny_py):
    return prepare(data.Dataset(tiny_py, "python"), config.SplitSpec())


@pytest.fixture(scope="module")
def prepared_noisy(disagreeing_py):
    """Data on which the validation accuracy rises and falls from epoch to epoch. On tiny_py it is
    1.00 at every epoch, so the best epoch was always the first and early stopping always came
    after the patience's first epochs, whatever they watched (issue 25)."""
    return prepare(data.Dataset(disagreeing_py, "python"), config.SplitSpec())


def all_rates(cfg: TrainConfig, n_batches: int) -> list[float]:
    return [float(e) for epoch in range(1, cfg.epochs + 1) for e in learning_rates(cfg, epoch, n_batches)]


def test_constant_and_step_by_hand():
    """Bug: step decay applied from the first epoch, or every epoch, or off by one epoch."""
    cfg = TrainConfig(eta=0.1, epochs=7, schedule="step", decay=0.5, decay_every=3)
    per_epoch = [learning_rates(cfg, e, 2)[0] for e in range(1, 8)]
    assert per_epoch == [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]
    assert all_rates(TrainConfig(eta=0.3, epochs=2), 3) == [0.3] * 6


def test_cosine_by_hand():
    """Bug: the cosine never reaching eta_min in the last epoch, or starting below eta."""
    cfg = TrainConfig(eta=0.2, eta_min=0.02, epochs=5, schedule="cosine")
    got = [float(learning_rates(cfg, e, 1)[0]) for e in range(1, 6)]
    want = [0.02 + 0.09 * (1 + math.cos(math.pi * k / 4)) for k in range(5)]
    # the same cos(pi k / 4) both ways; the factor 0.09 (0.5 (0.2 - 0.02) there), the product and
    # the sums round at most 4 times each way, on values at most 0.2
    assert got == pytest.approx(want, rel=0, abs=2 * 4 * U64 * 0.2)
    assert got[0] == pytest.approx(0.2, rel=4 * U64) and got[-1] == pytest.approx(0.02, rel=4 * U64)


def test_cyclic_by_hand():
    """Bug: the triangle starting at the top, a half cycle of the wrong length, or restarting each
    epoch instead of counting updates across epochs."""
    cfg = TrainConfig(eta=1.0, eta_min=0.0, eta_max=0.4, epochs=3, schedule="cyclic", step_size=4)
    got = all_rates(cfg, 5)  # 15 updates, half cycle 4
    want = [0, 0.1, 0.2, 0.3, 0.4, 0.3, 0.2, 0.1, 0, 0.1, 0.2, 0.3, 0.4, 0.3, 0.2]
    # 0.4 times an exact quarter (one rounding, and 0.4's own), against the decimals (one each)
    assert got == pytest.approx(want, rel=0, abs=3 * U64 * 0.4)
    default = TrainConfig(eta=0.01, eta_min=0.001, epochs=1, schedule="cyclic")
    # n_s = 20; 0.01 - 0.001, 9 / 20, the product and the sum there, their counterparts here
    assert float(learning_rates(default, 1, 10)[-1]) == pytest.approx(0.001 + 0.009 * 9 / 20, rel=10 * U64)


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"schedule": "warm"}, "schedule="),
        ({"decay": 0.0}, "decay="),
        ({"decay": 1.5}, "decay="),
        ({"decay_every": 0}, "decay_every="),
        ({"schedule": "cosine", "eta_min": 0.01, "eta": 0.01}, "eta_min="),
        ({"schedule": "cyclic", "eta_min": 0.2, "eta_max": 0.1}, "eta_min="),
        ({"step_size": 0}, "step_size="),
        ({"keep": "first"}, "keep="),
        ({"patience": 0}, "patience="),
        ({"epochs": 4.0}, "epochs=4.0: must be of type int"),
        ({"lam": "0.1"}, "lam='0.1': must be of type float"),
        ({"shuffle": 1}, "shuffle=1: must be of type bool"),
    ],
)
def test_bad_schedule_options_name_the_field(kw, field):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**kw)


def the_update_rule(cfg: TrainConfig, p: Prepared, epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain mini-batch gradient descent with the schedule's eta of each update, in order."""
    from cifarlin.core import model

    st = train.init_state(cfg)
    W, b = st.W.copy(), st.b.copy()
    X, y = p.X["train"], p.y["train"]
    n_batches = -(-len(y) // cfg.batch_size)
    for epoch in range(1, epochs + 1):
        etas = learning_rates(cfg, epoch, n_batches)
        for j, s in enumerate(range(0, len(y), cfg.batch_size)):
            dW, db = model.gradients(W, b, X[s : s + cfg.batch_size], y[s : s + cfg.batch_size], cfg.lam)
            W -= float(etas[j]) * dW
            b -= float(etas[j]) * db
    return W, b


@pytest.mark.parametrize("schedule", ["step", "cosine", "cyclic"])
def test_the_loop_uses_each_updates_eta(prepared, schedule):
    """Bug: the loop ignoring the schedule (or using one eta per epoch for the cyclic one)."""
    cfg = TrainConfig(
        epochs=3,
        batch_size=10,
        eta=0.05,
        schedule=schedule,
        decay=0.3,
        decay_every=1,
        eta_min=0.001,
        step_size=3,
    )
    st = train.fit(cfg, prepared, train.init_state(cfg))
    W, b = the_update_rule(cfg, prepared, 3)
    assert np.array_equal(st.W, W) and np.array_equal(st.b, b)  # the same float32 operations
    etas = [float(learning_rates(cfg, e, 5).mean()) for e in (1, 2, 3)]
    assert st.history.columns["eta"] == etas  # the eta of each epoch, in the history


@pytest.mark.parametrize("schedule", ["step", "cyclic"])
def test_resume_mid_schedule_equals_an_uninterrupted_run(prepared, tmp_path, schedule):
    """Bug: a resumed run restarting its schedule (or its cycle's update counter) from zero."""
    cfg = TrainConfig(
        epochs=5,
        batch_size=10,
        eta=0.05,
        schedule=schedule,
        decay=0.5,
        decay_every=2,
        eta_min=0.001,
        step_size=7,
        shuffle=True,
    )
    whole = runs.run(cfg, tmp_path / "whole", prepared)

    def stop(epoch, j, n):
        if epoch == 4 and j == 2:
            raise KeyboardInterrupt

    with pytest.raises(runs.Interrupted):
        runs.run(cfg, tmp_path / "part", prepared, on_batch=stop)
    c, snap = runs.resume_point(tmp_path / "part", {})
    part = runs.run(c, tmp_path / "part", prepared, start=snap)
    assert np.array_equal(whole.state.W, part.state.W) and np.array_equal(whole.state.b, part.state.b)
    for k in ("val_cost", "train_acc", "eta"):
        assert whole.state.history.columns[k] == part.state.history.columns[k]


def test_keep_best_saves_the_best_epoch(prepared_noisy, tmp_path):
    """Bug: --keep best saving the last epoch, the best by training accuracy, or the latest of tied
    epochs. The weights of epoch k of a run are those a k-epoch run ends with."""
    prepared = prepared_noisy
    # A run whose best validation epoch is neither its last nor its best training epoch: which
    # eta gives one depends on the BLAS kernel's last bits, so the first of a few that does is
    # used (ties, the earliest kept, are tested on histories in test_history.py; checked here too
    # where the run has one)
    for eta in (0.3, 0.25, 0.35, 0.2, 0.4, 0.15, 0.45, 0.5):
        cfg = TrainConfig(epochs=8, batch_size=10, eta=eta, keep="best")
        o = runs.run(cfg, tmp_path / f"best-{eta}", prepared)
        h = o.state.history
        val = h.columns["val_acc"]
        best = int(np.argmax(val)) + 1  # the earliest of the highest
        train_best = int(np.argmax(h.columns["train_acc"])) + 1
        if best < len(val) and train_best != best:
            break  # the last epoch, or the training accuracy, would keep another
    else:
        pytest.fail("no run whose best validation epoch is neither the last nor the training's best")
    assert o.model_epoch == best and o.summary().model_epoch == best
    snap = checkpoint.load_snapshot(tmp_path / f"best-{eta}" / "model.h5")
    short = train.fit(cfg.replace(epochs=best, keep="last"), prepared, train.init_state(cfg))
    assert np.array_equal(snap.state.W, short.W) and np.array_equal(snap.state.b, short.b)
    assert snap.kept_epoch == best
    assert not np.array_equal(snap.state.W, o.state.W)  # the last epoch's weights were not kept


def test_patience_stops_and_resumes_as_complete(prepared_noisy, tmp_path):
    """Bug: --patience never stopping, stopping one epoch late, or a resumed stopped run training on."""
    prepared = prepared_noisy
    cfg = TrainConfig(epochs=60, batch_size=10, eta=0.5, patience=2)
    o = runs.run(cfg, tmp_path / "p", prepared)
    h = o.state.history
    assert len(h) < 60 and len(h) == h.best_epoch + 2
    assert h.best_epoch > 1  # the validation accuracy improved after the first epoch
    assert o.summary().stopped_early is True
    full = train.fit(cfg.replace(patience=None, epochs=len(h)), prepared, train.init_state(cfg))
    assert np.array_equal(o.state.W, full.W)  # the epoch trained while the last metrics ran was dropped
    c, snap = runs.resume_point(tmp_path / "p", {})
    again = runs.run(c, tmp_path / "p", prepared, start=snap)
    assert again.state.epoch == len(h) and np.array_equal(again.state.W, o.state.W)


def test_keep_best_with_patience_resumes_bit_for_bit(prepared_noisy, tmp_path):
    """Bug: the kept best weights lost on resume (the checkpoint not carrying them)."""
    prepared = prepared_noisy
    # stopped two epochs after the epoch it keeps, so that only the checkpoint holds the kept
    # weights: a run whose kept epoch leaves room for that (which one does depends on the kernel)
    for eta in (0.4, 0.3, 0.5, 0.35, 0.45, 0.25):
        cfg = TrainConfig(epochs=12, batch_size=10, eta=eta, keep="best", patience=4, shuffle=True)
        whole = runs.run(cfg, tmp_path / f"whole-{eta}", prepared)
        if whole.model_epoch > 1 and whole.model_epoch + 2 <= whole.state.epoch:
            break
    else:
        pytest.fail("no run that keeps an epoch two before its end")
    stop_at = whole.model_epoch + 2

    def stop(epoch, j, n):
        if epoch == stop_at and j == 1:
            raise KeyboardInterrupt

    with pytest.raises(runs.Interrupted):
        runs.run(cfg, tmp_path / "part", prepared, on_batch=stop)
    c, snap = runs.resume_point(tmp_path / "part", {})
    part = runs.run(c, tmp_path / "part", prepared, start=snap)
    a = checkpoint.load_snapshot(tmp_path / f"whole-{eta}" / "model.h5")
    b = checkpoint.load_snapshot(tmp_path / "part" / "model.h5")
    assert 1 < a.kept_epoch < snap.state.epoch  # kept before the stop: only the checkpoint has it
    assert np.array_equal(a.state.W, b.state.W) and a.kept_epoch == b.kept_epoch
    assert whole.state.history.columns["val_acc"] == part.state.history.columns["val_acc"]


# ---------------------------------------------------------------------------------------------
# Augmentation in the loop
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared_raw(tiny_py):
    return prepare(data.Dataset(tiny_py, "python"), config.SplitSpec(), keep_raw=True)


def mirrored(images: np.ndarray) -> np.ndarray:
    """Left-right mirror of CIFAR rows, written independently of cifarlin.core.augment."""
    return images.reshape(-1, 3, 32, 32)[:, :, :, ::-1].reshape(-1, 3072)


def test_flip_augmentation_bit_for_bit_against_a_reference_loop(prepared_raw):
    """Bug: flips drawn once per run (not per epoch), applied to normalised rows (not pixels), drawn
    from another generator, or in another order than documented (permutation, then flips)."""
    from cifarlin.core import model

    cfg = TrainConfig(epochs=3, batch_size=10, eta=0.05, shuffle=True, augment="flip", seed=4)
    st = train.fit(cfg, prepared_raw, train.init_state(cfg))
    rng = np.random.default_rng(4)
    W, b = model.init_params(rng, std=0.01, dtype=np.float32)
    raw, y, norm = prepared_raw.raw_train, prepared_raw.y["train"], prepared_raw.normalizer
    drawn = []
    for _ in range(3):
        order = rng.permutation(len(y))
        flips = rng.random(len(y)) < 0.5
        drawn.append(flips)
        for s in range(0, len(y), 10):
            rows = order[s : s + 10]
            images = np.where(flips[rows][:, None], mirrored(raw[rows]), raw[rows])
            dW, db = model.gradients(W, b, norm.apply(images), y[rows], 0.0)
            W -= 0.05 * dW
            b -= 0.05 * db
    assert np.array_equal(st.W, W) and np.array_equal(st.b, b)
    assert not np.array_equal(drawn[0], drawn[1])  # afresh every epoch
    # flipping the normalised rows is another thing (per-pixel statistics differ): make sure
    assert not np.array_equal(norm.apply(mirrored(raw[:5])), mirrored(norm.apply(raw[:5])))


def test_augmentation_is_reproducible_and_resumes_bit_for_bit(prepared_raw, tmp_path):
    """Bug: the views of a resumed run drawn from a fresh generator (different images than an
    uninterrupted run would have seen)."""
    cfg = TrainConfig(epochs=5, batch_size=10, eta=0.05, augment="flip,translate:2", shuffle=True)
    whole = runs.run(cfg, tmp_path / "whole", prepared_raw)

    def stop(epoch, j, n):
        if epoch == 3 and j == 3:
            raise KeyboardInterrupt

    with pytest.raises(runs.Interrupted):
        runs.run(cfg, tmp_path / "part", prepared_raw, on_batch=stop)
    c, snap = runs.resume_point(tmp_path / "part", {})
    part = runs.run(c, tmp_path / "part", prepared_raw, start=snap)
    assert np.array_equal(whole.state.W, part.state.W)
    again = train.fit(cfg, prepared_raw, train.init_state(cfg))
    assert np.array_equal(whole.state.W, again.W)
    plain = train.fit(cfg.replace(augment="none"), prepared_raw, train.init_state(cfg))
    assert not np.array_equal(plain.W, again.W)


def test_augment_needs_the_raw_images(prepared):
    """Bug: augmenting normalised rows silently when the raw images are missing."""
    cfg = TrainConfig(epochs=1, batch_size=10, augment="flip")
    with pytest.raises(ConfigError, match="augment='flip': the data were prepared without their raw images"):
        train.fit(cfg, prepared, train.init_state(cfg))


@pytest.mark.parametrize(
    "text, canonical", [("Flip", "flip"), ("translate:2,flip", "flip,translate:2"), ("", "none")]
)
def test_augment_text_is_stored_canonically(text, canonical):
    assert TrainConfig(augment=text).augment == canonical


def test_views_made_ahead_stop_with_the_loop(prepared_raw, monkeypatch):
    """Bug: an error while making a batch's views is lost on the views' thread (the loop waits
    forever), or that thread outlives the loop after an error or Ctrl-C."""
    import threading

    from cifarlin.core import augment

    real, calls = augment.apply, []

    def fails_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise ValueError("the third batch's views")
        return real(*args, **kwargs)

    monkeypatch.setattr(augment, "apply", fails_on_the_third)
    cfg = TrainConfig(epochs=2, batch_size=10, eta=0.05, augment="flip,translate:1", shuffle=True)
    with pytest.raises(ValueError, match="third batch"):
        train.fit(cfg, prepared_raw, train.init_state(cfg))
    monkeypatch.setattr(augment, "apply", real)
    seen = []

    def interrupt(epoch, j, n):
        seen.append(j)
        if j == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train.fit(cfg, prepared_raw, train.init_state(cfg), on_batch=interrupt)
    assert seen == [1, 2]
    assert not [t for t in threading.enumerate() if t.name == "cifarlin-views"]
