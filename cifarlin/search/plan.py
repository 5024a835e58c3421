"""What a hyperparameter search tries, planned without touching anything: the sweepable fields
and how their values read from text (:data:`SWEEPABLE`, :data:`KINDS`), axes
(:func:`parse_axis`), a :class:`SweepSpec`, grid and random plans (:func:`plan_grid`,
:func:`plan_random`), the box of a refining round (:func:`refine_box`), and the trials' results
ranked by validation accuracy (:func:`ranked`). :mod:`cifarlin.search.sweep` runs a plan on Dask.

Which fields can be swept is one table, :data:`SWEEPABLE`; how a value of a field is read from
text depends only on the field's type in :class:`~cifarlin.core.config.TrainConfig` (:data:`KINDS`).
A new TrainConfig field becomes sweepable by one line in :data:`SWEEPABLE` (and, for a type not
seen before, one in :data:`KINDS`); the command line makes its option from that table. Messages
name fields (``trials=0: ...``), as the rest of the library does. Nothing heavy is imported here
(the command line reads its tables from this module).
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from cifarlin.core.config import TrainConfig, parse_batches, solver_defaults
from cifarlin.errors import ConfigError, bad_value


@dataclass(frozen=True)
class Sweepable:
    """What a value of a sweepable field means (the command line's help), and what separates the
    values of a list when they may hold commas themselves (default: the field type's)."""

    help: str
    sep: str | None = None
    path: bool = False  # values are files: made absolute (workers may run elsewhere), never ranges


#: The TrainConfig fields a sweep can vary. To make a new field sweepable, add it here: its
#: option and parsing follow from its type in TrainConfig (see KINDS).
SWEEPABLE: dict[str, Sweepable] = {
    "lam": Sweepable("Penalty weight lambda"),
    "eta": Sweepable("Learning rate"),
    "loss": Sweepable("Loss (ce, svm, bce, mse or l2svm)"),
    "solver": Sweepable("Solver (gd; ridge: the exact squared-loss optimum, each lambda nearly free)"),
    "epochs": Sweepable("Epochs"),
    "batch_size": Sweepable("Images per batch"),
    "seed": Sweepable("Seed of the initial W, b (and of shuffling and augmentation)"),
    "shuffle": Sweepable("Shuffle the batches each epoch (true or false)"),
    "train_batches": Sweepable("Training batches, each value e.g. 1, 1-5 or 1,3"),
    "val_size": Sweepable("Validate on the last N training images (none: on data_batch_2)"),
    "dtype": Sweepable("Precision of data and weights (float32 or float64)"),
    "init_std": Sweepable("Standard deviation of the initial W and b"),
    "schedule": Sweepable("Learning-rate schedule (constant, step, cosine or cyclic)"),
    "decay": Sweepable("step: eta's factor"),
    "decay_every": Sweepable("step: epochs between decays"),
    "eta_min": Sweepable("cosine, cyclic: the lowest eta"),
    "eta_max": Sweepable("cyclic: the highest eta (none: eta)"),
    "step_size": Sweepable("cyclic: updates per half cycle (none: two epochs)"),
    "augment": Sweepable("Augmentation, each value none, flip, translate:K or flip,translate:K", sep="/"),
    "features": Sweepable(
        "A feature map (cifarlin features fit) to train on (none: pixels)", sep=os.pathsep, path=True
    ),
    "init": Sweepable(
        "Start from this trained model's weights (a model.h5 or its run folder; none: random)",
        sep=os.pathsep,
        path=True,
    ),
    "keep": Sweepable("What model.h5 holds (last or best epoch)"),
    "patience": Sweepable("Stop after N epochs without a better validation accuracy (none: never)"),
}

MAX_TRIALS = 10_000
RETRIES = 2  # a trial whose worker died is tried this many more times (a local cluster)
SIGNIFICANT = 3  # digits kept of a value drawn in a random search, so it reads and types back exactly
TOP_FRACTION = 0.25  # round 2 narrows the box around this best fraction of round 1's finished trials

SELECTED_BY = "val_accuracy"  # the validation accuracy of the model a trial saves
STATUSES = ("queued", "running", "done", "diverged", "failed", "interrupted")


# ---------------------------------------------------------------------------------------------
# Values of a field from text, by the field's type
# ---------------------------------------------------------------------------------------------


def _float(name: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise bad_value(name, text, "not a number") from None
    if not math.isfinite(v):
        raise bad_value(name, text, "must be a finite number")
    return v


def _int(name: str, text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise bad_value(name, text, "not a whole number")
    return int(text)


def _optional_int(name: str, text: str) -> int | None:
    return None if text.lower() == "none" else _int(name, text)


def _optional_float(name: str, text: str) -> float | None:
    return None if text.lower() == "none" else _float(name, text)


def _bool(name: str, text: str) -> bool:
    t = text.lower()
    if t in ("true", "yes", "on", "1"):
        return True
    if t in ("false", "no", "off", "0"):
        return False
    raise bad_value(name, text, "use true or false")


def _path(name: str, text: str) -> str | None:
    if text.lower() == "none":
        return None
    path = Path(text).expanduser()
    if name == "init":
        from cifarlin.work.folder import start_path

        if not path.exists():
            raise bad_value(name, text, "no such file or folder (give a model.h5 or its run folder)")
        return start_path(path)
    if not path.is_file():
        raise bad_value(name, text, "no such file (a feature map is made by cifarlin features fit)")
    return str(path.resolve())


def _show_batches(batches: tuple[int, ...]) -> str:
    if len(batches) > 1 and list(batches) == list(range(batches[0], batches[-1] + 1)):
        return f"{batches[0]}-{batches[-1]}"
    return ",".join(map(str, batches))


@dataclass(frozen=True)
class Kind:
    """How a value of one TrainConfig field type is read from text and written back."""

    parse: Callable[[str, str], Any]  # (field name, text) -> value
    show: Callable[[Any], str]  # value -> text that parses back to it
    sep: str = ","  # between the values of a list
    ranged: bool = False  # LOW..HIGH is a log-uniform range of a random search


#: Keyed by the type of the field in TrainConfig, as written there.
KINDS: dict[str, Kind] = {
    "float": Kind(_float, repr, ranged=True),
    "int": Kind(_int, str),
    "int | None": Kind(_optional_int, lambda v: "none" if v is None else str(v)),
    "float | None": Kind(_optional_float, lambda v: "none" if v is None else repr(v), ranged=True),
    "bool": Kind(_bool, lambda v: "true" if v else "false"),
    "str": Kind(lambda name, text: text, str),
    "str | None": Kind(
        lambda name, text: None if text == "none" else text, lambda v: "none" if v is None else v
    ),
    "tuple[int, ...]": Kind(lambda name, text: parse_batches(text), _show_batches, sep="/"),
}

_FIELD_TYPES = {f.name: str(f.type) for f in fields(TrainConfig)}


def kind(name: str) -> Kind:
    """The :class:`Kind` of a sweepable field."""
    return KINDS[_FIELD_TYPES[name]]


def separator(name: str) -> str:
    """What separates the values of a list of field ``name``."""
    return SWEEPABLE[name].sep or kind(name).sep


def show(name: str, value: Any) -> str:
    """``value`` of field ``name`` as the command line takes it."""
    return kind(name).show(value)


def ranged_fields() -> list[str]:
    return [f for f in SWEEPABLE if kind(f).ranged]


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    """The values a field takes in a sweep: a list, or a log-uniform range LOW..HIGH."""

    field: str
    text: str  # as given
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None

    @property
    def is_range(self) -> bool:
        return self.low is not None


def parse_axis(name: str, text: str) -> Axis:
    """``'0,0.01,0.1'`` -> a list; ``'1e-5..1'`` -> a log-uniform range (float fields only)."""
    if name not in SWEEPABLE:
        raise bad_value(name, text, f"cannot be swept; these can: {', '.join(SWEEPABLE)}")
    k = kind(name)
    text = text.strip()
    parse = _path if SWEEPABLE[name].path else k.parse
    if ".." in text and not SWEEPABLE[name].path:
        if not k.ranged:
            raise bad_value(
                name,
                text,
                f"a range LOW..HIGH is for {', '.join(ranged_fields())}; give a list of values",
            )
        lo_text, _, hi_text = text.partition("..")
        lo, hi = k.parse(name, lo_text.strip()), k.parse(name, hi_text.strip())
        if lo is None or hi is None:
            raise bad_value(name, text, "a range LOW..HIGH is of numbers")
        if lo <= 0:
            raise bad_value(name, text, "a log-uniform range needs LOW > 0")
        if not lo < hi:
            raise bad_value(name, text, "an empty range: give LOW..HIGH with LOW < HIGH")
        return Axis(name, text, low=lo, high=hi)
    sep = separator(name)
    items = [t.strip() for t in text.split(sep)]
    if not all(items):
        raise bad_value(name, text, f"an empty value in the list (values are separated by '{sep}')")
    values = tuple(parse(name, t) for t in items)
    for i, v in enumerate(values):
        if v in values[:i]:
            raise bad_value(name, text, f"{items[i]} is given twice")
    return Axis(name, text, values=values)


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
                f"a random search draws from a range, e.g. lam=1e-5..1 (lists alone make a grid); "
                f"ranges are for {', '.join(ranged_fields())}",
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


def history_metrics(history: Any, keep: str = "last") -> dict[str, Any]:
    """The validation metrics of a :class:`~cifarlin.core.history.History`; ``val_*`` those of the
    epoch whose model a run with this ``keep`` saves (the last, or the best)."""
    h = history.columns
    if not len(history):
        return {}
    saved = history.best_epoch - 1 if keep == "best" else -1
    return {
        "val_accuracy": h["val_acc"][saved],
        "val_cost": h["val_cost"][saved],
        "final_val_accuracy": h["val_acc"][-1],
        "final_val_cost": h["val_cost"][-1],
        "best_val_accuracy": history.best_val_acc,
        "best_val_cost": min(h["val_cost"]),
        "best_epoch": history.best_epoch,
        "epochs_trained": len(history),
    }


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
