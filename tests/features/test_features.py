"""Coates-Ng features: extraction against a naive loop over patches, the learning steps, the
feature-map file (round trip, and one-line errors for bad files) and the features cache."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from cifar_files import smooth_images
from cifarlin.core import encode, kmeans
from cifarlin.errors import ConfigError, ModelFileError
from cifarlin.features.cache import FeatureCache
from cifarlin.store import featuremap, h5safe
from tolerances import (
    U32,
    U64,
    assert_within,
    gamma,
    gamma_tilde,
    min_gap,
    normalised_error,
    outside,
    product_error,
    sum_error,
)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return smooth_images(40, seed=0)


@pytest.fixture(scope="module")
def fmap(images) -> kmeans.FeatureMap:
    return kmeans.fit(images, 12, seed=0, n_patches=3000, iterations=4)


def naive(fmap: kmeans.FeatureMap, image: np.ndarray, split: int = 14) -> np.ndarray:
    """The paper's features of one image, one patch position at a time, in float64 (``split``:
    where the quadrants meet; 13 is the bug the tests must see)."""
    x = image.reshape(3, 32, 32).astype(np.float64)
    p, P = fmap.patch, fmap.positions
    out = np.zeros((2, 2, fmap.k))
    for r in range(P):
        for c in range(P):
            v = x[:, r : r + p, c : c + p].ravel()
            v = (v - v.mean()) / np.sqrt(v.var(ddof=1) + fmap.norm_eps)
            w = (v - fmap.zca_mean) @ fmap.zca
            z = np.sqrt(((w - fmap.centroids.astype(np.float64)) ** 2).sum(axis=1))
            out[int(r >= split), int(c >= split)] += np.maximum(z.mean() - z, 0.0)
    return out.ravel()


def extraction_error(fmap: kmeans.FeatureMap, image: np.ndarray, u: float, products_only: bool = False):
    """Bound (4k,) on how far one image's features computed with unit roundoff ``u`` can be from
    the exact ones, to first order, following encode.extract_block over the exact (float64)
    values of every patch position (n = 3p^2 values, k centroids, g = gamma~_n, the probabilistic
    bound of an n-term sum):

    normalise  the mean, a sum (g) and a division (u) of mean|v|; v - mean, u |v - mean|; the
               variance, a sum of n squares (g var) plus the errors of v - mean, then a division
               (u var); sqrt(var + eps), half of its relative error, + u; the division, u.
    whiten     the product by zca (g |v| @ |zca|; zca rounded to float32, u), minus the shift
               (u |shift|, u |w|).
    distances  |w|^2 (g) and the (n + 2)-term product with [-2 c, 1, |c|^2] give |w - c|^2 within
               e2 = (g + g_{n+2} + u)(|w| + |c|)^2 (|c|^2 rounded: the u); the square root turns
               that into e2 / |w - c|, or sqrt(e2) where |w - c| < sqrt(e2), and the whitening's
               error into at most its length (the triangle inequality); + u.
    triangle   the mean over the k distances (their largest error, + gamma_k + u of the mean),
               max(0, mean - z): 1-Lipschitz, + u; 0 where mean - z stays below 0.
    quadrants  the positions' errors summed, and the quadrant sum's own (g_positions of it).

    The roundings behind the g terms are independent and of either sign: the sum of their effects
    over a quadrant's positions adds in quadrature (Hoeffding's inequality over all of them, the
    bound of tolerances.sum_error), the other terms add up. ``products_only``: only what follows
    the whitening product, which is all another block of images can change (the normalisation
    works row by row, bit for bit the same)."""
    x = image.reshape(3, 32, 32).astype(np.float64)
    p, P = fmap.patch, fmap.positions
    win = np.lib.stride_tricks.sliding_window_view(x, (p, p), axis=(1, 2))  # (3, P, P, p, p)
    V = win.transpose(1, 2, 0, 3, 4).reshape(P * P, -1)  # (P^2, n), rows as naive() reads them
    n, k = V.shape[1], fmap.k
    g = gamma_tilde(n, u)
    d = V - V.mean(axis=1, keepdims=True)
    var = (d * d).sum(axis=1, keepdims=True) / (n - 1)
    s2 = var + fmap.norm_eps
    vt = d / np.sqrt(s2)
    Z = fmap.zca
    shift = fmap.zca_mean @ Z
    w = vt @ Z - shift  # (P^2, n) whitened
    mag = np.abs(vt) @ np.abs(Z)
    C = fmap.centroids.astype(np.float64)
    D = np.sqrt(((w[:, None, :] - C[None]) ** 2).sum(axis=2))  # (P^2, k) distances
    size = (np.sqrt((w * w).sum(axis=1))[:, None] + np.sqrt((C * C).sum(axis=1))[None]) ** 2
    e2 = (g + gamma_tilde(n + 2, u) + u) * size
    far = np.sqrt(e2) <= D  # where the square root is smooth enough for e2 / |w - c|
    mu = D.mean(axis=1, keepdims=True)
    on = 0.0 if products_only else 1.0  # the terms of the steps before the whitening product

    def through(dd, dvar, rel, dw, de2, root, dz, dmu, df):
        """Errors at each stage -> each position's features (P^2, k), linearly."""
        dvar = dvar + 2 * (np.abs(d) * dd).sum(axis=1, keepdims=True) / (n - 1)
        dvt = dd / np.sqrt(s2) + np.abs(vt) * (dvar / (2 * s2) + rel)
        dw = dw + dvt @ np.abs(Z)
        dz = dz + np.sqrt((dw * dw).sum(axis=1))[:, None] + root + np.divide(de2, D, where=far, out=0 * D)
        return dmu + dz.max(axis=1, keepdims=True) + dz + df

    mean_v = np.abs(V).mean(axis=1, keepdims=True)
    rand = through(on * g * mean_v, on * g * var, 0, g * mag, (g + gamma_tilde(n + 2, u)) * size, 0, 0, 0, 0)
    det = through(
        on * u * (np.abs(d) + mean_v),
        on * u * var,
        on * (u / 2 + 2 * u),
        on * u * (mag + np.abs(shift)) + u * np.abs(w),
        u * size,
        np.where(far, 0, np.sqrt(e2)),
        u * D,
        (gamma(k, u) + u) * mu,
        u * np.abs(mu - D),
    )
    dead = mu - D + rand + det < 0  # the triangle stays at 0 however the errors fall
    f, rand, det = (np.where(dead, 0, a).reshape(P, P, k) for a in (np.maximum(mu - D, 0), rand, det))
    h = (P + 1) // 2
    out = []
    for rows in (slice(0, h), slice(h, P)):
        for cols in (slice(0, h), slice(h, P)):
            m = len(range(P)[rows]) * len(range(P)[cols])
            q = (f[rows, cols].sum(axis=(0, 1)), rand[rows, cols], det[rows, cols])
            out.append(q[2].sum(axis=(0, 1)) + np.sqrt((q[1] ** 2).sum(axis=(0, 1))) + sum_error(m, u) * q[0])
    return np.concatenate(out)


def test_extraction_equals_a_naive_loop(images, fmap):
    """Catches patches read in a different order than the centroids were learnt in, a squared
    distance used as the distance, the wrong mean in the triangle, quadrants split 13 + 14, or
    features of one image landing in another's row."""
    F = encode.extract(fmap, images[:3], chunk=2)
    assert F.shape == (3, 48) and F.dtype == np.float32
    for i in (0, 2):
        want = naive(fmap, images[i])
        bound = extraction_error(fmap, images[i], U32) + extraction_error(fmap, images[i], U64)
        assert_within(F[i], want, bound, f"image {i}")
        assert (F[i] >= 0).all() and (F[i] > 0).any()
        assert outside(naive(fmap, images[i], split=13), want, bound)  # quadrants split 13 + 14


def test_extraction_does_not_depend_on_blocks_or_threads(images, fmap):
    """Catches a block boundary that drops or repeats an image, or threads writing over each
    other: any worker count gives the same bits; another chunking the same values to float32
    rounding (BLAS picks its kernels by matrix size)."""
    ref = encode.extract(fmap, images, chunk=40, workers=1)
    # another chunk changes only the two products' summation order (each within
    # products_only of the exact products): twice that apart
    bound = 2 * np.array([extraction_error(fmap, im, U32, products_only=True) for im in images])
    for chunk in (1, 3, 7):
        one = encode.extract(fmap, images, chunk=chunk, workers=1)
        assert_within(one, ref, bound, f"chunk {chunk}")
        for workers in (2, 3):
            assert np.array_equal(encode.extract(fmap, images, chunk=chunk, workers=workers), one)
    assert outside(np.roll(ref, 1, axis=0), ref, bound)  # one image's features in another's row
    out = np.zeros_like(ref)
    calls = []
    encode.extract(fmap, images, chunk=16, out=out, on_rows=lambda done, n: calls.append((done, n)))
    # the same chunks, so the same products: the same bits as returning them
    assert np.array_equal(out, encode.extract(fmap, images, chunk=16)) and calls == [
        (16, 40),
        (32, 40),
        (40, 40),
    ]


def test_fit_is_deterministic_and_seeded(images, fmap):
    """Catches randomness not drawn from the seed (a global generator, or the clock)."""
    again = kmeans.fit(images, 12, seed=0, n_patches=3000, iterations=4)
    other = kmeans.fit(images, 12, seed=1, n_patches=3000, iterations=4)
    assert again.checksum == fmap.checksum
    assert other.checksum != fmap.checksum
    assert fmap.centroids.shape == (12, 108) and fmap.centroids.dtype == np.float32
    assert np.isfinite(fmap.centroids).all()


def test_whitening_decorrelates_the_patches(images):
    """Catches a transposed or wrongly scaled ZCA matrix: whitened patches must have identity
    covariance but for the direction the per-patch centring removed, and ZCA's matrix is
    symmetric (PCA whitening's is not)."""
    rng = np.random.default_rng(0)
    v = kmeans.normalise_patches(kmeans.random_patches(images, 5000, 6, rng), 10.0)
    mean, zca = kmeans.zca_whitening(v, 1e-6)
    w = (v.astype(np.float64) - mean) @ zca
    e = np.linalg.eigvalsh(np.cov(w, rowvar=False))
    np.testing.assert_allclose(e[1:], 1.0, atol=1e-2)
    assert e[0] < 1e-2
    # zca = (V / sqrt(e + eps)) @ V^T: entries (i, j) and (j, i) are two sums of d products in
    # float64, in any order, each within sum_error(d) + u (the scaling) of |V| |S| |V|^T
    s, V = np.linalg.eigh(zca)  # V and S of the zca itself: their magnitudes are all we need
    bound = 2 * (sum_error(len(zca), U64) + U64) * ((np.abs(V) * np.abs(s)) @ np.abs(V).T)
    assert_within(zca, zca.T, bound, "zca against its transpose")


def test_kmeans_step_equals_lloyds_update():
    """Catches centroids averaged over the wrong rows (a sort or reduce mix-up across blocks),
    or a start not drawn from the generator as documented."""
    rng = np.random.default_rng(5)
    v = rng.normal(size=(40_000, 3)).astype(np.float32)  # three blocks of 16384
    c0 = v[np.sort(np.random.default_rng(0).choice(len(v), 5, replace=False))].astype(np.float64)
    nearest = ((v[:, None, :] - c0[None]) ** 2).sum(axis=2).argmin(axis=1)
    # kmeans assigns by the float32 product [v, 1] @ [c; -|c|^2 / 2] (|c|^2 / 2 rounded to float32):
    # no row may lie within that rounding of a tie between two centroids
    half = 0.5 * (c0 * c0).sum(axis=1)
    score = v @ c0.T - half  # (m, 5) float64
    E = product_error(v, c0.T, U32, half) + U32 * half
    assert (min_gap(score) > 2 * E.max(axis=1)).all()
    assert (score.argmax(axis=1) == nearest).all()
    groups = [v[nearest == j].astype(np.float64) for j in range(5)]
    want = np.array([g.mean(axis=0) for g in groups])
    got = kmeans.kmeans(v, 5, 1, np.random.default_rng(0))
    # both sum in float64 (sum_error + u for the division, each), then kmeans rounds to float32
    sums = np.array([(sum_error(len(g), U64) + U64) * np.abs(g).mean(axis=0) for g in groups])
    assert_within(got, want, U32 * np.abs(want) + 2 * sums, "centroids")


def test_kmeans_moves_empty_centroids_onto_patches():
    """Coates' code zeroes an empty centroid; a NaN from 0 / 0 would poison every feature."""
    v = np.repeat(np.array([[0.0], [1.0]], dtype=np.float32), [6, 4], axis=0)
    c = kmeans.kmeans(v, 5, 3, np.random.default_rng(0))
    assert np.isfinite(c).all() and set(c.ravel()) <= {0.0, 1.0}


def test_standardisation_statistics(images, fmap):
    """Catches the statistics of the wrong axis, or eps left out (a dead feature would divide by
    zero)."""
    F = encode.extract(fmap, images)
    stats = kmeans.FeatureStats.fit(F, eps=0.01)
    Z = stats.apply(F)
    # The exact mean of the exactly standardised F is (mean F - stats.mean) / std, the float64
    # mean's rounding (sum_error(n) + u of mean|F|); Z rounds as core.normalize.Normalizer.apply does
    # (tolerances.normalised_error, the statistics' cast to float32 included), and its float32
    # mean adds sum_error(n) + u of mean|Z|.
    F64, n = F.astype(np.float64), len(F)
    mean_error = (sum_error(n, U64) + U64) * np.abs(F64).mean(axis=0) / stats.std
    z_error = normalised_error(Z, stats.mean / stats.std, U32).mean(axis=0)
    bound = mean_error + z_error + (sum_error(n, U32) + U32) * np.abs(Z).mean(axis=0)
    assert_within(Z.mean(axis=0), 0, bound, "mean of the standardised features")
    assert outside(((F - F.mean(axis=1, keepdims=True)) / stats.std).mean(axis=0), 0, bound)  # wrong axis
    # std: var = s2 / n - mean^2 from float64 sums (each sum_error(n) + u, and u to subtract)
    # against NumPy's two-pass variance (the same again, of var); sqrt and + eps halve it, + 2u
    m2, var = (F64 * F64).mean(axis=0), F64.var(axis=0)
    dvar = (sum_error(n, U64) + 2 * U64) * (m2 + 2 * F64.mean(axis=0) ** 2 + 2 * var)
    want = np.sqrt(var + 0.01)
    assert_within(stats.std, want, (dvar / (2 * want**2) + 4 * U64) * want, "std")
    same = stats.apply(F, out=F)
    assert same is F and np.array_equal(F, Z)


def test_feature_map_round_trips_through_its_file_and_a_model_group(tmp_path, fmap, images):
    """Catches a parameter or array lost or retyped on the way (the loaded map must extract the
    same features), in a file of its own and as a group inside another (model) file."""
    path = tmp_path / "kmeans12.h5"
    featuremap.save(path, fmap, attrs={"note": "test"})
    back = featuremap.load(path)
    assert back.checksum == fmap.checksum and back.params() == fmap.params()
    assert np.array_equal(encode.extract(back, images[:2]), encode.extract(fmap, images[:2]))
    model = tmp_path / "model.h5"
    with h5py.File(model, "w") as f:
        f.create_dataset("W", data=np.zeros((10, 48)))
        featuremap.write_group(f.create_group("features"), fmap)
    with h5safe.open_file(model, "model") as r:
        assert featuremap.read_group(r.group("features")).checksum == fmap.checksum


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


def _replace(name, value):
    def edit(f):
        del f[name]
        f.create_dataset(name, data=value)

    return edit


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda f: f.attrs.__setitem__("kind", "model"), "not a cifarlin feature map"),
        (lambda f: f.attrs.__setitem__("format_version", 7), "format version 7"),
        (lambda f: f.attrs.__setitem__("pooling", "max"), "grid sums"),
        (lambda f: f.attrs.__setitem__("patch", 40), "'patch' is 40"),
        (lambda f: f.attrs.__setitem__("zca_eps", -1.0), "finite and > 0"),
        (lambda f: f.__delitem__("zca"), "no dataset 'zca'"),
        (_replace("zca_mean", np.zeros(5)), "'zca_mean' has shape"),
        (_replace("centroids", np.zeros((3, 7))), "(k, 108)"),
        (_replace("centroids", np.zeros((3, 108), dtype=np.int32)), "'centroids' has shape"),
        (_replace("centroids", np.zeros((2,), dtype=np.float32)), "'centroids' has shape"),
        (lambda f: f["centroids"].__setitem__((0, 0), np.nan), "NaN or infinite"),
        (lambda f: f["centroids"].__setitem__((0, 0), 1e3), "checksum does not match"),
        (lambda f: f.attrs.__setitem__("seed", 99), "checksum does not match"),
    ],
)
def test_bad_feature_files_give_one_line_errors(tmp_path, fmap, edit, why):
    """Catches a hostile or damaged feature file read as a map (or crashing cifarlin): each fault
    is one line naming the file."""
    path = tmp_path / "bad.h5"
    featuremap.save(path, fmap)
    _edit(path, edit)
    with pytest.raises(ModelFileError, match=why) as e:
        featuremap.load(path, probe=False)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


@pytest.mark.parametrize("content", [b"", b"not hdf5 at all", b"\x89HDF\r\n\x1a\n" + b"\0" * 40])
def test_files_that_are_not_feature_maps(tmp_path, content):
    path = tmp_path / "kmeans.h5"
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as e:
        featuremap.load(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)
    with pytest.raises(ModelFileError, match="no such file"):
        featuremap.load(tmp_path / "missing.h5")


def test_cache_stores_finds_and_refuses_damaged_entries(tmp_path, fmap, images):
    """Catches a cache entry reused for another feature map or batch, a torn or altered file
    served as features, or a miss that is not stored."""
    cache = FeatureCache(tmp_path / "cache")
    md5 = "0123456789abcdef0123456789abcdef"
    F, hit = cache.features(fmap, md5, images[:5], chunk=2)
    assert not hit and cache.get(fmap, md5, 5) is not None
    F2, hit = cache.features(fmap, md5, images[:5])
    assert hit and np.array_equal(F, F2)
    assert cache.get(fmap, "f" * 32, 5) is None  # another batch file
    assert cache.get(fmap, md5, 5, view="flip") is None  # the mirrored images of the same file
    with pytest.raises(ConfigError, match="view"):
        cache.get(fmap, md5, 5, view="../x")
    other = kmeans.fit(images, 12, seed=1, n_patches=3000, iterations=1)
    assert cache.get(other, md5, 5) is None  # another map
    npy = next((tmp_path / "cache").glob("*.npy"))
    raw = bytearray(npy.read_bytes())
    raw[-1] ^= 1
    npy.write_bytes(bytes(raw))
    assert cache.get(fmap, md5, 5) is None  # altered values
    npy.write_bytes(bytes(raw[:100]))
    assert cache.get(fmap, md5, 5) is None  # torn
    meta = next((tmp_path / "cache").glob("*.json"))
    meta.write_text(json.dumps([1]))
    assert cache.get(fmap, md5, 5) is None
    with pytest.raises(ConfigError, match="batch_md5"):
        cache.get(fmap, "../../etc/passwd", 5)


def test_centroid_images_for_the_montage(fmap):
    imgs = kmeans.centroid_images(fmap)
    assert imgs.shape == (12, 6, 6, 3) and imgs.min() >= 0 and imgs.max() <= 1


def test_kmeans_reports_each_rounds_objective_and_fits_the_same():
    """Bug: `features fit` showed bare "k-means round N/20" lines. Each round now reports the
    mean squared distance of the rows to the centroids they were assigned to (those of the round
    before), read from the assignment's scores; the centroids are the same bits with or without."""
    rng = np.random.default_rng(3)
    v = rng.normal(size=(40_000, 4)).astype(np.float32)  # three blocks of 16384
    v[:20_000] += 3.0
    calls = []
    got = kmeans.kmeans(v, 6, 4, np.random.default_rng(0), lambda *a: calls.append(a))
    assert np.array_equal(got, kmeans.kmeans(v, 6, 4, np.random.default_rng(0)))
    assert [(r, n) for r, n, _ in calls] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    v64 = v.astype(np.float64)
    for r, _, objective in calls:
        before = kmeans.kmeans(v, 6, r - 1, np.random.default_rng(0)).astype(np.float64)
        want = ((v64[:, None, :] - before[None]) ** 2).sum(axis=2).min(axis=1).mean()
        # float32 scores c.v - |c|^2/2 of size ~|v||c|: their rounding, twice, against |v|^2 ~ 13
        assert abs(objective - want) < 1e-4 * want, (r, objective, want)
    assert calls[-1][2] < calls[0][2]  # Lloyd's rounds never raise it
