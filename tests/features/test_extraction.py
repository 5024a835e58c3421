"""Features extracted ahead of training (`cifarlin features extract`): on threads or as Dask
tasks, the cache then holds exactly what a run reads, with the bits of extraction in the run."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from cifar_files import FIT
from cifarlin.cli import app
from cifarlin.core import encode
from cifarlin.core.config import SplitSpec, TrainConfig, solver_defaults
from cifarlin.data import cifar as data
from cifarlin.errors import ConfigError
from cifarlin.features import extraction
from cifarlin.features.cache import FeatureCache
from cifarlin.features.prepare import prepare_features
from cifarlin.store import featuremap


@pytest.fixture(scope="module")
def fmap_file(tmp_path_factory, tiny_py):
    from typer.testing import CliRunner

    path = tmp_path_factory.mktemp("map") / "k6.h5"
    r = CliRunner().invoke(app, ["features", "fit", *FIT, "--out", str(path), "--data-dir", str(tiny_py)])
    assert r.exit_code == 0, r.output
    return path


@pytest.mark.parametrize(
    ("batches", "val_size", "augment", "expected"),
    [
        ((1,), None, "none", [(1, ""), (2, ""), ("test", "")]),
        ((1, 3), 20, "flip", [(1, ""), (1, "flip"), (3, ""), (3, "flip"), ("test", "")]),
        ((1, 2), 20, None, [(1, ""), (2, ""), ("test", "")]),
    ],
)
def test_needed_lists_what_a_run_reads(batches, val_size, augment, expected):
    assert extraction.needed(SplitSpec(batches, val_size), augment) == expected


SPLITS = [  # every split train takes (data_batch_2 cannot both train and validate)
    (batches, val_size)
    for batches in [(1,), (1, 2), (2, 3), (3, 1)]
    for val_size in [None, 20, 50, 60, 99]
    if not (val_size is None and 2 in batches)
]


@pytest.mark.parametrize("solver", ["gd", "ridge"])
@pytest.mark.parametrize(("batches", "val_size"), SPLITS)
def test_needed_equals_what_prepare_reads(tiny_py, fmap_file, tmp_path, batches, val_size, solver):
    """Every split (a held-out tail that covers whole files included): extract fills exactly the
    entries prepare reads, no more (a mirror of a file that only validates costs minutes at
    1,600 centroids) and no fewer."""
    fields = {"train_batches": batches, "val_size": val_size, "augment": "flip", "solver": solver}
    cfg = TrainConfig(**solver_defaults({"features": str(fmap_file), **fields}))
    ds = data.Dataset(tiny_py, "python")
    fmap = featuremap.load(fmap_file)
    read = []

    def fill():
        cache = FeatureCache(tmp_path / "d")
        return extraction.fill_cache(ds, fmap, cfg.split, "flip", cache, extraction.local_extractor(1))

    try:
        prepare_features(ds, cfg, cache_dir=tmp_path / "c", on_batch=lambda name, hit: read.append(name))
    except ConfigError as e:  # a held-out tail as large as the training files: both refuse alike
        with pytest.raises(ConfigError, match=re.escape(str(e))):
            fill()
        return
    done = fill()
    filled = [d.batch + (" (mirrored)" if d.view else "") for d in done]
    assert sorted(filled) == sorted(read)


@pytest.mark.parametrize(("val_size", "augment"), [(None, "none"), (20, "flip")])
def test_after_fill_cache_a_run_reads_only_the_cache_and_the_same_bits(
    tmp_path, tiny_py, fmap_file, val_size, augment
):
    """Bug: extract misses a file the run reads (the mirrors, the validation batch) or keys it
    otherwise, so the run extracts again; or its features differ from the run's own."""
    ds = data.Dataset(tiny_py, "python")
    cfg = TrainConfig(features=str(fmap_file), val_size=val_size, augment=augment, batch_size=10)
    fmap = featuremap.load(fmap_file)
    done = extraction.fill_cache(
        ds, fmap, cfg.split, augment, FeatureCache(tmp_path / "a"), extraction.local_extractor(2)
    )
    assert [(d.cached, d.view) for d in done][:2] == [
        (False, ""),
        (False, "flip" if augment == "flip" else ""),
    ]
    seen = []
    warm = prepare_features(ds, cfg, cache_dir=tmp_path / "a", on_batch=lambda n, hit: seen.append(hit))
    assert seen and all(seen)
    cold = prepare_features(ds, cfg, cache_dir=tmp_path / "b")  # extracted by the run itself
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(warm.X[split], cold.X[split])
    again = extraction.fill_cache(
        ds, fmap, cfg.split, augment, FeatureCache(tmp_path / "a"), extraction.local_extractor(1)
    )
    assert all(d.cached for d in again)


@pytest.mark.slow
def test_dask_tasks_give_the_bits_of_local_extraction(tmp_path, tiny_py, fmap_file, monkeypatch):
    """Blocks as tasks on a 2-process LocalCluster (small blocks: many tasks, finished out of
    order) equal fm.extract on this machine's threads, bit for bit."""
    from distributed import Client, LocalCluster

    fmap = featuremap.load(fmap_file)
    images = data.Reader(data.Dataset(tiny_py, "python")).batch(1).images
    monkeypatch.setattr(encode, "BLOCK_BYTES", 4 * fmap.positions**2 * fmap.k * 3)  # 3 images a block
    monkeypatch.setattr(extraction, "TASK_IMAGES", 7)  # 2 blocks a task: 6 images
    assert encode.block_size(fmap) == 3
    expected = encode.extract(fmap, images, workers=2)
    rows = []
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        got = extraction.dask_extractor(client, on_rows=lambda d, n: rows.append((d, n)))(fmap, images)
    np.testing.assert_array_equal(got, expected)
    assert rows[-1] == (len(images), len(images)) and len(rows) == -(-len(images) // 6)


@pytest.mark.slow
def test_extract_command_on_an_existing_dask_cluster(runner, tiny_py, fmap_file, dask_cluster, tmp_path):
    """`features extract --scheduler`: the cache filled by the cluster's worker process, then
    train --features reads every file from it."""
    args = ["features", "extract", str(fmap_file), "--train-batches", "1", "--val-size", "20"]
    r = runner.invoke(
        app, [*args, "--augment", "flip", "--scheduler", dask_cluster, "--data-dir", str(tiny_py), "--json"]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["engine"] == f"the Dask cluster at {dask_cluster}"
    assert [(b["batch"], b["view"], b["cached"]) for b in doc["batches"]] == [
        ("data_batch_1", "images", False),
        ("data_batch_1", "flip", False),
        ("test_batch", "images", False),
    ]
    train = [
        "train",
        "--features",
        str(fmap_file),
        "--val-size",
        "20",
        "--augment",
        "flip",
        "--batch-size",
        "10",
    ]
    r = runner.invoke(app, [*train, "--epochs", "1", "--no-plots", "--data-dir", str(tiny_py), "-o", "run"])
    assert r.exit_code == 0, r.output
    assert ": extracted" not in r.stderr and r.stderr.count("from the cache") == 3
    r = runner.invoke(app, [*args, "--augment", "flip", "--data-dir", str(tiny_py), "--json"])
    assert [b["cached"] for b in json.loads(r.stdout)["batches"]] == [True, True, True]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "features extract needs the feature-map FILE"),
        (
            ["{map}", "--augment", "translate:1"],
            "--augment translate:1: features take no other views than flip",
        ),
        (["{map}", "--scheduler", "tcp://127.0.0.1:9", "--workers", "2"], "--workers"),
        (
            ["{map}", "--scheduler", "localhost:8786"],
            "--scheduler 'localhost:8786': expected the scheduler's address",
        ),
        (["{map}", "--workers", "0"], "--workers 0: use 1 to 64 threads"),
        (["{map}", "--scheduler", "tcp://127.0.0.1:9"], "cannot connect"),
        (["{data}"], "not an HDF5 file"),
        (["{map}", "--val-size", "many"], "--val-size many: give a number of images, or none"),
        (["{map}", "--val-size", "-3"], "--val-size"),
        (
            ["{map}", "--train-batches", "1", "--val-size", "60"],
            "--val-size 60: the training batches hold only 50",
        ),
        (["{map}", "--centroids", "1600"], "--centroids is an option of features fit"),
        (["{map}", "--out", "x.h5"], "--out is an option of features fit"),
    ],
)
def test_extract_bad_input_is_one_line(runner, tiny_py, fmap_file, args, message, monkeypatch):
    from cifarlin.search import cluster

    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 1)  # nobody listens on port 9
    args = [a.format(map=fmap_file, data=tiny_py / "data_batch_1") for a in args]
    r = runner.invoke(app, ["features", "extract", *args, "--data-dir", str(tiny_py)])
    assert r.exit_code != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_fit_refuses_the_options_of_extract(runner, tiny_py, tmp_path):
    r = runner.invoke(
        app, ["features", "fit", *FIT, "--scheduler", "tcp://127.0.0.1:9", "--data-dir", str(tiny_py)]
    )
    assert r.exit_code == 2
    assert "--scheduler is an option of features extract, not of features fit" in r.stderr


@pytest.mark.slow
def test_a_sweep_on_features_extracts_once_on_its_cluster(runner, tiny_py, fmap_file, tmp_path):
    """Bug: each of a local cluster's workers extracts the same files at once (minutes each at
    1,600 centroids). The sweep extracts them first, as tasks on its cluster, into the cache the
    workers read; the trials' numbers are those of train, which reads the same cache."""
    sweep = ["sweep", "--lam", "0,0.1", "--features", str(fmap_file), "--val-size", "20", "--augment", "flip"]
    common = ["--epochs", "2", "--batch-size", "10", "--data-dir", str(tiny_py)]
    r = runner.invoke(app, [*sweep, *common, "--workers", "2", "--out", "s", "--json", "--no-plots"])
    assert r.exit_code == 0, r.output
    extracting = [ln for ln in r.stderr.splitlines() if "extracting on the cluster" in ln]
    assert len(extracting) == 3  # data_batch_1, its mirror, test_batch: once each
    trials = json.loads(r.stdout)["trials"]
    assert [t["status"] for t in trials] == ["done", "done"]
    train = ["train", "--lam", "0.1", "--features", str(fmap_file), "--val-size", "20", "--augment", "flip"]
    r = runner.invoke(app, [*train, *common, "--no-plots", "-o", "alone", "--json"])
    assert r.exit_code == 0, r.output
    assert ": extracted" not in r.stderr  # all from the cache the sweep filled
    alone = json.loads(r.stdout)
    assert trials[1]["best_val_accuracy"] == alone["best_val_accuracy"]


def test_extract_for_a_run_that_validates_on_data_batch_2(runner, tiny_py, fmap_file):
    """--val-size none: the files of train --features FILE without --val-size, data_batch_2 among
    them; the run then extracts nothing."""
    args = ["features", "extract", str(fmap_file), "--train-batches", "1", "--val-size", "none"]
    r = runner.invoke(app, [*args, "--workers", "1", "--data-dir", str(tiny_py), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [b["batch"] for b in doc["batches"]] == ["data_batch_1", "data_batch_2", "test_batch"]
    assert doc["engine"] == "1 thread on this machine"
    train = ["train", "--features", str(fmap_file), "--batch-size", "10", "--epochs", "1", "--no-plots"]
    r = runner.invoke(app, [*train, "--data-dir", str(tiny_py), "-o", "run"])
    assert r.exit_code == 0, r.output
    assert ": extracted" not in r.stderr and r.stderr.count("from the cache") == 3


def test_sweep_takes_feature_maps_whose_paths_hold_commas_and_dots(tmp_path, fmap_file):
    """Values of --features are separated by the path separator (as in PATH), not by commas, and
    a '..' in a path is no range; each becomes an absolute path, checked to exist."""
    import os
    import shutil

    from cifarlin.search.space import parse_axis

    odd = tmp_path / "m,aps..v2"
    odd.mkdir()
    shutil.copy(fmap_file, odd / "k.h5")
    os.chdir(tmp_path)
    axis = parse_axis("features", f"none{os.pathsep}m,aps..v2/../m,aps..v2/k.h5")
    assert axis.values == (None, str(odd / "k.h5"))
    with pytest.raises(ConfigError, match="no such file"):
        parse_axis("features", "m,aps..v2/missing.h5")
