"""Figures drawn in the forked child (cifarlin.drawer) are the figures the parent would draw, byte
for byte; and whatever happens to the child (killed, hung, failing, never forked) the parent draws
them itself, raises the usual one-line error, and leaves no process behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from cifarlin import data, drawer, experiments
from cifarlin.errors import WriteError

FIGURES = ("curves.png", "montage.png")
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")


def plan(out: Path, setting: int | str = 2):
    return experiments.plan_runs(setting, {"epochs": 3, "batch_size": 10}, out=out)


def figures(folder: Path, names=FIGURES) -> dict[str, bytes]:
    return {n: (folder / n).read_bytes() for n in names}


def alive(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return False


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

    def draw(*a):  # the child has this too (forked): it draws, the parent notes
        if os.getpid() == parent:
            drawn.append(a)
        return real_draw(*a)

    monkeypatch.setattr(drawer, "draw_training_figures", draw)
    out = tmp_path / "run"
    result = experiments.run_plan(plan(out), data.Dataset(tiny_py, "python"))
    assert children and children[0] is not None  # a child was forked
    assert drawn == []  # and it, not this process, drew
    assert result.summaries[0]["figures"] == [str(out / n) for n in FIGURES]
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


@pytest.mark.parametrize("fate", ["killed", "hung", "fails", "no fork"])
def test_parent_draws_when_the_child_cannot(tmp_path, tiny_py, inline, monkeypatch, fate):
    """Catches: a dead or stopped child hanging the command, losing the figures, or leaving a
    process behind; a platform without fork breaking train."""
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
    if fate == "no fork":
        monkeypatch.delattr(os, "fork")
    out = tmp_path / "run"
    result = experiments.run_plan(plan(out), data.Dataset(tiny_py, "python"))
    assert result.summaries[0]["figures"] == [str(out / n) for n in FIGURES]
    assert figures(out) == figures(inline)
    assert seen == ([None] if fate == "no fork" else [seen[0]])
    if fate != "no fork":
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
    monkeypatch.setattr(os, "fork", lambda: pytest.fail("forked for nothing"))
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


def test_side_by_side_draws_each_figure_once_in_its_own_process(tmp_path):
    """Catches: a figure drawn twice or not at all, the paths out of order, the forked drawing
    not waited for (a zombie, or a file not there yet when the paths come back)."""
    here = os.getpid()

    def figure(name):
        def draw():
            p = tmp_path / name
            with open(tmp_path / "log", "a") as log:
                log.write(f"{name} {os.getpid()}\n")
            p.write_text(name)
            return p

        return tmp_path / name, draw

    paths = drawer.side_by_side([figure("a.png"), figure("b.png"), figure("c.png")])
    assert paths == [tmp_path / n for n in ("a.png", "b.png", "c.png")]
    assert all(p.read_text() == p.name for p in paths)
    log = dict(line.split() for line in (tmp_path / "log").read_text().splitlines())
    assert sorted(log) == ["a.png", "b.png", "c.png"]  # each drawn once
    assert int(log["c.png"]) == here and int(log["a.png"]) != here != int(log["b.png"]) != int(log["a.png"])
    for name in ("a.png", "b.png"):
        with pytest.raises(ChildProcessError):
            os.waitpid(int(log[name]), os.WNOHANG)  # waited for already: no zombie


def test_side_by_side_redraws_here_what_failed_in_its_process(tmp_path, monkeypatch):
    here = os.getpid()

    def flaky():  # fails in a forked process, works here
        if os.getpid() != here:
            raise OSError("no space left on device")
        (tmp_path / "a.png").write_text("a")
        return tmp_path / "a.png"

    assert (
        drawer.side_by_side([(tmp_path / "a.png", flaky), (tmp_path / "b.png", lambda: None)])[0].read_text()
        == "a"
    )

    def no_fork():
        raise OSError("Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    (tmp_path / "a.png").unlink()
    assert (
        drawer.side_by_side([(tmp_path / "a.png", flaky), (tmp_path / "b.png", lambda: None)])[0].read_text()
        == "a"
    )

    def broken():
        raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        drawer.side_by_side([(tmp_path / "x.png", broken), (tmp_path / "b.png", lambda: None)])


def test_side_by_side_stops_the_forked_drawings_when_the_last_one_fails(tmp_path):
    """Catches: a forked drawing left running (a zombie, or a second writer of a figure the
    parent draws again) when the figure drawn in the process itself fails."""

    def slow():
        (tmp_path / "pid").write_text(str(os.getpid()))
        time.sleep(5)
        (tmp_path / "late.png").write_text("too late")

    def broken():
        while not (tmp_path / "pid").exists():
            time.sleep(0.01)
        raise OSError("disk on fire")

    with pytest.raises(OSError, match="disk on fire"):
        drawer.side_by_side([(tmp_path / "late.png", slow), (tmp_path / "b.png", broken)])
    with pytest.raises(ChildProcessError):
        os.waitpid(int((tmp_path / "pid").read_text()), os.WNOHANG)  # killed and waited for
    assert not (tmp_path / "late.png").exists()


def test_sweep_figure_drawn_by_the_child_byte_for_byte(tmp_path, monkeypatch):
    """Catches: sweep.png from the child differing from the one drawn here (values changed on
    their way through JSON: floats, None, the best index), or the parent drawing it after all."""
    args = {
        "lam": [0.0, 0.0, 0.1, 0.1, 1e-05],
        "eta": [0.001, 0.01, 0.001, 0.01, 0.1],
        "accuracy": [0.2817, 0.3382, 0.28250000000000003, None, 0.1],
        "status": ["done", "done", "done", "diverged", "done"],
        "best": 1,
        "grid": False,
        "title": "random search; 5 trials",
    }
    here = drawer.sweep_figure_file(args, tmp_path / "inline.png")
    parent, real = os.getpid(), drawer.sweep_figure_file

    def draw(*a):
        assert os.getpid() != parent, "drawn in the parent"
        return real(*a)

    monkeypatch.setattr(drawer, "sweep_figure_file", draw)
    with drawer.FigureDrawer() as d:
        d.warm_up()
        got = d.sweep(args, tmp_path / "child.png")
        pid = d.pid
    assert got == tmp_path / "child.png" and got.read_bytes() == here.read_bytes()
    assert pid is not None and not alive(pid)


def test_a_job_json_cannot_carry_is_drawn_here(tmp_path):
    """Catches: a value the JSON job cannot carry (a NumPy float32) crashing the command instead
    of the parent drawing the figure itself."""
    import numpy as np

    args = {
        "lam": [np.float32(0.1)],
        "eta": [0.01],
        "accuracy": [0.3],
        "status": ["done"],
        "best": 0,
        "grid": False,
        "title": "one trial",
    }
    with drawer.FigureDrawer() as d:
        path = d.sweep(args, tmp_path / "sweep.png")
        assert d.pid is not None  # the child is still there, for the next job
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
