"""Static completion scripts: fresh, and completing for real in the shells that are installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cifarlin.cli import app, completion, group

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("shell, name", list(completion.SHELLS.items()))
def test_committed_scripts_are_fresh(shell, name):
    committed = (REPO / "completions" / name).read_text()
    assert committed == completion.script(shell, group()), (
        f"completions/{name} is stale: run `cifarlin completion {shell} > completions/{name}`"
    )


def test_completion_command_prints_the_script(runner):
    r = runner.invoke(app, ["completion", "fish"])
    assert r.exit_code == 0 and r.stdout == completion.script("fish", group())
    assert runner.invoke(app, ["completion", "tcsh"]).exit_code == 2


def test_scripts_know_every_command_and_option():
    _, cmds = completion.describe(group())
    bash = completion.script("bash", group())
    for c in cmds:
        for o in c.options:
            for n in o.names:
                assert n in bash, (c.name, n)


BASH_DRIVER = r"""
source "$1"
shift
COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=()
_cifarlin
printf '%s\n' "${COMPREPLY[@]}"
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize(
    "words, expected",
    [
        (
            ["cifarlin", ""],
            {
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
            },
        ),
        (["cifarlin", "tr"], {"train"}),
        (["cifarlin", "train", "--setting", ""], {"1", "2", "3", "4", "all", "bonus"}),
        (["cifarlin", "gradcheck", "--method", ""], {"centred", "complex"}),
        (["cifarlin", "features", ""], {"fit", "extract", "show", "cache"}),
        (["cifarlin", "train", "--solver", ""], {"gd", "ridge"}),
        (["cifarlin", "visualize", "--what", "c"], {"curves", "confusion"}),
        (["cifarlin", "visualize", "--format", ""], {"png", "pdf", "svg"}),
        (["cifarlin", "evaluate", "--split", ""], {"test", "val", "train"}),
        (["cifarlin", "report", "--format", ""], {"html", "md", "pdf"}),
        (["cifarlin", "train", "--no-"], {"--no-shuffle", "--no-plots", "--no-download"}),
    ],
)
def test_bash_completes(tmp_path, words, expected):
    driver = tmp_path / "drive.sh"
    driver.write_text(BASH_DRIVER)
    out = subprocess.run(
        ["bash", str(driver), str(REPO / "completions" / "cifarlin.bash"), *words],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split()) == expected


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_paths(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "model.h5").write_text("")
    driver = tmp_path / "drive.sh"
    driver.write_text(BASH_DRIVER)

    def complete(*words):
        out = subprocess.run(
            ["bash", str(driver), str(REPO / "completions" / "cifarlin.bash"), *words],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
        )
        return set(out.stdout.split())

    assert complete("cifarlin", "evaluate", "") >= {"runs", "model.h5"}
    assert complete("cifarlin", "train", "--out", "") == {"runs"}  # folders only


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completes():
    script = REPO / "completions" / "cifarlin.fish"
    out = subprocess.run(
        ["fish", "-c", f"source {script}; complete -C 'cifarlin train --setting '"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert {line.split("\t")[0] for line in out.stdout.splitlines()} == {"1", "2", "3", "4", "all"}


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_parses():
    out = subprocess.run(
        ["zsh", "-n", str(REPO / "completions" / "_cifarlin")], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
