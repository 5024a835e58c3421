"""The cifarlin command run in this process for tests (Typer's CliRunner): ``train`` on a data
folder such as the ``tiny_py`` fixture's, failing the test when it does not succeed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import Result
from typer.testing import CliRunner

from cifarlin.cli import app

TINY = ["--batch-size", "10", "--no-plots"]  # the tiny data's 50 images in batches of 10, no figures


def train(data: Path, out: Path | str | None, *args: object, env: dict[str, str] | None = None) -> Result:
    """``cifarlin train --out OUT --data-dir DATA ARGS...`` (no ``--out`` when OUT is None), with
    ``env`` added to the environment; the test fails, showing the output, unless it exits 0."""
    where = [] if out is None else ["--out", str(out)]
    r = CliRunner().invoke(app, ["train", *where, "--data-dir", str(data), *map(str, args)], env=env)
    assert r.exit_code == 0, r.output
    return r


def train_json(data: Path, out: Path | str | None, *args: object) -> dict[str, Any]:
    """:func:`train` with ``--json``: the document it printed."""
    return json.loads(train(data, out, "--json", *args).stdout)
