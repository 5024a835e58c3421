"""Progress of long work in steps (k-means rounds, images whose features are extracted): on a
terminal a bar per task with its count, a note (the k-means objective) and the time left, and a
line when it ends; otherwise plain lines (each step, or one every few seconds, and the last);
nothing with ``--quiet``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from cifarlin.cli.display import fmt_duration, plain, say

#: ``update(done, total, note)``: ``done`` of ``total`` steps, ``note`` shown beside the count.
Update = Callable[..., None]


class WorkProgress:
    """Tasks shown as they go, on ``c``: :meth:`task` starts one. On a terminal the bars share one
    live display, started with the first task and stopped when every task has ended (inside
    another live display of ``c``, such as train's, when rich can nest them; else plain lines).
    ``every``: the seconds between two plain lines of a task (0: a line a step)."""

    def __init__(self, c: Console, quiet: bool = False, every: float = 5.0):
        self.c, self.quiet, self.every = c, quiet, every
        self.bar: Any = None
        self.running = 0

    def __enter__(self) -> WorkProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def task(self, description: str, unit: str, total: int | None = None, verb: str = "") -> Update:
        """A task of ``total`` steps (``unit``: their name, "rounds", "images"; the total may come
        with the first update); its last line says ``description: verb total unit``."""
        if self.quiet:
            return lambda done, total, note="": None
        started = time.monotonic()
        if not plain() and self._live():
            return self._bar_task(description, total, unit, started, verb)
        last, done_verb = [started], f"{verb} " if verb else ""

        def line(done: int, total: int, note: str = "") -> None:
            now = time.monotonic()
            if done < total and now - last[0] < self.every:  # a line every few seconds
                return
            last[0] = now
            extra = f", {note}" if note else ""
            if done >= total:
                say(self.c, f"{description}: {done_verb}{total} {unit}{extra}, {now - started:.1f} s")
            else:
                eta = fmt_duration((now - started) / max(done, 1) * (total - done))
                say(self.c, f"{description}: {done}/{total} {unit}{extra}, ETA {eta}")

        return line

    def _live(self) -> bool:
        if self.bar is not None:
            return True
        from rich.errors import LiveError
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}{task.fields[note]}"),
            TimeRemainingColumn(),
            console=self.c,
            transient=True,
        )
        try:
            bar.start()
        except LiveError:  # rich before 14.1 nests no live displays: plain lines instead
            return False
        self.bar = bar
        return True

    def _bar_task(self, description: str, total: int | None, unit: str, started: float, verb: str) -> Update:
        bar = self.bar
        task = bar.add_task(description, total=total, unit=unit, note="")
        self.running += 1
        ended = [False]

        def update(done: int, total: int, note: str = "") -> None:
            if ended[0]:
                return
            bar.update(task, completed=done, total=total, note=f"  {note}" if note else "")
            if done >= total:
                ended[0] = True
                bar.remove_task(task)
                extra = f", {note}" if note else ""
                what = f"{verb} {total}" if verb else total
                say(bar.console, f"{description}: {what} {unit}{extra}, {time.monotonic() - started:.1f} s")
                self.running -= 1
                if not self.running:
                    self.stop()

        return update

    def stop(self) -> None:
        """The live display ended (the tasks not finished are dropped): at the end of the command,
        or when it stopped early."""
        if self.bar is not None:
            self.bar.stop()
            self.bar, self.running = None, 0
