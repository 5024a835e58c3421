"""Where ``cifarlin download`` fetches the CIFAR-10 archive from and how patiently
(:class:`DownloadConfig`), validated when made.

This module imports nothing heavy: the command line reads its defaults from here.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from cifarlin.core.config import LAYOUTS
from cifarlin.errors import bad_value

TIMEOUT = 30.0  # seconds, for connecting and for each read
MAX_TIMEOUT = 86400.0
RETRIES = 4  # further attempts after a broken or failed connection
MAX_RETRIES = 100


def check_md5_text(md5: str | None) -> str | None:
    """``md5`` in lower case, or :class:`ConfigError` when it is not 32 hexadecimal digits."""
    if md5 is not None and not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
        raise bad_value("md5", md5, "expected 32 hexadecimal digits")
    return md5.lower() if md5 else None


def check_url(url: str) -> str:
    try:
        parts = urllib.parse.urlparse(url)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if (
        parts is None
        or parts.scheme not in ("http", "https", "ftp", "file")
        or (parts.scheme != "file" and not host)
    ):
        raise bad_value("url", url, "expected an http://, https://, ftp:// or file:// address of the archive")
    return url


@dataclass(frozen=True)
class DownloadConfig:
    """Where to fetch an archive from and how patiently: the official one unless ``url`` is given
    (with ``md5`` when it is not the official archive)."""

    layout: str = "python"
    url: str | None = None
    md5: str | None = None
    timeout: float = TIMEOUT
    retries: int = RETRIES

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise bad_value("layout", self.layout, f"use one of {', '.join(LAYOUTS)}")
        if self.url is not None:
            check_url(self.url)
        object.__setattr__(self, "md5", check_md5_text(self.md5))
        timeout_ok = (
            type(self.timeout) in (int, float) and 0 < self.timeout <= MAX_TIMEOUT
        )  # not NaN, not a bool
        if not timeout_ok:
            raise bad_value("timeout", self.timeout, f"use a number of seconds > 0 and <= {MAX_TIMEOUT:g}")
        if not (type(self.retries) is int and 0 <= self.retries <= MAX_RETRIES):
            raise bad_value("retries", self.retries, f"use 0 to {MAX_RETRIES}")
