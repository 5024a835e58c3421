"""The feature cache's listing and clearing (`cifarlin features cache`)."""

from __future__ import annotations

import numpy as np

from cifarlin.core import kmeans
from cifarlin.features.cache import FeatureCache


def _fmap() -> kmeans.FeatureMap:
    images = np.random.default_rng(0).integers(0, 256, (8, kmeans.D), dtype=np.uint8)
    return kmeans.fit(images, 3, n_patches=300, iterations=1)


def test_entries_name_each_batch_file_and_clear_removes_only_the_caches_files(tmp_path):
    """Bug: 92 MB of cache after one small run, and no way to see or remove it."""
    cache = FeatureCache(tmp_path / "features")
    assert cache.entries() == [] and cache.clear() == []  # no folder yet
    fmap = _fmap()
    F = np.ones((5, fmap.n_features), dtype=np.float32)
    cache.put(fmap, "a" * 32, F, batch="data_batch_1")
    cache.put(fmap, "a" * 32, F, "flip", batch="data_batch_1")
    cache.put(fmap, "b" * 32, F[:2])  # written before entries named their batch file
    (cache.folder / ".x.npy.123.tmp").write_bytes(b"123")  # a write that never ended
    (cache.folder / "notes.txt").write_text("mine")
    entries = cache.entries()
    assert len(entries) == 4
    named = {(e.batch, e.view): e for e in entries if not e.unfinished}
    assert set(named) == {("data_batch_1", ""), ("data_batch_1", "flip"), ("", "")}
    assert named["data_batch_1", ""].images == 5 and named["", ""].images == 2
    assert named["data_batch_1", "flip"].feature_map == fmap.checksum
    on_disk = {f.name: f.stat().st_size for f in cache.folder.iterdir() if f.name != "notes.txt"}
    assert sum(e.size for e in entries) == sum(on_disk.values())
    assert [e.unfinished for e in entries].count(True) == 1
    gone = cache.clear()
    assert sorted(e.name for e in gone) == sorted(e.name for e in entries)
    assert [f.name for f in cache.folder.iterdir()] == ["notes.txt"]
    assert cache.get(fmap, "a" * 32, 5) is None and cache.entries() == []
