"""``cifarlin features``: learn a k-means feature map (fit), or describe one (show)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from cifarlin.cli.common import DataDirOpt, JsonOpt, NoDownloadOpt, QuietOpt, ensure_data, flag, option
from cifarlin.cli.display import console, emit_json, results, say
from cifarlin.errors import ConfigError, RunError

ACTIONS = ("fit", "extract", "show")
CENTROIDS = 400  # features.CENTROID_CHOICES[0] (not imported here: it needs NumPy)


def features(
    ctx: typer.Context,
    action: Annotated[
        Literal[ACTIONS],  # type: ignore[valid-type]
        typer.Argument(
            metavar="ACTION",
            help="fit: learn a feature map from the training images; extract: compute the features "
            "a run will read into the cache, here or on a Dask cluster; show: describe a map.",
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
        int, option("--iterations", metavar="N", help="Rounds of k-means.", default=20)
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

    **Example:** cifarlin features fit --centroids 400 --out kmeans400.h5
    """
    from cifarlin.core.config import SplitSpec, parse_batches

    c = console()
    res = results(json_out)
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
        fit_only = {
            "--out": out is not None,
            "--centroids": centroids != CENTROIDS,
            "--patches": patches != 200_000,
            "--iterations": iterations != 20,
            "--seed": seed != 0,
            "--overwrite": overwrite,
        }
        for name, given in fit_only.items():
            if given:
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

    def on_iteration(done: int, total: int) -> None:
        if not quiet:
            say(c, f"k-means round {done}/{total}")

    t0 = time.perf_counter()
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

    def on_batch(name: str, view: str, cached: bool) -> None:
        if not quiet:
            what = f"{name}{' (mirrored)' if view else ''}"
            say(c, f"{what}: {'in the cache' if cached else 'extracting'}")

    t0 = time.perf_counter()
    with ExitStack() as stack:
        if scheduler is not None:
            client = stack.enter_context(dask_client(scheduler, 0))
            extractor, engine = extraction.dask_extractor(client), f"the Dask cluster at {scheduler}"
        else:
            n = workers or 2
            extractor, engine = (
                extraction.local_extractor(n),
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
