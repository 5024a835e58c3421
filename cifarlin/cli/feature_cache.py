"""``cifarlin features extract`` (fill the feature cache with what a run reads, here or on a Dask
cluster) and ``cifarlin features cache`` (list it, or empty it): the feature cache's side of
:mod:`cifarlin.cli.features`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from cifarlin.cli.common import ensure_data
from cifarlin.cli.display import add_row, console, emit_json, fmt_megabytes, print_table, results, say, table
from cifarlin.cli.progress import WorkProgress
from cifarlin.errors import ConfigError


def extract(
    ctx: typer.Context,
    file: Path | None,
    train_batches: str,
    val_size: int | None,
    augment: str | None,
    scheduler: str | None,
    workers: int | None,
    data_dir: Path | None,
    no_download: bool,
    json_out: bool,
    quiet: bool,
) -> None:
    from contextlib import ExitStack

    from cifarlin.core.config import SplitSpec, parse_batches

    if file is None:
        raise ConfigError(
            "features extract needs the feature-map FILE (cifarlin features extract kmeans400.h5)"
        )
    if augment not in (None, "none", "flip"):
        raise ConfigError(f"--augment {augment}: features take no other views than flip")
    spec = SplitSpec(parse_batches(train_batches), val_size)
    c, res = console(), results(json_out)
    from cifarlin.features import extraction
    from cifarlin.features.cache import FeatureCache
    from cifarlin.search.cluster import check_cluster, dask_client
    from cifarlin.store.featuremap import load

    check_cluster(scheduler, None)
    if workers is not None and scheduler is not None:
        raise ConfigError("--workers counts this machine's threads; with --scheduler the cluster has its own")
    if workers is not None and not 1 <= workers <= 64:
        raise ConfigError(f"--workers {workers}: use 1 to 64 threads")
    fmap = load(file)
    dataset = ensure_data(ctx, data_dir, no_download, quiet)
    cache = FeatureCache(ctx.obj.feature_cache)

    work = WorkProgress(c, quiet)
    rows: list[Any] = [None]  # the batch file being extracted: its bar

    def on_batch(name: str, view: str, cached: bool) -> None:
        what = f"{name}{' (mirrored)' if view else ''}"
        if not cached:
            rows[0] = work.task(what, "images", verb="extracted")
        elif not quiet:
            say(c, f"{what}: in the cache")

    def on_rows(done: int, n: int) -> None:
        rows[0](done, n)

    t0 = time.perf_counter()
    with ExitStack() as stack:
        stack.enter_context(work)
        if scheduler is not None:
            client = stack.enter_context(dask_client(scheduler, 0))
            extractor, engine = extraction.dask_extractor(client, on_rows), f"the Dask cluster at {scheduler}"
        else:
            n = workers or 2
            extractor, engine = (
                extraction.local_extractor(n, on_rows),
                f"{n} thread{'s' if n > 1 else ''} on this machine",
            )
        done = extraction.fill_cache(dataset, fmap, spec, augment, cache, extractor, on_batch)
    seconds = time.perf_counter() - t0
    fresh = [d for d in done if not d.cached]
    say(
        res,
        f"{file}: the features of {len(done)} batch files in {cache.folder} ({len(fresh)} extracted on "
        f"{engine}, {len(done) - len(fresh)} already there; {seconds:.1f} s)",
    )
    if json_out:
        emit_json(
            {
                "feature_map": str(file),
                "checksum": fmap.checksum,
                "cache": str(cache.folder),
                "engine": engine,
                "batches": [
                    {"batch": d.batch, "view": d.view or "images", "cached": d.cached, "seconds": d.seconds}
                    for d in done
                ],
                "seconds": seconds,
            }
        )


def listing(ctx: typer.Context, clear: bool, json_out: bool) -> None:
    """features cache: the entries (newest first) with their sizes and the total; --clear removes
    them and says what went."""
    from datetime import datetime

    from cifarlin.features.cache import FeatureCache

    cache = FeatureCache(ctx.obj.feature_cache)
    res = results(json_out)
    entries = cache.clear() if clear else cache.entries()
    total = sum(e.size for e in entries)
    n = f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
    if clear:
        say(res, f"removed {n} ({fmt_megabytes(total)}) from {cache.folder}")
    else:
        if entries:
            t = table(
                "feature map",
                "batch file",
                "images",
                "size",
                "modified",
                left=("feature map", "batch file", "modified"),
            )
            for e in entries:
                when = datetime.fromtimestamp(e.modified).strftime("%Y-%m-%d %H:%M")
                fm, _, md5 = e.name.partition("-")
                batch = (e.batch or f"MD5 {md5[:12]}") + (" (mirrored)" if e.view == "flip" else "")
                images: object = "?" if e.images is None else e.images
                if e.unfinished:  # a temporary a stopped write left
                    fm, batch, images = "-", "an unfinished write", "-"
                add_row(t, fm[:12], batch, images, fmt_megabytes(e.size), when)
            print_table(res, t)
        say(res, f"{n}, {fmt_megabytes(total)} in {cache.folder}")
    if json_out:
        emit_json(
            {
                "cache": str(cache.folder),
                "cleared": clear,
                "entries": [
                    {
                        "name": e.name,
                        "images": e.images,
                        "bytes": e.size,
                        "modified": e.modified,
                        "feature_map": e.feature_map,
                        "batch": e.batch,
                        "view": e.view,
                        "unfinished": e.unfinished,
                    }
                    for e in entries
                ],
                "bytes": total,
            }
        )
