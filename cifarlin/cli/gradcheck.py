"""``cifarlin gradcheck``."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from cifarlin.cli.common import DataDirOpt, JsonOpt, NoDownloadOpt, QuietOpt, ensure_data
from cifarlin.cli.display import console, emit_json, fmt_sci, print_table, say, table
from cifarlin.config import DEFAULT_H, LOSS_NAMES, GradcheckConfig

DEFAULTS = GradcheckConfig()
METHODS = tuple(DEFAULT_H)
STEPS = ", ".join(f"{h:.0e} ({method})".replace("e-0", "e-") for method, h in DEFAULT_H.items())


def gradcheck(
    ctx: typer.Context,
    n: Annotated[
        int, typer.Option("--n", help="Number of images (the first N of the training set).")
    ] = DEFAULTS.n,
    dims: Annotated[
        int, typer.Option("--dims", metavar="D", help="Check only the first D inputs.")
    ] = DEFAULTS.dims,
    lam: Annotated[float, typer.Option("--lam", help="Penalty weight lambda.")] = DEFAULTS.lam,
    h: Annotated[
        float | None,
        typer.Option(
            "--h",
            help=f"Step. Default: {STEPS}.",
            show_default=False,
        ),
    ] = None,
    method: Annotated[
        Literal[METHODS], typer.Option("--method", help="Centred differences or the complex step.")  # type: ignore[valid-type]
    ] = DEFAULTS.method,
    loss: Annotated[
        Literal[LOSS_NAMES],  # type: ignore[valid-type]
        typer.Option(
            "--loss", help="The loss: softmax cross-entropy, multi-class hinge, or binary cross-entropy."
        ),
    ] = DEFAULTS.loss,
    tol: Annotated[float, typer.Option("--tol", help="Relative tolerance.")] = DEFAULTS.tol,
    atol: Annotated[float, typer.Option("--atol", help="Absolute tolerance.")] = DEFAULTS.atol,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of W, b (and of --random inputs).")
    ] = DEFAULTS.seed,
    random: Annotated[
        bool, typer.Option("--random", help="Random inputs and labels instead of images: needs no data.")
    ] = False,
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
    from cifarlin import gradcheck as gc

    cfg = GradcheckConfig(
        n=n, dims=dims, lam=lam, h=h, method=method, tol=tol, atol=atol, seed=seed, loss=loss
    )
    report = gc.run(cfg, None if random else ensure_data(ctx, data_dir, no_download, quiet))
    c = console()
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
    if json_out:
        emit_json(report.to_dict())
    raise typer.Exit(0 if report.passed else 1)
