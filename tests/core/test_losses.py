"""The five losses (cross-entropy, multi-class hinge, binary cross-entropy, squared error,
one-vs-rest squared hinge) against loop oracles.

Each test names the bug it would catch.
"""

from __future__ import annotations

import numpy as np
import pytest

from cifarlin.core import losses, model, numgrad
from cifarlin.core.config import GradcheckConfig
from cifarlin.work import gradcheck
from oracles import NAIVE, numerical_gradients_loop_loss
from tolerances import (
    ELEMENTARY_ULPS,
    U64,
    assert_within,
    complex_step_error,
    cost_rounding,
    gradient_error,
    loss_rounding,
    min_gap,
    product_error,
    sigmoid_error,
)

LOSSES = ["ce", "svm", "bce", "mse", "l2svm"]


def problem(seed: int, K: int = 10, d: int = 40, N: int = 9, std: float = 0.3):
    rng = np.random.default_rng(seed)
    W, b = model.init_params(rng, K=K, d=d, std=std)
    X = rng.standard_normal((N, d))
    y = rng.integers(0, K, size=N)
    return W, b, X, y


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("lam", [0.0, 0.4])
@pytest.mark.parametrize("seed", range(3))
def test_cost_equals_the_naive_loop(loss, lam, seed):
    """Bug: a wrong loss value (a missing 1/K in bce, the j = y term counted in the hinge)."""
    W, b, X, y = problem(seed)
    bound = 2 * cost_rounding(loss, W, b, X, y, lam, U64)
    assert_within(model.cost(W, b, X, y, lam, loss), NAIVE[loss][0](W, b, X, y, lam), bound, loss)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("lam", [0.0, 0.4])
@pytest.mark.parametrize("seed", range(3))
def test_gradients_equal_the_naive_loop(loss, lam, seed):
    """Bug: a wrong analytic gradient (the hinge's -count on the true class, bce's 1/K)."""
    W, b, X, y = problem(seed)
    dW, db = model.gradients(W, b, X, y, lam, loss)
    nW, nb = NAIVE[loss][1](W, b, X, y, lam)
    EW, Eb = gradient_error(loss, W, b, X, y, lam, U64)
    assert_within(dW, nW, 2 * EW, "dW")
    assert_within(db, nb, 2 * Eb, "db")


@pytest.mark.parametrize("loss", LOSSES)
def test_vectorised_numerical_gradients_equal_the_per_parameter_loop(loss):
    """Bug: the all-parameters-at-once numerical gradient of a loss computes the wrong perturbed
    costs (checked against changing one parameter at a time)."""
    W, b, X, y = problem(5, d=12, N=6)
    h = 1e-6
    gW, gb = numgrad.numerical_gradients(W, b, X, y, 0.3, h=h, loss=loss)
    lW, lb = numerical_gradients_loop_loss(W.copy(), b.copy(), X, y, 0.3, loss, h=h)
    # The same centred differences in exact arithmetic (their truncation errors cancel); each
    # of the two costs differenced rounds by cost_rounding, divided by 2h; the loop's step
    # theta + h rounds too (by u |theta|, a relative u |theta| / h of the quotient g).
    for got, want, theta in ((gW, lW, W), (gb, lb, b)):
        rounding = 2 * cost_rounding(loss, W, b, X, y, 0.3, U64) / (2 * h)
        step = U64 * (np.abs(theta) + h) / h * np.abs(want)
        assert_within(got, want, 2 * rounding + 2 * step + 2 * U64 * np.abs(want), loss)


@pytest.mark.parametrize("loss", LOSSES)
def test_complex_step_agrees_with_the_analytic_gradient(loss):
    """Bug: a complex-step path that is not analytic (a real max or abs on the complex scores)."""
    W, b, X, y = problem(6, d=30)
    aW, ab = model.gradients(W, b, X, y, 0.2, loss)
    cW, cb = numgrad.numerical_gradients(W, b, X, y, 0.2, h=1e-20, method="complex", loss=loss)
    (EW, Eb), (CW, Cb) = gradient_error(loss, W, b, X, y, 0.2, U64), complex_step_error(loss, W, b, X, y, 0.2)
    assert_within(aW, cW, EW + CW, "dW")
    assert_within(ab, cb, Eb + Cb, "db")


@pytest.mark.parametrize("loss", LOSSES)
def test_huge_scores_give_finite_costs_and_gradients(loss):
    """Bug: log(1 - sigmoid(s)) written literally (-inf for s = 1e4), exp overflow in softmax."""
    S = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0], [5e3, 5e3, -5e3]])
    y = np.array([1, 1, 2])
    values = losses.LOSSES[loss].losses(S, y)
    G = losses.LOSSES[loss].grad(S.copy(), y)
    assert np.isfinite(values).all() and np.isfinite(G).all()
    expected = {  # exact values of the definitions at these scores
        "ce": [2e4, 0.0, 1e4 + np.log(2)],
        "svm": [(2e4 + 1) + (1e4 + 1), 0.0, 2 * (1e4 + 1)],
        "bce": [(1e4 + 1e4 + np.log(2)) / 3, (3 + np.log1p(np.exp(-3))) / 3, (5e3 + 5e3 + 5e3) / 3],
        "mse": [1e8 + (1e4 + 1) ** 2, 1e8 + (1e4 - 1) ** 2 + 9, 2.5e7 + 2.5e7 + (5e3 + 1) ** 2],
        "l2svm": [2 * (1e4 + 1) ** 2 + 1, 4**2, (5e3 + 1) ** 2 + (5e3 + 1) ** 2 + (5e3 + 1) ** 2],
    }[loss]
    # the losses' own rounding, and the expected values' (a log, an exp, two roundings: 8 u)
    bound = loss_rounding(loss, S, y, U64, literal=False) + (ELEMENTARY_ULPS + 4) * U64 * np.abs(expected)
    assert_within(values, expected, bound, loss)


def test_bce_keeps_precision_where_the_literal_form_underflows():
    """Bug: sigmoid computed as 1/(1 + exp(-s)) - 1 loses the gradient of confident wrong classes."""
    S = np.array([[-40.0, 0.0]])
    G = losses.bce_grad(S.copy(), np.array([1]))
    want = np.exp(-40.0) / 2  # exp's rounding only: within sigmoid_error(0) of the code's sigmoid
    assert G[0, 0] == pytest.approx(want, rel=float(sigmoid_error(0.0)) + U64, abs=0)


def test_hinge_margin_of_exactly_zero_is_inactive():
    """Bug: >= instead of > in the hinge's subgradient."""
    S = np.array([[1.0, 2.0, 0.5]])  # margins for y = 1: s0 - s1 + 1 = 0, s2 - s1 + 1 = -0.5
    G = losses.svm_grad(S.copy(), np.array([1]))
    assert G.tolist() == [[0.0, 0.0, 0.0]]
    S = np.array([[1.5, 2.0, 0.5]])  # now margin 0 is 0.5 > 0: active
    assert losses.svm_grad(S.copy(), np.array([1])).tolist() == [[1.0, -1.0, 0.0]]


def test_hinge_kinks_are_counted_and_left_out():
    """Bug: entries whose perturbation crosses a margin of 0 counted as failures (or silently as
    passes): they are left out of the verdict, and counted."""
    rng = np.random.default_rng(0)
    W, b = np.zeros((10, 8)), np.zeros(10)
    X = rng.standard_normal((4, 8))
    y = np.array([0, 1, 2, 3])
    b[5] = -1.0  # class 5's margin is exactly 0 for every sample: a kink for b[5] and all W[5, :]
    cfg = GradcheckConfig(n=4, dims=8, loss="svm")
    report = gradcheck.check(W, b, X, y, cfg, "test")
    W_report, b_report = report.params
    assert report.passed
    assert b_report.kinks >= 1 and W_report.kinks >= 8
    assert W_report.checked + W_report.kinks == 80 and b_report.checked + b_report.kinks == 10
    kW, kb = numgrad.kinks(W, b, X, y, cfg.step, "svm")
    assert kb[5] and kW[5].all() and int(kW.sum()) == W_report.kinks


def test_squared_hinge_counts_only_violated_margins():
    """Bug: the true class's margin taken as 1 + s (its sign flipped), or a satisfied margin
    (t s >= 1) still pulling on its score."""
    S = np.array([[1.0, -1.0, 0.5, -3.0]])  # y = 0: t s = 1, 1, -0.5, 3
    assert losses.l2svm_losses(S, np.array([0])).tolist() == [1.5**2]
    assert losses.l2svm_grad(S.copy(), np.array([0])).tolist() == [[0.0, 0.0, 3.0, 0.0]]
    S = np.array([[0.25, 2.0]])  # y = 0: margin 0.75 on the true class, 3 on the other
    assert losses.l2svm_grad(S.copy(), np.array([0])).tolist() == [[-1.5, 6.0]]


def test_no_kinks_outside_the_hinge():
    W, b, X, y = problem(1)
    for loss in ("ce", "bce", "mse", "l2svm"):
        kW, kb = numgrad.kinks(W, b, X, y, 1e-6, loss)
        assert not kW.any() and not kb.any()


@pytest.mark.parametrize("loss", LOSSES)
def test_predictions_are_the_highest_score_for_every_loss(loss):
    W, b, X, y = problem(2)
    # products of other shapes: no two top scores within twice their rounding of each other
    assert (min_gap(X @ W.T + b) > 4 * product_error(X, W.T, U64, b).max(axis=1)).all()
    assert np.array_equal(model.predict(W, b, X), np.argmax(X @ W.T + b, axis=1))
    m = model.evaluate(W, b, X, y, 0.0, loss)
    assert m.accuracy == np.mean(np.argmax(X @ W.T + b, axis=1) == y)
