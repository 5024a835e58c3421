"""The README and the help texts cannot drift from the tool: their commands are checked and run."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.main import get_command

from cifar_files import dataset_archive, md5, write_python_dataset
from cifarlin.cli import app

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
GROUP = get_command(app)


def option_names(command) -> set[str]:
    return {n for p in command.params for n in (*p.opts, *getattr(p, "secondary_opts", []))} | {"--help"}


def readme_commands() -> list[list[str]]:
    """Every `cifarlin ...` command in the README: in code blocks and in inline code (where
    [optional] brackets and escaped | of the tables are dropped)."""
    lines = []
    fenced = re.findall(r"^```(\w*)\n(.*?)^```", README, flags=re.S | re.M)  # (language, body), in pairs
    for block in (body for lang, body in fenced if lang in ("", "sh", "bash", "console", "shell")):
        for line in block.splitlines():
            line = line.strip().removeprefix("$ ")
            for part in re.split(r"&&|\||;|\$\(", line):
                part = part.strip()
                if part.startswith("cifarlin ") or part == "cifarlin":
                    lines.append(shlex.split(part.split(">")[0], comments=True))
    for span in re.findall(r"(?<!`)`(cifarlin [^`]+)`(?!`)", README):
        span = re.sub(r"[\[\]]", " ", span.replace("\\|", " "))
        lines.append(span.split())
    return lines


def test_readme_has_the_ci_test_command():
    ci = next(line for line in (REPO / ".ci" / "run").read_text().splitlines() if "pytest" in line)
    command = ci.replace('"$VENV/bin/activate"', ".venv/bin/activate").replace('"$VENV"', ".venv")
    assert command in README, "the README's test command and .ci/run differ"


def test_readme_commands_and_options_exist():
    seen = readme_commands()
    assert len(seen) >= 20
    for words in seen:
        name = words[1] if len(words) > 1 and not words[1].startswith("-") else None
        command = GROUP.commands.get(name) if name else GROUP
        assert command is not None, f"README uses an unknown command: {' '.join(words)}"
        known = option_names(command)
        for w in words[2 if name else 1 :]:
            if w.startswith("--") or re.fullmatch(r"-[a-z]", w):
                assert w.split("=")[0] in known, f"README uses {w}, which `cifarlin {name}` does not have"


def test_readme_documents_every_command_and_exit_code():
    for name, command in GROUP.commands.items():
        assert command.hidden or f"cifarlin {name}" in README
    for code in ("0", "1", "2", "130"):
        assert re.search(rf"\|\s*`?{code}`?\s*\|", README), f"exit code {code} is not in the README's table"


def help_example(runner, name: str) -> str:
    out = runner.invoke(app, [name, "--help"]).stdout
    m = re.search(r"Example: (cifarlin .+)", out)
    assert m, f"`cifarlin {name} --help` has no example"
    return m.group(1).strip()


@pytest.mark.slow
def test_every_help_example_runs(runner, tmp_path, monkeypatch):
    """Each command's own example, in the order a user would run them, on tiny data."""
    from servers import Server

    home = tmp_path / "home"
    home.mkdir()
    body = dataset_archive(tmp_path)
    server = Server(body)
    data = write_python_dataset(tmp_path / "data" / "cifar-10-batches-py", n=200, n_test=100)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CIFARLIN_URL", server.url)
    monkeypatch.setenv("CIFARLIN_MD5", md5(body))
    monkeypatch.chdir(tmp_path)
    from PIL import Image

    Image.new("RGB", (48, 40), (120, 80, 40)).save(tmp_path / "cat.png")  # the image predict's example names
    commands = ("download", "gradcheck", "train", "evaluate", "visualize", "predict", "export", "runs")
    try:
        for name in (*commands, "completion"):
            example = help_example(runner, name)
            words = shlex.split(example.split(">")[0])[1:]
            if name != "download":
                monkeypatch.setenv("CIFARLIN_DATA_DIR", str(data.parent))
            r = runner.invoke(app, words)
            assert r.exit_code == 0, f"{example}\n{r.output}"
    finally:
        server.close()
    assert (home / "data" / "cifar" / "cifar-10-batches-py" / "data_batch_1").is_file()
    assert (tmp_path / "outputs" / "setting-2" / "model.h5").is_file()
    assert (tmp_path / "outputs" / "setting-2" / "montage.png").is_file()
    assert (tmp_path / "model.npz").is_file() and (tmp_path / "history.csv").is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["gradcheck", "--random", "--dims", "30", "--json"],
        ["download", "--data-dir", "{data}", "--json"],
        ["evaluate", "{run}", "--json", "--data-dir", "{data}"],
        ["visualize", "{run}", "--what", "montage", "--json"],
        [
            "train",
            "--data-dir",
            "{data}",
            "--out",
            "{tmp}/t",
            "--epochs",
            "1",
            "--batch-size",
            "10",
            "--json",
            "--no-plots",
        ],
    ],
)
def test_stdout_holds_exactly_one_json_object(runner, tiny_py, tmp_path, args):
    run = tmp_path / "run"
    r = runner.invoke(
        app,
        [
            "train",
            "--data-dir",
            str(tiny_py),
            "--out",
            str(run),
            "--epochs",
            "1",
            "--batch-size",
            "10",
            "--quiet",
            "--no-plots",
        ],
    )
    assert r.exit_code == 0
    args = [a.format(data=tiny_py, run=run, tmp=tmp_path) for a in args]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert r.stdout.count("\n") == 1 and isinstance(json.loads(r.stdout), dict)


def test_every_package_is_installed():
    """A non-editable install ships only the packages pyproject lists: each folder of cifarlin with
    an __init__.py must be among them (a missing one works from the checkout, fails installed)."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "cifarlin").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages"
