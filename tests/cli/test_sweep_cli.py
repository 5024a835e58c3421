"""What `cifarlin sweep` shows: its tables fitted to the terminal, its messages in its own flags,
the live table kept on Ctrl-C, and a sweep with nothing to search refused. The trials are made up
(a stand-in for run_sweep, no Dask): these tests are about the display."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from cifarlin.cli import app
from cifarlin.cli import sweep as cli_sweep
from cifarlin.cli.common import flag_names, in_flags
from cifarlin.errors import Interrupted
from cifarlin.search import sweep as lib_sweep
from cifarlin.search.plan import SweepSpec, TrialResult, plan
from cifarlin.search.results import SweepResult
from cifarlin.search.space import parse_axis

GRID = ["--lam", "0,0.1", "--eta", "0.001,0.01"]
STATUSES = ["done", "interrupted", "diverged", "running"]


def made_up(spec: SweepSpec, out: Path) -> list[TrialResult]:
    """Trials of every status, with numbers as wide as they come (seconds over 10)."""
    results = []
    for i, t in enumerate(plan(spec)):
        r = TrialResult(t, out / t.name, status=STATUSES[i % len(STATUSES)])
        if r.status != "diverged":
            r.val_accuracy = r.final_val_accuracy = 0.4123 - i / 1000
            r.best_val_accuracy, r.final_val_cost, r.val_cost = 0.4187, 1.7465 + i, 1.7465 + i
            r.epochs_trained, r.seconds = 20, 11.93 * (i + 1)
        results.append(r)
    return results


@pytest.fixture
def fake_sweep(monkeypatch):
    """run_sweep replaced: it reports made-up trials and returns them (no cluster)."""

    def run_sweep(spec, out, data_folder, *, on_trial, on_notice, **kw):
        results = made_up(spec, Path(out))
        on_notice("running on a made-up cluster")
        for r in results:
            on_trial("finished", r)
        best = results[0]
        return SweepResult(spec, Path(out), results, best, None, None, [Path(out) / "sweep.h5"])

    monkeypatch.setattr(lib_sweep, "run_sweep", run_sweep)


def numbers_in_full(text: str, results: list[TrialResult]) -> None:
    """Each trial's row (or line) shows its validation accuracy, and every number in it whole."""
    from cifarlin.search.space import show

    assert "…" not in text
    chunks = re.split(r"(?=\b(?:trial|refine)-\d{3}\b)", " ".join(text.splitlines()))  # lines may wrap
    lines = {c.split()[0].rstrip(","): c for c in chunks if c.startswith(("trial-", "refine-"))}
    for r in results:
        line = lines[r.trial.name]
        whole = {f"{x:.4f}" for x in (r.val_accuracy, r.best_val_accuracy, r.final_val_cost) if x is not None}
        whole |= {f"{r.seconds:.1f}"} if r.seconds is not None else set()
        whole |= {f"{r.epochs_trained}/{r.trial.config.epochs}"}
        whole |= {show(n, v) for n, v in r.trial.params().items() if not isinstance(v, list)}
        if r.val_accuracy is not None:
            assert f"{r.val_accuracy:.4f}" in line
        for token in re.findall(r"[\d./]*\d[\d./]*", line.split(maxsplit=1)[1]):
            assert token in whole, (token, line)


@pytest.mark.parametrize("columns", [80, 120])
def test_the_final_table_fits_the_terminal_and_cuts_no_number(runner, tiny_py, tmp_path, fake_sweep, columns):
    """Catches the final table wider than an 80-column terminal (its lines wrapped mid-number:
    'best val ac' / 'c'), and lambda 0 shown as '0.0' where `cifarlin runs` shows '0'."""
    args = [
        "sweep",
        *GRID,
        "--batch-size",
        "50,100",
        "--data-dir",
        str(tiny_py),
        "--out",
        str(tmp_path / "s"),
    ]
    r = runner.invoke(app, args, env={"COLUMNS": str(columns)})
    assert r.exit_code == 0, r.output
    table = r.stdout.split("8 trials")[0]
    assert max(len(line) for line in table.splitlines()) <= columns, table
    spec = SweepSpec(
        tuple(parse_axis(*a) for a in (("lam", "0,0.1"), ("eta", "0.001,0.01"), ("batch_size", "50,100")))
    )
    numbers_in_full(table, made_up(spec, tmp_path))
    head = table.splitlines()[0].split()
    assert head[:4] == ["trial", "lam", "eta", "batch-size"] and "val" in head
    rows = [line.replace(" *", "").split() for line in table.splitlines()[2:]]
    assert [row[1] for row in rows] == ["0"] * 4 + ["0.1"] * 4  # as `runs` shows lambda
    if columns == 120:
        assert "best val acc" in table and "val cost" in table and "seconds" in table


def test_messages_name_the_flags(runner, tiny_py, tmp_path, fake_sweep):
    """Catches messages in the library's field names (batch_size=50,100) instead of the flags."""
    args = ["sweep", *GRID, "--batch-size", "50,100", "--init-std", "0.01", "--data-dir", str(tiny_py)]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "s")], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "--batch-size 50,100" in r.stderr and "--init-std 0.01" in r.stderr
    assert "--lam 0, --eta 0.001, --batch-size 50" in r.stdout  # the best trial
    assert not re.search(r"\b(lam|eta|batch_size|init_std)=", r.output), r.output
    bad = runner.invoke(app, ["sweep", "--epochs", "10..20", "--data-dir", str(tiny_py)])
    assert bad.exit_code == 2 and "--init-std" in bad.stderr and "init_std" not in bad.stderr
    box = lib_sweep.describe_box({"init_std": (0.001, 0.01), "loss": ("ce", "svm")})
    flags = flag_names(cli_sweep_group())
    assert (
        in_flags(f"round 2: 3 trials in {box}", flags)
        == "round 2: 3 trials in --init-std 0.001..0.01, --loss ce,svm"
    )


def cli_sweep_group():
    from cifarlin.cli import group

    return group()


def test_a_bare_sweep_is_refused_naming_the_options(runner, tiny_py, tmp_path, monkeypatch):
    """Catches `cifarlin sweep` alone starting a cluster for one trial of the defaults."""
    monkeypatch.setattr(lib_sweep, "run_sweep", lambda *a, **k: pytest.fail("a sweep started"))
    r = runner.invoke(app, ["sweep", "--data-dir", str(tiny_py), "--out", str(tmp_path / "s")])
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and "nothing to search" in r.stderr and "--lam" in r.stderr
    assert not (tmp_path / "s").exists()


def live_display(width: int, swept: list[str], monkeypatch) -> tuple[cli_sweep._Display, io.StringIO]:
    monkeypatch.setattr(cli_sweep, "plain", lambda: False)
    out = io.StringIO()
    c = Console(file=out, width=width, force_terminal=True, color_system=None)
    return cli_sweep._Display(c, False, swept), out


@pytest.mark.parametrize(
    "width, swept", [(80, ["lam", "eta"]), (60, ["lam", "eta", "batch_size", "init_std"])]
)
def test_the_live_table_fits_the_terminal_and_cuts_no_number(tmp_path, monkeypatch, width, swept):
    """Catches the live table cut by rich at 80 columns ('trial-00...  0.248  0.00...  runn...'):
    it drops columns to fit, and when nothing fits it shows a line per trial."""
    display, _ = live_display(width, swept, monkeypatch)
    spec = SweepSpec(tuple(parse_axis(n, {"lam": "0,0.1", "eta": "0.001,0.01"}.get(n, "1,2")) for n in swept))
    results = made_up(spec, tmp_path)
    for r in results:
        display.trials[r.trial.name] = r
    shown = io.StringIO()
    Console(file=shown, width=width, color_system=None).print(display._render().renderables[1])
    text = shown.getvalue()
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width - 2, text
    numbers_in_full(text, results)
    assert all(r.trial.name in text for r in results) and "…" not in text


def test_ctrl_c_keeps_the_live_table_on_screen(tmp_path, monkeypatch):
    """Catches the live table erased by Ctrl-C (transient), leaving the error line alone."""
    display, out = live_display(80, ["lam"], monkeypatch)
    results = made_up(SweepSpec((parse_axis("lam", "0,0.1"),)), tmp_path)
    with pytest.raises(Interrupted), display:
        for r in results:
            display.on_trial("started", r)
        results[1].status = "interrupted"
        raise Interrupted("interrupted: 1 of 2 trials finished")
    text = out.getvalue()
    last = text.rindex("trial-002")
    assert "interrupted" in text[text.rindex("trial-001") :]
    assert "\x1b[2K" not in text[last:] and "\x1b[1A" not in text[last:]  # nothing erased after it
