"""Figures off the critical path: a child process (of :mod:`cifarlin.store.helper`'s, started before the
data are read) imports matplotlib and loads its fonts when training starts, on the core the
training leaves idle, then draws each finished run's figures from its folder.

The parent sends a job as one line of JSON (the run folders; nothing is unpickled) and gets the
paths written back. Whatever goes wrong on that side (no child on this platform, the child
died, hung or failed) the parent draws the figures itself, so the result, files and errors
included, is the same as without the child; only the time differs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from cifarlin.figures.make import comparison_figure, draw_training_figures, outcomes_from, training_figures
from cifarlin.store import helper
from cifarlin.work.runs import Outcome

# a child that has not answered in this long is killed and the parent draws (drawing takes ~0.3 s)
REPLY_SECONDS = 60.0


class FigureDrawer:
    """Draws runs' figures in a child process; use as a context manager (the child ends with it)."""

    def __init__(self, background: bool = True) -> None:
        """Start the child now (with ``background`` and where children can be had): before the
        data are read, so that it imports matplotlib while they are."""
        self.child: helper.Child | None = None
        self._asked = False  # a figure was asked for (else the child at most imports matplotlib)
        self._jobs: IO[bytes] | None = None
        self._replies: IO[bytes] | None = None
        if not (background and helper.available()):
            return
        try:
            job_r, job_w = os.pipe()
            reply_r, reply_w = os.pipe()
        except OSError:
            return
        try:
            self.child = helper.start(_serve_fds, helper.FDS, helper.FDS, fds=(job_r, reply_w))
        except OSError:
            os.close(job_w)
            os.close(reply_r)
            return
        finally:
            os.close(job_r)
            os.close(reply_w)
        self._jobs = os.fdopen(job_w, "wb")
        self._replies = os.fdopen(reply_r, "rb", buffering=0)

    @property
    def pid(self) -> int | None:
        """The child's process id (None without a child)."""
        return None if self.child is None else self.child.started(REPLY_SECONDS)

    def warm_up(self) -> None:
        """Let the child import matplotlib now (best when training starts: reading the data
        hashes on a second thread, training leaves part of a core idle)."""
        self._send({"warm_up": True})

    def _send(self, job: dict[str, Any]) -> bool:
        if self._jobs is None:
            return False
        try:
            line = json.dumps(job).encode() + b"\n"
        except (TypeError, ValueError):  # a value JSON cannot carry: the parent draws
            return False
        try:
            self._jobs.write(line)
            self._jobs.flush()
        except OSError:  # the child has gone: the parent draws
            self.close()
            return False
        return True

    def training(self, outcome: Outcome, class_names: Sequence[str]) -> list[Path]:
        """``curves.png`` and ``montage.png`` of a finished run (see :func:`draw_training_figures`)."""
        paths = self._ask({"run": str(outcome.out)})
        return paths if paths is not None else draw_training_figures(outcome, class_names)

    def comparison(self, outcomes: Sequence[Outcome], class_names: Sequence[str], path: Path) -> Path:
        """``settings.png`` of finished runs (see :func:`comparison_figure`)."""
        paths = self._ask({"compare": [str(o.out) for o in outcomes], "path": str(path)})
        return paths[0] if paths else comparison_figure(outcomes, class_names, path)

    def sweep(self, args: dict[str, Any], path: Path) -> Path:
        """``sweep.png`` from the plain values of :func:`cifarlin.figures.plots.sweep_figure`'s arguments."""
        paths = self._ask({"sweep": args, "path": str(path)})
        return paths[0] if paths else sweep_figure_file(args, path)

    def figures(self, folder: Path, kinds: Sequence[str], pick: str, data: Any, cache: Path | None) -> bool:
        """Ask for ``kinds`` of run ``folder`` (:func:`cifarlin.figures.make.draw_figures`, the
        test images from the :class:`~cifarlin.data.cifar.Dataset` ``data``) without waiting:
        :meth:`answer` gives the files, in the order asked. False when the parent must draw."""
        self._asked = True
        job = {"figures": str(folder), "kinds": list(kinds), "pick": pick}
        if data is not None:
            job["data"] = [str(data.folder), data.format]
        if cache is not None:
            job["cache"] = str(cache)
        return self._send(job)

    def compare(self, folders: Sequence[Path], path: Path) -> bool:
        """Ask for the comparison of ``folders`` at ``path`` without waiting (see :meth:`answer`)."""
        self._asked = True
        return self._send({"compare": [str(f) for f in folders], "path": str(path)})

    def answer(self) -> list[Path] | None:
        """The files of the oldest job asked for and not yet answered, or None when the parent
        must draw them (the child failed, hung or has gone: every later answer is None too)."""
        if self._replies is None:
            return None
        try:
            line = self._read_line()
            reply = json.loads(line) if line else None
        except (OSError, ValueError):
            reply = None
        if not isinstance(reply, dict) or not isinstance(reply.get("paths"), list):
            self.close()  # no answer, or an error: the parent draws, and raises what goes wrong
            return None
        return [Path(p) for p in reply["paths"]]

    def _ask(self, job: dict[str, Any]) -> list[Path] | None:
        """The child's answer to ``job``, or None when the parent must draw."""
        self._asked = True
        return self.answer() if self._send(job) else None

    def _read_line(self) -> bytes:
        assert self._replies is not None
        deadline, line = time.monotonic() + REPLY_SECONDS, b""
        fd = self._replies.fileno()
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not helper.readable(fd, left):
                return b""
            chunk = os.read(fd, 65536)
            if not chunk:  # the child has gone
                return b""
            line += chunk
        return line

    def close(self) -> None:
        """End the child: it leaves when its job pipe closes (killed if it has not within a second)."""
        for f in (self._jobs, self._replies):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self._jobs = self._replies = None
        child, self.child = self.child, None
        if child is None:
            return
        try:
            if not self._asked:  # nothing drawn (the command ended early): no waiting for its import
                child.kill()
            if child.wait(1.0) is None:
                child.kill()
                child.wait(REPLY_SECONDS)
        except BaseException:  # a second Ctrl-C meanwhile: end it now
            child.kill()
            raise

    def __enter__(self) -> FigureDrawer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _serve_fds(job_fd: int, reply_fd: int) -> None:
    """The child's entry (see :func:`cifarlin.store.helper.start`): serve on the two pipes' ends."""
    _serve(os.fdopen(job_fd, "rb"), os.fdopen(reply_fd, "wb"))


def _serve(jobs: IO[bytes], replies: IO[bytes]) -> None:
    """The child's loop: draw each job's figures until the parent closes the pipe, importing
    matplotlib at the first job. Ctrl-C is the parent's to handle; the child finishes its job."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Nothing on the terminal: it is the command's to draw on.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - for the life of the process
    sys.stdout = sys.stderr = open(1, "w", closefd=False)  # noqa: SIM115
    os.nice(19)  # the import uses what the training leaves idle, not the training's share
    plots = None
    for line in jobs:  # the files are the parent's, just written: read without a probe (a
        try:  # crash here only means the parent draws)
            job = json.loads(line)
            if plots is None:
                from cifarlin.figures import common

                common.use_backend()
                common.warm_up()
            if "warm_up" in job:
                continue  # no answer
            if "run" in job:
                (outcome,), names = outcomes_from([Path(job["run"])], probe=False)
                paths = side_by_side(training_figures(outcome, names))
            elif "sweep" in job:
                paths = [sweep_figure_file(job["sweep"], Path(job["path"]))]
            elif "figures" in job:
                paths = _run_figures(job)
            else:
                outcomes, names = outcomes_from([Path(p) for p in job["compare"]], probe=False)
                paths = [comparison_figure(outcomes, names, Path(job["path"]))]
            reply: dict[str, Any] = {"paths": [str(p) for p in paths]}
        except Exception as e:  # the parent draws again, and reports what goes wrong
            reply = {"error": f"{type(e).__name__}: {e}"}
        replies.write(json.dumps(reply).encode() + b"\n")
        replies.flush()


def _run_figures(job: dict[str, Any]) -> list[Path]:
    """A :meth:`FigureDrawer.figures` job drawn (in the child)."""
    from cifarlin.data.cifar import Dataset
    from cifarlin.figures.make import draw_figures
    from cifarlin.figures.request import FigureRequest

    data = job.get("data")
    dataset = Dataset(Path(data[0]), data[1]) if data else None

    def images() -> Dataset:
        if dataset is None:
            raise ValueError("no test images were given")
        return dataset

    request = FigureRequest(kinds=tuple(job["kinds"]), pick=job["pick"])
    cache = Path(job["cache"]) if job.get("cache") else None
    return draw_figures(Path(job["figures"]), request, images, feature_cache=cache)


def side_by_side(figures: Sequence[tuple[Path, Callable[[], Path]]]) -> list[Path]:
    """Draw ``figures`` ((path, draw) pairs) at once: each but the last in a process forked for
    it, the last here (two figures take the time of one: the command waits for them). A figure
    whose process fails is drawn here again, which raises what goes wrong. Forks only a process
    with one thread (:func:`cifarlin.store.helper.safe_fork`: the drawing child); elsewhere it draws
    them one after another."""
    forked: dict[int, Callable[[], Path]] = {}
    for _, draw in figures[:-1]:
        pid = helper.safe_fork()
        if pid is None:
            draw()
            continue
        if pid == 0:
            code = 1
            try:
                draw()
                code = 0
            finally:
                os._exit(code)
        forked[pid] = draw
    try:
        if figures:
            figures[-1][1]()
    finally:  # even when this one fails (a full disk): the others finish, removing their
        ended = {pid: os.waitpid(pid, 0)[1] for pid in forked}  # temporary files (never killed)
    for pid, draw in forked.items():
        if os.waitstatus_to_exitcode(ended[pid]) != 0:
            draw()
    return [path for path, _ in figures]


def sweep_figure_file(args: dict[str, Any], path: Path) -> Path:
    """:func:`cifarlin.figures.plots.sweep_figure` of ``args`` saved to ``path``."""
    from cifarlin.figures import common, plots

    common.use_backend()
    return common.save(plots.sweep_figure(**args), path)
