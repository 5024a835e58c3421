"""Run configuration: one dataclass, passed whole, stored whole in every checkpoint."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from cifarlin.data import SplitSpec
from cifarlin.errors import ConfigError

#: The original work's four settings (all 40 epochs, batch 100): lambda and eta.
SETTINGS: dict[int, dict[str, float]] = {
    1: {"lam": 0.0, "eta": 0.1},
    2: {"lam": 0.0, "eta": 0.001},
    3: {"lam": 0.1, "eta": 0.001},
    4: {"lam": 1.0, "eta": 0.001},
}
#: Test accuracy the original work reports for each setting.
REFERENCE_TEST_ACCURACY: dict[int, float] = {1: 0.3069, 2: 0.3898, 3: 0.3924, 4: 0.3763}

DTYPES = ("float32", "float64")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


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
    setting: int | None = None

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{_flag(name)} {getattr(self, name)!r}: {why}")

        for name in ("lam", "eta", "init_std"):
            if not math.isfinite(getattr(self, name)):
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
        if self.val_size is not None and not 1 <= self.val_size <= 1_000_000:
            raise bad("val_size", "must be between 1 and 1000000")
        if not 0 <= self.seed < 2**63:
            raise bad("seed", "must be between 0 and 2**63 - 1")
        if self.dtype not in DTYPES:
            raise bad("dtype", f"use one of {', '.join(DTYPES)}")
        if self.setting is not None and self.setting not in SETTINGS:
            raise bad("setting", f"use one of {', '.join(map(str, SETTINGS))} or 'all'")
        SplitSpec(tuple(self.train_batches), self.val_size)  # validates both

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
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored, missing ones take defaults."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if "train_batches" in kw:
            kw["train_batches"] = tuple(int(i) for i in kw["train_batches"])
        return cls(**kw)

    @classmethod
    def for_setting(cls, setting: int, **overrides: Any) -> TrainConfig:
        """The reference setting (40 epochs, batch 100, its lambda and eta) with overrides."""
        if setting not in SETTINGS:
            raise ConfigError(f"--setting {setting!r}: use one of 1, 2, 3, 4 or 'all'")
        return cls(**{**SETTINGS[setting], "setting": setting, **overrides})

    @property
    def is_reference(self) -> bool:
        """Whether this is exactly one of the original work's settings (so its accuracy compares)."""
        if self.setting is None:
            return False
        ref = TrainConfig.for_setting(self.setting)
        return self.replace(seed=ref.seed, dtype=ref.dtype) == ref

    def describe(self) -> str:
        return (
            f"lambda={self.lam:g}, eta={self.eta:g}, batch={self.batch_size}, "
            f"epochs={self.epochs}, seed={self.seed}" + (", shuffled" if self.shuffle else "")
        )
