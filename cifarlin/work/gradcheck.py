"""Compare the analytic gradients of the model with numerical ones, for every parameter and loss."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cifarlin.core import model, numgrad
from cifarlin.core.config import GradcheckConfig, SplitSpec
from cifarlin.data.cifar import Dataset
from cifarlin.work.prepare import training_sample


@dataclass(frozen=True)
class ParamReport:
    """Agreement of analytic and numerical gradients for one parameter array.

    The statistics are over the ``checked`` entries: all but the ``kinks`` left out (entries of
    the hinge loss whose perturbation crosses a margin of 0, where there is no derivative).
    ``by_floor`` counts passing entries whose relative error alone exceeds the tolerance: the
    absolute floor decided them (near-zero gradients, where centred differences lose digits).
    """

    name: str
    max_rel: float
    p99_rel: float
    mean_rel: float
    max_abs: float
    checked: int
    failing: int
    kinks: int = 0
    by_floor: int = 0

    @property
    def passed(self) -> bool:
        return self.failing == 0


@dataclass(frozen=True)
class GradcheckReport:
    config: GradcheckConfig
    inputs: str  # "random", or the data folder of the training images checked on
    params: tuple[ParamReport, ...]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.params)

    def to_dict(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg["h"] = self.config.step
        return {
            "pass": self.passed,
            **cfg,
            "inputs": self.inputs,
            "seconds": self.seconds,
            **{p.name: {**asdict(p), "pass": p.passed} for p in self.params},
        }


def relative_error(ga: np.ndarray, gn: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Elementwise |ga - gn| / max(eps, |ga| + |gn|)."""
    return np.abs(ga - gn) / np.maximum(eps, np.abs(ga) + np.abs(gn))


def compare(
    name: str, ga: np.ndarray, gn: np.ndarray, tol: float, atol: float, skip: np.ndarray | None = None
) -> ParamReport:
    """Statistics of the agreement of analytic ``ga`` and numerical ``gn`` (same shape), leaving
    out the entries where ``skip`` is True."""
    keep = np.ones(ga.shape, dtype=bool) if skip is None else ~skip
    ga, gn = ga[keep], gn[keep]
    rel = relative_error(ga, gn)
    err = np.abs(ga - gn)
    bound = tol * (np.abs(ga) + np.abs(gn))
    ok = err <= atol + bound  # NaN fails
    empty = rel.size == 0
    return ParamReport(
        name=name,
        max_rel=float("nan") if empty else float(rel.max()),
        p99_rel=float("nan") if empty else float(np.percentile(rel, 99)),
        mean_rel=float("nan") if empty else float(rel.mean()),
        max_abs=float("nan") if empty else float(err.max()),
        checked=int(rel.size),
        failing=int(np.count_nonzero(~ok)),
        kinks=int(keep.size - rel.size),
        by_floor=int(np.count_nonzero(ok & ~(err <= bound))),
    )


def initial_params(cfg: GradcheckConfig) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """W (K, dims), b (K,) initialised as in training (then cut to the first ``dims`` inputs),
    and the generator, for drawing random inputs after them."""
    rng = np.random.default_rng(cfg.seed)
    W, b = model.init_params(rng, std=cfg.init_std)
    return W[:, : cfg.dims], b, rng


def random_problem(cfg: GradcheckConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """W, b as in training and standard normal inputs X (n, dims) with random labels y (n,)."""
    W, b, rng = initial_params(cfg)
    X = rng.standard_normal((cfg.n, cfg.dims))
    y = rng.integers(0, model.K, size=cfg.n)
    return W, b, X, y


def check(
    W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, cfg: GradcheckConfig, inputs: str
) -> GradcheckReport:
    """Analytic against numerical gradients of J at (W, b) on (X, y), in float64."""
    W, b, X = (np.asarray(a, dtype=np.float64) for a in (W, b, X))
    t0 = time.perf_counter()
    aW, ab = model.gradients(W, b, X, y, cfg.lam, cfg.loss)
    nW, nb = numgrad.numerical_gradients(W, b, X, y, cfg.lam, h=cfg.step, method=cfg.method, loss=cfg.loss)
    kW, kb = numgrad.kinks(W, b, X, y, cfg.step, cfg.loss)
    seconds = time.perf_counter() - t0
    params = (compare("W", aW, nW, cfg.tol, cfg.atol, kW), compare("b", ab, nb, cfg.tol, cfg.atol, kb))
    return GradcheckReport(config=cfg, inputs=inputs, params=params, seconds=seconds)


def run(cfg: GradcheckConfig, dataset: Dataset | None = None) -> GradcheckReport:
    """The check of ``cfg`` on the first ``cfg.n`` training images of ``dataset`` (normalised as in
    training, by the whole training split's statistics), or on random inputs when it is None."""
    if dataset is None:
        W, b, X, y = random_problem(cfg)
        return check(W, b, X, y, cfg, "random")
    X, y, _ = training_sample(dataset, SplitSpec(), cfg.n)
    W, b, _ = initial_params(cfg)
    return check(W, b, X[:, : cfg.dims], y, cfg, str(dataset.folder))
