"""``cifarlin sweep``: options -> :class:`cifarlin.search.plan.SweepSpec` ->
:func:`cifarlin.search.sweep.run_sweep` -> a live table of trials, the results and the best trial.

The options of the swept fields are made from :data:`cifarlin.search.space.SWEEPABLE`: a field added
there gets its option here (``batch_size`` -> ``--batch-size``) without a change to this file.
"""

from __future__ import annotations

import inspect
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group
from rich.constrain import Constrain

from cifarlin.cli.common import (
    DataDirOpt,
    JsonOpt,
    NoDownloadOpt,
    QuietOpt,
    ensure_data,
    env,
    flag,
    flag_names,
    in_flags,
    option,
)
from cifarlin.cli.display import clean, console, emit_json, plain, print_table, results, say
from cifarlin.cli.sweep_table import fmt, params_text, status_table, trial_lines
from cifarlin.core.config import TrainConfig, defaults
from cifarlin.errors import CifarlinError, ConfigError, Interrupted
from cifarlin.search.plan import MAX_TRIALS, RETRIES
from cifarlin.search.space import SWEEPABLE, kind, separator, show

if TYPE_CHECKING:
    from cifarlin.search.plan import TrialResult
    from cifarlin.search.results import SweepResult

DEFAULTS = defaults(TrainConfig)  # without making one: validating imports numpy


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_option(name: str) -> inspect.Parameter:
    forms = f"a list ({separator(name)}-separated)" + (
        " or a log-uniform range LOW..HIGH" if kind(name).ranged else ""
    )
    opt = option(
        flag_of(name),
        metavar="LIST",
        help=f"{SWEEPABLE[name].help}: {forms}.",
        default=show(name, getattr(DEFAULTS, name)),
    )
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, opt]
    )


def _swept(result_or_spec: Any) -> list[str]:
    """The fields that vary in the sweep (shown in the tables)."""
    spec = getattr(result_or_spec, "spec", result_or_spec)
    return [a.field for a in spec.axes if a.is_range or len(a.values) > 1] or ["lam", "eta"]


class _Display:
    """A live table of the trials on a terminal, a line per started or finished trial otherwise,
    nothing but the end with --quiet. Messages come in the library's words (``batch_size=50``) and
    are shown in this command line's (``--batch-size 50``) by ``words``."""

    def __init__(self, c: Console, quiet: bool, swept: list[str], words: Callable[[str], str] = str):
        self.c, self.quiet, self.swept, self.words = c, quiet, swept, words
        self.trials: dict[str, TrialResult] = {}
        self.live: Any = None

    def __enter__(self) -> _Display:
        if not self.quiet and not plain():
            from rich.live import Live

            self.live = Live(console=self.c, transient=True, refresh_per_second=4)
            self.live.start()
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        if self.live is not None:
            stopped = kind is not None and issubclass(kind, (KeyboardInterrupt, Interrupted))
            if stopped or (kind is not None and any(t.status != "queued" for t in self.trials.values())):
                # the sweep ends without its final table: the live one stays, as it last was
                self.live.update(self._render(), refresh=True)
                self.live.transient = False
            self.live.stop()
            self.live = None

    def notice(self, message: str) -> None:
        if self.quiet:
            return
        if self.live is not None:
            self.live.console.print(clean(self.words(message)), soft_wrap=True)
        else:
            say(self.c, self.words(message))

    def on_trial(self, event: str, r: TrialResult) -> None:
        self.trials[r.trial.name] = r
        if self.live is not None:
            self.live.update(self._render())
        elif not self.quiet and event in ("started", "restarted", "finished", "skipped"):
            say(self.c, self.words(self._line(event, r)))

    def _best(self) -> TrialResult | None:
        from cifarlin.search.plan import best_of

        return best_of(list(self.trials.values()))

    def _line(self, event: str, r: TrialResult) -> str:
        what = f"{r.trial.name} ({params_text(r, self.swept)})"
        if event == "started":
            resumed = f", from epoch {r.resumed_from_epoch}" if r.resumed_from_epoch else ""
            return f"{what}: started on {r.worker or 'a worker'}{resumed}"
        if event == "restarted":
            return f"{what}: its worker died; started again on {r.worker or 'another worker'}"
        if event == "skipped":
            acc = fmt(r.val_accuracy) or "-"
            return f"{what}: {r.status} in an earlier run (val acc {acc}), not run again"
        if r.status == "done":
            line = (
                f"{what}: done, val acc {fmt(r.val_accuracy)} (best {fmt(r.best_val_accuracy)} "
                f"at epoch {r.best_epoch}), {r.seconds or 0:.1f} s"
            )
        else:
            line = f"{what}: {r.status}: {r.error}"
        best = self._best()
        done = sum(t.finished for t in self.trials.values())
        tail = f"; best so far {best.trial.name} {fmt(best.val_accuracy)}" if best else ""
        return f"[{done}/{len(self.trials)}] {line}{tail}"

    def _render(self) -> Any:
        trials = list(self.trials.values())
        shown_counts = ("running", "done", "diverged", "failed", "interrupted")
        counts = {s: sum(t.status == s for t in trials) for s in shown_counts}
        best = self._best()
        head = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "starting"
        head = f"{len(trials)} trials: {head}"
        if best is not None:
            params = params_text(best, self.swept)
            head += f"; best so far {best.trial.name} ({params}): val acc {fmt(best.val_accuracy)}"
        rows = len(trials)
        limit = max(5, shutil.get_terminal_size((120, 30)).lines - 6)
        shown = trials
        if rows > limit:  # the running ones, then the best finished, then the queued
            order = {"running": 0, "done": 1, "diverged": 2, "failed": 2, "queued": 3, "interrupted": 3}
            shown = sorted(trials, key=lambda t: (order[t.status], -(t.val_accuracy or 0)))[:limit]
            shown.sort(key=lambda t: (t.trial.round, t.trial.index))
        # two columns to spare: the cursor waits after the last row, and the terminal's echo of a
        # Ctrl-C (^C) must not wrap there, or the display's next refresh lands a line too low
        width = self.c.width - 2
        t, fits = status_table(self.c, shown, self.swept, best, width)
        if not fits:  # a live display cuts what is wider than the terminal: a line per trial
            t = Constrain(trial_lines(shown, self.swept, best, self.words), width)
        return Group(clean(self.words(head)), t)


def _train_command(r: TrialResult) -> str | None:
    """The ``cifarlin train`` command that trains this trial alone, when train has every option."""
    from cifarlin.cli.train import train

    known = set(inspect.signature(train).parameters)
    words = ["cifarlin", "train"]
    for name, value in r.trial.params().items():
        default = getattr(DEFAULTS, name)
        if value == (list(default) if isinstance(default, tuple) else default):
            continue
        if name not in known:
            return None
        if name == "shuffle":
            words.append("--shuffle" if value else "--no-shuffle")
        else:
            words += [flag_of(name), show(name, getattr(r.trial.config, name))]
    return shlex.join(words)


def _print_result(c: Console, result: SweepResult, quiet: bool, words: Callable[[str], str] = str) -> None:
    swept = _swept(result)
    best = result.best
    if not quiet or len(result.results) <= 100:
        print_table(c, status_table(c, result.results, swept, best)[0])  # too wide: the terminal wraps it
    for r in result.results:
        if r.error and r.status in ("failed", "diverged", "interrupted"):
            say(c, words(f"{r.trial.name} {r.status}: {r.error}"))
    counts = ", ".join(f"{n} {s}" for s, n in result.counts().items() if n)
    say(c, f"{len(result.results)} trials ({counts}) in {result.out}")
    if best is not None:
        say(
            c,
            words(
                f"best trial (by the validation accuracy of its saved model): {best.trial.name} "
                f"({params_text(best, swept)}): validation accuracy {fmt(best.val_accuracy)} (highest "
                f"{fmt(best.best_val_accuracy)} at epoch {best.best_epoch}), in {best.run_dir}"
            ),
        )
        if result.test is not None:
            say(
                c,
                f"test accuracy of the best trial alone: {result.test.accuracy:.4f} (measured once, "
                "after the selection, which used validation accuracy only)",
            )
        if (cmd := _train_command(best)) is not None:
            say(c, f"the same run alone: {cmd} --out DIR")
    say(c, "wrote " + ", ".join(str(f) for f in result.files))


def _continue_command(given: dict[str, str], extra: list[tuple[str, Any]], out: Path) -> str:
    words = ["cifarlin", "sweep"]
    for name, text in given.items():
        words += [flag_of(name), text]
    for name, value in extra:
        if value is True:
            words.append(name)
        elif value is not None and value is not False:
            words += [name, str(value)]
    words += ["--out", str(out)]
    return shlex.join(words)


def sweep(
    ctx: typer.Context,
    trials: Annotated[
        int | None,
        option(
            "--trials",
            metavar="N",
            help=f"A random search of N trials (1 to {MAX_TRIALS}): ranges LOW..HIGH are drawn "
            "log-uniformly, lists uniformly. Without it, the lists make a grid.",
        ),
    ] = None,
    refine: Annotated[
        int,
        option(
            "--refine",
            metavar="R",
            help="Then R more trials (round 2) in a box narrowed around the best quarter of round 1.",
            default=0,
        ),
    ] = 0,
    sweep_seed: Annotated[
        int, option("--sweep-seed", metavar="SEED", help="Seed of the random search's draws.", default=0)
    ] = 0,
    out: Annotated[
        Path | None,
        option(
            "--out",
            "-o",
            metavar="DIR",
            help="Sweep folder: a run folder per trial, sweep.h5, results.csv, sweep.png. "
            "Default: a new outputs/sweep-DATE-TIME. The same command with the same --out continues it.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        option(
            "--workers",
            metavar="N",
            help="Worker processes of the local Dask cluster.",
            default="one per core, at most one per trial",
        ),
    ] = None,
    scheduler: Annotated[
        str | None,
        option(
            "--scheduler",
            metavar="ADDRESS",
            help="Run on the existing Dask cluster of this scheduler (tcp://HOST:PORT); its workers must "
            "see --data-dir and --out at the same paths.",
        ),
    ] = None,
    retries: Annotated[
        int,
        option(
            "--retries",
            metavar="N",
            help="Times a trial whose worker died is tried again, on the local cluster (an existing "
            "cluster uses its scheduler's distributed.scheduler.allowed-failures).",
            default=RETRIES,
        ),
    ] = RETRIES,
    no_plots: Annotated[bool, flag("--no-plots", help="Do not draw sweep.png.")] = False,
    data_dir: DataDirOpt = None,
    no_download: NoDownloadOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    **given: str | None,
) -> None:
    """Search hyperparameters: train a grid or a random sample of settings on a Dask cluster.

    Each trial is an ordinary run folder (evaluate and visualize read it); the best trial is the
    one whose saved model has the highest validation accuracy, and only its test accuracy is
    reported. The same command with the same --out skips finished trials and continues
    interrupted ones.

    **Example:** cifarlin sweep --lam 0,0.01,0.1,1 --eta 0.001,0.01 --epochs 10
    """
    from cifarlin.search.cluster import check_cluster
    from cifarlin.search.plan import SweepSpec, default_out, plan
    from cifarlin.search.results import RESULTS_FILE
    from cifarlin.search.space import parse_axis
    from cifarlin.search.sweep import run_sweep

    texts = {name: text for name, text in given.items() if text is not None}
    spec = SweepSpec(
        tuple(parse_axis(name, text) for name, text in texts.items()), trials, refine, sweep_seed
    )
    plan(spec)  # every configuration checked before anything is started
    check_cluster(scheduler, workers, retries)
    if not texts:
        raise ConfigError(
            "nothing to search: give the values to try, as lists or ranges, e.g. --lam 0,0.01,0.1 "
            "--eta 0.001,0.01 (every option: 'cifarlin sweep --help'; one setting: 'cifarlin train')"
        )
    out = out.expanduser() if out is not None else default_out()
    c = console()
    extra = [
        ("--trials", trials),
        ("--refine", refine or None),
        ("--sweep-seed", sweep_seed or None),
        ("--scheduler", scheduler),
        ("--workers", workers),
        ("--retries", retries if retries != RETRIES else None),
        ("--no-plots", no_plots),
        ("--data-dir", data_dir),
    ]
    hint = _continue_command(texts, extra, out)
    if scheduler is not None:
        from cifarlin.data import cifar as data

        root = env(ctx).data_root(data_dir)
        found = data.locate(root) if root.is_dir() else None
        data_folder = found.folder if found is not None else root
    else:
        data_folder = ensure_data(ctx, data_dir, no_download, quiet).folder
    names = flag_names(ctx.find_root().command)

    def words(text: str) -> str:
        """The library's words (``batch_size=50,100``) in this command line's (``--batch-size 50,100``)."""
        return in_flags(text, names)

    if not quiet:
        say(c, words(f"sweep: {spec.describe()} -> {out}"))
        say(c, f"data: {data_folder}")
    with _Display(c, quiet, _swept(spec), words) as display:
        result = run_sweep(
            spec,
            out,
            data_folder,
            scheduler=scheduler,
            workers=workers,
            retries=retries,
            figures=not no_plots,
            resume_hint=hint,
            feature_cache=env(ctx).feature_cache,
            on_notice=display.notice,
            on_trial=display.on_trial,
        )
    _print_result(results(json_out), result, quiet, words)
    if json_out:
        emit_json(result.document())
    if result.best is None:
        counts = ", ".join(f"{n} {s}" for s, n in result.counts().items() if n)
        raise CifarlinError(f"no trial finished ({counts}); the errors are in {out / RESULTS_FILE}")


# The swept fields' options, made from the library's table, come first in --help.
_signature = inspect.signature(sweep, eval_str=True)
_fixed = [p for p in _signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
sweep.__signature__ = _signature.replace(  # type: ignore[attr-defined]
    parameters=[
        _fixed[0],
        *(_field_option(name) for name in SWEEPABLE),
        *(p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in _fixed[1:]),
    ]
)
