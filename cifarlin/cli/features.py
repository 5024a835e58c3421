"""``cifarlin features``: learn a k-means feature map (fit), extract a run's features into the
cache (extract), describe a map (show), list or clear the cache (cache)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from cifarlin.cli import feature_cache
from cifarlin.cli.common import DataDirOpt, JsonOpt, NoDownloadOpt, QuietOpt, ensure_data, flag, option
from cifarlin.cli.display import console, emit_json, results, say
from cifarlin.cli.progress import WorkProgress
from cifarlin.errors import ConfigError, RunError

ACTIONS = ("fit", "extract", "show", "cache")
CENTROIDS = 400  # features.CENTROID_CHOICES[0] (not imported here: it needs NumPy)
DICTIONARIES = ("kmeans", "patches")  # core.kmeans's, likewise
ENCODERS = ("triangle", "relu", "split")
ALPHA = 0.25  # the relu and split encoders' default threshold (Coates and Ng 2011)


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
    dictionary: Annotated[
        str,
        option(
            "--dictionary",
            metavar="KIND",
            help="fit: the atoms: k-means centroids of whitened patches, or whitened patches drawn "
            "at random (no k-means).",
            choices=DICTIONARIES,
            default="kmeans",
        ),
    ] = "kmeans",
    encoder: Annotated[
        str,
        option(
            "--encoder",
            metavar="KIND",
            help="fit: a patch's code against each atom: triangle max(0, mean distance - distance) "
            "(Coates, Lee and Ng), relu max(0, d.x - alpha), or split: that and max(0, -d.x - alpha), "
            "2 features an atom.",
            choices=ENCODERS,
            default="triangle",
        ),
    ] = "triangle",
    alpha: Annotated[
        float | None,
        option(
            "--alpha",
            metavar="A",
            help="fit: the relu and split encoders' threshold (unit-length atoms, whitened patches).",
            default=ALPHA,
        ),
    ] = None,
    pool: Annotated[
        int,
        option("--pool", metavar="N", help="fit: sum the codes over an N x N grid of the image.", default=2),
    ] = 2,
    mirror: Annotated[
        bool,
        flag(
            "--mirror",
            help="fit: learn K/2 atoms and add their mirror images; an image's features are then the "
            "mean of its own and its mirror image's (half the features: --augment flip for free).",
        ),
    ] = False,
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
        "--dictionary": dictionary != "kmeans",
        "--encoder": encoder != "triangle",
        "--alpha": alpha is not None,
        "--pool": pool != 2,
        "--mirror": mirror,
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
        feature_cache.listing(ctx, clear, json_out)
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
            f"{path}: {fmap.describe()} of {info['patch']}x{info['patch']} patches, "
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
        feature_cache.extract(
            ctx,
            file,
            train_batches,
            _val_size(val_size),
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
    if dictionary == "patches" and iterations != 20:
        raise ConfigError(
            "--iterations counts k-means rounds; --dictionary patches draws its atoms without any"
        )
    if encoder not in ENCODERS:
        raise ConfigError(f"--encoder {encoder}: use one of {', '.join(ENCODERS)}")
    if dictionary not in DICTIONARIES:
        raise ConfigError(f"--dictionary {dictionary}: use one of {', '.join(DICTIONARIES)}")
    if encoder == "triangle" and alpha is not None:
        raise ConfigError("--alpha is the relu and split encoders' threshold; the triangle has none")
    if alpha is not None and not 0 <= alpha <= 100:
        raise ConfigError(
            f"--alpha {alpha}: use 0 to 100 (whitened patches, unit-length atoms; the paper: 0.25)"
        )
    if not 1 <= pool <= 9:
        raise ConfigError(f"--pool {pool}: use 1 to 9 (an N x N grid of sums; the paper: 2)")
    if mirror and centroids % 2:
        raise ConfigError(f"--centroids {centroids}: --mirror needs pairs, an even number")
    alpha = (ALPHA if alpha is None else alpha) if encoder != "triangle" else 0.0
    path = out if out is not None else Path(f"kmeans{centroids}.h5")
    from cifarlin.store.files import check_path

    check_path(path, "out", "file")
    if path.exists() and not overwrite:
        raise RunError(f"{path} exists: pass --overwrite to replace it, or --out FILE for another")
    spec = SplitSpec(parse_batches(train_batches), _val_size(val_size))
    dataset = ensure_data(ctx, data_dir, no_download, quiet)
    from cifarlin.features.prepare import fit_dataset
    from cifarlin.store.featuremap import save

    learnt = centroids // 2 if mirror else centroids
    if not quiet:
        how = "k-means centroids" if dictionary == "kmeans" else "random patches"
        say(
            c,
            f"learning {learnt} {how}{' and their mirrors' if mirror else ''} from the training images "
            f"({patches} patches)",
        )

    t0 = time.perf_counter()
    with WorkProgress(c, quiet, every=0) as work:  # a line a round in a log
        rounds = work.task("k-means", "rounds", iterations) if dictionary == "kmeans" else None

        def on_iteration(done: int, total: int, objective: float) -> None:
            if rounds is not None:
                rounds(done, total, f"mean squared distance {objective:.4g}")

        fmap, attrs = fit_dataset(
            dataset,
            spec,
            centroids,
            seed=seed,
            n_patches=patches,
            iterations=iterations,
            on_iteration=on_iteration,
            dictionary=dictionary,
            encoder=encoder,
            alpha=alpha,
            pool=pool,
            mirror=mirror,
        )
    save(path, fmap, attrs)
    info = {**_describe(path, fmap), "seconds": time.perf_counter() - t0}
    say(
        res,
        f"wrote {path}: {fmap.describe()}, {fmap.n_features} features an image ({info['seconds']:.1f} s)",
    )
    if json_out:
        emit_json(info)


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
        "dictionary": fmap.dictionary,
        "encoder": fmap.encoder,
        "alpha": fmap.alpha,
        "pool": fmap.pool,
        "mirror": fmap.mirror,
        "checksum": fmap.checksum,
    }
