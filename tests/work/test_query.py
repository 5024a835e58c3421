"""cifarlin.work.query: the runs of a listing filtered, sorted, grouped and compared, on rows
made by hand (tests/cli/test_runs_command.py drives the same through `cifarlin runs`)."""

from __future__ import annotations

import pytest

from cifarlin.errors import ConfigError
from cifarlin.work import query


def row(folder: str, **values: object) -> dict:
    config = {k: values.pop(k) for k in ("seed", "augment", "train_batches") if k in values}
    base = {"folder": folder, "status": "complete", "lam": 0.0, "test_acc": 0.3, "val_acc": 0.3}
    return {**base, "best_val_acc": None, "config": {"lam": base["lam"], **config}, **values}


def folders(rows: list[dict]) -> list[str]:
    return [r["folder"] for r in rows]


def test_sort_puts_runs_without_the_value_last_either_way_and_keeps_ties_in_order():
    """Bug: a damaged run (no test accuracy) sorted first when descending, or a crash comparing
    None with a number; ties reordered."""
    rows = [row("a", test_acc=None), row("b", test_acc=0.4), row("c", test_acc=0.2), row("d", test_acc=0.4)]
    assert folders(query.sorted_rows(rows, "test_acc")) == ["c", "b", "d", "a"]
    assert folders(query.sorted_rows(rows, "-test_acc")) == ["b", "d", "c", "a"]
    assert folders(query.sorted_rows(rows, "test_acc", descending=True)) == ["b", "d", "c", "a"]
    assert folders(query.sorted_rows(rows, "-test_acc,folder")) == ["b", "d", "c", "a"]
    assert folders(query.sorted_rows(rows, "-test_acc,-folder")) == ["d", "b", "c", "a"]


def test_filters_compare_numbers_as_numbers_and_text_as_text():
    """Bug: 10 < 9 (text comparison of numbers), a run without the value matched, a list setting
    not comparable."""
    rows = [
        row("a", seed=9, augment="flip", train_batches=[1, 2]),
        row("b", seed=10, augment="none", train_batches=[1]),
        row("c"),
    ]
    assert folders(query.filtered(rows, ["seed<10"])) == ["a"]
    assert folders(query.filtered(rows, ["seed>=9.5"])) == ["b"]
    assert folders(query.filtered(rows, ["augment!=none"])) == ["a"]  # c has no value: no match
    assert folders(query.filtered(rows, ["train_batches=1,2"])) == ["a"]
    assert folders(query.filtered(rows, ["folder>a", "status=complete"])) == ["b", "c"]
    with pytest.raises(ConfigError, match=r"^filters='seed>x': seed is a number"):
        query.filtered(rows, ["seed>x"])
    with pytest.raises(ConfigError, match=r"^filters='seed~1': write COLUMN OP VALUE"):
        query.parse_filter("seed~1")


def test_groups_mean_and_sample_sd_over_the_runs_that_have_the_metric():
    """Bug: a population sd, a mean counting a missing value as 0, or an sd for a single run."""
    rows = [row("a", test_acc=0.2), row("b", test_acc=0.4), row("c", test_acc=None), row("d", lam=0.1)]
    rows[3]["config"]["lam"] = 0.1
    g0, g1 = query.grouped(rows, ["lam"])
    assert (g0["by"], g0["count"], g0["folders"]) == ({"lam": 0.0}, 3, ["a", "b", "c"])
    assert g0["test_acc"]["mean"] == pytest.approx(0.3) and g0["test_acc"]["n"] == 2
    assert g0["test_acc"]["sd"] == pytest.approx(0.1 * 2**0.5)
    assert g0["best_val_acc"] == {"mean": None, "sd": None, "n": 0}
    assert g1["test_acc"] == {"mean": 0.3, "sd": None, "n": 1}


def test_differing_names_only_the_settings_that_differ():
    """Bug: settings shared by all listed, or a damaged run's missing configuration, shown."""
    rows = [row("a", seed=1, augment="flip"), row("b", seed=2, augment="flip"), row("c", config=None)]
    assert query.differing(rows) == ["seed"]
    assert query.differing(rows[:1]) == []
