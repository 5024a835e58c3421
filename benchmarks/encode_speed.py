"""Extraction against the machine's floor: what one block of images costs, step by step, next to
a bare float32 GEMM of the encoder's shape run the same way (the same threads, one BLAS thread
each), measured in the same run.

    python benchmarks/encode_speed.py [--centroids 3200] [--encoder split] [--mirror] [--pool 2]
        [--images 400] [--workers 2] [--repeat 3] [--data-dir DIR] [--json]

A map is fitted on 5,000 training images (a few k-means rounds: its atoms' values do not change
the cost), then:

1. bare GEMM: the block's product, (P^2 chunk, 3p^2) @ (3p^2, k) float32, on ``workers``
   threads at once, one BLAS thread each: the floor for this shape;
2. extraction: core.encode.extract over ``images`` images as cifarlin runs it, its GFLOP/s
   counting the products only (2 P^2 3p^2 k an image, + the whitening's for the triangle);
3. the steps of one block on one thread: patches and their normalisation, the products, the
   encoder's elementwise passes with the pooling.

Prints the medians of ``repeat`` timings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

import numpy as np
from common import default_data_dir
from threadpoolctl import threadpool_limits

from cifarlin.core import encode, kmeans
from cifarlin.data import cifar as data


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def on_threads(fn, workers: int) -> None:
    """fn() on ``workers`` threads at once, one BLAS thread each (as extract runs its blocks)."""
    with threadpool_limits(limits=1, user_api="blas"):
        ts = [threading.Thread(target=fn) for _ in range(workers)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=default_data_dir())
    ap.add_argument("--centroids", type=int, default=3200)
    ap.add_argument("--encoder", default="split", choices=kmeans.ENCODERS)
    ap.add_argument("--alpha", type=float, default=0.25)
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--mirror", action="store_true")
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    images = data.Reader(data.find(a.data_dir)).batch(1).images
    alpha = 0.0 if a.encoder == "triangle" else a.alpha
    fmap = kmeans.fit(
        images[:5000], a.centroids, n_patches=max(20_000, a.centroids), iterations=2,
        encoder=a.encoder, alpha=alpha, pool=a.pool, mirror=a.mirror,
    )  # fmt: skip
    chunk, k, P2, w = encode.block_size(fmap), fmap.k, fmap.positions**2, 3 * fmap.patch**2
    flops = 2 * P2 * (w + 2 if a.encoder == "triangle" else w) * k  # an image's products
    flops += 2 * P2 * w * w if a.encoder == "triangle" else 0  # its whitening
    X = np.random.default_rng(0).standard_normal((P2 * chunk, w), dtype=np.float32)
    M = np.random.default_rng(1).standard_normal((w, k), dtype=np.float32)
    per_thread = max(1, a.images // (chunk * a.workers))

    def gemms() -> None:
        for _ in range(per_thread):
            X @ M

    bare = median_time(lambda: on_threads(gemms, a.workers), a.repeat)
    bare_gflops = a.workers * per_thread * 2 * P2 * chunk * w * k / bare / 1e9
    block = images[: a.images]
    encode.extract(fmap, block[: chunk * 2], workers=a.workers)  # warm: the plan, the pages
    full = median_time(lambda: encode.extract(fmap, block, workers=a.workers), a.repeat)
    one = images[:chunk]
    with threadpool_limits(limits=1, user_api="blas"):
        patches = median_time(
            lambda: kmeans.normalise_patches(kmeans.all_patches(one, fmap.patch), fmap.norm_eps), a.repeat
        )
        v = kmeans.normalise_patches(kmeans.all_patches(one, fmap.patch), fmap.norm_eps)
        product = median_time(lambda: v @ fmap._plan[0], a.repeat) if a.encoder != "triangle" else None
        whole = median_time(lambda: encode.extract_block(fmap, one), a.repeat)
    result = {
        "map": fmap.describe(),
        "features": fmap.n_features,
        "chunk": chunk,
        "workers": a.workers,
        "bare_gemm_gflops": round(bare_gflops, 1),
        "extract_gflops": round(a.images * flops / full / 1e9, 1),
        "extract_ms_per_image": round(1e3 * full / a.images, 3),
        "one_block_ms": {
            "patches_and_normalisation": round(1e3 * patches, 2),
            "products": None if product is None else round(1e3 * product, 2),
            "whole": round(1e3 * whole, 2),
        },
    }
    result["of_the_floor"] = round(result["extract_gflops"] / result["bare_gemm_gflops"], 3)
    if a.json:
        print(json.dumps(result))
        return
    print(f"{result['map']}: {fmap.n_features} features, blocks of {chunk} images on {a.workers} threads")
    print(
        f"bare float32 GEMM ({P2 * chunk} x {w}) @ ({w} x {k}): {bare_gflops:.1f} GFLOP/s; "
        f"extraction {result['extract_gflops']} GFLOP/s ({100 * result['of_the_floor']:.0f}% of it), "
        f"{result['extract_ms_per_image']} ms an image"
    )
    print(f"one block on one thread (ms): {result['one_block_ms']}")


if __name__ == "__main__":
    main()
