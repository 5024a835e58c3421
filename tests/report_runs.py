"""An outputs folder such as a student hands to ``cifarlin report``, trained in this process on a
data folder of noisy images on which validation and test disagree (the ``disagreeing_py``
fixture's): the four reference settings (setting 2 with a second seed), two other losses, a run of
a recipe's options, a 2-trial sweep and two gradient checks."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cifarlin.cli import app

#: Each run: its folder under outputs/ and its train options (40 epochs of batch 100: 80 steps here).
RUNS = {
    "setting-1": ["--setting", "1"],
    "setting-2": ["--setting", "2"],
    "setting-2-seed-1": ["--setting", "2", "--seed", "1"],
    "setting-3": ["--setting", "3"],
    "setting-4": ["--setting", "4"],
    "svm": ["--setting", "3", "--loss", "svm"],
    "bce": ["--setting", "3", "--loss", "bce"],
    "recipe": ["--setting", "bonus", "--epochs", "3", "--train-batches", "1-2", "--val-size", "100"],
}


def invoke(args: list[str], env: dict[str, str | None]) -> str:
    r = CliRunner().invoke(app, args, env=env)
    assert r.exit_code == 0, r.output
    return r.stdout


def build_outputs(root: Path, data: Path, cache: Path) -> Path:
    """``root/outputs`` holding the runs of :data:`RUNS` (figures not drawn: the report draws
    them), a sweep over two lambdas and gradient checks of ce and svm."""
    out = root / "outputs"
    env = {"CIFARLIN_DATA_DIR": None, "XDG_CACHE_HOME": str(cache), "COLUMNS": "120"}
    for name, args in RUNS.items():
        invoke(["train", *args, "--out", str(out / name), "--data-dir", str(data), "--no-plots", "-q"], env)
    sweep = ["sweep", "--lam", "0,0.1", "--epochs", "2", "--workers", "1", "--out", str(out / "sweep")]
    invoke([*sweep, "--data-dir", str(data), "-q"], env)
    for loss in ("ce", "svm"):
        invoke(
            ["gradcheck", "--random", "--loss", loss, "--out", str(out / f"gradcheck-{loss}.json"), "-q"], env
        )
    return out
