"""What a run folder already holds, set against the run a command asks for there, and so what
the command's plan does with that folder: train anew, reuse the complete run, resume the run
stopped part-way (``train --setting all``), leave a run that diverged or cannot be read to be
reported, or refuse the folder of another run with one line naming the settings that differ.

Values are named by their field (``epochs=45 there, 40 asked``, ``resume=True``); the command line
shows the same message with its own flags (``--epochs 45 there, 40 asked``, ``--resume``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifarlin.core.config import TrainConfig
from cifarlin.core.train import is_complete
from cifarlin.errors import ConfigError, ModelFileError, RunExistsError
from cifarlin.store.checkpoint import Snapshot, load_history, load_snapshot
from cifarlin.work.folder import CHECKPOINT, HISTORY, MODEL, RUN_FILES, check_run_folder
from cifarlin.work.runs import resume_point


@dataclass(frozen=True)
class Held:
    """The run files in a folder and what they say."""

    out: Path
    files: tuple[str, ...] = ()  # the run files present (model.h5, checkpoint.h5, history.h5)
    config: TrainConfig | None = None  # the run's: its history's, else its checkpoint's, else its model's
    status: str = ""  # its history's: 'complete', 'interrupted', 'diverged' ('' without a readable one)
    epoch: int = 0  # the epochs that file holds
    damaged: str | None = None  # why none of its files could be read

    @property
    def complete(self) -> bool:
        """A complete run: its history says so, and its model and checkpoint are there."""
        return self.status == "complete" and set(RUN_FILES) <= set(self.files)

    @property
    def resumable(self) -> bool:
        """A run stopped part-way that its checkpoint continues (a diverged one would diverge again)."""
        return CHECKPOINT in self.files and not self.complete and self.status != "diverged"


def held_run(out: Path) -> Held:
    """What the folder ``out`` holds (reads its history, else its checkpoint, else its model)."""
    files = tuple(name for name in RUN_FILES if (out / name).exists())
    why = None
    for name in (HISTORY, CHECKPOINT, MODEL):
        if name not in files:
            continue
        try:
            if name == HISTORY:
                h = load_history(out / HISTORY)
                return Held(out, files, h.config, h.status, len(h.history))
            snap = load_snapshot(out / name, kinds=("checkpoint",) if name == CHECKPOINT else ("model",))
        except ModelFileError as e:
            why = why or str(e)
            continue
        return Held(out, files, snap.config, "", snap.kept_epoch or snap.state.epoch)
    return Held(out, files, damaged=why)


def _shown(value: Any) -> str:
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def differences(there: TrainConfig, asked: TrainConfig) -> list[str]:
    """The settings in which the run ``there`` is not the run ``asked``, each as
    ``name=VALUE there, VALUE asked`` (a switch: ``name=True there, not asked``; an unset value:
    ``name=VALUE there, none asked``). The start model's checksum is left out (see
    :func:`cifarlin.plans.experiments.plan_runs`), and a lambda that a ridge solver chooses is no setting."""
    a, b = there.to_dict(), asked.to_dict()
    found = []
    for name in a:
        x, y = a[name], b[name]
        if name == "init_checksum" or (name == "lam" and there.choose_lam and asked.choose_lam) or x == y:
            continue
        if name == "choose_lam":
            found.append("lam=chosen there, " + (f"{_shown(asked.lam)} asked" if x else "not asked"))
        elif isinstance(x, bool):
            found.append(f"{name}=True there, not asked" if x else f"{name}=True asked, not there")
        elif x is None:
            found.append(f"{name}={_shown(y)} asked, none there")
        elif y is None:
            found.append(f"{name}={_shown(x)} there, none asked")
        else:
            found.append(f"{name}={_shown(x)} there, {_shown(y)} asked")
    return found


def refusal(held: Held, asked: TrainConfig, given: Collection[str], several: bool) -> RunExistsError:
    """Why the folder of ``held`` cannot take the run ``asked`` (``given``: the fields the caller
    named, which a resumed run must agree with), and the ways on: resume, overwrite, another
    folder. ``several``: the folder is one of a plan's several (``train --setting all``)."""
    out = held.out
    overwrite = (
        "overwrite=True trains every run of the command again" if several else "overwrite=True replaces it"
    )
    elsewhere = f"or out=DIR trains {'them' if several else 'this one'} in another folder"
    if held.config is None:
        why = f" that cannot be read ({held.damaged})" if held.damaged else ""
        return RunExistsError(
            f"{out} already holds a run ({', '.join(held.files)}){why}: {overwrite}, {elsewhere}"
        )
    diffs = differences(held.config, asked)
    names = {d.split("=", 1)[0] for d in diffs}
    if not diffs and held.status == "diverged":
        return RunExistsError(
            f"{out} already holds a run of these settings that diverged after epoch {held.epoch}: "
            f"{overwrite} (with a smaller eta), {elsewhere}"
        )
    if not diffs and not held.resumable:
        return RunExistsError(
            f"{out} already holds a run of these settings ({', '.join(held.files)}) but no checkpoint to "
            f"continue: {overwrite}, {elsewhere}"
        )
    fixes = [overwrite, elsewhere]
    epochs_given = "epochs" in given and "epochs" in names
    if (
        CHECKPOINT in held.files
        and held.status != "diverged"
        and not (names - {"epochs"}) & set(given)
        and (asked.epochs > held.epoch if epochs_given else not held.complete)
    ):
        keeps = " with its own settings" if names - {"epochs"} or (names and not epochs_given) else ""
        on = f"trains it on to {asked.epochs} epochs" if epochs_given else "continues it"
        fixes.insert(0, f"resume=True {on}{keeps}")
    if not diffs:
        what = f"a run of these settings, stopped after epoch {held.epoch} of {held.config.epochs}"
    else:
        what = f"a run with other settings ({'; '.join(diffs)})"
    return RunExistsError(f"{out} already holds {what}: {', '.join(fixes)}")


@dataclass
class PlannedRun:
    """One run of a plan: its configuration, its folder, and the checkpoint it continues."""

    config: TrainConfig
    out: Path
    start: Snapshot | None = None
    reuse: bool = False  # a complete run of this configuration is in the folder: nothing to train
    # a run of a plan of several that is not trained, and why: it diverged when it was trained (a
    # smaller eta is the way on), or its files cannot be read (training it again is)
    problem: str | None = None
    diverged: bool = False

    @property
    def first_epoch(self) -> int:
        """Epochs already done (0 for a new run)."""
        return self.start.state.epoch if self.start is not None else 0

    @property
    def trains(self) -> bool:
        return not self.reuse and self.problem is None


def resumed(
    c: TrainConfig, o: Path, requested: dict[str, Any], several: bool, notice: Callable[[str], None]
) -> PlannedRun:
    """The run in ``o`` continued from its checkpoint (``requested`` must agree with it)."""
    try:
        c, start = resume_point(o, requested)
    except ModelFileError as e:
        if not several:
            raise
        return PlannedRun(c, o, problem=str(e))
    if several and (held := held_run(o)).status == "diverged":  # resumed, it would diverge again
        return PlannedRun(c, o, start, problem=_diverged_before(held, c), diverged=True)
    done = is_complete(c, start.state) and (o / MODEL).is_file() and complete_config(o) == c
    if done:
        notice(f"{o} is complete ({start.state.epoch} epochs): nothing to resume, nothing changed")
    return PlannedRun(c, o, start, reuse=done)


def in_folder(
    c: TrainConfig, o: Path, requested: dict[str, Any], several: bool, notice: Callable[[str], None]
) -> PlannedRun:
    """The run ``c`` in ``o`` without resume or overwrite: new, reused, resumed (``several``) or refused."""
    held = held_run(o) if o.is_dir() else None
    if held is None or not held.files:
        check_run_folder(o, resume=False, overwrite=False)  # a file in the folder's place
        return PlannedRun(c, o)
    if held.config is not None and _other_start(held.config, c):
        raise RunExistsError(
            f"{o} holds this run started from other weights than {c.init} holds now (the start "
            "model changed since): --overwrite trains it again from them, or --out DIR"
        )
    if held.complete and held.config is not None and same_run(held.config, c):
        notice(f"{o} holds a complete run with these parameters: reusing it (--overwrite trains it again)")
        return PlannedRun(held.config, o, reuse=True)
    if several and held.config is None:
        return PlannedRun(c, o, problem=held.damaged or f"{o}: its run files cannot be read")
    if several and held.config is not None and same_run(held.config, c):
        if held.status == "diverged":
            return PlannedRun(c, o, problem=_diverged_before(held, c), diverged=True)
        if held.resumable:
            try:
                c2, start = resume_point(o, {"epochs": c.epochs})
            except ModelFileError as e:
                return PlannedRun(c, o, problem=str(e))
            except ConfigError:
                c2, start = None, None  # not this run after all: refused below
            if c2 == c and start is not None:
                notice(f"{o} holds this run, stopped after epoch {start.state.epoch}: resuming it")
                return PlannedRun(c, o, start)
    raise refusal(held, c, requested, several)


def _diverged_before(held: Held, c: TrainConfig) -> str:
    return (
        f"{held.out} diverged after epoch {held.epoch} when it was trained (eta={c.eta!r}, "
        f"lam={c.lam!r}); not trained again"
    )


def _other_start(done: TrainConfig, requested: TrainConfig) -> bool:
    """Whether the finished run ``done`` is ``requested`` but for the start model's weights."""
    return (
        requested.init is not None
        and done.init_checksum != requested.init_checksum
        and same_run(done, requested.replace(init_checksum=done.init_checksum))
    )


def same_run(done: TrainConfig, requested: TrainConfig) -> bool:
    """Whether a finished run of config ``done`` is the run ``requested`` (whose lambda, when the
    solver chooses it, is whatever the finished run chose)."""
    return done == (requested.replace(lam=done.lam) if requested.choose_lam else requested)


def complete_config(out: Path) -> TrainConfig | None:
    """The configuration of the complete run in ``out`` (its history says complete and its model
    is there), or None."""
    held = held_run(out)
    return held.config if held.complete else None
