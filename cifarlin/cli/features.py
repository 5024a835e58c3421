"""``cifarlin features``: learn a k-means feature map (fit), extract a run's features into the
cache (extract), describe a map (show), list or clear the cache (cache)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from cifarlin.cli.common import DataDirOpt, JsonOpt, NoDownloadOpt, QuietOpt, ensure_data, flag, option
from cifarlin.cli.display import add_row, console, emit_json, fmt_megabytes, print_table, results, say, table
from cifarlin.cli.progress import WorkProgress
from cifarlin.errors import ConfigError, RunError

ACTIONS = ("fit", "extract", "show", "cache")
CENTROIDS = 400  # features.CENTROID_CHOICES[0] (not imported here: it needs NumPy)


def features(
    ctx: typer.Context,
    action: Annotated[
        Literal[ACTIONS],  # type: ignore[valid-type]
        typer.Argument(
            metavar="ACTION",
            help="fit: learn a feature map from the training images; extract: compute the features "
            "a run will read into the cache, here or on a Dask cluster; show: describe a map; "
            "cache: list the cache of extracted features (--clear empties it).",
        ),
    ],
    file: Annotated[
        Path | None, typer.Argument(metavar="FILE", help="extract, show: the feature-map file.")
    ] = None,
    out: Annotated[
        Path | None,
        option(
            "--out", "-o", metavar="FILE", help="fit: the feature-map file to write. Default: kmeansK.h5."
        ),
    ] = None,
    centroids: Annotated[
        int,
        option(
            "--centroids",
            metavar="K",
            help="Number of k-means centroids (the paper: 400, 1600, 4000); 4 K features per image.",
            default=CENTROIDS,
        ),
    ] = CENTROIDS,
    patches: Annotated[
        int, option("--patches", metavar="N", help="Random 6x6 patches to cluster.", default=200_000)
    ] = 200_000,
    iterations: Annotated[
        int, option("--iterations", metavar="N", help="Rounds of k-means (at least 1).", default=20)
    ] = 20,
    seed: Annotated[
        int, option("--seed", metavar="N", help="Seed of the patches and of k-means.", default=0)
    ] = 0,
    train_batches: Annotated[
        str,
        option(
            "--train-batches",
            metavar="LIST",
            help="fit: the training batches to learn from; extract: the run's training batches.",
            default="1-5",
        ),
    ] = "1-5",
    val_size: Annotated[
        str,
        option(
            "--val-size",
            metavar="N",
            help="Leave out the last N training images (those a run validates on); none: the run "
            "validates on data_batch_2 (as train without --val-size).",
            default="1000",
        ),
    ] = "1000",
    augment: Annotated[
        str | None,
        option(
            "--augment",
            metavar="VIEWS",
            help="extract: flip for the mirrored training images too (train --augment flip).",
        ),
    ] = None,
    scheduler: Annotated[
        str | None,
        option(
            "--scheduler",
            metavar="ADDRESS",
            help="extract: blocks of images as Dask tasks on the cluster of this scheduler "
            "(tcp://HOST:PORT) instead of this machine's threads.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        option("--workers", metavar="N", help="extract: threads on this machine.", default="2"),
    ] = None,
    overwrite: Annotated[bool, flag("--overwrite", help="Replace an existing --out.")] = False,
    clear: Annotated[
        bool, flag("--clear", help="cache: remove every entry (the next runs extract their features again).")
    ] = False,
    data_dir: DataDirOpt = None,
    no_download: NoDownloadOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Coates and Ng's single-layer features: random 6x6 patches, normalised, ZCA-whitened,
    clustered by k-means; an image becomes the triangle activations of its patches, summed over
    its four quadrants.

    fit learns the map from the training images only (seeded: the same file for the same
    options) and writes it whole or not at all; train --features FILE then trains the one linear
    layer on those features, and the model file carries the map, so evaluate and predict take raw
    images as usual. extract computes the features such a run reads (the training batches, their
    mirrors with --augment flip, the validation and test batches) into the cache, on this
    machine's threads or, with --scheduler, as Dask tasks on a cluster; the runs then read them.
    cache lists what the cache ($XDG_CACHE_HOME/cifarlin/features) holds; --clear empties it.

    **Example:** cifarlin features fit --centroids 400 --out kmeans400.h5
    """
    from cifarlin.core.config import SplitSpec, parse_batches

    c = console()
    res = results(json_out)
    given = {
        "--out": out is not None,
        "--centroids": centroids != CENTROIDS,
        "--patches": patches != 200_000,
        "--iterations": iterations != 20,
        "--seed": seed != 0,
        "--overwrite": overwrite,
    }
    if clear and action != "cache":
        raise ConfigError(f"--clear is an option of features cache, not of features {action}")
    if action == "cache":
        if file is not None:
            raise ConfigError(f"features cache takes no FILE ({file}): it lists the whole cache")
        for name, value in {
            **given,
            "--augment": augment,
            "--scheduler": scheduler,
            "--workers": workers,
        }.items():
            if value:
                raise ConfigError(f"{name} is not an option of features cache (only --clear, --json)")
        _cache(ctx, clear, json_out)
        return
    if action == "show":
        from cifarlin.store.featuremap import load

        if file is None:
            raise ConfigError(
                "features show needs the FILE to describe (cifarlin features show kmeans400.h5)"
            )
        path = file
        fmap = load(path)
        info = _describe(path, fmap)
        say(
            res,
            f"{path}: {info['centroids']} centroids of {info['patch']}x{info['patch']} patches, "
            f"{info['features']} features per image; seed {info['seed']}, {info['patches']} patches, "
            f"{info['iterations']} k-means rounds; checksum {info['checksum']}",
        )
        if json_out:
            emit_json(info)
        return
    if action == "extract":
        for name, value in given.items():
            if value:
                raise ConfigError(f"{name} is an option of features fit; extract takes everything from FILE")
        _extract(
            ctx,
            file,
            train_batches,
            val_size,
            augment,
            scheduler,
            workers,
            data_dir,
            no_download,
            json_out,
            quiet,
        )
        return
    for name, value in (("--augment", augment), ("--scheduler", scheduler), ("--workers", workers)):
        if value is not None:
            raise ConfigError(f"{name} is an option of features extract, not of features fit")
    if file is not None:
        raise ConfigError(f"features fit takes no FILE ({file}): write to --out FILE")
    if iterations < 1:
        raise ConfigError(f"--iterations {iterations}: k-means needs at least 1 round (the paper's code: 50)")
    path = out if out is not None else Path(f"kmeans{centroids}.h5")
    from cifarlin.store.files import check_path

    check_path(path, "out", "file")
    if path.exists() and not overwrite:
        raise RunError(f"{path} exists: pass --overwrite to replace it, or --out FILE for another")
    spec = SplitSpec(parse_batches(train_batches), _val_size(val_size))
    dataset = ensure_data(ctx, data_dir, no_download, quiet)
    from cifarlin.features.prepare import fit_dataset
    from cifarlin.store.featuremap import save

    if not quiet:
        say(
            c,
            f"learning {centroids} centroids from the training images ({patches} patches)",
        )

    t0 = time.perf_counter()
    with WorkProgress(c, quiet, every=0) as work:  # a line a round in a log
        rounds = work.task("k-means", "rounds", iterations)

        def on_iteration(done: int, total: int, objective: float) -> None:
            rounds(done, total, f"mean squared distance {objective:.4g}")

        fmap, attrs = fit_dataset(
            dataset,
            spec,
            centroids,
            seed=seed,
            n_patches=patches,
            iterations=iterations,
            on_iteration=on_iteration,
        )
    save(path, fmap, attrs)
    info = {**_describe(path, fmap), "seconds": time.perf_counter() - t0}
    say(
        res,
        f"wrote {path}: {centroids} centroids, {fmap.n_features} features an image ({info['seconds']:.1f} s)",
    )
    if json_out:
        emit_json(info)


def _extract(
    ctx: typer.Context,
    file: Path | None,
    train_batches: str,
    val_size: str,
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
    spec = SplitSpec(parse_batches(train_batches), _val_size(val_size))
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


def _cache(ctx: typer.Context, clear: bool, json_out: bool) -> None:
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


def _val_size(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(
            f"--val-size {text}: give a number of images, or none to validate on data_batch_2"
        ) from None


def _describe(path: Path, fmap: Any) -> dict[str, Any]:
    return {
        "file": str(path),
        "centroids": fmap.k,
        "patch": fmap.patch,
        "features": fmap.n_features,
        "seed": fmap.seed,
        "patches": fmap.n_patches,
        "iterations": fmap.iterations,
        "checksum": fmap.checksum,
    }
