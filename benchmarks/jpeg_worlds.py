"""How much the stand-in's JPEG damage costs, measured on its exact images.

    python benchmarks/jpeg_worlds.py [--data-dir DIR] [--centroids 400]

The stand-in's first 4,000 images of data_batch_1 and first 1,000 of test_batch are exact; the rest
went through JPEG (mean absolute difference 5.8 per value). JPEG at quality 75 (Pillow's default)
gives the exact images the same mean absolute difference, so the official files and the stand-in
can be compared in miniature: an "exact world" (feature map, classifier and test images exact)
against a "JPEG world" (the same images compressed), two folds of 3,000 training and 1,000
validation images (lambda chosen there, from 33 values), the 1,000 exact test images. Each world
fits its own k-means map (6x6 patches, 200,000 patches, 20 rounds, seed 0) on its training images;
the classifier is ridge, on the standardised features and on the pixels.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from common import default_data_dir
from PIL import Image

from cifarlin.core import encode, kmeans
from cifarlin.data import cifar as data

EXACT_TRAIN, EXACT_TEST = 4000, 1000
LAMBDAS = np.logspace(-5, 3, 33)


def jpeg(rows: np.ndarray, quality: int = 75) -> np.ndarray:
    """Images (n, 3072) uint8 through JPEG and back."""
    out = np.empty_like(rows)
    for i, row in enumerate(rows):
        buf = io.BytesIO()
        Image.fromarray(row.reshape(3, 32, 32).transpose(1, 2, 0)).save(buf, "JPEG", quality=quality)
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("RGB")).transpose(2, 0, 1).reshape(-1)
    return out


def ridge(F, y, Fv, yv, Ft, yt) -> tuple[float, float, float]:
    """One-hot ridge on standardised inputs, lambda best on validation: (val acc, lambda, test acc)."""
    mu, sd = F.mean(0), F.std(0) + 1e-2
    Z = (F - mu) / sd
    Y = np.eye(10)[y]
    ev, V = np.linalg.eigh(Z.T @ Z / len(Z))
    cV = V.T @ (Z.T @ (Y - Y.mean(0)) / len(Z))

    def acc(W, X, labels):
        return float(((((X - mu) / sd) @ W).argmax(1) == labels).mean())

    best = max(
        ((acc(W := V @ (cV / (ev + lam)[:, None]), Fv, yv), lam, W) for lam in LAMBDAS), key=lambda t: t[0]
    )
    return best[0], best[1], acc(best[2], Ft, yt)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(default_data_dir()))
    ap.add_argument("--centroids", type=int, default=400)
    args = ap.parse_args()
    reader = data.Reader(data.find(Path(args.data_dir)))
    b1, bt = reader.batch(1), reader.batch("test")
    X, y = b1.images[:EXACT_TRAIN], b1.labels[:EXACT_TRAIN]
    T, yt = bt.images[:EXACT_TEST], bt.labels[:EXACT_TEST]
    mad = float(np.abs(jpeg(T).astype(int) - T).mean())
    print(f"JPEG quality 75 on the exact test images: mean absolute difference {mad:.2f}")
    worlds = {"exact": (X, T), "JPEG": (jpeg(X), jpeg(T))}
    folds = ((slice(0, 3000), slice(3000, 4000)), (slice(1000, 4000), slice(0, 1000)))
    for fold, (tr, va) in enumerate(folds):
        for name, (Xw, Tw) in worlds.items():
            fmap = kmeans.fit(Xw[tr], args.centroids, seed=0)
            F = encode.extract(fmap, Xw).astype(np.float64)
            Ft = encode.extract(fmap, Tw).astype(np.float64)
            kv, kl, kt = ridge(F[tr], y[tr], F[va], y[va], Ft, yt)
            P, Pt = Xw.astype(np.float64), Tw.astype(np.float64)
            pv, _, pt = ridge(P[tr], y[tr], P[va], y[va], Pt, yt)
            print(
                f"fold {fold}, {name:5} world: k-means {args.centroids} val {kv:.3f} test {kt:.3f} "
                f"(lambda {kl:.2g}); pixels val {pv:.3f} test {pt:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
