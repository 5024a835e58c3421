"""The ``cifarlin`` command line: parse, call the library, format. Only this module imports typer
and rich.

Conventions, the same for every command: results go to stdout (with ``--json``, exactly one JSON
object); progress, tables and messages go to stderr. Exit codes: 0 success, 1 the job failed,
2 a usage error, 130 interrupted. Errors are one line; ``CIFARLIN_DEBUG=1`` shows tracebacks of
unexpected ones.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

try:
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - Typer before 0.29 used click itself
    from click.exceptions import ClickException

from cifarlin import __version__
from cifarlin.errors import CifarlinError, ConfigError, WriteError

# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def _plain() -> bool:
    """No colours, no live display: NO_COLOR is set or stderr is not a terminal."""
    return bool(os.environ.get("NO_COLOR")) or not sys.stderr.isatty()


def console() -> Console:
    """The stderr console for humans; plain text when :func:`_plain`, 100+ columns in logs."""
    plain = _plain()
    width = None
    if not sys.stderr.isatty() and not os.environ.get("COLUMNS"):
        width = 120  # CI logs: wide enough that no table wraps
    return Console(stderr=True, highlight=False, color_system=None if plain else "auto", width=width)


def _table() -> Table:
    """A compact table: no vertical rules, so ten numeric columns fit in 80 terminal columns."""
    from rich import box

    return Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)


def print_table(c: Console, t: Table) -> None:
    """A table at its natural width even in a narrow terminal: numbers are never cut short."""
    natural = c.measure(t, options=c.options.update(max_width=1000)).maximum
    width = c.width
    c.width = max(width, natural)  # the terminal wraps an over-long line; rich would cut numbers
    try:
        c.print(t, crop=False)
    finally:
        c.width = width


def emit_json(obj: Any) -> None:
    """One JSON object on one line of stdout (NaN and infinities, which JSON lacks, as null)."""
    try:
        sys.stdout.write(json.dumps(_finite(obj), allow_nan=False, default=_json_default) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        raise CifarlinError(f"cannot write the result to stdout ({e.strerror or e})") from None


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _error(message: str) -> None:
    """One line on stderr, whatever the message holds."""
    line = re.sub(r"\s*\n\s*", " ", message.strip())
    console().print(f"[bold red]Error:[/] {escape(line)}", soft_wrap=True)


class CifarlinGroup(TyperGroup):
    """Turns every failure into one line on stderr and the documented exit code."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:  # no command: a usage error, help on stderr
            with redirect_stdout(sys.stderr):
                text = ctx.get_help()  # Typer's rich help prints itself and returns ""
                if text:
                    print(text)
            ctx.exit(2)
        return super().parse_args(ctx, args)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        if os.environ.get("NO_COLOR"):  # Typer's own help console honours colour only, not NO_COLOR
            from typer import rich_utils

            rich_utils.COLOR_SYSTEM = None
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except ClickException as e:
            msg = e.format_message().replace("Value error, ", "")
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            _error(msg.replace("\n", " ") + hint)
            sys.exit(e.exit_code)
        except CifarlinError as e:
            _error(str(e))
            sys.exit(e.exit_code)
        except (KeyboardInterrupt, typer.Abort):
            _error("interrupted")
            sys.exit(130)
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (e.g. `| head`): not an error of ours
            sys.exit(1)
        except Exception as e:
            if os.environ.get("CIFARLIN_DEBUG"):
                raise
            _error(
                f"unexpected {type(e).__name__}: {e} (this is a bug in cifarlin: run again with "
                "CIFARLIN_DEBUG=1 to see the full traceback, and please report it)"
            )
            sys.exit(1)
        if rv == 130:  # Typer turns a Ctrl-C that no command handled into exit code 130
            _error("interrupted; nothing was left half-written (files are written whole or not at all)")
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="cifarlin",
    cls=CifarlinGroup,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"max_content_width": 100},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"cifarlin {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train, check and understand a linear softmax classifier on CIFAR-10.

    Start with `cifarlin train --setting 2`: it fetches CIFAR-10 when it is missing.
    Exit codes: 0 success, 1 the job failed, 2 a usage error, 130 interrupted.
    """


# Options shared by several commands.
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", metavar="DIR",
        help="Folder holding cifar-10-batches-py/ (or that folder itself). "
             "Default: $CIFARLIN_DATA_DIR, else $XDG_CACHE_HOME/cifarlin (~/.cache/cifarlin).",
    ),
]
NoDownloadOpt = Annotated[
    bool, typer.Option("--no-download", help="Fail instead of downloading CIFAR-10 when it is missing.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress; print only the final result.")]


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


@contextmanager
def download_progress(quiet: bool) -> Iterator[Callable[[int, int | None], None] | None]:
    """A progress callback: a rich bar on a terminal, a plain line every 5 s otherwise."""
    if quiet:
        yield None
        return
    c = console()
    if not _plain():
        from rich.progress import (BarColumn, DownloadColumn, Progress, TimeRemainingColumn,
                                   TransferSpeedColumn)

        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), TimeRemainingColumn(), console=c, transient=True) as bar:
            task = bar.add_task("download", total=None)
            started = [False]

            def update(done: int, total: int | None) -> None:
                if not started[0]:  # a resumed download starts part-way: no speed spike
                    started[0] = True
                    bar.reset(task, completed=done, total=total)
                bar.update(task, completed=done, total=total)

            yield update
        return
    base: list[float] = []  # (time, bytes) of the first report: a resumed download starts part-way
    last = [0.0]

    def plain(done: int, total: int | None) -> None:
        now = time.monotonic()
        if not base:
            base.extend((now, done))
        if now - last[0] >= 5 or (total is not None and done >= total):
            last[0] = now
            rate = (done - base[1]) / max(now - base[0], 1e-9)
            of = f" of {_mb(total)} ({100 * done / total:.0f}%)" if total else ""
            c.print(f"downloaded {_mb(done)}{of}, {_mb(rate)}/s", soft_wrap=True)

    yield plain


def _ensure_data(data_dir: Path | None, no_download: bool, quiet: bool) -> Any:
    from cifarlin import download

    c = console()
    with download_progress(quiet) as progress:
        return download.ensure(
            data_dir, download=not no_download, on_progress=progress,
            on_notice=None if quiet else (lambda m: c.print(escape(m), soft_wrap=True)),
        )


# ---------------------------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------------------------


@app.command()
def download(
    data_dir: DataDirOpt = None,
    format: Annotated[
        Literal["python", "binary"], typer.Option("--format", help="Which official version to fetch.")
    ] = "python",
    url: Annotated[
        str | None, typer.Option("--url", metavar="URL", help="Fetch from a mirror instead (default: $CIFARLIN_URL, else the official host).")
    ] = None,
    md5: Annotated[
        str | None, typer.Option("--md5", metavar="HEX", help="Expected MD5 of the archive, when it is not the official one.")
    ] = None,
    from_file: Annotated[
        Path | None, typer.Option("--from-file", metavar="PATH", help="Install an archive you fetched by other means (offline route).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the dataset even when it is present.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", metavar="SECONDS", help="Give up on a connect or a read after this long.")] = 30.0,
    retries: Annotated[int, typer.Option("--retries", help="Attempts after a broken connection (each resumes where it broke).")] = 4,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fetch CIFAR-10, verify its MD5 and unpack it safely.

    Streams with a progress bar, retries and resumes broken downloads, checks the archive's MD5
    before extracting, and refuses archive members that are links, devices or point outside the
    target. When the data are already there it says so and downloads nothing.

    **Example:** cifarlin download --data-dir ~/data/cifar
    """
    from cifarlin import download as dl

    if not timeout > 0:
        raise ConfigError(f"--timeout {timeout!r}: must be > 0")
    if retries < 0:
        raise ConfigError(f"--retries {retries!r}: must be >= 0")
    c = console()
    with download_progress(quiet) as progress:
        result = dl.install(
            data_dir, fmt=format, url=url, md5=md5, from_file=from_file, force=force,
            timeout=timeout, retries=retries, on_progress=progress, on_notice=None if quiet else (lambda m: c.print(escape(m), soft_wrap=True)),
        )
    official = {True: "its files match the official release's checksums",
                False: "its files differ from the official release's checksums (a copy of another origin)",
                None: "no official per-file checksums are known for this version"}[result.official_files]
    done = {"downloaded": f"downloaded and unpacked ({result.bytes / 1e6:.1f} MB, MD5 {result.md5} verified)",
            "installed": f"installed from {result.source} (MD5 {result.md5} verified)",
            "already present": "already present, nothing downloaded"}[result.status]
    c.print(f"CIFAR-10 ({result.format} version) in {escape(result.path)}: {escape(done)}; {official}", soft_wrap=True)
    if json_out:
        emit_json(result.to_dict())


# ---------------------------------------------------------------------------------------------
# gradcheck
# ---------------------------------------------------------------------------------------------


def _sci(x: float) -> str:
    return f"{x:.2e}"


@app.command()
def gradcheck(
    n: Annotated[int, typer.Option("--n", help="Number of images (the first N of the training set).")] = 20,
    dims: Annotated[int, typer.Option("--dims", metavar="D", help="Check only the first D inputs.")] = 3072,
    lam: Annotated[float, typer.Option("--lam", help="Penalty weight lambda.")] = 0.0,
    h: Annotated[
        float | None, typer.Option("--h", help="Step. Default: 1e-6 (centred), 1e-20 (complex).", show_default=False)
    ] = None,
    method: Annotated[
        Literal["centred", "complex"], typer.Option("--method", help="Centred differences or the complex step.")
    ] = "centred",
    tol: Annotated[float, typer.Option("--tol", help="Relative tolerance.")] = 1e-6,
    atol: Annotated[float, typer.Option("--atol", help="Absolute tolerance.")] = 1e-8,
    seed: Annotated[int, typer.Option("--seed", help="Seed of W, b (and of --random inputs).")] = 0,
    random: Annotated[bool, typer.Option("--random", help="Random inputs and labels instead of images: needs no data.")] = False,
    data_dir: DataDirOpt = None,
    no_download: NoDownloadOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Compare analytic gradients with numerical ones, for every entry of W and b.

    Uses the first N training images, normalised as in training, and W, b initialised as in
    training. An entry passes when |ga - gn| <= atol + tol * (|ga| + |gn|). Exit code 0 when
    every entry passes, 1 otherwise.

    **Example:** cifarlin gradcheck --n 20 --lam 0.1 --method complex
    """
    from cifarlin import data
    from cifarlin import gradcheck as gc

    cfg = gc.GradcheckConfig(n=n, dims=dims, lam=lam, h=h, method=method, tol=tol, atol=atol, seed=seed)
    if random:
        W, b, X, y = gc.random_problem(cfg)
        source = "random"
    else:
        src = _ensure_data(data_dir, no_download, quiet)
        X, y, _ = data.training_sample(src, data.SplitSpec(), cfg.n)
        X = X[:, : cfg.dims]
        W, b, _ = gc.initial_params(cfg)
        source = str(src.folder)
    report = gc.check(W, b, X, y, cfg, source)
    c = console()
    verdict = "[bold green]PASS[/]" if report.passed else "[bold red]FAIL[/]"
    if not quiet:
        c.print(f"gradient check: {cfg.method}, h={cfg.step:g}, lambda={cfg.lam:g}, n={cfg.n}, "
                f"dims={cfg.dims}, data: {escape(source)}", soft_wrap=True)
        t = _table()
        for col in ("param", "max rel", "p99 rel", "mean rel", "max abs", "checked", "failing", "verdict"):
            t.add_column(col, justify="left" if col == "param" else "right", no_wrap=True)
        for p in report.params:
            t.add_row(p.name, _sci(p.max_rel), _sci(p.p99_rel), _sci(p.mean_rel), _sci(p.max_abs),
                      str(p.checked), str(p.failing), "[green]PASS[/]" if p.passed else "[red]FAIL[/]")
        print_table(c, t)
    c.print(f"{verdict}: |ga - gn| <= {cfg.atol:g} + {cfg.tol:g} (|ga| + |gn|) for "
            f"{sum(p.checked - p.failing for p in report.params)} of {sum(p.checked for p in report.params)} "
            f"entries ({report.seconds:.3f} s)", soft_wrap=True)
    if json_out:
        emit_json(report.to_dict())
    raise typer.Exit(0 if report.passed else 1)


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------

HEADER = f"{'epoch':>5}  {'train cost':>10}  {'val cost':>10}  {'train acc':>9}  {'val acc':>9}  {'seconds':>7}"


def _v(x: float) -> str:
    """A cost or loss: four decimals, or scientific notation when it is huge."""
    return f"{x:.4f}" if abs(x) < 1e6 else f"{x:.4e}"


def _epoch_row(epoch: int, h: dict[str, float]) -> str:
    return (f"{epoch:>5}  {_v(h['train_cost']):>10}  {_v(h['val_cost']):>10}  "
            f"{h['train_acc']:>9.4f}  {h['val_acc']:>9.4f}  {h['seconds']:>7.2f}")


@contextmanager
def train_display(c: Console, quiet: bool, epochs: int, first: int, n_train: int, batch: int) -> Iterator[tuple[Any, Any]]:
    """(on_epoch, on_batch) callbacks: a live bar and table rows on a terminal, a plain line per
    epoch otherwise, nothing with --quiet."""
    if quiet:
        yield None, None
        return
    if _plain():
        def plain_epoch(st: Any) -> None:
            h = st.history.last()
            c.print(f"epoch {st.epoch}/{epochs}: train cost {_v(h['train_cost'])} acc {h['train_acc']:.4f}, "
                    f"val cost {_v(h['val_cost'])} acc {h['val_acc']:.4f}, {h['seconds']:.2f} s", soft_wrap=True)

        yield plain_epoch, None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    c.print(f"[bold]{HEADER}[/]")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=c, transient=True) as bar:
        ep = bar.add_task("epochs ", total=epochs, completed=first, rate="")
        bt = bar.add_task("batches", total=-(-n_train // batch), rate="")
        t0 = [time.perf_counter()]

        def on_batch(epoch: int, j: int, n: int) -> None:
            if j == 1:
                t0[0] = time.perf_counter()
            if j % 5 == 0 or j == n:
                rate = min(j * batch, n_train) / max(time.perf_counter() - t0[0], 1e-9)
                bar.update(bt, completed=j, total=n, rate=f"{rate:,.0f} img/s")

        def on_epoch(st: Any) -> None:
            bar.update(ep, completed=st.epoch)
            bar.console.print(_epoch_row(st.epoch, st.history.last()))

        yield on_epoch, on_batch


def _summary_table(s: dict[str, Any]) -> Table:
    t = _table()
    for col in ("set", "cost", "loss", "accuracy"):
        t.add_column(col, justify="left" if col == "set" else "right", no_wrap=True)
    for name in ("train", "val", "test"):
        m = s[name]
        t.add_row(name, _v(m["cost"]), _v(m["loss"]), f"{m['accuracy']:.4f}")
    return t


def _print_summary(c: Console, s: dict[str, Any]) -> None:
    c.print(f"[bold]{escape(s['run_dir'])}[/]: {s['epochs']} epochs", soft_wrap=True)
    print_table(c, _summary_table(s))
    ref = s["reference_test_accuracy"]
    if ref is None:
        ref_text = ""
    elif s["comparable_to_reference"]:
        ref_text = f"; the original work reports {ref:.4f} ({100 * (s['test']['accuracy'] - ref):+.2f} pt)"
    else:
        ref_text = f"; the original work reports {ref:.4f} for the unchanged setting (40 epochs, batch 100)"
    c.print(f"test accuracy {s['test']['accuracy']:.4f}{ref_text}; best validation accuracy "
            f"{s['best_val_accuracy']:.4f} at epoch {s['best_epoch']}; training loop "
            f"{s['seconds']['training']:.2f} s (and {s['seconds']['checkpoints']:.2f} s writing checkpoints)",
            soft_wrap=True)
    files = [s["files"]["model"], s["files"]["history"], s["files"]["checkpoint"], *s.get("figures", [])]
    c.print("wrote " + ", ".join(escape(f) for f in files), soft_wrap=True)


@app.command()
def train(
    setting: Annotated[
        Literal["1", "2", "3", "4", "all"] | None,
        typer.Option("--setting", help="A reference setting of the original work (40 epochs, batch 100), or all four."),
    ] = None,
    lam: Annotated[float | None, typer.Option("--lam", help="Penalty weight lambda. [default: 0]", show_default=False)] = None,
    eta: Annotated[float | None, typer.Option("--eta", help="Learning rate. [default: 0.001]", show_default=False)] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs. [default: 40]", show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per batch. [default: 100]", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the initial W, b (and of shuffling). [default: 0]", show_default=False)] = None,
    shuffle: Annotated[
        bool | None, typer.Option("--shuffle/--no-shuffle", help="Shuffle the batches each epoch. [default: no-shuffle]", show_default=False)
    ] = None,
    train_batches: Annotated[
        str | None, typer.Option("--train-batches", metavar="LIST", help="Training batches, e.g. 1-5 or 1,3. [default: 1]", show_default=False)
    ] = None,
    val_size: Annotated[
        int | None, typer.Option("--val-size", metavar="N", help="Validate on the last N training images instead of data_batch_2.")
    ] = None,
    dtype: Annotated[
        Literal["float32", "float64"] | None, typer.Option("--dtype", help="Precision of data and weights. [default: float32]", show_default=False)
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", metavar="DIR", help="Run folder. Default: outputs/setting-N, or a new outputs/run-DATE-TIME; with --setting all, the parent of setting-1..4.")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.h5.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run in --out.")] = False,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Do not draw the curves and the weight montage.")] = False,
    data_dir: DataDirOpt = None,
    no_download: NoDownloadOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train with mini-batch gradient descent; checkpoints and history go to HDF5.

    Writes model.h5, checkpoint.h5 (every epoch) and history.h5 into the run folder. Ctrl-C keeps
    the last checkpoint; --resume continues it exactly.

    **Example:** cifarlin train --setting 2
    """
    from cifarlin import data, runs
    from cifarlin.config import SETTINGS, TrainConfig
    from cifarlin.train import check_batch_size

    overrides: dict[str, Any] = {
        "lam": lam, "eta": eta, "epochs": epochs, "batch_size": batch_size, "seed": seed,
        "shuffle": shuffle, "val_size": val_size, "dtype": dtype,
        "train_batches": data.parse_batches(train_batches) if train_batches is not None else None,
    }
    given = {k: v for k, v in overrides.items() if v is not None}
    out = out.expanduser() if out is not None else None
    data_opt = f" --data-dir {data_dir}" if data_dir is not None else ""
    if setting == "all":
        plan = [TrainConfig.for_setting(s, **given) for s in SETTINGS]
        root = out or Path("outputs")
        outs = [runs.default_out(cfg, root) for cfg in plan]
        hint = f"cifarlin train --setting all --out {root} --resume{data_opt}"
    else:
        if resume and out is None and setting is None:
            raise ConfigError("--resume needs --out DIR (or --setting N) to find the run")
        cfg = TrainConfig.for_setting(int(setting), **given) if setting else TrainConfig(**given)
        plan, outs = [cfg], [out or runs.default_out(cfg)]
        hint = f"cifarlin train --out {outs[0]} --resume{data_opt}"
    starts: list[Any] = []
    for i, o in enumerate(outs):
        # with --setting all, --resume continues the runs that have a checkpoint and starts the rest
        resume_this = resume and (setting != "all" or (o / runs.CHECKPOINT).is_file())
        runs.check_folder(o, resume=resume_this, overwrite=overwrite)
        start = None
        if resume_this:
            requested = {**given, "setting": plan[i].setting} if setting else given
            plan[i], start = runs.resume_point(o, requested)
        starts.append(start)

    c = console()
    src = _ensure_data(data_dir, no_download, quiet)
    prepared_for: dict[tuple[Any, str], data.Prepared] = {}

    def prepared(cfg: TrainConfig) -> data.Prepared:
        key = (cfg.split, cfg.dtype)
        if key not in prepared_for:
            if not quiet:
                c.print(f"loading CIFAR-10 from {escape(str(src.folder))}: {cfg.split.describe()}", soft_wrap=True)
            prepared_for.clear()  # keep one copy of the data in memory
            prepared_for[key] = data.prepare(src, cfg.split, dtype=np.dtype(cfg.dtype))
        return prepared_for[key]

    summaries: list[dict[str, Any]] = []
    outcomes: list[tuple[Any, list[str]]] = []
    for cfg, o, start in zip(plan, outs, starts):
        first = start.state.epoch if start is not None else 0
        if not quiet:
            what = f"setting {cfg.setting}" if cfg.setting else "run"
            resumed = f", resuming after epoch {first}" if start is not None else ""
            c.print(f"[bold]{what}[/]: {cfg.describe()}{resumed} -> {escape(str(o))}", soft_wrap=True)
        p = prepared(cfg)
        check_batch_size(cfg, len(p.y["train"]))
        with train_display(c, quiet, cfg.epochs, first, len(p.y["train"]), cfg.batch_size) as (on_epoch, on_batch):
            outcome = runs.run(cfg, o, p, start=start, overwrite=overwrite, resume_hint=hint,
                               on_epoch=on_epoch, on_batch=on_batch)
        s = outcome.summary()
        if not no_plots:
            s["figures"] = [str(f) for f in _plots_after_training(o, outcome, p.class_names)]
        outcomes.append((outcome, p.class_names))
        summaries.append(s)
        _print_summary(c, s)
        if json_out:
            emit_json(s)
    if setting == "all":
        from cifarlin.files import write_text

        root = out or Path("outputs")
        md = runs.summary_markdown(summaries, str(src.folder))
        write_text(root / "summary.md", md)
        write_text(root / "summary.json", json.dumps(summaries, indent=2) + "\n")
        wrote = [root / "summary.md", root / "summary.json"]
        if not no_plots:
            from cifarlin import plots

            runs_ = [(o.config, o.state.history, o.state.W) for o, _ in outcomes]
            wrote.append(plots.save(plots.comparison(runs_, outcomes[0][1]), root / "settings.png"))
        if not quiet:
            c.print(md, soft_wrap=True)
        c.print("wrote " + ", ".join(escape(str(f)) for f in wrote), soft_wrap=True)


def _plots_after_training(run_dir: Path, outcome: Any, class_names: list[str]) -> list[Path]:
    """curves.png and montage.png into the run folder."""
    from cifarlin import plots

    plots.use_backend()
    cfg, st = outcome.config, outcome.state
    return [
        plots.save(plots.curves(st.history, cfg), run_dir / "curves.png"),
        plots.save(plots.montage(st.W, class_names, f"weights as images, {plots.run_title(cfg)}"), run_dir / "montage.png"),
    ]


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------




@app.command()
def evaluate(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL", help="A model.h5 (or its run folder).")],
    split: Annotated[Literal["test", "val", "train"], typer.Option("--split", help="Which images.")] = "test",
    data_dir: DataDirOpt = None,
    no_download: NoDownloadOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Accuracy, per-class accuracy and confusion matrix of a saved model.

    The model file carries the normalisation (mean, std) and the data split it was trained with,
    so it evaluates raw images alone.

    **Example:** cifarlin evaluate outputs/setting-2/model.h5 --split test
    """
    from cifarlin.checkpoint import load_snapshot
    from cifarlin.runs import CHECKPOINT, evaluate_split

    path, _, _ = _run_files(model_path.expanduser())
    if path is None:
        raise CifarlinError(f"{model_path}: no model.h5 or checkpoint.h5 in this folder")
    snap = load_snapshot(path)
    c = console()
    if path.name == CHECKPOINT and not quiet:
        c.print(f"note: {model_path} has no model.h5 (unfinished run); evaluating {path} "
                f"(epoch {snap.state.epoch})", soft_wrap=True)
    src = _ensure_data(data_dir, no_download, quiet)
    ev = evaluate_split(snap, src, split)
    m, cm, names = ev.metrics, ev.confusion, snap.class_names
    result = {
        "model": str(path), "split": split, "images": int(len(ev.labels)), "data_dir": str(src.folder),
        "cost": m.cost, "loss": m.loss, "accuracy": m.accuracy,
        "per_class_accuracy": {n: float(a) for n, a in zip(names, ev.per_class_accuracy)},
        "class_names": names, "confusion_matrix": cm.tolist(),
        "same_data_as_training": not ev.changed_files,
    }
    if ev.changed_files:
        c.print(f"note: {escape(str(src.folder / ev.changed_files[0]))} differs from the file the model was "
                "trained on", soft_wrap=True)
    if not quiet:
        c.print(f"per-class accuracy ({split}, {len(ev.labels)} images):", soft_wrap=True)
        t = _table()
        t.add_column("class", no_wrap=True)
        t.add_column("accuracy", justify="right", no_wrap=True)
        t.add_column("images", justify="right", no_wrap=True)
        for n, a, k in zip(names, ev.per_class_accuracy, cm.sum(axis=1)):
            t.add_row(n, f"{a:.4f}", str(k))
        print_table(c, t)
        c.print("confusion matrix (rows: true class, columns: predicted class):", soft_wrap=True)
        t = _table()
        t.add_column("", no_wrap=True)
        for n in names:
            t.add_column(n[:5], justify="right", no_wrap=True)
        for n, row in zip(names, cm):
            t.add_row(n, *(str(v) for v in row))
        print_table(c, t)
    c.print(f"{escape(str(path))} on {split}: accuracy {m.accuracy:.4f}, cost {_v(m.cost)}, loss {_v(m.loss)}", soft_wrap=True)
    if json_out:
        emit_json(result)


# ---------------------------------------------------------------------------------------------
# visualize
# ---------------------------------------------------------------------------------------------


def _run_files(target: Path) -> tuple[Path | None, Path | None, Path]:
    """(model or checkpoint file, history file, folder) for a run folder or a model file."""
    from cifarlin.runs import CHECKPOINT, HISTORY, MODEL

    if target.is_dir():
        model_file = next((target / f for f in (MODEL, CHECKPOINT) if (target / f).is_file()), None)
        history = target / HISTORY
        return model_file, history if history.is_file() else None, target
    if not target.exists():
        raise CifarlinError(f"{target}: no such file or folder; give a run folder or its model.h5")
    history = target.parent / HISTORY
    return target, history if history.is_file() else None, target.parent


@app.command()
def visualize(
    target: Annotated[Path, typer.Argument(metavar="RUN_DIR_OR_MODEL", help="A run folder (from train) or a model.h5.")],
    what: Annotated[
        Literal["curves", "montage", "confusion", "samples", "all"], typer.Option("--what", help="Which figure.")
    ] = "all",
    out: Annotated[Path | None, typer.Option("--out", metavar="DIR", help="Where to write. Default: the run folder.")] = None,
    format: Annotated[Literal["png", "pdf", "svg"], typer.Option("--format", help="File format.")] = "png",
    dpi: Annotated[int, typer.Option("--dpi", help="Resolution of PNG files.")] = 150,
    split: Annotated[
        Literal["test", "val", "train"], typer.Option("--split", help="Images for the confusion matrix and samples.")
    ] = "test",
    n: Annotated[int, typer.Option("--n", help="Number of sample images.")] = 24,
    show: Annotated[bool, typer.Option("--show", help="Also open each figure in a window.")] = False,
    data_dir: DataDirOpt = None,
    no_download: NoDownloadOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Draw the learning curves, the weight montage, the confusion matrix and sample predictions.

    curves: cost, loss and accuracy per epoch from history.h5, the best validation epoch marked.
    montage: each class's weights as a 32x32 colour image. confusion and samples classify the
    images of --split. Works without a display; --show opens windows too.

    **Example:** cifarlin visualize outputs/setting-2 --what all --format png
    """
    if not 10 <= dpi <= 1200:
        raise ConfigError(f"--dpi {dpi}: use 10 to 1200")
    if not 1 <= n <= 400:
        raise ConfigError(f"--n {n}: use 1 to 400 sample images")
    from cifarlin import plots
    from cifarlin.checkpoint import load_history, load_snapshot
    from cifarlin.runs import evaluate_split

    target = target.expanduser()
    out_dir = out.expanduser() if out is not None else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a folder")
    model_file, history_file, folder = _run_files(target)
    c = console()
    kinds = ["curves", "montage", "confusion", "samples"] if what == "all" else [what]
    if what == "all" and history_file is None and not target.is_dir():
        kinds.remove("curves")  # a model file alone: all the figures it can give
        if not quiet:
            c.print(f"note: no history.h5 beside {target}, so no curves", soft_wrap=True)
    if "curves" in kinds and history_file is None:
        raise CifarlinError(f"{folder}: no history.h5 for the curves (cifarlin train writes it); "
                            "use --what montage|confusion|samples for a model alone")
    snap = load_snapshot(model_file) if model_file is not None and kinds != ["curves"] else None
    if snap is None and kinds != ["curves"]:
        raise CifarlinError(f"{folder}: no model.h5 or checkpoint.h5 to draw from")
    hist = load_history(history_file) if "curves" in kinds and history_file is not None else None
    out_dir = out_dir or folder
    plots.use_backend(show)
    if show and not plots.can_show():
        c.print("note: no display here, so --show opens no window; the files are written as usual", soft_wrap=True)
    name = (lambda stem: out_dir / f"{stem}.{format}")
    figures = []
    if hist is not None:
        figures.append((plots.curves(hist.history, hist.config), name("curves")))
    if snap is not None and "montage" in kinds:
        title = f"weights as images, {plots.run_title(snap.config)}"
        figures.append((plots.montage(snap.state.W, snap.class_names, title), name("montage")))
    if snap is not None and ({"confusion", "samples"} & set(kinds)):
        ev = evaluate_split(snap, _ensure_data(data_dir, no_download, quiet), split)
        label = f"{plots.run_title(snap.config)}; {split} split"
        if "confusion" in kinds:
            figures.append((plots.confusion(ev.confusion, snap.class_names, label), name(f"confusion-{split}")))
        if "samples" in kinds:
            k = min(n, len(ev.labels))
            fig = plots.samples(ev.images[:k], ev.labels[:k], ev.predictions[:k], snap.class_names,
                                f"first {k} {split} images")
            figures.append((fig, name(f"samples-{split}")))
    if show and plots.can_show():
        import matplotlib.pyplot as plt

        plt.show()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)  # only now: a failure above leaves no empty folder
    except OSError as e:
        raise WriteError(f"--out {out_dir}: cannot create the folder ({e.strerror or e})") from None
    written = [plots.save(fig, path, format, dpi) for fig, path in figures]
    for path in written:
        c.print(f"wrote {escape(str(path))}", soft_wrap=True)
    if json_out:
        emit_json({"files": [str(p) for p in written], "out": str(out_dir), "format": format})


# ---------------------------------------------------------------------------------------------
# completion
# ---------------------------------------------------------------------------------------------


@app.command()
def completion(
    shell: Annotated[Literal["bash", "zsh", "fish"], typer.Argument(help="The shell to complete in.")],
) -> None:
    """Print a static completion script (subcommands, options, choices, paths) for a shell.

    The same scripts ship in the repository's completions/ folder; see the README for where each
    shell looks for them. `cifarlin --install-completion` installs Typer's dynamic completion instead.

    **Example:** cifarlin completion bash > ~/.local/share/bash-completion/completions/cifarlin
    """
    from cifarlin.completion import script

    sys.stdout.write(script(shell))


def main() -> None:
    """Console-script entry point."""
    app(prog_name="cifarlin")
