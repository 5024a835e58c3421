"""``cifarlin download``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from cifarlin.cli.common import DataDirOpt, JsonOpt, QuietOpt, env, flag, g, option
from cifarlin.cli.display import console, download_progress, emit_json, results, say
from cifarlin.core.config import LAYOUTS
from cifarlin.data.source import RETRIES, TIMEOUT


def download(
    ctx: typer.Context,
    data_dir: DataDirOpt = None,
    layout: Annotated[
        Literal[LAYOUTS],  # type: ignore[valid-type]
        option(
            "--layout",
            metavar="NAME",
            help="Which official version to fetch.",
            choices=LAYOUTS,
            default=LAYOUTS[0],
        ),
    ] = LAYOUTS[0],
    url: Annotated[
        str | None,
        option(
            "--url",
            metavar="URL",
            help="Fetch from a mirror instead. Default: $CIFARLIN_URL, else the official host.",
        ),
    ] = None,
    md5: Annotated[
        str | None,
        option("--md5", metavar="HEX", help="Expected MD5 of the archive, when it is not the official one."),
    ] = None,
    from_file: Annotated[
        Path | None,
        option(
            "--from-file",
            metavar="PATH",
            help="Install an archive you fetched by other means (offline route).",
        ),
    ] = None,
    force: Annotated[bool, flag("--force", help="Replace the dataset even when it is present.")] = False,
    timeout: Annotated[
        float,
        option(
            "--timeout",
            metavar="SECONDS",
            help="Give up (then retry) after this long without a connection, or with less than 1 kB/s.",
            default=g(TIMEOUT),
        ),
    ] = TIMEOUT,
    retries: Annotated[
        int,
        option(
            "--retries",
            metavar="N",
            help="Attempts after a broken connection (each resumes where it broke).",
            default=RETRIES,
        ),
    ] = RETRIES,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fetch CIFAR-10, verify its MD5 and unpack it safely.

    Streams with a progress bar, retries and resumes broken downloads, checks the archive's MD5
    before extracting, and refuses archive members that are links, devices or point outside the
    target. When the data are already there it says so and downloads nothing.

    **Example:** cifarlin download --data-dir ~/data/cifar
    """
    from cifarlin.data import download as dl

    e = env(ctx)
    cfg = e.download_config(url, md5, layout=layout, timeout=timeout, retries=retries)
    c = console()
    with download_progress(quiet) as progress:
        result = dl.install(
            e.data_root(data_dir),
            cfg,
            from_file=from_file,
            force=force,
            on_progress=progress,
            on_notice=None if quiet else (lambda m: say(c, m)),
        )
    official = {
        True: "its files match the official release's checksums",
        False: "its files differ from the official release's checksums (a copy of another origin)",
        None: "no official per-file checksums are known for this version",
    }[result.official_files]
    done = {
        "downloaded": f"downloaded and unpacked ({result.bytes / 1e6:.1f} MB, MD5 {result.md5} verified)",
        "installed": f"installed from {result.origin} (MD5 {result.md5} verified)",
        "already present": "already present, nothing downloaded",
    }[result.status]
    say(results(json_out), f"CIFAR-10 ({result.format} version) in {result.path}: {done}; {official}")
    if json_out:
        emit_json(result.to_dict())
