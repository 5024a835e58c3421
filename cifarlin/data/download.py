"""Fetching, verifying and safely unpacking the CIFAR-10 archives.

Nothing downloaded is trusted: the archive's MD5 is checked before anything is extracted, and
:mod:`cifarlin.data.archive` unpacks it safely. Downloads go to cifarlin's own folder in the data
folder (:data:`DOWNLOAD_FOLDER`), under a name of cifarlin's choosing, never one taken from the
URL; they stream to a ``.part`` file, retry with backoff, resume by HTTP Range, and give up on a
server that sends too little for too long (:class:`_Pace`).
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import io
import json
import os
import re
import socket
import ssl
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cifarlin import __version__
from cifarlin.data import cifar as data
from cifarlin.data.archive import MAX_UNPACKED, SPACE_ERRNOS, extract
from cifarlin.data.source import RETRIES, TIMEOUT, DownloadConfig
from cifarlin.errors import DataError, DownloadError, Interrupted, WriteError, bad_value

OFFICIAL_URL = {
    "python": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "binary": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
}
OFFICIAL_MD5 = {
    "python": "c58f30108f718f92721af3b95e74349a",
    "binary": "c32a1d4ab5d03f1284b67883e8d87530",
}
#: Per-file MD5 of the official python version (as torchvision lists them).
OFFICIAL_FILE_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
OFFLINE_HINT = "or download the archive elsewhere and install it with 'cifarlin download --from-file PATH'"
BACKOFF = 1.0  # seconds before the first retry, doubling after each
MAX_BACKOFF = 30.0  # but never longer than this
#: The slowest a download may be, in bytes per second over each window of ``timeout`` seconds
#: (response headers included): a server that trickles bytes would otherwise never time out, as
#: ``timeout`` bounds each read, not progress. Slower is a failed attempt, retried and resumed.
MIN_RATE = 1000
TICK = 0.5  # seconds: how often a waiting download checks its pace and reports its progress
MAX_ARCHIVE = MAX_UNPACKED  # bytes; the archives are 163 MB
#: cifarlin's own folder in the data folder: the archive being fetched, its ``.part`` and
#: ``.part.json`` live there under fixed names, so nothing of the user's is ever replaced.
DOWNLOAD_FOLDER = ".cifarlin-download"

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


@dataclass
class Result:
    """What ``cifarlin download`` did (its ``--json`` output)."""

    path: str
    format: str
    origin: str | None  # the URL or the archive file installed from
    md5: str | None
    bytes: int
    seconds: float
    status: str  # "downloaded", "installed" (from a file) or "already present"
    official_files: bool | None  # do the files match the official per-file checksums?

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def official_match(dataset: data.Dataset, checksums: dict[str, str]) -> bool | None:
    """True/False when official per-file checksums are known for the format, else None."""
    if dataset.format != "python":
        return None
    return all(checksums.get(k) == v for k, v in OFFICIAL_FILE_MD5.items())


# ---------------------------------------------------------------------------------------------
# Fetching
# ---------------------------------------------------------------------------------------------


def _content_range(resp: Any) -> tuple[int, int | None] | None:
    """(first byte, total or None) from a Content-Range header, or None."""
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
    if not m:
        return None
    return int(m[1]), (None if m[2] == "*" else int(m[2]))


class _TooSlow(TimeoutError):
    """The server sent too little in a window of ``timeout`` seconds."""


class _Pace:
    """The minimum-progress rule of one attempt: at least :data:`MIN_RATE` bytes per second over
    each window of ``timeout`` seconds, checked on every read and every :data:`TICK` of waiting.

    ``on_wait`` is called on every tick of waiting, so progress keeps being reported (and its
    rate falls) while nothing arrives.
    """

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.on_wait: Callable[[], None] | None = None
        self.window, self.got = time.monotonic(), 0

    def arrived(self, n: int) -> None:
        self.got += n
        if n:  # the end of the data is no time to judge the pace
            self._check()

    def waited(self) -> None:
        if self.on_wait is not None:
            self.on_wait()
        self._check()

    def _check(self) -> None:
        now = time.monotonic()
        if now - self.window < self.timeout:
            return
        need = MIN_RATE * self.timeout
        if self.got < need:
            seconds = f"{now - self.window:.3g} s"
            if self.got == 0:
                raise _TooSlow(f"timed out: no data for {seconds}")
            raise _TooSlow(f"too slow: {self.got} bytes in {seconds}, fewer than {need:.0f}")
        self.window, self.got = now, 0


class _PacedSocket(io.RawIOBase):
    """The socket of an HTTP response, read under a :class:`_Pace` (headers and body alike).

    Each read waits at most a :data:`TICK` at a time; after each tick the pace is told of the
    wait and checked. (The socket is read itself, not through ``socket.makefile``, whose reader
    refuses to read again after a timeout; its own timeout is restored after each read, for a
    TLS handshake that may follow a proxy's answer on the same socket.)
    """

    def __init__(self, sock: socket.socket, pace: _Pace):
        super().__init__()
        self._file = sock.makefile("rb", buffering=0)  # keeps the socket open while we are
        self._sock, self._pace, self._tick = sock, pace, min(TICK, pace.timeout)

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._sock.fileno()

    def readinto(self, buf: Any) -> int:
        timeout = self._sock.gettimeout()
        self._sock.settimeout(self._tick)
        try:
            while True:
                try:
                    n = self._sock.recv_into(buf)
                except TimeoutError:
                    self._pace.waited()
                    continue
                self._pace.arrived(n)
                return n
        finally:
            self._sock.settimeout(timeout)

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


class _PacedResponse(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, *args: Any, pace: _Pace, **kwargs: Any):
        super().__init__(sock, *args, **kwargs)
        self.fp.close()  # the plain reader it made; ours reads the same socket under the pace
        self.fp = io.BufferedReader(_PacedSocket(sock, pace))


class _Paced:
    """An HTTP(S) connection whose responses are read under a :class:`_Pace`."""

    def __init__(self, *args: Any, pace: _Pace, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.response_class = functools.partial(_PacedResponse, pace=pace)


class _PacedHTTPConnection(_Paced, http.client.HTTPConnection):
    pass


class _PacedHTTPSConnection(_Paced, http.client.HTTPSConnection):
    pass


class _PacedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, pace: _Pace):
        super().__init__()
        self.pace = pace

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_PacedHTTPConnection, req, pace=self.pace)


class _PacedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, pace: _Pace):
        super().__init__()
        self.pace = pace

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_PacedHTTPSConnection, req, pace=self.pace, context=self._context)


def _urlopen(req: urllib.request.Request, timeout: float, pace: _Pace) -> Any:
    """``urlopen`` (proxies, redirects, ftp:// and file:// included) with HTTP(S) responses read
    under ``pace``; certificates are verified as ``urlopen`` verifies them."""
    opener = urllib.request.build_opener(_PacedHTTPHandler(pace), _PacedHTTPSHandler(pace))
    return opener.open(req, timeout=timeout)


def _why(e: BaseException) -> str:
    if isinstance(e, _TooSlow):
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
    pace: _Pace,
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

    A connection that breaks, or whose server sends less than :data:`MIN_RATE` bytes per second
    over ``timeout`` seconds, is retried ``retries`` times with exponential backoff, resuming with
    an HTTP Range request when the server honours it (``If-Range`` with the ETag or date of the
    first response, kept in ``dest.part.json``, so a file that changed meanwhile is fetched
    anew) and starting over when it does not. ``on_progress`` is called for every block and
    every :data:`TICK` of waiting. More than ``max_bytes`` is refused. On Ctrl-C the ``.part``
    file stays for the next run to resume and :class:`Interrupted` is raised.
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
        pace = _Pace(timeout)
        try:
            with _urlopen(req, timeout, pace) as resp:
                status = getattr(resp, "status", None) or 200
                if have and status == 206:
                    span = _content_range(resp)
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
        time.sleep(min(BACKOFF * 2 ** (failures - 1), MAX_BACKOFF))


# ---------------------------------------------------------------------------------------------
# The whole job
# ---------------------------------------------------------------------------------------------


def install(
    root: Path,
    cfg: DownloadConfig | None = None,
    *,
    from_file: Path | None = None,
    force: bool = False,
    on_progress: Progress | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> Result:
    """Make sure CIFAR-10 (``cfg.layout`` version) is unpacked under ``root``; download if needed.

    ``from_file`` installs an archive fetched by other means (it is not deleted); its MD5 must be
    the official one or ``cfg.md5``.
    """
    cfg = cfg or DownloadConfig()
    t0 = time.perf_counter()
    notice = on_notice or (lambda msg: None)
    root = Path(root).expanduser()
    data.check_root(root)

    present = data.locate(root) if root.is_dir() else None
    if present is not None and present.format == cfg.layout and not force:
        try:
            sums = data.verify_dataset(present)
        except DataError as e:
            notice(f"{present.folder} is incomplete or damaged ({e}); fetching a fresh copy")
        else:
            return Result(
                str(present.folder),
                cfg.layout,
                None,
                None,
                0,
                time.perf_counter() - t0,
                "already present",
                official_match(present, sums),
            )
    if present is not None and present.folder == root:
        # the data folder names the dataset folder itself: unpack beside it, under the official name
        root = root.parent
        if root / data.FOLDERS[cfg.layout] != present.folder:
            raise DownloadError(
                f"{present.folder}: is a dataset folder with a non-standard name; "
                f"pass its parent or an empty folder as the data folder to download a fresh copy"
            )
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"{root}: cannot create the data folder ({e.strerror or e})") from None
    try:
        return _install_into(root, cfg, from_file, on_progress, notice, t0)
    except BaseException:
        if created:  # a data folder this run made and could not fill goes away again
            try:
                root.rmdir()
            except OSError:
                pass
        raise


def _given_archive(from_file: Path) -> Path:
    """The user's own archive (``--from-file``): a regular file of a plausible size."""
    archive = Path(from_file).expanduser()
    if archive.is_dir():
        raise bad_value("from_file", str(archive), "is a folder; give the .tar.gz archive itself")
    if not archive.exists():
        raise bad_value("from_file", str(archive), "no such file")
    if not archive.is_file():  # a pipe (<(curl ...)) or a device: hashing it would consume or hang
        raise bad_value("from_file", str(archive), "is not a regular file; save the archive to a file first")
    if archive.stat().st_size > MAX_ARCHIVE:
        raise DownloadError(
            f"{archive}: {archive.stat().st_size:,} bytes, more than a CIFAR-10 archive could hold "
            f"({MAX_ARCHIVE:,}); is it the right file?"
        )
    return archive


def download_folder(root: Path) -> Path:
    """cifarlin's own folder in ``root`` for archives being fetched, made when missing.

    Everything in it is cifarlin's, under names of cifarlin's choosing: a URL never decides
    what is written or deleted. Something else under its name (a file, a link) is refused.
    """
    folder = root / DOWNLOAD_FOLDER
    try:
        folder.mkdir(exist_ok=True)
        ours = stat.S_ISDIR(os.lstat(folder).st_mode)
    except FileExistsError:
        ours = False
    except OSError as e:
        raise DownloadError(f"{folder}: cannot be created ({e.strerror or e}); pass --data-dir DIR") from None
    if not ours:
        raise DownloadError(f"{folder}: is not a folder cifarlin made; move it away and run again")
    return folder


def _fetched_archive(
    root: Path,
    cfg: DownloadConfig,
    expected: str,
    on_progress: Progress | None,
    notice: Callable[[str], None],
) -> tuple[Path, int]:
    """The archive of ``cfg``, in :func:`download_folder`: one a stopped run fetched and
    verified, or fetched now (resuming its ``.part``)."""
    url = cfg.url or OFFICIAL_URL[cfg.layout]
    archive = download_folder(root) / f"cifar-10-{cfg.layout}.tar.gz"
    if os.path.lexists(archive) and not stat.S_ISREG(os.lstat(archive).st_mode):
        raise DownloadError(f"{archive}: is not a file cifarlin made; move it away and run again")
    if archive.is_file() and file_md5(archive) == expected:  # fetched by a run stopped before unpacking
        notice(f"{archive} was downloaded and verified before")
        return archive, archive.stat().st_size
    archive.unlink(missing_ok=True)  # cifarlin's own, and not the archive wanted
    notice(f"downloading {url} to {archive}")
    return archive, fetch(url, archive, on_progress=on_progress, timeout=cfg.timeout, retries=cfg.retries)


def _install_into(
    root: Path,
    cfg: DownloadConfig,
    from_file: Path | None,
    on_progress: Progress | None,
    notice: Callable[[str], None],
    t0: float,
) -> Result:
    expected = cfg.md5 or OFFICIAL_MD5[cfg.layout]
    if from_file is not None:
        archive = _given_archive(from_file)
        origin, status, size = str(archive), "installed", archive.stat().st_size
    else:
        try:
            archive, size = _fetched_archive(root, cfg, expected, on_progress, notice)
        finally:
            _remove_if_empty(root / DOWNLOAD_FOLDER)
        origin, status = cfg.url or OFFICIAL_URL[cfg.layout], "downloaded"
    try:
        got, target, sums = _verify_and_unpack(
            archive, root, cfg, expected, ours=from_file is None, notice=notice
        )
    finally:
        if from_file is None:
            _remove_if_empty(root / DOWNLOAD_FOLDER)
    return Result(
        str(target.folder),
        cfg.layout,
        origin,
        got,
        size,
        time.perf_counter() - t0,
        status,
        official_match(target, sums),
    )


def _verify_and_unpack(
    archive: Path,
    root: Path,
    cfg: DownloadConfig,
    expected: str,
    *,
    ours: bool,
    notice: Callable[[str], None],
) -> tuple[str, data.Dataset, dict[str, str]]:
    """Check the MD5 of ``archive`` and unpack it; an archive cifarlin downloaded (``ours``) is
    deleted once unpacked or refused, and kept when unpacking failed for want of space."""
    notice(f"checking the MD5 of {archive}")
    got = file_md5(archive)
    if got != expected:
        if ours:
            archive.unlink(missing_ok=True)
        deleted = "; the download was deleted" if ours else ""
        hint = "" if cfg.md5 else " (give md5=HEX if you trust this archive and it is not the official one)"
        raise DownloadError(
            f"{archive}: MD5 mismatch: expected {expected}, got {got}; nothing was extracted{deleted}{hint}"
        )
    notice(f"unpacking into {root / data.FOLDERS[cfg.layout]}")
    try:
        target, sums = extract(archive, root, cfg.layout)
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted while unpacking; the verified {archive} is kept for the next run"
        ) from None
    except WriteError as e:  # the data folder's fault (a full disk), not the archive's
        if ours:
            raise WriteError(f"{e}; the verified download stays in {archive} for the next run") from None
        raise
    except DownloadError:
        if ours:
            archive.unlink(missing_ok=True)
        raise
    if ours:
        archive.unlink(missing_ok=True)
    return got, target, sums


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def ensure(
    root: Path,
    cfg: DownloadConfig | None = None,
    *,
    download: bool = True,
    on_progress: Progress | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> data.Dataset:
    """The dataset in or under ``root``, downloaded there first when it is missing and
    ``download`` is on."""
    try:
        return data.find(root)
    except data.DataNotFoundError:
        if not download:
            raise
        if on_notice is not None:
            on_notice(f"CIFAR-10 is not in {root}; downloading it there (--no-download turns this off)")
        try:
            install(root, cfg, on_progress=on_progress, on_notice=on_notice)
        except DownloadError as err:
            raise DownloadError(
                f"no CIFAR-10 data in {root}, and fetching it failed: {err}, "
                "or point --data-dir at an existing copy"
            ) from None
        return data.find(root)
