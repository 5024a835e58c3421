"""Usage errors that say what was meant, and a closed pipe that is not a failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cifarlin.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_missing_choice_lists_the_choices_without_tabs(runner):
    """Bug: `cifarlin features` printed `Choose from: \\tfit, \\textract, \\tshow`."""
    r = runner.invoke(app, ["features"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "Choose from: fit, extract, show, cache (see 'cifarlin features --help')" in r.stderr
    assert "\\t" not in r.stderr and "\t" not in r.stderr


@pytest.mark.parametrize(
    ("given", "meant"), [("--lr", "--eta"), ("--learning-rate", "--eta"), ("--lambda", "--lam")]
)
def test_another_tools_flag_names_ours(runner, given, meant):
    """Bug: `train --lr 0.1` suggested --lam, --loss, --solver."""
    r = runner.invoke(app, ["train", given, "0.1"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert f"No such option: {given}; did you mean {meant}? (see 'cifarlin train --help')" in r.stderr


def test_an_unknown_flag_without_an_alias_keeps_clicks_suggestions(runner):
    r = runner.invoke(app, ["train", "--lamda", "3"])
    assert r.exit_code == 2 and "Possible options:" in r.stderr and "--lam" in r.stderr


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["visualize", "x", "--what", "prob"], "; did you mean 'probs'?"),
        (["visualize", "x", "--what", "curves,prob"], "; did you mean 'curves,probs'?"),
        (["train", "--setting", "al"], "'bonus', 'all'; did you mean 'all'? (see"),
        (["train", "--loss", "sv"], "; did you mean 'svm'? (see"),
    ],
)
def test_a_value_close_to_a_choice_is_suggested(runner, args, hint):
    """Bug: `visualize --what prob` listed the choices without saying 'probs' was meant."""
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and hint in r.stderr, r.output


def test_no_suggestion_when_nothing_is_close(runner):
    r = runner.invoke(app, ["train", "--setting", "7"])
    assert r.exit_code == 2 and "did you mean" not in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["gradcheck", "--random", "--dims", "10"],
        ["train", "--help"],
        ["--version"],
        ["features", "cache", "--json"],
    ],
)
def test_a_closed_pipe_is_not_a_failure(tmp_path, args):
    """Bug: `cifarlin gradcheck | head` exited 1, the code of a failed gradient check."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path)}
    p = subprocess.Popen(
        [sys.executable, "-m", "cifarlin", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    p.stdout.close()  # the reader went away before the first line
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0 and "Error" not in err and "Traceback" not in err, err
