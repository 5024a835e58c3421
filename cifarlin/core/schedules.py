"""Learning-rate schedules: the eta of every update, as a pure function of the configuration.

    constant  eta throughout (the original work)
    step      eta * decay ** floor((epoch - 1) / decay_every): multiplied by `decay` every N epochs
    cosine    from eta in the first epoch down to eta_min in the last, along half a cosine
    cyclic    triangular between eta_min and eta_max (default: eta), rising for step_size updates,
              falling for step_size updates, and again (Smith 2015, as in the course's later
              assignments); step_size defaults to two epochs' worth of updates

Step and cosine change eta once per epoch; cyclic changes it at every update. Since the rate is a
function of (epoch, update) alone, a resumed run uses exactly the rates an uninterrupted one does.
"""

from __future__ import annotations

import math

import numpy as np

from cifarlin.core.config import TrainConfig


def half_cycle(cfg: TrainConfig, n_batches: int) -> int:
    """The cyclic schedule's step size in updates (``cfg.step_size``, else two epochs)."""
    return cfg.step_size if cfg.step_size is not None else 2 * n_batches


def learning_rates(cfg: TrainConfig, epoch: int, n_batches: int) -> np.ndarray:
    """The eta of each of the ``n_batches`` updates of ``epoch`` (1-based): (n_batches,) float64."""
    if cfg.schedule == "constant":
        return np.full(n_batches, cfg.eta)
    if cfg.schedule == "step":
        return np.full(n_batches, cfg.eta * cfg.decay ** ((epoch - 1) // cfg.decay_every))
    if cfg.schedule == "cosine":
        progress = (epoch - 1) / (cfg.epochs - 1) if cfg.epochs > 1 else 0.0
        eta = cfg.eta_min + 0.5 * (cfg.eta - cfg.eta_min) * (1 + math.cos(math.pi * progress))
        return np.full(n_batches, eta)
    if cfg.schedule == "cyclic":
        high = cfg.eta_max if cfg.eta_max is not None else cfg.eta
        n_s = half_cycle(cfg, n_batches)
        t = (epoch - 1) * n_batches + np.arange(n_batches)  # update counter since the start
        phase = (t % (2 * n_s)) / n_s  # in [0, 2): up for [0, 1), down for [1, 2)
        return cfg.eta_min + (high - cfg.eta_min) * np.where(phase < 1, phase, 2 - phase)
    raise ValueError(f"unknown schedule {cfg.schedule!r}")  # TrainConfig validates it first
