"""The options of every job, one frozen dataclass each, validated when made: which images
(:class:`SplitSpec`), how to train (:class:`TrainConfig`, stored whole in every model, checkpoint
and history file) and what to check (:class:`GradcheckConfig`). Where to fetch the data from is
in :mod:`cifarlin.data.source`, what to draw in :mod:`cifarlin.figures.request`.

Validation messages name the field and its value (``eta=0.0: the learning rate must be > 0``).
This module imports nothing heavy: the command line reads its defaults and choices from here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from cifarlin.errors import ConfigError, bad_value

K = 10  # classes
D = 3072  # inputs: 32 x 32 pixels x 3 channels
N_TRAIN_BATCHES = 5  # data_batch_1 ... data_batch_5
LAYOUTS = ("python", "binary")  # the two official versions of CIFAR-10
SPLITS = ("test", "val", "train")
FIGURE_FORMATS = ("png", "pdf", "svg")

#: The original work's four settings (all 40 epochs, batch 100): lambda and eta.
SETTINGS: dict[int, dict[str, float]] = {
    1: {"lam": 0.0, "eta": 0.1},
    2: {"lam": 0.0, "eta": 0.001},
    3: {"lam": 0.1, "eta": 0.001},
    4: {"lam": 1.0, "eta": 0.001},
}
#: Test accuracy the original work reports for each setting.
REFERENCE_TEST_ACCURACY: dict[int, float] = {1: 0.3069, 2: 0.3898, 3: 0.3924, 4: 0.3763}
#: Named recipes beyond the original work. bonus: the best one-layer recipe found by a search on
#: the validation set alone (all training data but 1,000 validation images, flips and shifts of one
#: pixel, a cosine schedule to 0 over 20 epochs; README, "The bonus recipe").
RECIPES: dict[str, dict[str, Any]] = {
    "bonus": {
        "lam": 0.001,
        "eta": 0.01,
        "epochs": 20,
        "batch_size": 100,
        "train_batches": (1, 2, 3, 4, 5),
        "val_size": 1000,
        "shuffle": True,
        "augment": "flip,translate:1",
        "schedule": "cosine",
        "eta_min": 0.0,
    },
}
SETTING_NAMES: tuple[int | str, ...] = (*SETTINGS, *RECIPES)


def parse_setting(text: str | int) -> int | str:
    """'2' -> 2, 'bonus' -> 'bonus': a reference setting's number or a recipe's name."""
    value = int(text) if isinstance(text, int) or text.strip().isdigit() else text.strip()
    if value not in SETTING_NAMES:
        raise bad_value("setting", text, f"use one of {', '.join(map(str, SETTING_NAMES))}")
    return value


DTYPES = ("float32", "float64")
SCHEDULES = ("constant", "step", "cosine", "cyclic")
KEEP = ("last", "best")
SOLVERS = ("gd", "ridge")  # mini-batch gradient descent, or the exact squared-loss optimum (ridge.py)
LOSS_NAMES = ("ce", "svm", "bce", "mse", "l2svm")  # see cifarlin/core/losses.py
LOSS_HELP = (
    "ce: softmax cross-entropy, svm: multi-class hinge, bce: binary cross-entropy per class, "
    "mse: squared error to the one-hot labels, l2svm: one-vs-rest squared hinge (the L2-SVM)"
)


def parse_batches(text: str) -> tuple[int, ...]:
    """'1-5' -> (1, 2, 3, 4, 5); '1,3' -> (1, 3); '2' -> (2,)."""
    out: list[int] = []
    for part in text.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise bad_value("train_batches", text, "use a list like '1-5' or '1,3,5'")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if not 1 <= lo <= hi <= N_TRAIN_BATCHES:
            raise bad_value("train_batches", text, f"batches are numbered 1 to {N_TRAIN_BATCHES}")
        out.extend(i for i in range(lo, hi + 1) if i not in out)
    return tuple(out)


@dataclass(frozen=True)
class SplitSpec:
    """Which images train, validate and test.

    The default is the original work's: train on data_batch_1, validate on data_batch_2, test on
    test_batch. With ``val_size``, the last ``val_size`` images of the training batches are held
    out for validation instead.
    """

    train_batches: tuple[int, ...] = (1,)
    val_size: int | None = None

    def __post_init__(self) -> None:
        batches = self.train_batches
        if not batches or any(type(i) is not int or not 1 <= i <= N_TRAIN_BATCHES for i in batches):
            raise bad_value("train_batches", batches, f"use batches 1 to {N_TRAIN_BATCHES}")
        if len(set(batches)) != len(batches):
            raise bad_value("train_batches", batches, "a batch is named twice")
        if self.val_size is None and 2 in batches:
            raise bad_value(
                "train_batches",
                batches,
                "includes batch 2, the default validation batch: "
                "give val_size=N to hold out the last N training images instead",
            )
        if self.val_size is not None and not 1 <= self.val_size <= 1_000_000:
            raise bad_value("val_size", self.val_size, "must be between 1 and 1000000")

    def describe(self) -> str:
        train = ",".join(map(str, self.train_batches))
        if self.val_size is None:
            return f"train data_batch_{train}, validate data_batch_2, test test_batch"
        return f"train data_batch_{train} minus the last {self.val_size} (validation), test test_batch"


def cache_root(environ: Mapping[str, str]) -> Path:
    """$XDG_CACHE_HOME/cifarlin, else ~/.cache/cifarlin: the default data folder's parent."""
    return Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "cifarlin"


def feature_cache_dir(environ: Mapping[str, str]) -> Path:
    """Where extracted features are cached (cifarlin.features.cache.FeatureCache)."""
    return cache_root(environ) / "features"


def solver_defaults(overrides: dict[str, Any]) -> dict[str, Any]:
    """The fields a solver implies when they are not given: for the ridge solver the squared loss,
    one "epoch", and lambda chosen on the validation set unless it is given."""
    if overrides.get("solver") != "ridge":
        return overrides
    return {"loss": "mse", "epochs": 1, "choose_lam": "lam" not in overrides, **overrides}


def defaults(cls: type) -> Any:
    """The default values of a config dataclass's fields, without making one (which validates)."""
    from types import SimpleNamespace

    return SimpleNamespace(**{f.name: f.default for f in fields(cls)})


def _check_types(obj: Any) -> None:
    """Each field of a config dataclass holds a value of its declared type (an int field no float
    or bool, a float field a real number, a text field a str), named in the error otherwise."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        kinds = str(f.type).split(" | ")
        if value is None and "None" in kinds:
            continue
        ok = (
            ("int" in kinds and type(value) is int)
            or ("float" in kinds and type(value) in (int, float))
            or ("bool" in kinds and type(value) is bool)
            or ("str" in kinds and type(value) is str)
            or ("tuple[int, ...]" in kinds and isinstance(value, tuple))
        )
        if not ok:
            raise bad_value(f.name, value, f"must be of type {f.type}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run, bit for bit (with the data files)."""

    lam: float = 0.0
    eta: float = 0.001
    epochs: int = 40
    batch_size: int = 100
    seed: int = 0
    shuffle: bool = False
    init_std: float = 0.01
    train_batches: tuple[int, ...] = (1,)
    val_size: int | None = None
    dtype: str = "float32"
    setting: int | str | None = None
    loss: str = "ce"
    schedule: str = "constant"  # see cifarlin/schedules.py
    decay: float = 0.1  # step: eta *= decay every decay_every epochs
    decay_every: int = 10
    eta_min: float = 0.0  # cosine: the last epoch's eta; cyclic: the lowest
    eta_max: float | None = None  # cyclic: the highest (default: eta)
    step_size: int | None = None  # cyclic: updates per half cycle (default: two epochs)
    augment: str = "none"  # pixel-space views of the training images: "flip", "translate:N", both
    keep: str = "last"  # model.h5 holds the last epoch, or the best by validation accuracy
    patience: int | None = None  # stop after this many epochs without a better validation accuracy
    solver: str = "gd"  # ridge: the closed-form optimum of the mse loss, one "epoch"
    choose_lam: bool = False  # ridge: lam was chosen on the validation set (ridge.lambda_grid)
    features: str | None = None  # a feature-map file (cifarlin features fit): train on its features
    init: str | None = None  # a trained model (file or run folder): start from its weights (train.warm_state)
    init_checksum: str | None = None  # SHA-256 of that model's W and b when the run started from it

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return bad_value(name, getattr(self, name), why)

        _check_types(self)
        for name in ("lam", "eta", "init_std", "decay", "eta_min", "eta_max"):
            if getattr(self, name) is not None and not math.isfinite(getattr(self, name)):
                raise bad(name, "must be a finite number")
        if self.eta <= 0:
            raise bad("eta", "the learning rate must be > 0")
        if self.lam < 0:
            raise bad("lam", "the penalty weight must be >= 0")
        if self.init_std < 0:
            raise bad("init_std", "must be >= 0")
        if not 1 <= self.epochs <= 1_000_000:
            raise bad("epochs", "must be between 1 and 1000000")
        if not 1 <= self.batch_size <= 1_000_000:
            raise bad("batch_size", "must be between 1 and 1000000")
        if not 0 <= self.seed < 2**63:
            raise bad("seed", "must be between 0 and 2**63 - 1")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"use one of {', '.join(DTYPES)}")
        if self.loss not in LOSS_NAMES:
            raise bad("loss", f"use one of {', '.join(LOSS_NAMES)}")
        if self.setting is not None and self.setting not in SETTING_NAMES:
            raise bad("setting", f"use one of {', '.join(map(str, SETTING_NAMES))}")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"use one of {', '.join(SCHEDULES)}")
        if not 0 < self.decay <= 1:
            raise bad("decay", "the factor must be > 0 and <= 1")
        if not 1 <= self.decay_every <= 1_000_000:
            raise bad("decay_every", "must be between 1 and 1000000 epochs")
        if self.eta_min < 0:
            raise bad("eta_min", "must be >= 0")
        peak = self.eta_max if self.eta_max is not None else self.eta
        if self.schedule in ("cosine", "cyclic") and not self.eta_min < peak:
            raise bad(
                "eta_min", f"must be below the highest rate ({peak:g}) for the {self.schedule} schedule"
            )
        if self.eta_max is not None and self.eta_max <= 0:
            raise bad("eta_max", "must be > 0")
        if self.step_size is not None and not 1 <= self.step_size <= 100_000_000:
            raise bad("step_size", "must be between 1 and 100000000 updates")
        from cifarlin.core.augment import parse_augment  # here: it imports numpy, which --help need not

        object.__setattr__(self, "augment", str(parse_augment(self.augment)))  # canonical text
        if self.keep not in KEEP:
            raise bad("keep", f"use one of {', '.join(KEEP)}")
        if self.patience is not None and not 1 <= self.patience <= 1_000_000:
            raise bad("patience", "must be between 1 and 1000000 epochs")
        SplitSpec(tuple(self.train_batches), self.val_size)  # validates both
        if self.solver not in SOLVERS:
            raise bad("solver", f"use one of {', '.join(SOLVERS)}")
        if self.solver == "ridge" and self.loss != "mse":
            raise bad("loss", "the ridge solver minimises the squared loss: use mse (its default)")
        if self.solver == "ridge" and self.epochs != 1:
            raise bad("epochs", "the ridge solver solves in one step: leave --epochs out")
        if self.features is not None and self.augment not in ("none", "flip"):
            raise bad("augment", "with --features only flip (mirrored copies of the training images)")
        if self.features is not None and not self.features.strip():
            raise bad("features", "an empty path; give the feature-map file")
        if self.init is not None and not self.init.strip():
            raise bad("init", "an empty path; give a model file or its run folder")
        if self.init_checksum is not None and self.init is None:
            raise bad("init_checksum", "belongs to a start model (init): give init too")
        if self.init is not None and self.solver == "ridge":
            raise bad("init", "the ridge solver needs no start (it solves exactly): leave --init out")
        if self.choose_lam and self.solver != "ridge":
            raise bad("choose_lam", "lambda is chosen on the validation set by the ridge solver only")

    @property
    def split(self) -> SplitSpec:
        return SplitSpec(tuple(self.train_batches), self.val_size)

    def replace(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train_batches"] = list(self.train_batches)
        return d

    @classmethod
    def for_setting(cls, setting: int | str, **overrides: Any) -> TrainConfig:
        """A reference setting (40 epochs, batch 100, its lambda and eta) or a named recipe, with
        overrides."""
        setting = parse_setting(setting)
        base = SETTINGS[setting] if isinstance(setting, int) else RECIPES[setting]
        return cls(**{**base, "setting": setting, **overrides})

    @property
    def is_reference(self) -> bool:
        """Whether this is exactly one of the original work's settings (so its accuracy compares)."""
        if self.setting not in SETTINGS:
            return False
        ref = TrainConfig.for_setting(self.setting)
        return self.replace(seed=ref.seed, dtype=ref.dtype) == ref

    def check_training_set(self, n_train: int) -> None:
        """A batch cannot be larger than the training set (the ridge solver has no batches)."""
        if self.solver == "gd" and self.batch_size > n_train:
            raise bad_value("batch_size", self.batch_size, f"larger than the training set ({n_train} images)")

    def describe(self) -> str:
        batches = [f"batches={','.join(map(str, self.train_batches))}"] if self.train_batches != (1,) else []
        if self.solver == "ridge":
            lam = "lambda chosen on validation" if self.choose_lam else f"lambda={self.lam:g}"
            views = [f"augment={self.augment}"] if self.augment != "none" else []
            return ", ".join(["ridge solver", lam, *views, *batches])
        loss = "" if self.loss == "ce" else f"loss={self.loss}, "
        extras = [
            *(["shuffled"] if self.shuffle else []),
            *([f"augment={self.augment}"] if self.augment != "none" else []),
            *([f"schedule={self.schedule}"] if self.schedule != "constant" else []),
            *([f"keep={self.keep}"] if self.keep != "last" else []),
            *([f"patience={self.patience}"] if self.patience is not None else []),
            *batches,
            *([f"from {self.init}"] if self.init is not None else []),
        ]
        return (
            f"{loss}lambda={self.lam:g}, eta={self.eta:g}, batch={self.batch_size}, "
            f"epochs={self.epochs}, seed={self.seed}" + "".join(f", {e}" for e in extras)
        )


DEFAULT_H = {"centred": 1e-6, "complex": 1e-20}  # the step of each method
MAX_GRADCHECK_N = 10_000


@dataclass(frozen=True)
class GradcheckConfig:
    """What to check and how strictly.

    An entry passes when |ga - gn| <= atol + tol * (|ga| + |gn|): the absolute floor keeps
    near-zero gradients, whose relative error means nothing under centred differences, honest.
    """

    n: int = 20
    dims: int = D
    lam: float = 0.0
    h: float | None = None  # None: 1e-6 for centred differences, 1e-20 for the complex step
    method: str = "centred"
    tol: float = 1e-6
    atol: float = 1e-8
    seed: int = 0
    init_std: float = 0.01
    loss: str = "ce"

    def __post_init__(self) -> None:
        if self.loss not in LOSS_NAMES:
            raise bad_value("loss", self.loss, f"use one of {', '.join(LOSS_NAMES)}")
        if not 1 <= self.n <= MAX_GRADCHECK_N:
            raise bad_value(
                "n", self.n, f"must be between 1 and {MAX_GRADCHECK_N} (the images of one training batch)"
            )
        if not 1 <= self.dims <= D:
            raise bad_value("dims", self.dims, f"must be between 1 and {D}")
        if self.method not in DEFAULT_H:
            raise bad_value("method", self.method, f"use one of {', '.join(DEFAULT_H)}")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise bad_value("lam", self.lam, "must be a finite number >= 0")
        if self.h is not None and not (math.isfinite(self.h) and 0 < self.h <= 1):
            raise bad_value("h", self.h, "the step must be > 0 and <= 1")
        for name in ("tol", "atol"):
            if not (math.isfinite(v := getattr(self, name)) and v >= 0):
                raise bad_value(name, v, "must be a finite number >= 0")
        if not 0 <= self.seed < 2**63:
            raise bad_value("seed", self.seed, "must be between 0 and 2**63 - 1")

    @property
    def step(self) -> float:
        return self.h if self.h is not None else DEFAULT_H[self.method]
