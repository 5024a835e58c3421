"""The closed-form ridge solver: against a direct least-squares solve, augmentation folded into
the statistics against the materialised augmented set, and the lambda search."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cifarlin.core import augment, ridge
from cifarlin.core.augment import Augment
from cifarlin.core.normalize import Normalizer
from cifarlin.errors import ConfigError
from tolerances import ELEMENTARY_ULPS, U64, assert_within, min_gap, ridge_error, sum_error


def bias_error(eW: float, W: np.ndarray, zbar: np.ndarray) -> float:
    """How far a computed b = ybar - W zbar can be from the exact one, for W within eW (every
    entry) of the exact W: eW |zbar|_1 through the product, its rounding (sum_error(d + 1) of
    |W| |zbar| + the class frequencies, at most 1), and zbar's own (3 u, from the sums)."""
    mag = np.abs(W) @ np.abs(zbar) + 1
    return float(eW * (1 + np.abs(zbar).sum()) + (sum_error(len(zbar) + 1, U64) + 3 * U64) * mag.max())


def cost_of(Z: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, lam: float) -> tuple[float, float]:
    """|Z W^T + b - Y|^2 / n + lam |W|^2, and a bound on its rounding: the residuals' products
    (sum_error(d + 2)), their squares' sum (2 |R| dR, and sum_error(n K) + 2 u of the sum), the
    penalty's (sum_error(K d) + 2 u)."""
    R = Z @ W.T + b - np.eye(10)[y]
    dR = sum_error(Z.shape[1] + 2, U64) * (np.abs(Z) @ np.abs(W).T + np.abs(b) + 1)
    n, pen = len(Z), lam * (W**2).sum()
    bound = (2 * np.abs(R) * dR).sum() / n + (sum_error(R.size, U64) + 2 * U64) * (R**2).sum() / n
    return float((R**2).sum() / n + pen), float(bound + (sum_error(W.size, U64) + 2 * U64) * pen)


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
    Z = (X - shift) / scale
    Wd, bd = direct(Z, y, lam)
    eW = ridge_error(Z, np.eye(10)[y], lam, W)[0]  # each of the two within it of the exact W
    assert_within(W, Wd, 2 * eW, "W")
    assert_within(b, bd, 2 * bias_error(eW, W, rp.zbar), "b")


def test_objective_equals_the_cost_of_the_solution(small):
    """Catches a wrong spectral formula for the training objective the history reports."""
    X, y = small
    rp = ridge.path(ridge.moments([(X, y)]), np.zeros(9), np.ones(9))
    for lam in (0.01, 1.0):
        W, b = rp.solve(lam)
        cost, rounding = cost_of(X, y, W, b, lam)
        # the spectral formula: the exact optimum of a problem within ridge_error's dA, dB; the
        # cost at W: within (|A| + lam) eW^2 K of it (stationary there), and its own rounding
        eW, eJ = ridge_error(X, np.eye(10)[y], lam, W)
        second = (np.linalg.norm(np.cov(X.T, bias=True), 2) + lam) * eW**2 * 10
        assert_within(rp.objective(lam), cost, eJ + second + rounding, f"objective at {lam}")


def test_rank_deficient_inputs_give_the_minimum_norm_solution(small):
    """A constant input (a pixel that never changes) makes A singular; catches inf/NaN weights
    at lambda = 0 instead of lstsq's minimum-norm answer."""
    X, y = small
    X = np.hstack([X, np.full((len(X), 1), 7.0)])
    rp = ridge.path(ridge.moments([(X, y)]), np.zeros(10), np.ones(10))
    W, b = rp.solve(0.0)
    Wd, bd = direct(X, y, 0.0)
    assert np.isfinite(W).all()
    # predictions of two minimum-norm solutions, each within ridge_error (the pseudo-inverse's) of
    # the exact one where the inputs vary, through |X|, and the products' rounding
    eW = ridge_error(X, np.eye(10)[y], 0.0, W)[0]
    eb = bias_error(eW, W, rp.zbar)
    P = W @ X.T + b[:, None]
    bound = 2 * (eW * np.abs(X).sum(axis=1) + eb) + 2 * sum_error(X.shape[1] + 1, U64) * (
        np.abs(W) @ np.abs(X).T + 1
    )
    assert_within(P, Wd @ X.T + bd[:, None], bound, "predictions")


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
    Z, Y = np.vstack([X, X[:, perm]]) / scale, np.eye(10)[np.concatenate([y, y])]
    for lam in (0.0, 0.1, 3.0):
        (Wh, bh), (Wf, bf) = half.solve(lam), full.solve(lam)
        eW, eJ = ridge_error(Z, Y, lam, Wf)  # two solutions, each within eW (eJ) of the exact one
        assert_within(Wh, Wf, 2 * eW, f"W at {lam}")
        assert_within(bh, bf, 2 * bias_error(eW, Wf, full.zbar), f"b at {lam}")
        assert_within(half.objective(lam), full.objective(lam), 2 * eJ, f"objective at {lam}")
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
    # the flip's pairs share one basis row, so their weights are one product of the same numbers,
    # perhaps summed in other orders (sum_error(r) of |basis| |proj gain| each)
    M = np.abs(rp.proj * rp._gain(lam)[:, None])
    bound = 2 * sum_error(rp.basis.shape[1], U64) * (np.abs(rp.basis) @ M).T
    assert_within(W, W[:, augment.flip_index()], bound, "W against its mirror")
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
    # 10 ** log10(x): log10's rounding (ELEMENTARY_ULPS of |log10 x| = 2) grows by ln(10) through
    # the power, which adds its own
    rel = ELEMENTARY_ULPS * U64 * (1 + 2 * np.log(10) * 2)
    assert (
        len(grid) == 9 and grid[0] == pytest.approx(1e-2, rel=rel) and grid[-1] == pytest.approx(1e2, rel=rel)
    )
    lam, table = ridge.choose_lambda(rp, X[25:], y[25:], grid)
    for s in table:
        W, b = rp.solve(s.lam)
        S = X[25:] @ W.T + b
        # choose_lambda scores through the eigenbasis, (X - zbar) basis (proj gain) + ybar: both
        # within a few sums' rounding of the exact scores, so the same classes where no two top
        # scores are closer than that
        M = np.abs(rp.proj * rp._gain(s.lam)[:, None])
        T = (np.abs(X[25:]) + np.abs(rp.zbar)) @ np.abs(rp.basis)
        E = 2 * sum_error(10, U64) * (T @ M + 1) + 2 * sum_error(10, U64) * (np.abs(X[25:]) @ np.abs(W).T + 1)
        assert (min_gap(S) > 2 * E.max(axis=1)).all()
        assert s.val_acc == float((S.argmax(axis=1) == y[25:]).mean())
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


@pytest.mark.parametrize("panel", [1, 5, 7, 23, 4096])
def test_blockwise_gram_equals_the_direct_one(panel):
    """Catches a panel added twice or not at all, the mirrored half transposed the wrong way, or
    the last short panel dropped (23 inputs in panels of 5 and 7 end short): the Gram update in
    panels equals X^T X to float64 rounding (each entry one m-term dot product, in any order:
    sum_error(m) |X|^T |X|, plus the addition's u), and is symmetric to the bit; one panel is
    the single syrk it was."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(37, 23))
    G0 = rng.normal(size=(23, 23))
    G0 = G0 + G0.T
    G = G0.copy()
    ridge.gram_update(G, X, panel)
    want = G0 + X.T @ X
    mag = np.abs(X).T @ np.abs(X)
    bound = 2 * (sum_error(37, U64) * mag) + 2 * U64 * (np.abs(G0) + mag)
    assert_within(G, want, bound, f"panels of {panel}")
    assert np.array_equal(G, G.T)
    if panel >= 23:
        assert np.array_equal(G, want)


def test_path_in_place_is_the_same_path():
    """The memory-saving path (the Gram sums turned into A in place, by bands of rows) computes
    every entry with the same operations: the same eigendecomposition to the bit, for bands that
    end short (BLOCK patched to 7 over 23 inputs)."""
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(60, 23)) + 3, rng.integers(0, 10, 60)
    m = ridge.moments([(X, y)])
    shift, scale = X.mean(axis=0), X.std(axis=0) + 0.5
    want = ridge.path(m, shift, scale)
    spent = dataclasses.replace(m, G=m.G.copy())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ridge, "BLOCK", 7)
        got = ridge.path(spent, shift, scale, overwrite=True)
    for field in ("evals", "basis", "proj", "zbar", "ybar"):
        assert np.array_equal(getattr(got, field), getattr(want, field)), field
    assert not np.array_equal(spent.G, m.G)  # spent: it holds A now
