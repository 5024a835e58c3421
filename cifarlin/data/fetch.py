"""Fetching one URL to one file, patiently: streamed to a ``.part`` file, retried with backoff,
resumed by HTTP Range (with ``If-Range``, so a file that changed meanwhile is fetched anew), and
given up on a server that sends too little for too long (:mod:`cifarlin.data.http`).

What is fetched is not trusted here: :mod:`cifarlin.data.download` checks its MD5 before
anything is unpacked.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cifarlin import __version__
from cifarlin.data.archive import MAX_UNPACKED, SPACE_ERRNOS
from cifarlin.data.http import Pace, TooSlow, backoff, content_range, paced_urlopen
from cifarlin.data.source import RETRIES, TIMEOUT
from cifarlin.errors import DownloadError, Interrupted

OFFLINE_HINT = "or download the archive elsewhere and install it with 'cifarlin download --from-file PATH'"
MAX_ARCHIVE = MAX_UNPACKED  # bytes; the archives are 163 MB

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


def _why(e: BaseException) -> str:
    if isinstance(e, TooSlow):
        return str(e)
    if isinstance(e, urllib.error.URLError) and isinstance(e.reason, ssl.SSLCertVerificationError):
        return (
            f"the server's TLS certificate could not be verified ({e.reason.verify_message}); "
            "use --url with a mirror you trust or http:// (the MD5 check still guards the file)"
        )
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    if isinstance(e, TimeoutError | socket.timeout):
        return "timed out"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


class _StartOver(Exception):
    """The partial download cannot be continued; it is discarded and fetched from the start."""


class _WriteFailed(Exception):
    """Writing the ``.part`` file failed (its OSError is the cause)."""

    def __init__(self, e: OSError):
        super().__init__(e)
        self.error = e


def _origin(resp: Any, url: str, total: int | None) -> dict[str, Any]:
    """What identifies the file being downloaded, kept beside the .part for resuming it later."""
    return {
        "url": url,
        "etag": resp.headers.get("ETag"),
        "last_modified": resp.headers.get("Last-Modified"),
        "total": total,
    }


def _read_origin(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


class _TooLarge(DownloadError):
    """More bytes than any CIFAR-10 archive: not retried, and the partial download is deleted."""


def _too_large(url: str, what: str, max_bytes: int) -> DownloadError:
    return _TooLarge(
        f"{url}: the server {what}, more than a CIFAR-10 archive could hold ({max_bytes:,}); "
        "is the URL right?"
    )


def _copy(
    resp: Any,
    out: Any,
    done: int,
    total: int | None,
    pace: Pace,
    on_progress: Progress | None,
    chunk: int,
    max_bytes: int,
    url: str,
) -> int:
    """Copy the body of ``resp`` to ``out`` as it arrives; returns the bytes in ``out`` (``done``
    before). Progress is reported for every block and, through ``pace``, every tick of waiting."""
    if on_progress is not None:
        pace.on_wait = lambda: on_progress(done, total)
        on_progress(done, total)  # at once: the display knows the size before the first block
    read = getattr(resp, "read1", resp.read)  # whatever has arrived, not a whole chunk
    while block := read(chunk):
        try:
            out.write(block)
        except OSError as e:
            raise _WriteFailed(e) from None
        done += len(block)
        if total is not None and done > total:
            raise _StartOver(f"the server sent more than the {total} bytes it announced")
        if done > max_bytes:
            raise _too_large(url, f"sends more than {max_bytes:,} bytes", max_bytes)
        if on_progress is not None:
            on_progress(done, total)
    return done


def _close_quietly(f: Any) -> None:
    try:
        f.close()
    except OSError:
        pass


def fetch(
    url: str,
    dest: Path,
    *,
    on_progress: Progress | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    chunk: int = 1 << 18,
    max_bytes: int = MAX_ARCHIVE,
) -> int:
    """Stream ``url`` to ``dest`` through ``dest.part``; returns the number of bytes.

    A connection that breaks, or whose server sends less than :data:`~cifarlin.data.http.MIN_RATE`
    bytes per second over ``timeout`` seconds, is retried ``retries`` times with exponential
    backoff, resuming with an HTTP Range request when the server honours it (``If-Range`` with the
    ETag or date of the first response, kept in ``dest.part.json``, so a file that changed
    meanwhile is fetched anew) and starting over when it does not. ``on_progress`` is called for
    every block and every :data:`~cifarlin.data.http.TICK` of waiting. More than ``max_bytes`` is
    refused. On Ctrl-C the ``.part`` file stays for the next run to resume and
    :class:`Interrupted` is raised.
    """
    timeout = TIMEOUT if timeout is None else timeout
    retries = RETRIES if retries is None else retries
    part = dest.with_name(dest.name + ".part")
    origin_file = dest.with_name(dest.name + ".part.json")
    headers = {"User-Agent": f"cifarlin/{__version__}", "Accept-Encoding": "identity"}

    def discard() -> None:
        part.unlink(missing_ok=True)
        origin_file.unlink(missing_ok=True)

    def write_error(e: OSError, path: Path = part) -> DownloadError:
        """A failed write (a full disk, a size limit): the partial download goes, so as not to
        leave a half-written file filling the disk; retrying would fail the same way."""
        try:
            discard()
        except OSError:
            pass
        reason = os.strerror(e.errno) if e.errno else str(e)
        hint = "free some space or pass --data-dir DIR" if e.errno in SPACE_ERRNOS else "pass --data-dir DIR"
        return DownloadError(f"{path}: cannot be written ({reason}); the partial download is removed; {hint}")

    failures = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        origin = _read_origin(origin_file) if have else None
        if have and (origin is None or origin.get("url") != url):
            discard()  # a partial file of unknown origin cannot be trusted to continue
            have, origin = 0, None
        req = urllib.request.Request(url, headers=headers)
        if have and origin is not None:
            req.add_header("Range", f"bytes={have}-")
            validator = origin.get("etag") or origin.get("last_modified")
            if validator:
                req.add_header("If-Range", validator)
        pace = Pace(timeout)
        try:
            with paced_urlopen(req, timeout, pace) as resp:
                status = getattr(resp, "status", None) or 200
                if have and status == 206:
                    span = content_range(resp)
                    if span is None or span[0] != have:
                        raise _StartOver("the server resumed at another byte than asked")
                    mode, total = "ab", span[1] if span[1] is not None else (origin or {}).get("total")
                else:  # a fresh start, or a server that ignored the Range or If-Range: start over
                    have, mode = 0, "wb"
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    try:
                        origin_file.write_text(json.dumps(_origin(resp, url, total)))
                    except OSError as e:
                        raise write_error(e, origin_file) from None
                if total is not None and total > max_bytes:
                    raise _too_large(url, f"announces {total:,} bytes", max_bytes)
                try:
                    out = open(part, mode)  # noqa: SIM115 - its own error message; closed below
                except OSError as e:
                    raise write_error(e) from None
                try:
                    done = _copy(resp, out, have, total, pace, on_progress, chunk, max_bytes, url)
                    try:  # it flushes: a full disk there is a failed write, not a broken connection
                        out.close()
                    except OSError as e:
                        raise _WriteFailed(e) from None
                finally:
                    _close_quietly(out)  # after a broken connection (a flush failing then: see above)
                if total is not None and done < total:
                    raise http.client.IncompleteRead(b"", total - done)
            try:
                os.replace(part, dest)
            except OSError as e:
                raise _WriteFailed(e) from None
            origin_file.unlink(missing_ok=True)
            return done
        except KeyboardInterrupt:
            raise Interrupted(
                f"download interrupted; {part} keeps what arrived: run the same command again to resume"
            ) from None
        except _WriteFailed as e:
            raise write_error(e.error) from None
        except _StartOver as e:
            discard()
            reason = str(e)
        except _TooLarge:
            discard()
            raise
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # nothing left after our range start
                m = re.match(r"bytes \*/(\d+)", e.headers.get("Content-Range", "") if e.headers else "")
                if m and int(m[1]) == have:  # the .part is already complete
                    os.replace(part, dest)
                    origin_file.unlink(missing_ok=True)
                    return have
                discard()
                continue
            if e.code < 500 and e.code != 429:
                raise DownloadError(f"{url}: the server answered {e.code} {e.reason}") from None
            reason = f"{e.code} {e.reason}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            cause = e.reason if isinstance(e, urllib.error.URLError) else e
            if isinstance(cause, ssl.SSLCertVerificationError):
                raise DownloadError(f"{url}: {_why(e)}") from None
            if isinstance(cause, socket.gaierror):  # no name service: retrying will not help
                host = urllib.request.urlparse(url).hostname
                raise DownloadError(
                    f"{url}: cannot resolve {host} (is this machine offline?); {OFFLINE_HINT}"
                ) from None
            reason = _why(e)
        failures += 1
        if failures > retries:
            kept = f"; {part} keeps what arrived, run again to resume" if part.exists() else ""
            attempts = f"{failures} attempt" + ("s" if failures > 1 else "")
            raise DownloadError(f"{url}: download failed after {attempts} ({reason}){kept}; {OFFLINE_HINT}")
        time.sleep(backoff(failures))
