"""The command line as a whole: help, version, output streams and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.main import get_command

from cifarlin import __version__
from cifarlin.cli import app
from cli_helpers import TINY, train

COMMANDS = sorted(name for name, c in get_command(app).commands.items() if not c.hidden)


def test_the_commands_exist():
    assert set(COMMANDS) == {
        "download",
        "gradcheck",
        "train",
        "sweep",
        "features",
        "evaluate",
        "visualize",
        "predict",
        "export",
        "runs",
        "report",
        "completion",
    }
    assert get_command(app).commands["visualise"].hidden  # the British spelling works too


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_an_example(runner, name):
    r = runner.invoke(app, [name, "--help"])
    assert r.exit_code == 0
    assert "Example:" in r.stdout and f"cifarlin {name}" in r.stdout
    assert r.stderr == ""


def test_version_and_help(runner):
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout == f"cifarlin {__version__}\n"
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and all(c in r.stdout for c in COMMANDS)


def test_no_arguments_shows_help_and_exit_2(runner):
    r = runner.invoke(app, [])
    assert r.exit_code == 2 and "Usage" in r.stderr and r.stdout == ""


def test_unknown_command_and_option_are_usage_errors(runner):
    r = runner.invoke(app, ["trian"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "Did you mean 'train'" in r.stderr
    r = runner.invoke(app, ["train", "--bogus"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "--bogus" in r.stderr


def test_unexpected_errors_are_short_unless_debugging(runner, monkeypatch):
    from cifarlin.work import gradcheck

    def boom(*a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(gradcheck, "check", boom)
    r = runner.invoke(app, ["gradcheck", "--random"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.count("\n") == 1 and "kaboom" in r.stderr and "CIFARLIN_DEBUG=1" in r.stderr
    r = runner.invoke(app, ["gradcheck", "--random"], env={"CIFARLIN_DEBUG": "1"})
    assert isinstance(r.exception, RuntimeError)


def run_module(*args, **env):
    return subprocess.run(
        [sys.executable, "-m", "cifarlin", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


@pytest.mark.slow
def test_python_m_and_no_escape_codes_in_pipes():
    r = run_module("gradcheck", "--random", "--dims", "20", "--json")
    assert r.returncode == 0 and r.stdout.count("\n") == 1 and r.stdout.startswith("{")
    assert "\x1b" not in r.stderr and "PASS" in r.stderr


@pytest.mark.slow
def test_no_color_on_a_terminal_gives_plain_text():
    """Under a pseudo-terminal, NO_COLOR still gives text without escape codes."""
    pytest.importorskip("pty")
    from processes import run_in_pty

    def run_pty(env):
        return run_in_pty([sys.executable, "-m", "cifarlin", "gradcheck", "--random", "--dims", "20"], env)

    assert "\x1b[" in run_pty({"NO_COLOR": "", "TERM": "xterm"})  # colours on a terminal...
    plain = run_pty({"NO_COLOR": "1", "TERM": "xterm"})  # ...and none with NO_COLOR
    assert "PASS" in plain and "\x1b" not in plain


@pytest.mark.slow
def test_help_is_fast_enough_to_skip_heavy_imports():
    code = "import sys, cifarlin.cli; print(sorted(m for m in ('h5py', 'matplotlib') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]"


def test_ctrl_c_outside_the_training_loop_says_so(runner, tiny_py, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("cifarlin.work.prepare.prepare", interrupted)
    r = runner.invoke(app, ["train", "--data-dir", str(tiny_py), "--out", "x", "--quiet"])
    assert r.exit_code == 130
    assert r.stderr.strip().splitlines()[-1].startswith("Error: interrupted; nothing was left half-written")


def test_data_dir_that_is_a_file_is_a_usage_error(runner, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for cmd in (["gradcheck"], ["download"]):
        r = runner.invoke(app, [*cmd, "--data-dir", str(f)])
        assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "is a file, not a folder" in r.stderr


def test_environment_values_are_named_in_errors(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("CIFARLIN_MD5", "xyz")
    r = runner.invoke(app, ["download", "--data-dir", str(tmp_path)])
    assert r.exit_code == 2 and "$CIFARLIN_MD5 'xyz'" in r.stderr
    monkeypatch.delenv("CIFARLIN_MD5")
    monkeypatch.setenv("CIFARLIN_URL", "notaurl")
    r = runner.invoke(app, ["download", "--data-dir", str(tmp_path)])
    assert r.exit_code == 2 and "$CIFARLIN_URL 'notaurl'" in r.stderr


def test_narrow_terminals_do_not_cut_numbers(runner, tiny_py, tmp_path):
    train(tiny_py, tmp_path / "r", *TINY, "--epochs", "1", "--quiet")
    r = runner.invoke(
        app, ["evaluate", str(tmp_path / "r"), "--data-dir", str(tiny_py)], env={"COLUMNS": "40"}
    )
    assert r.exit_code == 0 and "…" not in r.stderr


def test_evaluate_falls_back_to_the_checkpoint(runner, tiny_py, tmp_path):
    out = tmp_path / "r"
    train(tiny_py, out, *TINY, "--epochs", "1", "--quiet")
    (out / "model.h5").unlink()
    r = runner.invoke(app, ["evaluate", str(out), "--data-dir", str(tiny_py), "--json"])
    assert (
        r.exit_code == 0
        and "checkpoint.h5" in r.stderr
        and json.loads(r.stdout)["model"].endswith("checkpoint.h5")
    )


def test_cli_divergence_exit_1(runner, tiny_py, tmp_path):
    r = runner.invoke(
        app,
        [
            "train",
            "--data-dir",
            str(tiny_py),
            "--out",
            str(tmp_path / "x"),
            *TINY,
            "--eta",
            "1e38",
            "--epochs",
            "2",
        ],
    )
    assert r.exit_code == 1
    last = r.stderr.strip().splitlines()[-1]
    assert "diverged in epoch 1" in last and "--eta" in last
    assert "Traceback" not in r.output


@pytest.mark.parametrize(
    "args, value",
    [
        (["--eta", "0"], "--eta 0"),
        (["--batch-size", "0"], "--batch-size 0"),
        (["--lam", "-1"], "--lam -1"),
        (["--setting", "5"], "'5'"),
        (["--batch-size", "51"], "--batch-size 51"),
        (["--epochs", "0"], "--epochs 0"),
        (["--train-batches", "7"], "--train-batches '7'"),
        (["--train-batches", "1-3"], "--val-size"),
    ],
)
def test_cli_bad_values_exit_2(runner, tiny_py, tmp_path, args, value):
    r = runner.invoke(
        app, ["train", "--data-dir", str(tiny_py), "--out", str(tmp_path / "o"), "--no-plots", *args]
    )
    assert r.exit_code == 2, r.output
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("Error:") and value in line
    assert not (tmp_path / "o").exists()  # nothing written
