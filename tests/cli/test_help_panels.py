"""train's help: its options under headings, not one panel of 148 lines."""

from __future__ import annotations

import re

from cifarlin.cli import app

PANELS = {
    "Reference settings": ["--setting"],
    "Optimisation": ["--lam", "--eta", "--epochs", "--batch-size", "--seed", "--shuffle", "--init", "--keep"],
    "Loss and solver": ["--loss", "--solver"],
    "Data": ["--features", "--train-batches", "--val-size", "--data-dir", "--no-download"],
    "Schedule": ["--schedule", "--decay", "--decay-every", "--eta-min", "--eta-max", "--step-size"],
    "Augmentation": ["--augment"],
    "Output": ["--out", "--resume", "--overwrite", "--no-plots", "--workers", "--json", "--quiet", "--help"],
}


def _panels(text: str) -> dict[str, list[str]]:
    """{heading: the options listed under it} of a rich help text."""
    found: dict[str, list[str]] = {}
    heading = None
    for line in text.splitlines():
        m = re.match(r"╭─ (.+?) ─", line)
        if m:
            heading = m.group(1)
            found[heading] = []
        elif heading and (m := re.match(r"│ (--[\w-]+)", line)):
            found[heading].append(m.group(1))
    return found


def test_train_help_groups_its_options_under_headings(runner):
    """Bug: `cifarlin train -h` was 148 lines of one "Options" panel at 80 columns."""
    for columns in ("80", "120"):
        r = runner.invoke(app, ["train", "-h"], env={"COLUMNS": columns})
        assert r.exit_code == 0
        found = _panels(r.stdout)
        assert list(found) == list(PANELS)  # no "Options" panel left, headings in this order
        for heading, options in PANELS.items():
            assert set(options) <= set(found[heading]), heading
        assert found["Output"][-1] == "--help"
        assert max(map(len, r.stdout.splitlines())) <= int(columns)


def test_other_commands_keep_one_options_panel(runner):
    r = runner.invoke(app, ["evaluate", "-h"], env={"COLUMNS": "80"})
    assert list(_panels(r.stdout)) == ["Arguments", "Options"]
