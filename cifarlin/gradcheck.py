"""Compare the analytic gradients of the model with numerical ones."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cifarlin import model
from cifarlin.errors import ConfigError

DEFAULT_H = {"centred": 1e-6, "complex": 1e-20}
MAX_N = 10_000


@dataclass(frozen=True)
class GradcheckConfig:
    """What to check and how strictly.

    An entry passes when |ga - gn| <= atol + tol * (|ga| + |gn|): the absolute floor keeps
    near-zero gradients, whose relative error means nothing under centred differences, honest.
    """

    n: int = 20
    dims: int = model.D
    lam: float = 0.0
    h: float | None = None  # None: 1e-6 for centred differences, 1e-20 for the complex step
    method: model.Method = "centred"
    tol: float = 1e-6
    atol: float = 1e-8
    seed: int = 0
    init_std: float = 0.01

    def __post_init__(self) -> None:
        def bad(flag: str, value: object, why: str) -> ConfigError:
            return ConfigError(f"{flag} {value!r}: {why}")

        if not 1 <= self.n <= MAX_N:
            raise bad("--n", self.n, f"must be between 1 and {MAX_N} (the images of one training batch)")
        if not 1 <= self.dims <= model.D:
            raise bad("--dims", self.dims, f"must be between 1 and {model.D}")
        if self.method not in DEFAULT_H:
            raise bad("--method", self.method, "use 'centred' or 'complex'")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise bad("--lam", self.lam, "must be a finite number >= 0")
        if self.h is not None and not (math.isfinite(self.h) and 0 < self.h <= 1):
            raise bad("--h", self.h, "the step must be > 0 and <= 1")
        for flag, v in (("--tol", self.tol), ("--atol", self.atol)):
            if not (math.isfinite(v) and v >= 0):
                raise bad(flag, v, "must be a finite number >= 0")
        if not 0 <= self.seed < 2**63:
            raise bad("--seed", self.seed, "must be between 0 and 2**63 - 1")

    @property
    def step(self) -> float:
        return self.h if self.h is not None else DEFAULT_H[self.method]


@dataclass(frozen=True)
class ParamReport:
    """Agreement of analytic and numerical gradients for one parameter array."""

    name: str
    max_rel: float
    p99_rel: float
    mean_rel: float
    max_abs: float
    checked: int
    failing: int

    @property
    def passed(self) -> bool:
        return self.failing == 0


@dataclass(frozen=True)
class GradcheckReport:
    config: GradcheckConfig
    source: str
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
            "source": self.source,
            "seconds": self.seconds,
            **{p.name: {**asdict(p), "pass": p.passed} for p in self.params},
        }


def compare(name: str, ga: np.ndarray, gn: np.ndarray, tol: float, atol: float) -> ParamReport:
    """Statistics of the agreement of analytic ``ga`` and numerical ``gn`` (same shape)."""
    rel = model.relative_error(ga, gn)
    err = np.abs(ga - gn)
    failing = int(np.count_nonzero(~(err <= atol + tol * (np.abs(ga) + np.abs(gn)))))  # NaN fails too
    return ParamReport(
        name=name,
        max_rel=float(rel.max()),
        p99_rel=float(np.percentile(rel, 99)),
        mean_rel=float(rel.mean()),
        max_abs=float(err.max()),
        checked=int(rel.size),
        failing=failing,
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
    W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray, cfg: GradcheckConfig, source: str
) -> GradcheckReport:
    """Analytic against numerical gradients of J at (W, b) on (X, y), in float64."""
    W, b, X = (np.asarray(a, dtype=np.float64) for a in (W, b, X))
    t0 = time.perf_counter()
    aW, ab = model.gradients(W, b, X, y, cfg.lam)
    nW, nb = model.numerical_gradients(W, b, X, y, cfg.lam, h=cfg.step, method=cfg.method)
    seconds = time.perf_counter() - t0
    params = (compare("W", aW, nW, cfg.tol, cfg.atol), compare("b", ab, nb, cfg.tol, cfg.atol))
    return GradcheckReport(config=cfg, source=source, params=params, seconds=seconds)
