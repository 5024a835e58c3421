"""Extracting a run's k-means features ahead of training, into the feature cache: on this
machine's threads, or as Dask tasks on a cluster (the engine ``sweep`` uses), block by block.

Either way each block of images is one call of :func:`cifarlin.core.encode.extract_block` with one
BLAS thread, in the blocks :func:`cifarlin.core.encode.extract` uses, so the features are the same
bits wherever they were computed, and a run (or a sweep's trials) then reads them from the cache.
A Dask worker's allocator is set back to the usual one first (:func:`malloc_as_usual`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cifarlin import __version__
from cifarlin.core.config import SplitSpec
from cifarlin.core.encode import block_size, extract, extract_block
from cifarlin.core.kmeans import FeatureMap, Progress
from cifarlin.core.normalize import empty_rows
from cifarlin.data.cifar import Dataset, Reader
from cifarlin.errors import CifarlinError, bad_value, check_stop, one_line
from cifarlin.features.cache import FeatureCache

Extractor = Callable[[FeatureMap, np.ndarray], np.ndarray]  # (map, images (N, 3072)) -> (N, 4k)


@dataclass(frozen=True)
class Extracted:
    """One batch file's features (or those of its mirrored images, ``view`` 'flip')."""

    batch: str  # data_batch_1 .. data_batch_5, test_batch
    view: str
    cached: bool  # found in the cache (else extracted now)
    seconds: float


def needed(
    spec: SplitSpec, augment: str | None, sizes: Sequence[int] | None = None
) -> list[tuple[int | str, str]]:
    """The (batch, view) pairs whose features a run on ``spec`` reads (see
    :func:`cifarlin.features.prepare.prepare_features`): each training batch file, with ``augment='flip'`` the
    mirror of each that holds training rows (``sizes``: the files' image counts; without them,
    every file is taken to), data_batch_2 when it is the validation set, and the test batch."""
    pairs: list[tuple[int | str, str]] = []
    n_train = sum(sizes) - (spec.val_size or 0) if sizes is not None else None
    at = 0
    for j, i in enumerate(spec.train_batches):
        pairs.append((i, ""))
        trains = n_train is None or at < n_train  # the held-out tail has no mirrors
        if augment == "flip" and trains:
            pairs.append((i, "flip"))
        at += sizes[j] if sizes is not None else 0
    if spec.val_size is None and (2, "") not in pairs:
        pairs.append((2, ""))
    pairs.append(("test", ""))
    return pairs


def fill_cache(
    dataset: Dataset,
    fmap: FeatureMap,
    spec: SplitSpec,
    augment: str | None,
    cache: FeatureCache,
    extractor: Extractor,
    on_batch: Callable[[str, str, bool], None] | None = None,
) -> list[Extracted]:
    """Put into ``cache`` the features a run on ``spec`` (with ``augment``) will read, extracting
    with ``extractor`` those not there yet. ``on_batch(name, view, cached)`` is called before each."""
    from cifarlin.core import augment as views

    if augment not in (None, "none", "flip"):
        raise bad_value("augment", augment, "features take no other views than flip")
    reader = Reader(dataset)
    batches, _ = reader.train_batches(spec)  # checks val_size against the files
    train = dict(zip(spec.train_batches, batches, strict=True))
    done = []
    for which, view in needed(spec, augment, [len(b.labels) for b in batches]):
        name = "test_batch" if which == "test" else f"data_batch_{which}"
        t0 = time.perf_counter()
        b = train[which] if which in train else reader.batch(which)  # each file read once
        images = b.images[:, views.flip_index()] if view == "flip" else b.images
        hit = cache.get(fmap, b.md5, len(images), view) is not None
        if on_batch is not None:
            on_batch(name, view, hit)
        if not hit:
            cache.put(fmap, b.md5, extractor(fmap, images), view, name)
        done.append(Extracted(name, view, hit, time.perf_counter() - t0))
        check_stop()
    return done


def local_extractor(threads: int = 2, on_rows: Progress | None = None) -> Extractor:
    """:func:`cifarlin.core.encode.extract` on ``threads`` threads of this process (``on_rows(done,
    n)`` follows each call)."""
    return lambda fmap, images: extract(fmap, images, workers=threads, on_rows=on_rows)


#: Images per Dask task, about: a task runs several of extract's blocks one after another (a
#: task per block, 5 images at 400 centroids, would cost the scheduler more than the block).
TASK_IMAGES = 320
WORKER_SECONDS = 30  # how long a cluster without workers is waited for


_malloc_tuned = False


def malloc_as_usual() -> None:
    """Undo, in this process, what the MALLOC_TRIM_THRESHOLD_ that Dask's nannies set does to the
    training loop (fresh pages mapped and zeroed for every temporary): keep temporaries of up to
    32 MB on the heap, as glibc's adaptive default does for a plain ``cifarlin train``."""
    global _malloc_tuned
    if _malloc_tuned or "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    _malloc_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


def _blocks(fmap: FeatureMap, images: np.ndarray, chunk: int) -> np.ndarray:
    """One task: the features of ``images``, ``chunk`` at a time, with one BLAS thread, as
    :func:`cifarlin.core.encode.extract`'s threads compute them (so the bits are theirs)."""
    from threadpoolctl import threadpool_limits

    malloc_as_usual()  # a nanny's MALLOC_TRIM_THRESHOLD_ would map fresh pages for every block
    out = np.empty((len(images), fmap.n_features), dtype=np.float32)
    with threadpool_limits(limits=1, user_api="blas"):
        for s in range(0, len(images), chunk):
            out[s : s + chunk] = extract_block(fmap, images[s : s + chunk])
    return out


def dask_extractor(client: Any, on_rows: Progress | None = None) -> Extractor:
    """Tasks of about :data:`TASK_IMAGES` images, in whole blocks of
    :func:`cifarlin.core.encode.block_size` images, on ``client``'s cluster; the feature map is sent
    to every worker once. Ctrl-C cancels the tasks not done."""
    maps: dict[str, Any] = {}

    def extract_on_cluster(fmap: FeatureMap, images: np.ndarray) -> np.ndarray:
        from distributed import as_completed

        if fmap.checksum not in maps:
            try:
                client.wait_for_workers(1, timeout=WORKER_SECONDS)
            except TimeoutError:
                raise CifarlinError(
                    f"the Dask cluster at {client.scheduler.address} has no workers (waited "
                    f"{WORKER_SECONDS} s): start some with 'dask worker {client.scheduler.address}'"
                ) from None
            try:
                maps[fmap.checksum] = client.scatter(fmap, broadcast=True, hash=False)
            except (OSError, TimeoutError) as e:
                raise CifarlinError(
                    f"cannot send the feature map to the Dask cluster's workers ({one_line(e)})"
                ) from None
        n, chunk = len(images), block_size(fmap)
        step = chunk * max(1, TASK_IMAGES // chunk)  # starts on the blocks of core.encode.extract
        out = empty_rows((n, fmap.n_features), np.float32)  # (N, 4k)
        futures = {
            client.submit(_blocks, maps[fmap.checksum], images[s : s + step], chunk, pure=False): s
            for s in range(0, n, step)
        }
        done = 0
        try:
            for future in as_completed(futures):
                s = futures[future]
                try:
                    block = future.result()
                except Exception as e:  # the cluster's, not the user's: say what and where
                    raise CifarlinError(
                        f"the Dask cluster failed to extract features ({one_line(e)}); its scheduler "
                        f"and workers must run this cifarlin ({__version__}) and Python environment"
                    ) from None
                out[s : s + len(block)] = block
                done += len(block)
                if on_rows is not None:
                    on_rows(done, n)
                check_stop()
        except BaseException:
            client.cancel(list(futures))
            raise
        return out

    return extract_on_cluster
