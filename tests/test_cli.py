"""The command line as a whole: help, version, output streams and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cifarlin import __version__
from cifarlin.cli import app
from typer.main import get_command

COMMANDS = sorted(get_command(app).commands)


def test_the_commands_exist():
    assert set(COMMANDS) == {"download", "gradcheck", "train", "evaluate", "visualize", "completion"}


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
    from cifarlin import gradcheck

    def boom(*a, **k):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(gradcheck, "check", boom)
    r = runner.invoke(app, ["gradcheck", "--random"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.count("\n") == 1 and "kaboom" in r.stderr and "CIFARLIN_DEBUG=1" in r.stderr
    r = runner.invoke(app, ["gradcheck", "--random"], env={"CIFARLIN_DEBUG": "1"})
    assert isinstance(r.exception, RuntimeError)


def run_module(*args, **env):
    return subprocess.run([sys.executable, "-m", "cifarlin", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_python_m_and_no_escape_codes_in_pipes():
    r = run_module("gradcheck", "--random", "--dims", "20", "--json")
    assert r.returncode == 0 and r.stdout.count("\n") == 1 and r.stdout.startswith("{")
    assert "\x1b" not in r.stderr and "PASS" in r.stderr


def test_no_color_on_a_terminal_gives_plain_text():
    """Under a pseudo-terminal, NO_COLOR still gives text without escape codes."""
    pty = pytest.importorskip("pty")
    import select

    def run_pty(env):
        pid, fd = pty.fork()
        if pid == 0:  # child
            os.environ.update(env)
            os.execv(sys.executable, [sys.executable, "-m", "cifarlin", "gradcheck", "--random", "--dims", "20"])
        out = b""
        while True:
            r, _, _ = select.select([fd], [], [], 30)
            if not r:
                break
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        os.waitpid(pid, 0)
        return out.decode()

    assert "\x1b[" in run_pty({"NO_COLOR": "", "TERM": "xterm"})  # colours on a terminal...
    plain = run_pty({"NO_COLOR": "1", "TERM": "xterm"})  # ...and none with NO_COLOR
    assert "PASS" in plain and "\x1b" not in plain


def test_help_is_fast_enough_to_skip_heavy_imports():
    code = "import sys, cifarlin.cli; print(sorted(m for m in ('h5py', 'matplotlib') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "[]"
