"""HTTP(S) under a minimum pace: responses read so that a server sending too little for too long
fails the attempt (:class:`Pace`), and the backoff between attempts.

A read timeout alone bounds each read, not progress: a server that trickles a byte now and then
would never time out. Here every read of a response (headers and body alike) waits at most a
:data:`TICK` at a time and checks the pace after each; :mod:`cifarlin.data.download` retries
a failed attempt and resumes it.
"""

from __future__ import annotations

import functools
import http.client
import io
import re
import socket
import time
import urllib.request
from collections.abc import Callable
from typing import Any

BACKOFF = 1.0  # seconds before the first retry, doubling after each
MAX_BACKOFF = 30.0  # but never longer than this
#: The slowest a download may be, in bytes per second over each window of ``timeout`` seconds
#: (response headers included): a server that trickles bytes would otherwise never time out, as
#: ``timeout`` bounds each read, not progress. Slower is a failed attempt, retried and resumed.
MIN_RATE = 1000
TICK = 0.5  # seconds: how often a waiting download checks its pace and reports its progress


def content_range(resp: Any) -> tuple[int, int | None] | None:
    """(first byte, total or None) from a Content-Range header, or None."""
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
    if not m:
        return None
    return int(m[1]), (None if m[2] == "*" else int(m[2]))


class TooSlow(TimeoutError):
    """The server sent too little in a window of ``timeout`` seconds."""


class Pace:
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
                raise TooSlow(f"timed out: no data for {seconds}")
            raise TooSlow(f"too slow: {self.got} bytes in {seconds}, fewer than {need:.0f}")
        self.window, self.got = now, 0


class _PacedSocket(io.RawIOBase):
    """The socket of an HTTP response, read under a :class:`Pace` (headers and body alike).

    Each read waits at most a :data:`TICK` at a time; after each tick the pace is told of the
    wait and checked. (The socket is read itself, not through ``socket.makefile``, whose reader
    refuses to read again after a timeout; its own timeout is restored after each read, for a
    TLS handshake that may follow a proxy's answer on the same socket.)
    """

    def __init__(self, sock: socket.socket, pace: Pace):
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
    def __init__(self, sock: socket.socket, *args: Any, pace: Pace, **kwargs: Any):
        super().__init__(sock, *args, **kwargs)
        self.fp.close()  # the plain reader it made; ours reads the same socket under the pace
        self.fp = io.BufferedReader(_PacedSocket(sock, pace))


class _Paced:
    """An HTTP(S) connection whose responses are read under a :class:`Pace`."""

    def __init__(self, *args: Any, pace: Pace, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.response_class = functools.partial(_PacedResponse, pace=pace)


class _PacedHTTPConnection(_Paced, http.client.HTTPConnection):
    pass


class _PacedHTTPSConnection(_Paced, http.client.HTTPSConnection):
    pass


class _PacedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, pace: Pace):
        super().__init__()
        self.pace = pace

    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_PacedHTTPConnection, req, pace=self.pace)


class _PacedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, pace: Pace):
        super().__init__()
        self.pace = pace

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_PacedHTTPSConnection, req, pace=self.pace, context=self._context)


def paced_urlopen(req: urllib.request.Request, timeout: float, pace: Pace) -> Any:
    """``urlopen`` (proxies, redirects, ftp:// and file:// included) with HTTP(S) responses read
    under ``pace``; certificates are verified as ``urlopen`` verifies them."""
    opener = urllib.request.build_opener(_PacedHTTPHandler(pace), _PacedHTTPSHandler(pace))
    return opener.open(req, timeout=timeout)


def backoff(failures: int) -> float:
    """Seconds to wait before the next attempt, after ``failures`` failed ones (1 or more)."""
    return min(BACKOFF * 2 ** (failures - 1), MAX_BACKOFF)
