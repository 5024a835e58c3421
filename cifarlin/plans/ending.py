"""How a plan of runs ends (:class:`PlanResult`), and how a plan of several (``train --setting
all``) reports what stopped it and the runs it could not finish: one line, naming each run's
folder and, once, the exact command that goes on.

Only the caller knows its commands (the command line: its flags, as the user gave them); it says
them through :class:`Commands`, whose defaults here describe library calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cifarlin.errors import CifarlinError, ConfigError, Interrupted, RunError, stopped
from cifarlin.plans.held import PlannedRun
from cifarlin.work.folder import CHECKPOINT
from cifarlin.work.runs import Outcome
from cifarlin.work.summary import RunSummary


class Commands(Protocol):
    """The commands that go on after a plan stopped or left runs unfinished."""

    def again(self) -> str:
        """The command that continues the plan: the same one, run again."""
        ...

    def member(self, run: PlannedRun, **changes: Any) -> str:
        """The command that trains the one run ``run`` of the plan, with ``changes`` (fields such as
        ``eta``, ``out``, ``overwrite``)."""
        ...


class CallCommands:
    """:class:`Commands` in the library's words (calls and their fields)."""

    def again(self) -> str:
        return "plan_runs and run_plan again with the same arguments"

    def member(self, run: PlannedRun, **changes: Any) -> str:
        fields = {"setting": run.config.setting, "out": run.out, **changes}
        return "train " + " ".join(f"{k}={v}" for k, v in fields.items())


@dataclass
class Failed:
    """A run of a plan of several that did not finish, while the others went on."""

    run: PlannedRun
    message: str  # what happened, naming its folder or file
    diverged: bool  # else its files cannot be read, and training it again is the way on
    retry: str = ""  # the command that tries it again (set by :func:`failed_message`)


@dataclass
class PlanResult:
    """What a plan of runs ended with: each run's outcome and summary, the comparison files, and
    the runs of a plan of several that did not finish."""

    outcomes: list[Outcome]
    summaries: list[RunSummary]  # one per run, as :meth:`Outcome.summary` plus its figures
    files: list[Path] = field(default_factory=list)  # the comparison files of a plan of several runs
    failed: list[Failed] = field(default_factory=list)  # runs of a plan of several that did not finish


class Halted(Exception):
    """Runs trained side by side were stopped by ``cause`` (raised on the plan's thread or in one
    of the runs); ``stopped``: the other runs that stopped then."""

    def __init__(self, cause: BaseException, stopped: list[Interrupted]):
        super().__init__(str(cause))
        self.cause, self.stopped = cause, stopped


class PlanFailed(RunError):
    """Runs of a plan of several did not finish (the message names each and the command that
    tries it again); ``result`` holds the others, and their comparison."""

    def __init__(self, message: str, result: PlanResult):
        super().__init__(message)
        self.result = result


def retry_eta(eta: float) -> float:
    """The smaller learning rate offered for a run that diverged: a tenth."""
    return float(f"{eta / 10:.6g}")


def failed_message(failed: Sequence[Failed], commands: Commands) -> str:
    """The runs that did not finish, each with the one command that tries it again: a diverged
    run with a smaller eta into a folder of its own (its own folder keeps the record of the
    divergence, and the plan's command its setting), a run whose files cannot be read anew."""
    parts = []
    for f in failed:
        if f.diverged:
            eta = retry_eta(f.run.config.eta)
            out = f.run.out.with_name(f"{f.run.out.name}-eta{eta:g}")
            f.retry = commands.member(f.run, eta=eta, out=out)
            parts.append(f"{f.message}; try a smaller eta: '{f.retry}'")
        else:
            f.retry = commands.member(f.run, overwrite=True)
            parts.append(f"{f.message}; train it again with '{f.retry}'")
    return "; ".join(parts)


def stop_error(
    cause: BaseException, others: Sequence[Interrupted], plan: Sequence[PlannedRun], commands: Commands
) -> BaseException:
    """What stopped a plan of several runs, as one error: where each running run stopped, and
    (when anything was kept) the command that continues the plan, once. Ctrl-C and SIGTERM give
    :class:`Interrupted`; an error keeps its class (a usage error, which the same command would
    meet again, and a bug are left as they are)."""
    runs = [cause, *others] if isinstance(cause, Interrupted) and cause.folder else list(others)
    where = ", ".join(f"{Path(r.folder).name} in epoch {r.epoch} ({r.kept})" for r in runs if r.folder)
    kept = any((r.out / CHECKPOINT).is_file() for r in plan)
    if isinstance(cause, KeyboardInterrupt | Interrupted):
        code = cause.exit_code if isinstance(cause, Interrupted) else stopped(cause)[1]
        how = "terminated (SIGTERM)" if code == 143 else "interrupted"
        hint = f"; resume with '{commands.again()}'" if kept else ""
        return Interrupted(f"{how}{': ' + where if where else ''}{hint}", code)
    if isinstance(cause, CifarlinError) and not isinstance(cause, ConfigError):
        also = f"; stopped {where}" if where else ""
        hint = f"; once that is fixed, resume with '{commands.again()}'" if kept else ""
        cause.args = (f"{cause}{also}{hint}",)
    return cause
