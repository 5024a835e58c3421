"""A disk cache of extracted features: the raw features of whole batch files, one entry per
(feature map, batch file MD5, view), so the next run, or a sweep's next trial, reads them instead
of extracting them again; what it holds (:meth:`FeatureCache.entries`), and emptied
(:meth:`FeatureCache.clear`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cifarlin.core.encode import extract
from cifarlin.core.kmeans import FeatureMap
from cifarlin.errors import WriteError, bad_value
from cifarlin.store.files import WritesOnly, atomic_path, make_folder, write_text


@dataclass(frozen=True)
class CacheEntry:
    """One cached batch file's features (``unfinished``: a write that never ended, a temporary)."""

    name: str  # the key: map checksum (24 digits), batch file MD5, view
    size: int  # bytes on disk, its files together
    modified: float  # the newest of its files' times (seconds since the epoch)
    images: int | None = None  # rows, from its digest file (None when that is missing or unread)
    feature_map: str = ""  # the map's checksum, from its digest file
    batch: str = ""  # the batch file's name (data_batch_1, test_batch), when its digest file says
    view: str = ""  # 'flip': the mirrored images
    unfinished: bool = False


SUFFIXES = (".npy", ".json", ".tmp")  # what the cache writes: values, digests, temporaries


@dataclass(frozen=True)
class FeatureCache:
    """Raw (unstandardised) features of whole batch files, one ``.npy`` per (feature map, batch
    file MD5) in ``folder``, with a ``.json`` beside it holding the SHA-256 of the values. A
    missing, torn or altered entry is a miss, computed and stored again."""

    folder: Path  # the command line's is $XDG_CACHE_HOME/cifarlin/features (config.feature_cache_dir)

    def key(self, fmap: FeatureMap, batch_md5: str, view: str = "") -> str:
        """The entry's name: the map's checksum, the batch file's MD5 and the view of its images
        (e.g. 'flip' for mirrored copies; '' for the images themselves)."""
        if not (len(batch_md5) == 32 and all(ch in "0123456789abcdef" for ch in batch_md5)):
            raise bad_value("batch_md5", batch_md5, "expected 32 lowercase hexadecimal digits")
        if not all(ch.isascii() and (ch.isalnum() or ch in ":,") for ch in view) or len(view) > 64:
            raise bad_value("view", view, "use letters, digits, ':' and ','")
        return f"{fmap.checksum[:24]}-{batch_md5}" + (f"-{view.replace(':', '_')}" if view else "")

    def get(self, fmap: FeatureMap, batch_md5: str, n: int, view: str = "") -> np.ndarray | None:
        """The cached (n, 4k) float32 features, or None."""
        key = self.key(fmap, batch_md5, view)
        try:
            meta = json.loads((self.folder / f"{key}.json").read_text())
            F = np.load(self.folder / f"{key}.npy", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if not isinstance(meta, dict) or F.dtype != np.float32 or F.shape != (n, fmap.n_features):
            return None
        return F if meta.get("sha256") == hashlib.sha256(np.ascontiguousarray(F).data).hexdigest() else None

    def put(self, fmap: FeatureMap, batch_md5: str, F: np.ndarray, view: str = "", batch: str = "") -> None:
        """Store features atomically: the values, then the digest that vouches for them (and
        names the ``batch`` file and the ``view``, for :meth:`entries`)."""
        key = self.key(fmap, batch_md5, view)
        F = np.ascontiguousarray(F, dtype=np.float32)
        meta = {
            "shape": list(F.shape),
            "sha256": hashlib.sha256(F.data).hexdigest(),
            "feature_map": fmap.checksum,
            "batch": batch,
            "view": view,
        }
        values = self.folder / f"{key}.npy"
        try:
            make_folder(self.folder, "the feature cache")
            with atomic_path(values) as tmp, open(tmp, "wb") as fh:
                np.save(WritesOnly(fh), F, allow_pickle=False)  # the same bytes
            try:
                write_text(self.folder / f"{key}.json", json.dumps(meta))
            except BaseException:
                try:  # no values without the digest that vouches for them
                    values.unlink(missing_ok=True)
                except OSError:
                    pass
                raise
        except WriteError as e:
            raise WriteError(f"{e}; XDG_CACHE_HOME=DIR puts the feature cache elsewhere") from None

    def entries(self) -> list[CacheEntry]:
        """What the cache holds, entry by entry (newest first); none when its folder is missing."""
        try:
            files = [f for f in self.folder.iterdir() if f.suffix in SUFFIXES and f.is_file()]
        except FileNotFoundError:
            return []
        except OSError as e:
            raise WriteError(f"cannot read the feature cache {self.folder} ({e.strerror or e})") from None
        groups: dict[tuple[str, bool], list[os.stat_result]] = {}
        meta: dict[str, Any] = {}
        for f in files:
            try:
                st = f.stat()
            except OSError:  # removed meanwhile
                continue
            unfinished = f.suffix == ".tmp"
            groups.setdefault((f.name if unfinished else f.stem, unfinished), []).append(st)
            if f.suffix == ".json":
                try:
                    meta[f.stem] = json.loads(f.read_text())
                except (OSError, ValueError):
                    pass
        out = []
        for (name, unfinished), stats in groups.items():
            m = meta.get(name) if isinstance(meta.get(name), dict) else {}
            shape = m.get("shape")
            images = shape[0] if isinstance(shape, list) and shape and isinstance(shape[0], int) else None
            fm, batch, view = (m.get(f) for f in ("feature_map", "batch", "view"))
            out.append(
                CacheEntry(
                    name,
                    sum(st.st_size for st in stats),
                    max(st.st_mtime for st in stats),
                    images,
                    fm if isinstance(fm, str) else "",
                    batch if isinstance(batch, str) else "",
                    view if isinstance(view, str) else "",
                    unfinished,
                )
            )
        return sorted(out, key=lambda e: (-e.modified, e.name))

    def clear(self) -> list[CacheEntry]:
        """Remove every entry (and unfinished write); returns what was removed. Only the cache's
        own files go: anything else in its folder stays, and so does the folder."""
        gone = self.entries()
        for e in gone:
            names = [e.name] if e.unfinished else [e.name + s for s in (".json", ".npy")]
            for name in names:  # the digest first: a half-cleared entry is a miss, never trusted
                try:
                    (self.folder / name).unlink(missing_ok=True)
                except OSError as err:
                    raise WriteError(
                        f"cannot remove {self.folder / name} from the feature cache ({err.strerror or err})"
                    ) from None
        return gone

    def features(
        self,
        fmap: FeatureMap,
        batch_md5: str,
        images: np.ndarray,
        view: str = "",
        batch: str = "",
        **extract_args: Any,
    ) -> tuple[np.ndarray, bool]:
        """The features of ``images`` (a batch file's, or their ``view``), and whether they came
        from the cache (otherwise they are extracted, with ``extract_args``, and stored)."""
        F = self.get(fmap, batch_md5, len(images), view)
        if F is not None:
            return F, True
        F = extract(fmap, images, **extract_args)
        self.put(fmap, batch_md5, F, view, batch)
        return F, False
