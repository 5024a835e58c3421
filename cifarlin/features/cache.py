"""A disk cache of extracted features: the raw features of whole batch files, one entry per
(feature map, batch file MD5, view), so the next run, or a sweep's next trial, reads them instead
of extracting them again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cifarlin.core.kmeans import FeatureMap, extract
from cifarlin.errors import WriteError, bad_value
from cifarlin.store.files import WritesOnly, atomic_path, make_folder, write_text


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

    def put(self, fmap: FeatureMap, batch_md5: str, F: np.ndarray, view: str = "") -> None:
        """Store features atomically: the values, then the digest that vouches for them."""
        key = self.key(fmap, batch_md5, view)
        F = np.ascontiguousarray(F, dtype=np.float32)
        meta = {
            "shape": list(F.shape),
            "sha256": hashlib.sha256(F.data).hexdigest(),
            "feature_map": fmap.checksum,
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

    def features(
        self, fmap: FeatureMap, batch_md5: str, images: np.ndarray, view: str = "", **extract_args: Any
    ) -> tuple[np.ndarray, bool]:
        """The features of ``images`` (a batch file's, or their ``view``), and whether they came
        from the cache (otherwise they are extracted, with ``extract_args``, and stored)."""
        F = self.get(fmap, batch_md5, len(images), view)
        if F is not None:
            return F, True
        F = extract(fmap, images, **extract_args)
        self.put(fmap, batch_md5, F, view)
        return F, False
