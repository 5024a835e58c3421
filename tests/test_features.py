"""Coates-Ng features: extraction against a naive loop over patches, the learning steps, the
feature-map file (round trip, and one-line errors for bad files) and the features cache."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from cifarlin import features, h5safe
from cifarlin.errors import ConfigError, ModelFileError


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Smooth random images (blurred noise), so that patches have structure to cluster."""
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(40, 3, 36, 36))
    k = np.ones(5) / 5
    for axis in (2, 3):
        noise = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), axis, noise)
    x = (noise - noise.min()) / (noise.max() - noise.min()) * 255
    return x.reshape(40, -1).astype(np.uint8)


@pytest.fixture(scope="module")
def fmap(images) -> features.FeatureMap:
    return features.fit(images, 12, seed=0, n_patches=3000, iterations=4)


def naive(fmap: features.FeatureMap, image: np.ndarray) -> np.ndarray:
    """The paper's features of one image, one patch position at a time, in float64."""
    x = image.reshape(3, 32, 32).astype(np.float64)
    p, P = fmap.patch, fmap.positions
    out = np.zeros((2, 2, fmap.k))
    for r in range(P):
        for c in range(P):
            v = x[:, r : r + p, c : c + p].ravel()
            v = (v - v.mean()) / np.sqrt(v.var(ddof=1) + fmap.norm_eps)
            w = (v - fmap.zca_mean) @ fmap.zca
            z = np.sqrt(((w - fmap.centroids.astype(np.float64)) ** 2).sum(axis=1))
            out[int(r >= 14), int(c >= 14)] += np.maximum(z.mean() - z, 0.0)
    return out.ravel()


def test_extraction_equals_a_naive_loop(images, fmap):
    """Catches patches read in a different order than the centroids were learnt in, a squared
    distance used as the distance, the wrong mean in the triangle, quadrants split 13 + 14, or
    features of one image landing in another's row."""
    F = features.extract(fmap, images[:3], chunk=2)
    assert F.shape == (3, 48) and F.dtype == np.float32
    for i in (0, 2):
        want = naive(fmap, images[i])
        np.testing.assert_allclose(F[i], want, rtol=0, atol=2e-5 * np.abs(want).max())
        assert (F[i] >= 0).all() and (F[i] > 0).any()


def test_extraction_does_not_depend_on_blocks_or_threads(images, fmap):
    """Catches a block boundary that drops or repeats an image, or threads writing over each
    other: any worker count gives the same bits; another chunking the same values to float32
    rounding (BLAS picks its kernels by matrix size)."""
    ref = features.extract(fmap, images, chunk=40, workers=1)
    for chunk in (1, 3, 7):
        one = features.extract(fmap, images, chunk=chunk, workers=1)
        np.testing.assert_allclose(one, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
        for workers in (2, 3):
            assert np.array_equal(features.extract(fmap, images, chunk=chunk, workers=workers), one)
    out = np.zeros_like(ref)
    calls = []
    features.extract(fmap, images, chunk=16, out=out, on_rows=lambda done, n: calls.append((done, n)))
    assert np.array_equal(out, ref) and calls == [(16, 40), (32, 40), (40, 40)]


def test_fit_is_deterministic_and_seeded(images, fmap):
    """Catches randomness not drawn from the seed (a global generator, or the clock)."""
    again = features.fit(images, 12, seed=0, n_patches=3000, iterations=4)
    other = features.fit(images, 12, seed=1, n_patches=3000, iterations=4)
    assert again.checksum == fmap.checksum
    assert other.checksum != fmap.checksum
    assert fmap.centroids.shape == (12, 108) and fmap.centroids.dtype == np.float32
    assert np.isfinite(fmap.centroids).all()


def test_whitening_decorrelates_the_patches(images):
    """Catches a transposed or wrongly scaled ZCA matrix: whitened patches must have identity
    covariance but for the direction the per-patch centring removed, and ZCA's matrix is
    symmetric (PCA whitening's is not)."""
    rng = np.random.default_rng(0)
    v = features.normalise_patches(features.random_patches(images, 5000, 6, rng), 10.0)
    mean, zca = features.zca_whitening(v, 1e-6)
    w = (v.astype(np.float64) - mean) @ zca
    e = np.linalg.eigvalsh(np.cov(w, rowvar=False))
    np.testing.assert_allclose(e[1:], 1.0, atol=1e-2)
    assert e[0] < 1e-2
    np.testing.assert_allclose(zca, zca.T, atol=1e-6 * np.abs(zca).max())


def test_kmeans_step_equals_lloyds_update():
    """Catches centroids averaged over the wrong rows (a sort or reduce mix-up across blocks),
    or a start not drawn from the generator as documented."""
    rng = np.random.default_rng(5)
    v = rng.normal(size=(40_000, 3)).astype(np.float32)  # three blocks of 16384
    c0 = v[np.sort(np.random.default_rng(0).choice(len(v), 5, replace=False))].astype(np.float64)
    nearest = ((v[:, None, :] - c0[None]) ** 2).sum(axis=2).argmin(axis=1)
    want = np.array([v[nearest == j].mean(axis=0) for j in range(5)])
    got = features.kmeans(v, 5, 1, np.random.default_rng(0))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_kmeans_moves_empty_centroids_onto_patches():
    """Coates' code zeroes an empty centroid; a NaN from 0 / 0 would poison every feature."""
    v = np.repeat(np.array([[0.0], [1.0]], dtype=np.float32), [6, 4], axis=0)
    c = features.kmeans(v, 5, 3, np.random.default_rng(0))
    assert np.isfinite(c).all() and set(c.ravel()) <= {0.0, 1.0}


def test_standardisation_statistics(images, fmap):
    """Catches the statistics of the wrong axis, or eps left out (a dead feature would divide by
    zero)."""
    F = features.extract(fmap, images)
    stats = features.FeatureStats.fit(F, eps=0.01)
    Z = stats.apply(F)
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(stats.std, np.sqrt(F.astype(np.float64).var(axis=0) + 0.01), rtol=1e-6)
    same = stats.apply(F, out=F)
    assert same is F and np.array_equal(F, Z)


def test_feature_map_round_trips_through_its_file_and_a_model_group(tmp_path, fmap, images):
    """Catches a parameter or array lost or retyped on the way (the loaded map must extract the
    same features), in a file of its own and as a group inside another (model) file."""
    path = tmp_path / "kmeans12.h5"
    features.save(path, fmap, attrs={"note": "test"})
    back = features.load(path)
    assert back.checksum == fmap.checksum and back.params() == fmap.params()
    assert np.array_equal(features.extract(back, images[:2]), features.extract(fmap, images[:2]))
    model = tmp_path / "model.h5"
    with h5py.File(model, "w") as f:
        f.create_dataset("W", data=np.zeros((10, 48)))
        features.write_group(f.create_group("features"), fmap)
    with h5safe.open_file(model, "model") as r:
        assert features.read_group(r.group("features")).checksum == fmap.checksum


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
        (lambda f: f.attrs.__setitem__("pooling", "max"), "quadrant sums"),
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
    features.save(path, fmap)
    _edit(path, edit)
    with pytest.raises(ModelFileError, match=why) as e:
        features.load(path, probe=False)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


@pytest.mark.parametrize("content", [b"", b"not hdf5 at all", b"\x89HDF\r\n\x1a\n" + b"\0" * 40])
def test_files_that_are_not_feature_maps(tmp_path, content):
    path = tmp_path / "kmeans.h5"
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as e:
        features.load(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)
    with pytest.raises(ModelFileError, match="no such file"):
        features.load(tmp_path / "missing.h5")


def test_cache_stores_finds_and_refuses_damaged_entries(tmp_path, fmap, images):
    """Catches a cache entry reused for another feature map or batch, a torn or altered file
    served as features, or a miss that is not stored."""
    cache = features.FeatureCache(tmp_path / "cache")
    md5 = "0123456789abcdef0123456789abcdef"
    F, hit = cache.features(fmap, md5, images[:5], chunk=2)
    assert not hit and cache.get(fmap, md5, 5) is not None
    F2, hit = cache.features(fmap, md5, images[:5])
    assert hit and np.array_equal(F, F2)
    assert cache.get(fmap, "f" * 32, 5) is None  # another batch file
    assert cache.get(fmap, md5, 5, view="flip") is None  # the mirrored images of the same file
    with pytest.raises(ConfigError, match="view"):
        cache.get(fmap, md5, 5, view="../x")
    other = features.fit(images, 12, seed=1, n_patches=3000, iterations=1)
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
    imgs = features.centroid_images(fmap)
    assert imgs.shape == (12, 6, 6, 3) and imgs.min() >= 0 and imgs.max() <= 1
