"""A run of the ridge solver (``--solver ridge``): what :func:`cifarlin.core.train.fit` is for
gradient descent. The mathematics is in :mod:`cifarlin.core.ridge`; here a run's prepared data
are solved, lambda chosen on the validation set, and the result recorded as a one-step history."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from cifarlin.core import model
from cifarlin.core.config import TrainConfig
from cifarlin.core.history import History, TrainState
from cifarlin.core.prepared import Prepared
from cifarlin.core.ridge import LambdaScore, choose_lambda, lambda_grid, path, pixel_affine
from cifarlin.core.threads import interruptible, one_blas_thread
from cifarlin.errors import bad_value


@dataclass(frozen=True)
class Solution:
    """A ridge run: its configuration (``lam`` the chosen value when it was chosen), its one-step
    state, and the validation accuracy of every candidate lambda (empty when lambda was given)."""

    config: TrainConfig
    state: TrainState
    lambdas: list[LambdaScore]


def fit(cfg: TrainConfig, data: Prepared) -> Solution:
    """Solve the run ``cfg`` (solver "ridge") on ``data`` prepared with its views
    (:func:`cifarlin.work.prepare.prepare_run`; features: their rows as they are, mirrored copies
    included): the eigendecomposition once per ``data``, lambda chosen on
    the validation set when ``cfg.choose_lam``, W and b cast to the run's dtype, and one history
    row with the squared loss on the training rows (not their views) and the validation set."""
    if cfg.solver != "ridge" or (data.moments is None and data.ridge_path is None):
        raise bad_value("solver", cfg.solver, "prepare the data with the ridge solver's statistics first")
    t0 = time.perf_counter()
    if data.ridge_path is None:  # minutes for 10,000+ features: on a thread, so Ctrl-C stops it
        shift, scale = pixel_affine(data.normalizer)
        data.ridge_path = interruptible(path, data.moments, shift, scale, True)
        data.moments = None  # spent: its Gram sums are the path's matrix now
    rp = data.ridge_path
    table: list[LambdaScore] = []
    if cfg.choose_lam:
        lam, table = choose_lambda(rp, data.X["val"], data.y["val"], lambda_grid())
        cfg = cfg.replace(lam=lam)
    W, b = rp.solve(cfg.lam)  # (K, d), (K,) float64
    W, b = W.astype(cfg.dtype), b.astype(cfg.dtype)
    with one_blas_thread():  # the order evaluation sums in, to the bit
        train = model.evaluate(W, b, data.X["train"], data.y["train"], cfg.lam, cfg.loss)
        val = model.evaluate(W, b, data.X["val"], data.y["val"], cfg.lam, cfg.loss)
    if not (np.isfinite(W).all() and np.isfinite(b).all()):
        raise bad_value("lam", cfg.lam, "the solution is not finite; use a larger lambda")
    history = History()
    history.append(train, val, time.perf_counter() - t0, 0.0)  # no learning rate: eta 0
    rng_state = np.random.default_rng(cfg.seed).bit_generator.state  # unused: nothing is drawn
    return Solution(cfg, TrainState(W, b, 1, history, rng_state), table)
