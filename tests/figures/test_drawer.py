"""Figures drawn in the child (cifarlin.figures.drawer, a child of cifarlin.store.helper's) are the
figures the parent would draw, byte for byte; and whatever happens to the child (killed, hung, failing, never
started) the parent draws them itself, raises the usual one-line error, and leaves no process
behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from cifarlin.data import cifar as data
from cifarlin.errors import WriteError
from cifarlin.figures import drawer
from cifarlin.plans import experiments
from cifarlin.store import helper

FIGURES = ("curves.png", "montage.png")
pytestmark = pytest.mark.skipif(not helper.available(), reason="no child processes on this platform")


def plan(out: Path, setting: int | str = 2):
    return experiments.plan_runs(setting, {"epochs": 3, "batch_size": 10}, out=out)


def figures(folder: Path, names=FIGURES) -> dict[str, bytes]:
    return {n: (folder / n).read_bytes() for n in names}


def alive(pid: int, wait: float = 2.0) -> bool:
    """Whether process ``pid`` still exists ``wait`` seconds from now at the latest (the helper
    reaps its children as they end, so a gone child leaves no zombie)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.01)


@pytest.fixture(scope="module")
def inline(tmp_path_factory, tiny_py):
    """Setting 2 (3 epochs) with every figure drawn in this process."""
    out = tmp_path_factory.mktemp("inline") / "run"
    experiments.run_plan(plan(out), data.Dataset(tiny_py, "python"), background=False)
    return out


def test_the_child_draws_the_same_figures_byte_for_byte(tmp_path, tiny_py, inline, monkeypatch):
    """Catches: the child drawing from other numbers than the run's (the last epoch instead of
    the kept one, the history without epoch 0), other styles, or no child at all."""
    children = []
    real = drawer.FigureDrawer.__init__

    def spy(self, background=True):
        real(self, background)
        children.append(self.pid)

    monkeypatch.setattr(drawer.FigureDrawer, "__init__", spy)
    drawn, parent, real_draw = [], os.getpid(), drawer.draw_training_figures

    def draw(*a):  # only this process has this: the child imports its own
        if os.getpid() == parent:
            drawn.append(a)
        return real_draw(*a)

    monkeypatch.setattr(drawer, "draw_training_figures", draw)
    out = tmp_path / "run"
    result = experiments.run_plan(plan(out), data.Dataset(tiny_py, "python"))
    assert children and children[0] is not None and children[0] != os.getpid()  # a child drew
    assert drawn == []  # and it, not this process, drew
    assert result.summaries[0].figures == tuple(str(out / n) for n in FIGURES)
    assert figures(out) == figures(inline)
    assert not alive(children[0])  # and it is gone (waited for: no zombie)


def test_setting_all_comparison_drawn_by_the_child(tmp_path, tiny_py, monkeypatch):
    """settings.png and every run's figures through the child equal those drawn here."""
    dataset = data.Dataset(tiny_py, "python")
    a, b = tmp_path / "a", tmp_path / "b"
    experiments.run_plan(plan(a, "all"), dataset, compare=True, compare_dir=a, background=False)
    parent, real_draw = os.getpid(), drawer.comparison_figure

    def draw(*x):
        assert os.getpid() != parent, "drawn in the parent"
        return real_draw(*x)

    monkeypatch.setattr(drawer, "comparison_figure", draw)
    experiments.run_plan(plan(b, "all"), dataset, compare=True, compare_dir=b)
    assert (b / "settings.png").read_bytes() == (a / "settings.png").read_bytes()
    for s in (1, 2, 3, 4):
        assert figures(b / f"setting-{s}") == figures(a / f"setting-{s}")


@pytest.mark.parametrize("fate", ["killed", "hung", "fails", "no child"])
def test_parent_draws_when_the_child_cannot(tmp_path, tiny_py, inline, monkeypatch, fate):
    """Catches: a dead or stopped child hanging the command, losing the figures, or leaving a
    process behind; a platform without child processes breaking train."""
    monkeypatch.setattr(drawer, "REPLY_SECONDS", 0.5)
    seen = []
    real_ask = drawer.FigureDrawer._ask

    def ask(self, job):
        seen.append(self.pid)
        if fate == "killed":
            os.kill(self.pid, signal.SIGKILL)
        elif fate == "hung":
            os.kill(self.pid, signal.SIGSTOP)
        elif fate == "fails":  # the child cannot read the folder it is sent
            job = {"run": str(tmp_path / "nowhere")}
        return real_ask(self, job)

    monkeypatch.setattr(drawer.FigureDrawer, "_ask", ask)
    if fate == "no child":
        monkeypatch.setattr(helper, "available", lambda: False)
    out = tmp_path / "run"
    result = experiments.run_plan(plan(out), data.Dataset(tiny_py, "python"))
    assert result.summaries[0].figures == tuple(str(out / n) for n in FIGURES)
    assert figures(out) == figures(inline)
    assert seen == ([None] if fate == "no child" else [seen[0]])
    if fate != "no child":
        assert seen[0] is not None and not alive(seen[0])


def test_a_figure_that_cannot_be_written_is_the_usual_error(tmp_path, tiny_py, monkeypatch):
    """The child fails to write (a folder where the figure goes); the parent tries too and raises
    the one-line WriteError that names the file, as without the child."""
    out = tmp_path / "run"
    p = plan(out)
    out.mkdir()
    (out / "curves.png").mkdir()  # cannot be replaced by a file
    with pytest.raises(WriteError, match="curves.png"):
        experiments.run_plan(p, data.Dataset(tiny_py, "python"))
    assert not list(out.glob("*.tmp*"))


def test_no_child_when_nothing_is_drawn(tmp_path, tiny_py, monkeypatch):
    monkeypatch.setattr(helper, "start", lambda *a, **k: pytest.fail("a child for nothing"))
    experiments.run_plan(plan(tmp_path / "run"), data.Dataset(tiny_py, "python"), figures=False)


def test_interrupted_wait_ends_the_child(tmp_path, tiny_py, monkeypatch):
    """Ctrl-C while the parent waits for the figures: KeyboardInterrupt as ever, no child left."""
    pids = []

    def interrupted(self):
        pids.append(self.pid)
        raise KeyboardInterrupt

    monkeypatch.setattr(drawer.FigureDrawer, "_read_line", interrupted)
    with pytest.raises(KeyboardInterrupt):
        experiments.run_plan(plan(tmp_path / "run"), data.Dataset(tiny_py, "python"))
    assert pids and not alive(pids[0])


def _log_figure(folder: Path, name: str):
    def draw():
        p = folder / name
        with open(folder / "log", "a") as log:
            log.write(f"{name} {os.getpid()}\n")
        p.write_text(name)
        return p

    return folder / name, draw


def side_by_side_in_a_child(folder: str) -> dict:
    """In a child of the helper (one thread, as the drawing child): three figures side by side."""
    here, folder = os.getpid(), Path(folder)
    paths = drawer.side_by_side([_log_figure(folder, n) for n in ("a.png", "b.png", "c.png")])
    reaped = []
    for line in (folder / "log").read_text().splitlines():
        pid = int(line.split()[1])
        if pid != here:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # waited for already: no zombie
                reaped.append(pid)
    return {"here": here, "paths": [str(p) for p in paths], "reaped": reaped}


def test_side_by_side_draws_each_figure_once_in_its_own_process(tmp_path):
    """Catches: a figure drawn twice or not at all, the paths out of order, the forked drawing
    not waited for (a zombie, or a file not there yet when the paths come back)."""
    ended = helper.run(side_by_side_in_a_child, str(tmp_path), seconds=60)
    assert (ended.how, ended.code, ended.error) == ("exit", 0, None)
    got = ended.result
    assert got["paths"] == [str(tmp_path / n) for n in ("a.png", "b.png", "c.png")]
    assert all((tmp_path / n).read_text() == n for n in ("a.png", "b.png", "c.png"))
    log = dict(line.split() for line in (tmp_path / "log").read_text().splitlines())
    assert sorted(log) == ["a.png", "b.png", "c.png"]  # each drawn once
    here = got["here"]
    assert int(log["c.png"]) == here and int(log["a.png"]) != here != int(log["b.png"]) != int(log["a.png"])
    assert sorted(got["reaped"]) == sorted([int(log["a.png"]), int(log["b.png"])])


def test_side_by_side_never_forks_a_process_with_threads(tmp_path):
    """Bug: side_by_side forked whatever process called it, threads and all (a deadlock risk):
    in this test process (BLAS's and pytest's threads) it draws everything here, in order."""
    paths = drawer.side_by_side([_log_figure(tmp_path, n) for n in ("a.png", "b.png")])
    assert paths == [tmp_path / "a.png", tmp_path / "b.png"]
    log = [line.split() for line in (tmp_path / "log").read_text().splitlines()]
    assert log == [["a.png", str(os.getpid())], ["b.png", str(os.getpid())]]


def redraw_in_a_child(folder: str, fork_fails: bool) -> str:
    """In a child of the helper: a figure that fails in its forked process is drawn here."""
    here, folder = os.getpid(), Path(folder)
    if fork_fails:
        helper.safe_fork = lambda: None

    def flaky():  # fails in a forked process, works here
        if os.getpid() != here:
            raise OSError("no space left on device")
        (folder / "a.png").write_text("a")
        return folder / "a.png"

    return drawer.side_by_side([(folder / "a.png", flaky), (folder / "b.png", lambda: None)])[0].read_text()


@pytest.mark.parametrize("fork_fails", [False, True])
def test_side_by_side_redraws_here_what_failed_in_its_process(tmp_path, fork_fails):
    ended = helper.run(redraw_in_a_child, str(tmp_path), fork_fails, seconds=60)
    assert (ended.how, ended.code, ended.result) == ("exit", 0, "a")
