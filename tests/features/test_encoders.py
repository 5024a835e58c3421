"""The relu and split encoders, pooling grids and mirrored dictionaries (issue 29): extraction
against a naive loop over patch positions in float64, with a bound on float32's rounding derived
from the arithmetic; the grid's cells; the mirror map's identity with averaging the image and its
mirror image; fit's choices; the map's file and checksum, old files included; cache keys."""

from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest

from cifar_files import smooth_images
from cifarlin.core import augment, encode, kmeans
from cifarlin.errors import ConfigError, ModelFileError
from cifarlin.features.cache import FeatureCache
from cifarlin.store import featuremap
from tolerances import U32, U64, assert_within, gamma, outside, sum_error


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return smooth_images(24, seed=1)


def _fit(images, k=8, **choices) -> kmeans.FeatureMap:
    return kmeans.fit(images, k, seed=0, n_patches=3000, iterations=3, **choices)


def naive_cells(P: int, g: int, legacy: bool) -> list[range]:
    """The grid's rows, written out: Coates' quadrants split at round(P / 2), or cells
    [floor(i P / g), ceil((i + 1) P / g))."""
    if legacy:
        return [range(14), range(14, P)]
    return [range(int(np.floor(i * P / g)), int(np.ceil((i + 1) * P / g))) for i in range(g)]


def naive_codes(fmap: kmeans.FeatureMap, image: np.ndarray) -> np.ndarray:
    """(g, g, polarities, k) codes of every atom summed over the cells, one patch position at a
    time in float64, no mirror averaging."""
    x = image.reshape(3, 32, 32).astype(np.float64)
    p, P, g = fmap.patch, fmap.positions, fmap.pool
    rows = naive_cells(P, g, g == 2 and not fmap.mirror)
    D = fmap.centroids.astype(np.float64)
    out = np.zeros((g, g, 2 if fmap.encoder == "split" else 1, fmap.k))
    for r in range(P):
        for c in range(P):
            v = x[:, r : r + p, c : c + p].ravel()
            v = (v - v.mean()) / np.sqrt(v.var(ddof=1) + fmap.norm_eps)
            w = (v - fmap.zca_mean) @ fmap.zca
            if fmap.encoder == "triangle":
                z = np.sqrt(((w - D) ** 2).sum(axis=1))
                codes = [np.maximum(z.mean() - z, 0.0)]
            else:
                t = D @ w
                codes = [np.maximum(t - fmap.alpha, 0.0), np.maximum(-t - fmap.alpha, 0.0)]
            for i, ri in enumerate(rows):
                for j, cj in enumerate(rows):
                    if r in ri and c in cj:
                        out[i, j] += np.array(codes[: out.shape[2]])
    return out


def naive(fmap: kmeans.FeatureMap, image: np.ndarray) -> np.ndarray:
    """The map's features of one image; with ``mirror`` from the mirror image itself: the mean
    of the first k/2 atoms' codes of the image and of its mirror image."""
    f = naive_codes(fmap, image)
    if fmap.mirror:
        h = fmap.k // 2
        f = (f[..., :h] + naive_codes(fmap, image[augment.flip_index()])[..., :h]) / 2
    return f.ravel()


def code_error(fmap: kmeans.FeatureMap, image: np.ndarray, u: float) -> np.ndarray:
    """Bound (n_features,) on how far the relu or split features computed with unit roundoff u
    are from the exact ones, worst case, following encode.extract_block (n = 3p^2 values):

    normalise  the mean: a sum (gamma_n) and a division (u) of mean|x|; d = x - mean: u |d|; the
               variance: n squares summed (gamma_n + 2u of var) and the errors of d; s =
               sqrt(var + eps): half the relative error of var + eps, + u; v = d / s: u |v|.
    products   t = v @ M - bias, M = zca D^T and bias = shift D^T rounded to float32 (u each):
               the errors of v through |M|, the n-term product's gamma_n |v| @ |M|, M's u, bias's
               u |bias|, bias + alpha's u |bias + alpha|, the subtraction's u |t|.
    codes      max(0, +-t - alpha): 1-Lipschitz, + u.
    cells      each cell sums its positions' errors, and its sum's own rounding (gamma_m |sum|).
    mirror     the mean of two cells: their errors averaged, + u."""
    x = image.reshape(3, 32, 32).astype(np.float64)
    p, P, g = fmap.patch, fmap.positions, fmap.pool
    win = np.lib.stride_tricks.sliding_window_view(x, (p, p), axis=(1, 2))  # (3, P, P, p, p)
    X = win.transpose(1, 2, 0, 3, 4).reshape(P, P, -1)  # (P, P, n)
    n, gn = X.shape[-1], gamma(X.shape[-1], u)
    mean = X.mean(axis=-1, keepdims=True)
    d = X - mean
    var = (d * d).sum(axis=-1, keepdims=True) / (n - 1)
    s = np.sqrt(var + fmap.norm_eps)
    v = d / s
    dd = gn * np.abs(X).mean(axis=-1, keepdims=True) + u * (np.abs(d) + np.abs(mean))
    dvar = (gn + 2 * u) * var + 2 * (np.abs(d) * dd).sum(axis=-1, keepdims=True) / (n - 1)
    ds = dvar / (2 * (var + fmap.norm_eps)) + u
    dv = dd / s + np.abs(v) * (ds + u)
    D = fmap.centroids.astype(np.float64)
    M, bias = fmap.zca @ D.T, (fmap.zca_mean @ fmap.zca) @ D.T
    aM = np.abs(v) @ np.abs(M)  # (P, P, k)
    t = v @ M - bias
    dt = dv @ np.abs(M) + (gn + u) * aM + u * np.abs(bias) + u * np.abs(bias + fmap.alpha) + u * np.abs(t)
    codes = [np.maximum(t - fmap.alpha, 0), np.maximum(-t - fmap.alpha, 0)][
        : 2 if fmap.encoder == "split" else 1
    ]
    rows = naive_cells(P, g, g == 2 and not fmap.mirror)
    out = np.zeros((g, g, len(codes), fmap.k))
    for i, ri in enumerate(rows):
        for j, cj in enumerate(rows):
            m = len(ri) * len(cj)
            for q, f in enumerate(codes):
                cell = f[ri.start : ri.stop, cj.start : cj.stop]
                err = dt[ri.start : ri.stop, cj.start : cj.stop] + u * cell
                out[i, j, q] = err.sum(axis=(0, 1)) + gamma(m, u) * cell.sum(axis=(0, 1))
    if fmap.mirror:
        h = fmap.k // 2
        out = (out[..., :h] + out[:, ::-1, :, h:]) / 2 + u * naive_codes(fmap, image)[..., :h].max()
    return out.ravel()


def test_grid_cells_are_the_mirror_images_of_each_other():
    """Catches cells that overlap unevenly or skip a position: 27 positions in 2 cells share the
    middle one, in 3 split 9 + 9 + 9; the first format's quadrants stay 14 + 13."""
    fm = kmeans.FeatureMap(np.zeros((2, 108), np.float32), np.zeros(108), np.eye(108))
    assert encode.cells(fm) == [(0, 14), (14, 27)]
    for pool, want in ((2, [(0, 14), (13, 27)]), (3, [(0, 9), (9, 18), (18, 27)]), (1, [(0, 27)])):
        for mirror in (True, False):
            m = kmeans.FeatureMap(fm.centroids, fm.zca_mean, fm.zca, pool=pool, mirror=mirror)
            if (pool, mirror) != (2, False):
                assert encode.cells(m) == want
                assert [(27 - b, 27 - a) for a, b in reversed(want)] == want
    assert [(r.start, r.stop) for r in naive_cells(27, 4, False)] == [(0, 7), (6, 14), (13, 21), (20, 27)]
    four = kmeans.FeatureMap(fm.centroids, fm.zca_mean, fm.zca, pool=4)
    assert encode.cells(four) == [(0, 7), (6, 14), (13, 21), (20, 27)]


@pytest.mark.parametrize(
    "choices",
    [
        {"encoder": "relu", "alpha": 0.25},
        {"encoder": "split", "alpha": 0.5},
        {"encoder": "split", "alpha": 0.25, "pool": 3},
        {"encoder": "split", "alpha": 0.25, "mirror": True},
        {"encoder": "relu", "alpha": 0.0, "mirror": True, "pool": 3, "dictionary": "patches"},
    ],
)
def test_encoders_equal_a_naive_loop(images, choices):
    """Catches the threshold applied with the wrong sign, the polarities swapped or dropped, the
    whitening's shift folded in wrongly, cells of the wrong rows, a mirror pair matched with the
    wrong atom or cell, and one image's features in another's row."""
    fmap = _fit(images, **choices)
    F = encode.extract(fmap, images[:3], chunk=2)
    assert F.shape == (3, fmap.n_features) and F.dtype == np.float32
    for i in (0, 2):
        want = naive(fmap, images[i])
        bound = code_error(fmap, images[i], U32) + code_error(fmap, images[i], U64)
        assert_within(F[i], want, bound, f"image {i}")
        assert (F[i] >= 0).all() and (F[i] > 0).any() and outside(F[1], want, bound)
    if fmap.encoder == "split":  # the polarities swapped
        g, k = fmap.pool, F.shape[1] // (2 * fmap.pool**2)
        swapped = F[0].reshape(g, g, 2, k)[:, :, ::-1].ravel()
        assert outside(swapped, naive(fmap, images[0]), code_error(fmap, images[0], U32))


def test_mirror_features_are_the_same_for_an_image_and_its_mirror(images):
    """A mirrored map's features do not change when the image is mirrored (to rounding): the
    linear layer on them is the one trained on both images and averaging both at test time."""
    fmap = _fit(images, encoder="split", alpha=0.25, mirror=True, pool=3)
    assert fmap.k == 8 and fmap.n_features == 9 * 2 * 4
    assert np.array_equal(fmap.centroids[4:], fmap.centroids[:4][:, kmeans.mirror_index(6)])
    F = encode.extract(fmap, images)
    G = encode.extract(fmap, images[:, augment.flip_index()])
    bound = np.array([code_error(fmap, im, U32) for im in images])
    bound += np.array([code_error(fmap, im, U32) for im in images[:, augment.flip_index()]])
    assert_within(G, F, bound, "features of the mirror images")
    plain = _fit(images, encoder="split", alpha=0.25, pool=3)
    flipped = encode.extract(plain, images[:, augment.flip_index()])
    assert outside(flipped, encode.extract(plain, images), bound.max())  # without the mirror: not


def test_mirrored_whitening_commutes_with_the_mirror(images):
    """Catches the mirrored patches' statistics taken wrongly: the whitening of the patches and
    their mirrors together, computed from the rows alone, equals the one of both sets of rows."""
    rng = np.random.default_rng(0)
    v = kmeans.normalise_patches(kmeans.random_patches(images, 4000, 6, rng), 10.0)
    f = kmeans.mirror_index(6)
    mean, zca = kmeans.zca_whitening(v, 0.1, f)
    both_mean, both = kmeans.zca_whitening(np.vstack([v, v[:, f]]), 0.1)
    scale = np.abs(zca).max()
    # two float64 paths from float32 rows: the covariance's sums (sum_error(8000)) and eigh's
    # backward error (a few d u |cov|) through 1 / sqrt(e + eps) <= 1 / sqrt(eps)
    tol = 1e3 * sum_error(8000, U64) * scale / 0.1
    assert_within(mean, both_mean, tol * np.abs(mean).max(), "mean")
    assert_within(zca, both, tol, "zca")
    assert_within(zca[np.ix_(f, f)], zca, tol, "zca against its mirror")


def test_fit_choices(images):
    """Unit-length atoms for relu and split; random patches are rows of the whitened sample
    (no k-means rounds recorded); bad choices are one line naming the value."""
    relu = _fit(images, encoder="relu", alpha=0.25, dictionary="patches")
    assert relu.iterations == 0 and relu.dictionary == "patches"
    np.testing.assert_allclose(np.linalg.norm(relu.centroids.astype(np.float64), axis=1), 1, atol=4 * U32)
    tri = _fit(images)
    assert not np.allclose(np.linalg.norm(tri.centroids, axis=1), 1)
    for bad, match in [
        ({"encoder": "max"}, "encoder='max'"),
        ({"dictionary": "sparse"}, "dictionary='sparse'"),
        ({"encoder": "triangle", "alpha": 0.5}, "alpha=0.5"),
        ({"encoder": "relu", "alpha": float("nan")}, "alpha=nan"),
        ({"pool": 0}, "pool=0"),
        ({"pool": 10}, "pool=10"),
    ]:
        with pytest.raises(ConfigError, match=match):
            _fit(images, **bad)
    with pytest.raises(ConfigError, match="centroids=7.*even"):
        _fit(images, k=7, mirror=True)


def _old_checksum(fmap: kmeans.FeatureMap) -> str:
    """The checksum as the first format computed it: its six parameters, then the arrays."""
    params = {
        f: getattr(fmap, f) for f in ("patch", "norm_eps", "zca_eps", "seed", "iterations", "n_patches")
    }
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for a, dt in ((fmap.centroids, "<f4"), (fmap.zca_mean, "<f8"), (fmap.zca, "<f8")):
        h.update(np.ascontiguousarray(a, dtype=dt).tobytes())
    return h.hexdigest()


def test_old_feature_files_are_still_read_with_their_checksum(tmp_path, images):
    """A map file as the first format wrote it (no encoder, dictionary, pool or mirror
    attributes) reads as the triangle map it was, with the checksum it had: old model files and
    cache entries stay valid; a map of the first format's choices is written the same way."""
    fmap = _fit(images)
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:
        f.attrs.update({"format": "cifarlin", "kind": "feature-map", "format_version": 1})
        f.create_dataset("centroids", data=fmap.centroids)
        f.create_dataset("zca_mean", data=fmap.zca_mean)
        f.create_dataset("zca", data=fmap.zca)
        for name in ("patch", "norm_eps", "zca_eps", "seed", "iterations", "n_patches"):
            f.attrs[name] = getattr(fmap, name)
        f.attrs.update({"stride": 1, "activation": "triangle", "pooling": "quadrant-sum"})
        f.attrs["checksum"] = _old_checksum(fmap)
    back = featuremap.load(path)
    assert (back.encoder, back.dictionary, back.pool, back.mirror, back.alpha) == (
        "triangle",
        "kmeans",
        2,
        False,
        0,
    )
    assert back.checksum == fmap.checksum == _old_checksum(fmap)
    assert np.array_equal(encode.extract(back, images[:2]), encode.extract(fmap, images[:2]))
    new = tmp_path / "new.h5"
    featuremap.save(new, fmap)
    with h5py.File(new) as f, h5py.File(path) as g:
        assert {a for a in f.attrs if a not in ("cifarlin_version", "created")} == set(g.attrs)


def test_new_choices_round_trip_and_change_the_checksum(tmp_path, images):
    """Every choice is part of the map's identity: the same arrays with another encoder,
    threshold, grid or dictionary name are another map (and another cache entry)."""
    fmap = _fit(images, encoder="split", alpha=0.25, mirror=True, pool=3)
    path = tmp_path / "split.h5"
    featuremap.save(path, fmap)
    back = featuremap.load(path)
    assert back.checksum == fmap.checksum and back.params() == fmap.params()
    assert np.array_equal(encode.extract(back, images[:2]), encode.extract(fmap, images[:2]))
    arrays = (fmap.centroids, fmap.zca_mean, fmap.zca)
    base = {"encoder": "split", "alpha": 0.25, "pool": 3, "mirror": True}
    others = [base | {"encoder": "relu"}, base | {"alpha": 0.5}, base | {"pool": 2}, base | {"mirror": False}]
    others.append(base | {"dictionary": "patches"})
    sums = {kmeans.FeatureMap(*arrays, **o).checksum for o in others}
    assert len(sums) == len(others) and fmap.checksum not in sums
    cache = FeatureCache(tmp_path / "cache")
    md5 = "0" * 32
    cache.put(fmap, md5, encode.extract(fmap, images[:2]))
    for o in others:
        other = kmeans.FeatureMap(*arrays, **o)
        assert cache.key(other, md5) != cache.key(fmap, md5)
        assert cache.get(other, md5, 2) is None
    assert cache.get(back, md5, 2) is not None


@pytest.mark.parametrize(
    ("attrs", "why"),
    [
        ({"activation": "softmax"}, "relu/split encoder"),
        ({"pooling": "quadrant-sum"}, "make it grid-sum"),
        ({"alpha": -1.0}, "alpha=-1.0"),
        ({"pool": 40}, "pool=40"),
        ({"dictionary": "sparse"}, "dictionary='sparse'"),
        ({"mirror": 0}, "checksum does not match"),
    ],
)
def test_bad_choices_in_a_file_are_one_line(tmp_path, images, attrs, why):
    fmap = _fit(images, encoder="split", alpha=0.25, mirror=True, pool=3)
    path = tmp_path / "bad.h5"
    featuremap.save(path, fmap)
    with h5py.File(path, "r+") as f:
        f.attrs.update(attrs)
    with pytest.raises(ModelFileError, match=why) as e:
        featuremap.load(path, probe=False)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_a_mirror_map_whose_atoms_are_not_pairs_is_refused(tmp_path, images):
    fmap = _fit(images, encoder="relu", alpha=0.25, mirror=True)
    c = fmap.centroids.copy()
    c[5, 0] += 1
    bad = kmeans.FeatureMap(
        c,
        fmap.zca_mean,
        fmap.zca,
        **{k: getattr(fmap, k) for k in kmeans.LEARNT},
        encoder="relu",
        alpha=0.25,
        mirror=True,
    )
    path = tmp_path / "bad.h5"
    featuremap.save(path, bad)
    with pytest.raises(ModelFileError, match="not closed under the mirror"):
        featuremap.load(path, probe=False)


def test_atoms_in_several_passes_equal_a_naive_loop(images, monkeypatch):
    """Catches a pass that writes its codes into another pass's atoms, drops the last short pass,
    or reads the wrong columns of the products (40 atoms in passes of 16, 16 and 8)."""
    fmap = _fit(images, k=40, encoder="split", alpha=0.25, mirror=True)
    rows = fmap.positions**2 * 2  # blocks of 2 images
    monkeypatch.setattr(encode, "PASS_BYTES", 8 * rows * 16)
    assert encode.atoms_per_pass(rows, fmap.k) == 16
    F = encode.extract(fmap, images[:2], chunk=2)
    for i in range(2):
        bound = code_error(fmap, images[i], U32) + code_error(fmap, images[i], U64)
        assert_within(F[i], naive(fmap, images[i]), bound, f"image {i}")
