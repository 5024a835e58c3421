"""What a hyperparameter search tries, planned without touching anything: a :class:`SweepSpec`
of axes (:mod:`cifarlin.search.space`), grid and random plans (:func:`plan_grid`,
:func:`plan_random`), the box of a refining round (:func:`refine_box`), and the trials' results
ranked by validation accuracy (:func:`ranked`). :mod:`cifarlin.search.sweep` runs a plan on Dask.

Messages name fields (``trials=0: ...``), as the rest of the library does. Nothing heavy is
imported here (the command line reads its limits from this module).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from cifarlin.core.config import TrainConfig, solver_defaults
from cifarlin.errors import ConfigError, bad_value
from cifarlin.search.space import RANGE_EXAMPLES, SWEEPABLE, Axis

MAX_TRIALS = 10_000
RETRIES = 2  # a trial whose worker died is tried this many more times (a local cluster)
SIGNIFICANT = 3  # digits kept of a value drawn in a random search, so it reads and types back exactly
TOP_FRACTION = 0.25  # round 2 narrows the box around this best fraction of round 1's finished trials

SELECTED_BY = "val_accuracy"  # the validation accuracy of the model a trial saves
STATUSES = ("queued", "running", "done", "diverged", "failed", "interrupted")


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepSpec:
    """What to try: a grid of the lists of ``axes``, or (with ``trials``) a random search that
    draws each range log-uniformly and each list's values uniformly; ``refine`` more trials in a
    second round, in a box narrowed around the best of the first. Fields without an axis keep
    TrainConfig's defaults."""

    axes: tuple[Axis, ...] = ()
    trials: int | None = None
    refine: int = 0
    sweep_seed: int = 0

    def __post_init__(self) -> None:
        names = [a.field for a in self.axes]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise bad_value(n, self.axes[i].text, "given twice")
        ranges = [a for a in self.axes if a.is_range]
        if self.trials is not None and not (type(self.trials) is int and 1 <= self.trials <= MAX_TRIALS):
            raise bad_value("trials", self.trials, f"must be between 1 and {MAX_TRIALS}")
        if ranges and self.trials is None:
            raise bad_value(
                ranges[0].field,
                ranges[0].text,
                "a range is for a random search: give the number of trials with trials=N",
            )
        if self.trials is not None and not ranges:
            raise bad_value(
                "trials",
                self.trials,
                f"a random search draws from a range of real numbers ({RANGE_EXAMPLES}); "
                "lists alone make a grid",
            )
        if not (type(self.refine) is int and 0 <= self.refine <= MAX_TRIALS):
            raise bad_value("refine", self.refine, f"must be between 0 and {MAX_TRIALS}")
        if self.refine and not ranges:
            raise bad_value("refine", self.refine, "narrows a random search: give a range like lam=1e-5..1")
        if not (type(self.sweep_seed) is int and 0 <= self.sweep_seed < 2**63):
            raise bad_value("sweep_seed", self.sweep_seed, "must be between 0 and 2**63 - 1")

    @property
    def mode(self) -> str:
        return "random" if self.trials is not None else "grid"

    def describe(self) -> str:
        axes = ", ".join(f"{a.field}={a.text}" for a in self.axes) or "the defaults"
        if self.mode == "grid":
            return f"grid over {axes}"
        refine = f", then {self.refine} in a narrowed box" if self.refine else ""
        return f"random search of {self.trials} trials over {axes} (sweep seed {self.sweep_seed}){refine}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "axes": {a.field: a.text for a in self.axes},
            "trials": self.trials,
            "refine": self.refine,
            "sweep_seed": self.sweep_seed,
        }


@dataclass(frozen=True)
class Trial:
    """One run of a sweep: its folder name, round, number within the round, and configuration."""

    name: str  # trial-001 in round 1, refine-001 in round 2
    round: int
    index: int
    config: TrainConfig

    def params(self) -> dict[str, Any]:
        """Every sweepable field's value (train_batches as a list)."""
        d = self.config.to_dict()
        return {f: d[f] for f in SWEEPABLE}


def default_out(root: Path = Path("outputs")) -> Path:
    """A new ``root/sweep-<date>-<time>``."""
    stem = datetime.now().strftime("sweep-%Y%m%d-%H%M%S")
    out, n = root / stem, 1
    while out.exists():
        n += 1
        out = root / f"{stem}-{n}"
    return out


def trial_name(round_no: int, index: int) -> str:
    return f"{'trial' if round_no == 1 else 'refine'}-{index:03d}"


def _config(values: dict[str, Any]) -> TrainConfig:
    return TrainConfig(**solver_defaults(values))  # validation names the field and value at fault


def plan_grid(spec: SweepSpec) -> list[Trial]:
    """Every combination of the lists, the first axis varying slowest."""
    n = math.prod(len(a.values) for a in spec.axes)
    if n > MAX_TRIALS:
        sizes = " x ".join(f"{len(a.values)} {a.field}" for a in spec.axes)
        raise ConfigError(f"the grid has {sizes} = {n} trials, more than {MAX_TRIALS}")
    names = [a.field for a in spec.axes]
    return [
        Trial(trial_name(1, i), 1, i, _config(dict(zip(names, combo, strict=True))))
        for i, combo in enumerate(itertools.product(*(a.values for a in spec.axes)), 1)
    ]


Box = dict[str, Any]  # field -> (low, high) of a range, or the choices left of a list


def _round_value(v: float) -> float:
    return float(f"{v:.{SIGNIFICANT}g}")


def plan_random(
    spec: SweepSpec, round_no: int = 1, count: int | None = None, box: Box | None = None
) -> list[Trial]:
    """``count`` trials (default ``spec.trials``) drawn for round ``round_no``.

    Trial i draws from ``np.random.default_rng([sweep_seed, round, i])``: the same trials whatever
    their number, so more trials extend a search. Ranges (or the narrower ``box``) are drawn
    log-uniformly and kept to 3 significant digits, lists uniformly.
    """
    import numpy as np

    box = box or {}
    count = spec.trials if count is None else count
    assert count is not None
    trials = []
    for i in range(1, count + 1):
        rng = np.random.default_rng([spec.sweep_seed, round_no, i])
        values: dict[str, Any] = {}
        for a in spec.axes:
            if a.is_range:
                lo, hi = box.get(a.field, (a.low, a.high))
                v = _round_value(math.exp(rng.uniform(math.log(lo), math.log(hi))))
                values[a.field] = min(max(v, lo), hi)
            else:
                choices = box.get(a.field, a.values)
                values[a.field] = choices[int(rng.integers(len(choices)))]
        trials.append(Trial(trial_name(round_no, i), round_no, i, _config(values)))
    return trials


def plan(spec: SweepSpec) -> list[Trial]:
    """The trials of the first round; every configuration is validated."""
    return plan_random(spec) if spec.mode == "random" else plan_grid(spec)


def refine_box(spec: SweepSpec, results: Sequence[TrialResult]) -> Box | None:
    """The box of round 2: for each range, the span (in log space) of the best quarter of round
    1's finished trials, widened by a quarter of that span or a tenth of the full range, whichever
    is more, and kept inside the original range; for each list, the values those trials used.
    None when no trial finished."""
    done = ranked([r for r in results if r.trial.round == 1])
    if not done:
        return None
    top = done[: max(1, math.ceil(TOP_FRACTION * len(done)))]
    box: Box = {}
    for a in spec.axes:
        used = [getattr(r.trial.config, a.field) for r in top]
        if a.is_range:
            assert a.low is not None and a.high is not None
            logs = [math.log(v) for v in used]
            full = math.log(a.high) - math.log(a.low)
            pad = max(0.25 * (max(logs) - min(logs)), 0.1 * full)
            box[a.field] = (max(a.low, math.exp(min(logs) - pad)), min(a.high, math.exp(max(logs) + pad)))
        elif len(a.values) > 1:
            box[a.field] = tuple(v for v in a.values if v in used)
    return box


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

METRICS = (
    "val_accuracy",
    "val_cost",
    "final_val_accuracy",
    "final_val_cost",
    "best_val_accuracy",
    "best_val_cost",
    "best_epoch",
    "epochs_trained",
)


@dataclass
class TrialResult:
    """What is known of a trial: its status, and once it trained, its validation metrics."""

    trial: Trial
    run_dir: Path
    status: str = "queued"
    val_accuracy: float | None = None  # of the model the trial saved (see keep): what selects
    val_cost: float | None = None
    final_val_accuracy: float | None = None  # the last epoch's
    final_val_cost: float | None = None
    best_val_accuracy: float | None = None  # the highest over the epochs
    best_val_cost: float | None = None  # the lowest over the epochs
    best_epoch: int = 0
    epochs_trained: int = 0
    seconds: float | None = None  # on the worker, this time
    worker: str = ""
    error: str = ""
    resumed_from_epoch: int = 0
    data: str = ""  # 'loaded' when this trial read the data, 'cached' when its worker had them

    @property
    def finished(self) -> bool:
        return self.status in ("done", "diverged", "failed")

    def update(self, row: dict[str, Any]) -> None:
        for k, v in row.items():
            if k in _RESULT_FIELDS and k not in ("trial", "run_dir"):
                setattr(self, k, v)

    def row(self) -> dict[str, Any]:
        """The trial as plain values (JSON, CSV)."""
        return {
            "name": self.trial.name,
            "round": self.trial.round,
            "params": self.trial.params(),
            "status": self.status,
            "run_dir": str(self.run_dir),
            **{m: getattr(self, m) for m in METRICS},
            "seconds": self.seconds,
            "resumed_from_epoch": self.resumed_from_epoch,
            "worker": self.worker,
            "data": self.data,
            "error": self.error,
        }


_RESULT_FIELDS = {f.name for f in fields(TrialResult)}


def ranked(results: Sequence[TrialResult]) -> list[TrialResult]:
    """Finished trials, best first: highest validation accuracy of the saved model, then lowest
    validation cost, then the earlier trial. Test figures play no part."""
    done = [r for r in results if r.status == "done" and r.val_accuracy is not None]
    return sorted(
        done,
        key=lambda r: (-r.val_accuracy, r.val_cost, r.trial.round, r.trial.index),  # type: ignore[operator]
    )


def best_of(results: Sequence[TrialResult]) -> TrialResult | None:
    r = ranked(results)
    return r[0] if r else None
