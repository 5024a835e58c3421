"""The model core against plain loop oracles and known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cifarlin.core import model, numgrad, speed
from cifarlin.work import evaluation, gradcheck
from oracles import complex_step_loop, cost_naive, gradients_naive, numerical_gradients_loop
from tolerances import (
    ELEMENTARY_ULPS,
    U32,
    U64,
    assert_within,
    complex_step_error,
    cost_rounding,
    gamma,
    gradient_error,
    min_gap,
    outside,
    product_error,
    softmax_error,
    softmax_rounding,
    sum_error,
)


def problem(seed: int, K: int = 10, d: int = 50, N: int = 7, std: float = 0.01):
    rng = np.random.default_rng(seed)
    W, b = model.init_params(rng, K=K, d=d, std=std)
    X = rng.standard_normal((N, d))
    y = rng.integers(0, K, size=N)
    return W, b, X, y


def test_init_shapes_and_spread():
    W, b = model.init_params(np.random.default_rng(0))
    assert W.shape == (10, 3072) and b.shape == (10,)
    assert W.dtype == np.float64
    assert abs(W.std() - 0.01) < 0.0005 and abs(W.mean()) < 0.0005
    W2, b2 = model.init_params(np.random.default_rng(0))
    assert np.array_equal(W, W2) and np.array_equal(b, b2)
    assert not np.array_equal(W, model.init_params(np.random.default_rng(1))[0])


def test_softmax_rows_sum_to_one_and_stay_finite_for_huge_scores():
    S = np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4], [-1e4, -1e4 + 1, -1e4], [0.0, 1.0, 2.0]])
    P = model.softmax(S)
    assert np.isfinite(P).all()
    # each p off by a relative softmax_rounding, their sum by gamma_{K-1} more
    assert_within(P.sum(axis=1), 1.0, (P * softmax_rounding(S)).sum(axis=1) + gamma(2, U64), "sums")
    assert P[0, 0] == 1.0  # exp(0) / (1 + 0 + 0): exp(-2e4) underflows to 0, every step exact
    assert_within(P[1], 1 / 3, softmax_rounding(S[1:2])[0] / 3 + U64 / 3, "thirds")
    e = np.exp([0.0, 1.0, 2.0])
    assert_within(P[3], e / e.sum(), softmax_error(np.zeros((1, 3)), S[3:])[0] * P[3], "softmax")


def test_cross_entropy_finite_for_huge_scores():
    S = np.array([[1e4, -1e4], [-1e4, 1e4]])
    assert model.cross_entropy(S, np.array([0, 1])) == 0.0
    # exact: exp(-2e4) underflows to 0, log(1) = 0, and 1e4 - -1e4 and their mean are floats
    assert model.cross_entropy(S, np.array([1, 1])) == 1e4


def test_cost_at_zero_is_log_k():
    X = np.random.default_rng(0).standard_normal((13, 3072))
    y = np.arange(13) % 10
    W, b = np.zeros((10, 3072)), np.zeros(10)
    # scores exactly 0 and exp(0) = 1: only log(10) rounds (ELEMENTARY_ULPS), then the mean of
    # 13 copies (gamma_13)
    rel = ELEMENTARY_ULPS * U64 + gamma(13, U64)
    assert model.cost(W, b, X, y, lam=0.7) == pytest.approx(math.log(10), rel=rel, abs=0)
    assert model.loss(W, b, X, y) == pytest.approx(math.log(10), rel=rel, abs=0)


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_cost_and_penalty_match_the_naive_loop(lam):
    W, b, X, y = problem(3, std=0.3)
    cost = model.cost(W, b, X, y, lam)
    assert_within(cost, cost_naive(W, b, X, y, lam), 2 * cost_rounding("ce", W, b, X, y, lam, U64), "cost")
    # cost and loss share their mean to the bit; cost - loss rounds the penalty's addition and
    # the subtraction, and the penalty itself is summed in another order there and here
    penalty = lam * np.sum(W**2)
    bound = U64 * (cost + penalty) + 2 * (sum_error(W.size, U64) + 2 * U64) * penalty
    assert_within(cost - model.loss(W, b, X, y), penalty, bound, "penalty")


def test_accuracy_and_metrics_agree():
    W, b, X, y = problem(4, std=0.5)
    m = model.evaluate(W, b, X, y, 0.2)
    # products of other shapes: no two top scores within twice their rounding of each other
    assert (min_gap(X @ W.T + b) > 4 * product_error(X, W.T, U64, b).max(axis=1)).all()
    assert m.accuracy == model.accuracy(W, b, X, y) == np.mean(np.argmax(X @ W.T + b, axis=1) == y)
    assert m.cost == model.cost(W, b, X, y, 0.2)  # the same operations on the same scores


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_analytic_gradients_equal_the_naive_loop(seed, lam):
    W, b, X, y = problem(seed, std=0.2)
    dW, db = model.gradients(W, b, X, y, lam)
    nW, nb = gradients_naive(W, b, X, y, lam)
    EW, Eb = gradient_error("ce", W, b, X, y, lam, U64)
    assert_within(dW, nW, 2 * EW, "dW")
    assert_within(db, nb, 2 * Eb, "db")


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_vectorised_numerical_gradients_equal_the_loop_oracle(lam):
    # The task's check: K=10, d=50, N=7, for both W and b, to 1e-9. h=1e-5 keeps the oracle's own
    # cancellation error (about 1e-16 * J / h) well under that.
    W, b, X, y = problem(11)
    gW, gb = numgrad.numerical_gradients(W, b, X, y, lam, h=1e-5)
    oW, ob = numerical_gradients_loop(W.copy(), b.copy(), X, y, lam, h=1e-5)
    assert np.abs(gW - oW).max() < 1e-9
    assert np.abs(gb - ob).max() < 1e-9
    assert np.abs(gW).max() > 1e-3  # the comparison is not between zeros


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_complex_step_equals_the_complex_loop_oracle(lam):
    W, b, X, y = problem(12, d=20)
    gW, gb = numgrad.numerical_gradients(W, b, X, y, lam, h=1e-20, method="complex")
    oW, ob = complex_step_loop(W, b, X, y, lam)
    EW, Eb = complex_step_error("ce", W, b, X, y, lam)
    assert_within(gW, oW, 2 * EW, "dW")
    assert_within(gb, ob, 2 * Eb, "db")


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_analytic_equals_numerical_on_random_problems(seed):
    lam = [0.1, 0.5, 1.0, 2.0, 0.01][seed]
    W, b, X, y = problem(seed, K=10, d=300, N=15, std=0.1)
    aW, ab = model.gradients(W, b, X, y, lam)
    cW, cb = numgrad.numerical_gradients(W, b, X, y, lam, h=1e-6)
    assert np.abs(aW - cW).max() < 1e-8 and np.abs(ab - cb).max() < 1e-8
    assert np.percentile(gradcheck.relative_error(aW, cW), 99) < 1e-6
    xW, xb = numgrad.numerical_gradients(W, b, X, y, lam, h=1e-20, method="complex")
    (EW, Eb), (CW, Cb) = gradient_error("ce", W, b, X, y, lam, U64), complex_step_error("ce", W, b, X, y, lam)
    assert_within(aW, xW, EW + CW, "dW")
    assert_within(ab, xb, Eb + Cb, "db")


def test_a_wrong_gradient_is_caught():
    W, b, X, y = problem(5, std=0.1)
    aW, _ = model.gradients(W, b, X, y, 0.5)
    nW, _ = numgrad.numerical_gradients(W, b, X, y, 0.5)
    wrong = aW - 0.5 * 2 * W  # forgot half the penalty term
    assert gradcheck.relative_error(wrong, nW).max() > 1e-2
    assert gradcheck.relative_error(aW, nW).max() < 1e-4


def test_numerical_gradients_in_small_chunks_are_identical():
    W, b, X, y = problem(6, d=37)
    full = numgrad.numerical_gradients(W, b, X, y, 0.2)
    chunked = numgrad.numerical_gradients(W, b, X, y, 0.2, max_elements=1)
    assert np.array_equal(full[0], chunked[0]) and np.array_equal(full[1], chunked[1])


def test_numerical_gradients_survive_a_large_step():
    W, b, X, y = problem(7, std=1.0)
    X *= 1e3  # shifts h * x of several thousand: exp() would overflow (above ~709) without the guard
    assert np.abs(X).max() > 1000
    gW, gb = numgrad.numerical_gradients(W, b, X, y, 0.0, h=1.0)
    assert np.isfinite(gW).all() and np.isfinite(gb).all()


def test_relative_error_formula():
    ga = np.array([1.0, 0.0, 1e-12, -2.0])
    gn = np.array([1.1, 0.0, 0.0, 2.0])
    rel = gradcheck.relative_error(ga, gn)
    np.testing.assert_allclose(rel, [0.1 / 2.1, 0.0, 1e-12 / 1e-8, 1.0])


def test_confusion_matrix():
    cm = evaluation.confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), K=3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_a_step_scoring_other_weights_keeps_its_own_bits():
    """Bug: the training-set metrics gathered in the step's pass (train.fit) changing the step's
    own numbers, or gathered and recomputed scores disagreeing (a resumed run's history would)."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((100, 3072)).astype(np.float32)
    y = rng.integers(0, 10, 100)
    W, b = (rng.standard_normal((10, 3072)) * 0.01).astype(np.float32), np.zeros(10, np.float32)
    We, be = (rng.standard_normal((10, 3072)) * 0.01).astype(np.float32), np.ones(10, np.float32)
    dW, db = model.gradients(W, b, X, y, 0.1)
    gather = speed.TrainScores(We, be)
    forward = speed.Forward(W, gather, narrow=False, loss="ce", pool=speed._Inline())
    dW2, db2 = model.backward(X, y, forward(W, b, X, y), W, 0.1)
    assert np.array_equal(dW, dW2) and np.array_equal(db, db2)
    [(S, _)] = gather.queued  # the batch's scores under (We, be), not yet summed
    assert np.array_equal(S, speed.scores_of_step(X, We, be))
    # two float32 products of other shapes ((3072, 20) here, 16 columns in 512-row blocks there):
    # each within product_error of the exact one, so within twice that of each other
    E = 2 * product_error(X, We.T, U32, be)
    assert_within(S, model.scores(We, be, X), E, "scores of the step, scores")
    assert outside(S - be, model.scores(We, be, X), E)  # a bias left out would show


def test_a_step_is_the_gradients_then_the_update_in_place():
    """Bug: model.step (the assignment's one update) drifting from the gradients it is made of, or
    updating copies instead of W and b."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal((30, 3072)).astype(np.float32)
    y = rng.integers(0, 10, 30)
    W, b = (rng.standard_normal((10, 3072)) * 0.01).astype(np.float32), np.zeros(10, np.float32)
    dW, db = model.gradients(W, b, X, y, 0.1)
    want_W, want_b = W - np.float32(0.05) * dW, b - np.float32(0.05) * db
    model.step(X, y, W, b, 0.1, 0.05)
    assert W.dtype == np.float32 and np.array_equal(W, want_W) and np.array_equal(b, want_b)
