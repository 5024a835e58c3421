"""``cifarlin gradcheck``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from cifarlin.cli.common import DataDirOpt, JsonOpt, NoDownloadOpt, QuietOpt, ensure_data, flag, g, option
from cifarlin.cli.display import emit_json, fmt_sci, print_table, results, say, table
from cifarlin.core.config import DEFAULT_H, LOSS_HELP, LOSS_NAMES, GradcheckConfig
from cifarlin.errors import ConfigError

D = GradcheckConfig()  # the defaults
METHODS = tuple(DEFAULT_H)
STEPS = ", ".join(f"{h:.0e} ({method})".replace("e-0", "e-") for method, h in DEFAULT_H.items())


def gradcheck(
    ctx: typer.Context,
    n: Annotated[
        int,
        option(
            "--n",
            "--samples",
            metavar="N",
            help="Number of images (the first N of the training set).",
            default=D.n,
        ),
    ] = D.n,
    dims: Annotated[
        int, option("--dims", metavar="D", help="Check only the first D inputs.", default=D.dims)
    ] = D.dims,
    lam: Annotated[
        float, option("--lam", metavar="LAMBDA", help="Penalty weight lambda.", default=g(D.lam))
    ] = D.lam,
    h: Annotated[
        float | None, option("--step", metavar="H", help="Step of the numerical gradient.", default=STEPS)
    ] = None,
    h_alias: Annotated[
        float | None, option("--h", metavar="H", help="The same as --step.", hidden=True)
    ] = None,
    method: Annotated[
        Literal[METHODS],  # type: ignore[valid-type]
        option(
            "--method",
            metavar="NAME",
            help="Centred differences or the complex step.",
            choices=METHODS,
            default=D.method,
        ),
    ] = D.method,
    loss: Annotated[
        Literal[LOSS_NAMES],  # type: ignore[valid-type]
        option(
            "--loss",
            metavar="NAME",
            help=LOSS_HELP + ".",
            default=D.loss,
        ),
    ] = D.loss,
    tol: Annotated[
        float, option("--tol", metavar="TOL", help="Relative tolerance.", default=g(D.tol))
    ] = D.tol,
    atol: Annotated[
        float, option("--atol", metavar="TOL", help="Absolute tolerance.", default=g(D.atol))
    ] = D.atol,
    seed: Annotated[
        int, option("--seed", metavar="N", help="Seed of W, b (and of --random inputs).", default=D.seed)
    ] = D.seed,
    random: Annotated[
        bool, flag("--random", help="Random inputs and labels instead of images: needs no data.")
    ] = False,
    out: Annotated[
        Path | None,
        option(
            "--out",
            "-o",
            metavar="FILE",
            help="Where to write the result (JSON: what --json prints, with the command and the data).",
            default="outputs/gradcheck-LOSS.json",
        ),
    ] = None,
    no_save: Annotated[bool, flag("--no-save", help="Write no file.")] = False,
    data_dir: DataDirOpt = None,
    no_download: NoDownloadOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Compare analytic gradients with numerical ones, for every entry of W and b.

    Uses the first N training images, normalised as in training, and W, b initialised as in
    training. An entry passes when |ga - gn| <= atol + tol * (|ga| + |gn|). Exit code 0 when
    every entry passes, 1 otherwise. The result is written to --out either way (one file per loss
    by default), unless --no-save.

    **Example:** cifarlin gradcheck --n 20 --lam 0.1 --method complex
    """
    from cifarlin.work import gradcheck as gc

    step = h if h is not None else h_alias
    cfg = GradcheckConfig(
        n=n, dims=dims, lam=lam, h=step, method=method, tol=tol, atol=atol, seed=seed, loss=loss
    )
    if no_save and out is not None:
        raise ConfigError(f"--out {out} and --no-save: choose one")
    path = None if no_save else (out if out is not None else gc.default_path(cfg.loss))
    if path is not None:
        gc.check_out(path, cfg.loss)  # before the data are fetched and the check runs
    dataset = None if random else ensure_data(ctx, data_dir, no_download, quiet)
    report = gc.run(cfg, dataset)
    c = results(json_out)  # the report and the verdict are the result
    if not quiet:
        say(
            c,
            f"gradient check of the {cfg.loss} loss: {cfg.method}, h={cfg.step:g}, lambda={cfg.lam:g}, "
            f"n={cfg.n}, dims={cfg.dims}, data: {report.inputs}",
        )
        cols = ("param", "max rel", "p99 rel", "mean rel", "max abs", "checked", "failing", "by floor")
        t = table(*cols, *(("kinks",) if cfg.loss == "svm" else ()), "verdict", left=("param",))
        for p in report.params:
            stats = (fmt_sci(p.max_rel), fmt_sci(p.p99_rel), fmt_sci(p.mean_rel), fmt_sci(p.max_abs))
            counts = (p.checked, p.failing, p.by_floor, *((p.kinks,) if cfg.loss == "svm" else ()))
            t.add_row(p.name, *stats, *map(str, counts), "[green]PASS[/]" if p.passed else "[red]FAIL[/]")
        print_table(c, t)
    checked = sum(p.checked for p in report.params)
    failing = sum(p.failing for p in report.params)
    kinks = sum(p.kinks for p in report.params)
    rule = f"|ga - gn| <= {cfg.atol:g} + {cfg.tol:g} (|ga| + |gn|)"
    if report.passed:
        verdict = f"[bold green]PASS[/]: all {checked} checked entries within {rule}"
    else:
        verdict = f"[bold red]FAIL[/]: {failing} of {checked} entries outside {rule}"
    left_out = f"; {kinks} entries at a kink of the hinge left out" if kinks else ""
    c.print(f"{verdict}{left_out} ({report.seconds:.3f} s)", soft_wrap=True)
    if path is not None:
        gc.save_result(path, gc.document(report, dataset))
        say(c, f"wrote {path}")
    if json_out:
        emit_json(report.to_dict())
    raise typer.Exit(0 if report.passed else 1)
