"""The configuration of a run: the reference settings and the bonus recipe, the validation of
values, and which runs compare with the original work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cifarlin.cli import app
from cifarlin.core import config
from cifarlin.core.config import SETTINGS, TrainConfig
from cifarlin.errors import ConfigError
from cifarlin.store import checkpoint
from cli_helpers import TINY


def test_settings_are_the_reference_ones():
    assert {s: (TrainConfig.for_setting(s).lam, TrainConfig.for_setting(s).eta) for s in SETTINGS} == {
        1: (0.0, 0.1),
        2: (0.0, 0.001),
        3: (0.1, 0.001),
        4: (1.0, 0.001),
    }
    for s in SETTINGS:
        c = TrainConfig.for_setting(s)
        assert (c.epochs, c.batch_size, c.shuffle, c.init_std, c.train_batches) == (
            40,
            100,
            False,
            0.01,
            (1,),
        )


@pytest.mark.parametrize(
    "kw, value",
    [
        (dict(eta=0), "eta=0: "),
        (dict(eta=-1.0), "eta=-1.0: "),
        (dict(batch_size=0), "batch_size=0: "),
        (dict(lam=-0.1), "lam=-0.1: "),
        (dict(epochs=0), "epochs=0: "),
        (dict(eta=float("nan")), "eta=nan: "),
    ],
)
def test_config_validation_names_the_value(kw, value):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**kw)
    assert str(e.value).startswith(value)


def test_setting_bonus_is_the_named_recipe(runner, tiny_py, tmp_path):
    """--setting bonus trains the recipe of config.RECIPES (overrides on top) into
    outputs/setting-bonus with its cosine schedule, and compares with no original figure."""
    r = runner.invoke(
        app,
        [
            "train",
            "--setting",
            "bonus",
            "--epochs",
            "3",
            "--val-size",
            "50",
            "--json",
            "--data-dir",
            str(tiny_py),
            *TINY,
        ],
    )
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    want = {**config.RECIPES["bonus"], "epochs": 3, "val_size": 50, "batch_size": 10}
    got = {k: s["config"][k] for k in want}
    assert got == {**want, "train_batches": list(want["train_batches"])}
    assert s["setting"] == "bonus" and s["reference_test_accuracy"] is None
    assert not s["comparable_to_reference"]
    assert Path(s["files"]["model"]) == Path("outputs/setting-bonus/model.h5")
    h = checkpoint.load_history(Path("outputs/setting-bonus/history.h5"))
    assert h.config.setting == "bonus" and h.config == TrainConfig.for_setting("bonus", **want)
    eta = h.history.columns["eta"]
    assert eta[0] == want["eta"] and eta[-1] < eta[0]


def test_parse_setting_names_the_choices():
    assert config.parse_setting("2") == 2 and config.parse_setting(" bonus") == "bonus"
    for bad in ("5", "0", "Bonus", "", "all"):
        with pytest.raises(ConfigError, match="use one of 1, 2, 3, 4, bonus"):
            config.parse_setting(bad)


def test_reference_comparisons_only_for_unchanged_settings():
    assert TrainConfig.for_setting(2).is_reference and TrainConfig.for_setting(2, seed=5).is_reference
    assert not TrainConfig.for_setting(2, epochs=5).is_reference
    assert not TrainConfig.for_setting(3, shuffle=True).is_reference and not TrainConfig().is_reference
