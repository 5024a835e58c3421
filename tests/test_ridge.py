"""The closed-form ridge solver: against a direct least-squares solve, augmentation folded into
the statistics against the materialised augmented set, and the lambda search."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cifarlin import augment, ridge
from cifarlin.augment import Augment
from cifarlin.data import Normalizer
from cifarlin.errors import ConfigError


def direct(Z: np.ndarray, y: np.ndarray, lam: float, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """argmin ||Z W^T + b - Y||^2 / n + lam ||W||^2 by one least-squares solve of the stacked
    system [Z 1; sqrt(n lam) I 0] [W^T; b] = [Y; 0] (b unpenalised), minimum norm."""
    n, d = Z.shape
    penalty = np.hstack([np.sqrt(n * lam) * np.eye(d), np.zeros((d, 1))])
    A = np.vstack([np.hstack([Z, np.ones((n, 1))]), penalty])
    rhs = np.vstack([np.eye(k)[y], np.zeros((d, k))])
    sol = np.linalg.lstsq(A, rhs, rcond=None)[0]  # (d + 1, K)
    return sol[:d].T, sol[d]


@pytest.fixture
def small() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.normal(3.0, 2.0, (80, 9)), rng.integers(0, 10, 80)


@pytest.mark.parametrize("lam", [0.0, 1e-3, 0.5, 20.0])
def test_closed_form_equals_a_direct_least_squares_solve(small, lam):
    """Catches a penalised bias, a missing centring, lambda scaled by n, or a transposed W."""
    X, y = small
    shift, scale = np.linspace(-1, 1, 9), np.linspace(0.5, 2, 9)
    rp = ridge.path(ridge.moments([(X, y)]), shift, scale)
    W, b = rp.solve(lam)
    Wd, bd = direct((X - shift) / scale, y, lam)
    np.testing.assert_allclose(W, Wd, atol=1e-10)
    np.testing.assert_allclose(b, bd, atol=1e-10)


def test_objective_equals_the_cost_of_the_solution(small):
    """Catches a wrong spectral formula for the training objective the history reports."""
    X, y = small
    rp = ridge.path(ridge.moments([(X, y)]), np.zeros(9), np.ones(9))
    for lam in (0.01, 1.0):
        W, b = rp.solve(lam)
        cost = ((X @ W.T + b - np.eye(10)[y]) ** 2).sum() / len(X) + lam * (W**2).sum()
        assert rp.objective(lam) == pytest.approx(cost, rel=1e-12)


def test_rank_deficient_inputs_give_the_minimum_norm_solution(small):
    """A constant input (a pixel that never changes) makes A singular; catches inf/NaN weights
    at lambda = 0 instead of lstsq's minimum-norm answer."""
    X, y = small
    X = np.hstack([X, np.full((len(X), 1), 7.0)])
    rp = ridge.path(ridge.moments([(X, y)]), np.zeros(10), np.ones(10))
    W, b = rp.solve(0.0)
    Wd, bd = direct(X, y, 0.0)
    assert np.isfinite(W).all()
    np.testing.assert_allclose(W @ X.T + b[:, None], Wd @ X.T + bd[:, None], atol=1e-8)


def test_moments_do_not_depend_on_blocks_or_chunks():
    """uint8 statistics are exact: catches float32 accumulation or a lost last block."""
    rng = np.random.default_rng(2)
    X, y = rng.integers(0, 256, (30, 600), dtype=np.uint8), rng.integers(0, 10, 30)
    whole = ridge.moments([(X, y)])
    parts = ridge.moments([(X[:13], y[:13]), (X[13:], y[13:])], block=10)
    summed = ridge.moments([(X[:20], y[:20])]) + ridge.moments([(X[20:], y[20:])])
    for m in (parts, summed):
        assert m.n == 30 and m.integer
        assert all(np.array_equal(getattr(m, f), getattr(whole, f)) for f in ("sx", "G", "C", "counts"))


@pytest.mark.parametrize("spec", ["flip", "translate:1", "flip,translate:1"])
def test_folding_equals_materialising_the_augmented_set(spec):
    """Catches a view counted twice or missed, G[src][:, src] written as G[:, src][src] with the
    wrong maps, the flip composed on the wrong side of the shift, or n not multiplied."""
    rng = np.random.default_rng(3)
    X, y = rng.integers(0, 256, (4, 3072), dtype=np.uint8), rng.integers(0, 10, 4)
    aug = augment.parse_augment(spec)
    folded = ridge.fold(ridge.moments([(X, y)]), aug)
    views = np.concatenate([X[:, src] for src in augment.views(aug)])
    made = ridge.moments([(views, np.tile(y, aug.n_views))])
    assert folded.n == made.n == 4 * aug.n_views
    for f in ("sx", "G", "C", "counts"):  # integer sums below 2**53: exactly equal, not merely to 1e-10
        assert np.array_equal(getattr(folded, f), getattr(made, f)), f
    norm, want = ridge.normalizer(folded), Normalizer.fit([views])
    np.testing.assert_array_equal(norm.mean, want.mean)
    np.testing.assert_array_equal(norm.std, want.std)


def test_folding_refuses_non_pixel_rows(small):
    """Features have no pixels to flip: catches index maps applied to the wrong inputs."""
    X, y = small
    with pytest.raises(ConfigError, match="augment"):
        ridge.fold(ridge.moments([(X, y)]), Augment(flip=True))


def test_flip_symmetric_half_gives_the_full_solution():
    """The (d/2, d/2) shortcut must give the same W as the whole problem; catches a wrong basis
    scaling or a symmetric block built from the wrong quadrants. A small d with its own mirror
    stands in for the 3072 pixels."""
    rng = np.random.default_rng(4)
    d, n = 10, 60
    perm = np.arange(d)[::-1].copy()
    X, y = rng.normal(size=(n, d)), rng.integers(0, 10, n)
    m = ridge.moments([(np.vstack([X, X[:, perm]]), np.concatenate([y, y]))])
    scale = rng.uniform(0.5, 2.0, d)
    scale = (scale + scale[perm]) / 2
    half = ridge.path(dataclasses.replace(m, perm=perm), np.zeros(d), scale)
    full = ridge.path(m, np.zeros(d), scale)
    assert half.basis.shape == (d, d // 2) and full.basis.shape == (d, d)
    for lam in (0.0, 0.1, 3.0):
        for a, b in zip(half.solve(lam), full.solve(lam), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-10)
        assert half.objective(lam) == pytest.approx(full.objective(lam), rel=1e-10)
    asym = ridge.path(dataclasses.replace(m, perm=perm), np.zeros(d), np.linspace(1, 2, d))
    assert asym.basis.shape == (d, d), "an asymmetric scale must fall back to the whole problem"


def test_pixel_solution_is_the_optimum_over_the_materialised_augmented_set():
    """The whole pixel path (exact statistics, folded views, the augmented set's normaliser, the
    flip-symmetric half) must return the point where the gradient of the objective over the
    materialised augmented images vanishes; catches any of them subtly off."""
    rng = np.random.default_rng(6)
    X, y = rng.integers(0, 256, (12, 3072), dtype=np.uint8), rng.integers(0, 10, 12)
    aug, lam = Augment(True, 1), 0.3
    rp, norm = ridge.fit_pixels([(X[:5], y[:5]), (X[5:], y[5:])], aug)
    assert rp.basis.shape == (3072, 1536)
    W, b = rp.solve(lam)
    np.testing.assert_allclose(W, W[:, augment.flip_index()], atol=1e-12)
    views = np.concatenate([X[:, src] for src in augment.views(aug)])
    Z, Y = norm.apply(views, np.float64), np.eye(10)[np.tile(y, aug.n_views)]
    R = Z @ W.T + b - Y  # (n, K) residuals
    n = len(Z)
    assert np.abs(R.sum(axis=0)).max() < 1e-9 * n  # d/db = 0
    grad = 2 / n * (R.T @ Z) + 2 * lam * W  # d/dW (K, d)
    assert np.abs(grad).max() < 1e-10
    assert rp.objective(lam) == pytest.approx((R**2).sum() / n + lam * (W**2).sum(), rel=1e-10)


def test_choose_lambda_is_by_validation_accuracy():
    """Catches choosing by the training objective (always the smallest lambda), ignoring the
    accuracies (always the largest: on random labels the best was the largest candidate, so that
    passed), scoring the validation rows unnormalised, or breaking ties towards the less
    regularised model. Ten noisy classes and 25 training rows for 9 inputs: lambda matters."""
    rng = np.random.default_rng(2)
    y = np.arange(100) % 10
    X = rng.normal(0, 1, (10, 9))[y] + rng.normal(0, 1.5, (100, 9))
    rp = ridge.path(ridge.moments([(X[:25], y[:25])]), np.zeros(9), np.ones(9))
    grid = ridge.lambda_grid(1e-2, 1e2, 2)
    assert len(grid) == 9 and grid[0] == pytest.approx(1e-2) and grid[-1] == pytest.approx(1e2)
    lam, table = ridge.choose_lambda(rp, X[25:], y[25:], grid)
    for s in table:
        W, b = rp.solve(s.lam)
        assert s.val_acc == float(((X[25:] @ W.T + b).argmax(axis=1) == y[25:]).mean())
    top = max(s.val_acc for s in table)
    tied = [s.lam for s in table if s.val_acc == top]
    assert len(tied) > 1 and grid[0] < min(tied) and max(tied) < grid[-1]  # the rules matter here
    assert lam == max(tied)


def test_bad_lambda_and_shapes_are_refused(small):
    X, y = small
    rp = ridge.path(ridge.moments([(X, y)]), np.zeros(9), np.ones(9))
    for lam in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="lam"):
            rp.solve(lam)
    with pytest.raises(ConfigError):
        ridge.choose_lambda(rp, X[:, :5], y, [1.0])
    with pytest.raises(ConfigError):
        ridge.moments([(X, y + 10)])
    with pytest.raises(ConfigError):
        ridge.path(ridge.moments([(X, y)]), np.zeros(9), np.zeros(9))
