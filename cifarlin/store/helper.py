"""Child processes that are safe to make from a process with threads: all come from one helper.

cifarlin reads a foreign HDF5 file in a short-lived child process first (a crash or a hang of the
HDF5 library there becomes a one-line error) and draws figures in a process of its own. A child
made by ``fork()`` of a process that has threads (cifarlin's run pool, metrics, MD5 and views
threads; BLAS's and Dask's) inherits every lock another thread held at that moment, and can wait
for one of them forever. So cifarlin never forks itself. The first time it needs a child it starts
one helper: a fresh interpreter, made by fork+exec (safe whatever the threads), whose BLAS is told
to use one thread and which starts none, so that it is single-threaded by construction. The helper
forks each child on request (:func:`safe_fork` checks, before every fork, that the process has a
single thread, and refuses otherwise), enforces its deadline from the moment it is forked, and
reports how it ended. The helper lives as long as the command; it leaves when the command's end
of its socket closes, killing any child still running.

Requests go over a Unix socket of datagrams (one request a message, atomic from any thread),
pickled: they come from this process. Each request carries the write end of a pipe of its own; on
it the child writes its pid and its result as JSON (never a pickle: the child reads foreign files),
and the helper, once the child has ended, one line saying how. A caller reads only its own pipe, so
callers on several threads never wait for each other.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cifarlin.store.forking import FDS, can_fork, safe_fork, threads

__all__ = [
    "FDS",
    "Child",
    "Ended",
    "available",
    "run",
    "safe_fork",
    "start",
    "start_helper",
    "stop_helper",
    "threads",
]

HELPER_START_SECONDS = 60.0  # a helper that has not forked a child in this long is given up
_ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Ended:
    """How a child ended: ``how`` is ``exit`` (with ``code``), ``signal`` (``code`` the signal),
    ``timeout`` (killed at its deadline) or ``lost`` (the helper went away); ``result`` is what the
    function returned (JSON), ``error`` the message of what it raised and ``error_type`` the
    name of its class."""

    how: str
    code: int = 0
    result: Any = None
    error: str | None = None
    error_type: str | None = None


class Child:
    """A child process of the helper running ``fn(*args)``; read its end with :meth:`wait`."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._data = b""
        self._ended: Ended | None = None
        self.pid: int | None = None

    def wait(self, timeout: float | None = None) -> Ended | None:
        """How the child ended, or None if it has not within ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._ended is None and self._read(deadline):
            pass
        return self._ended

    def started(self, timeout: float) -> int | None:
        """The child's pid once it has started (None if not within ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while self.pid is None and self._ended is None and self._read(deadline):
            pass
        return self.pid

    def _read(self, deadline: float | None) -> bool:
        """Read what the pipe holds (its pid, or at its end how it ended); False once ``deadline``
        (None: none) has passed with nothing to read."""
        left = None if deadline is None else deadline - time.monotonic()
        if (left is not None and left <= 0) or not readable(self._fd, left):
            return left is None
        chunk = os.read(self._fd, 65536)
        if not chunk:
            self._close()
            self._ended = _parse_end(self._data)
        self._data += chunk
        if self.pid is None and b"\n" in self._data:
            first = self._data.split(b"\n", 1)[0]
            if first.startswith(b"P") and first[1:].isdigit():
                self.pid = int(first[1:])
        return True

    def kill(self) -> None:
        """End the child now (SIGKILL); the helper reaps it."""
        pid = self.pid if self.pid is not None else self.started(1.0)
        if pid is not None and self._ended is None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self._close()


def readable(fd: int, timeout: float | None) -> bool:
    """Whether ``fd`` has something to read (or has reached its end) within ``timeout`` seconds
    (None: no limit). poll(), not select(), which refuses descriptors of 1024 or more."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else max(0.0, timeout) * 1000))


def _parse_end(data: bytes) -> Ended:
    """The records a child and the helper wrote: ``P<pid>``, ``R<json>`` or ``X<json message>``
    from the child, and last ``E<json>`` from the helper."""
    result, error, end = None, {}, None
    for line in data.split(b"\n"):
        try:
            if line.startswith(b"R"):
                result = json.loads(line[1:])
            elif line.startswith(b"X"):
                error = json.loads(line[1:])
            elif line.startswith(b"E"):
                end = json.loads(line[1:])
        except ValueError:  # a record cut short by a crash: the end says what happened
            pass
    error = error if isinstance(error, dict) else {}
    message, kind = (str(error.get(k, "")) or None for k in ("message", "type"))
    if not isinstance(end, dict) or end.get("how") not in ("exit", "signal", "timeout", "refused"):
        return Ended("lost", 0, None, message, kind)
    return Ended(str(end["how"]), int(end.get("code", 0)), result, message, kind)


# ---------------------------------------------------------------------------------------------
# This process's side: the helper started once, asked for children
# ---------------------------------------------------------------------------------------------

_lock = threading.Lock()
_helper: tuple[subprocess.Popen[bytes], socket.socket] | None = None


def available() -> bool:
    """Whether children can be had here (POSIX with fork and descriptor passing)."""
    return can_fork() and hasattr(socket, "send_fds") and hasattr(socket, "AF_UNIX")


def start_helper() -> None:
    """Start the helper now, if it is not running, without waiting for it: commands that will need
    a child call this early, so that the helper's start overlaps their own."""
    if available():
        with _lock:
            try:
                _running()
            except OSError:  # none can be had now: each request tries again (its caller reads
                pass  # without a child when none can)


def _running() -> tuple[subprocess.Popen[bytes], socket.socket]:
    """The helper (started when there is none, or the last one has gone); call with ``_lock``."""
    global _helper
    if _helper is not None and _helper[0].poll() is None:
        return _helper
    if _helper is not None:
        _helper[1].close()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        code = (
            "import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
            "import cifarlin.store.forking as f; f.serve()"
        )
        proc = subprocess.Popen(
            # -P: the current folder is not put first on the path (python -c would), where a
            # json.py would be imported before the command's own path is set
            [sys.executable, "-P", "-c", code, json.dumps([p for p in sys.path if isinstance(p, str)])],
            stdin=theirs.fileno(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # children report through their pipes, never the terminal
            env={**os.environ, **_ONE_THREAD},
            close_fds=True,
            start_new_session=True,  # the terminal's Ctrl-C is the command's to handle
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    if _helper is None:
        atexit.register(stop_helper)  # closed and waited for: no stray process or open socket
    _helper = (proc, ours)
    return _helper


def start(
    fn: Callable[..., Any], *args: Any, seconds: float | None = None, fds: tuple[int, ...] = ()
) -> Child:
    """Run ``fn(*args)`` in a child of the helper, killed ``seconds`` after it starts (None: no
    limit). ``fds`` are handed to the child: each argument that is :data:`FDS` becomes the next of
    them there. ``fn`` must be picklable (a module's function, or a ``functools.partial`` of one),
    and what it returns JSON (anything else comes back as None).

    Raises ``OSError`` when no helper can be had (the caller decides what to do without one)."""
    try:
        cwd: str | None = os.getcwd()  # relative paths in ``args`` mean what they mean here
    except OSError:
        cwd = None
    message = pickle.dumps((fn, args, seconds, cwd))
    r, w = os.pipe()
    try:
        for attempt in (0, 1):  # a helper that has gone is started again, once
            with _lock:
                proc, sock = _running()
                try:
                    socket.send_fds(sock, [message], [w, *fds])
                    break
                except OSError as e:  # only a helper that has gone is stopped (with its children)
                    gone = e.errno in (errno.EPIPE, errno.ECONNRESET) or proc.poll() is not None
                    if attempt or not gone:  # a request too large, say: no child for it
                        raise
                    _stop_locked()
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    return Child(r)


def run(fn: Callable[..., Any], *args: Any, seconds: float | None = None) -> Ended:
    """Run ``fn(*args)`` in a child and wait for its end (see :func:`start`)."""
    child = start(fn, *args, seconds=seconds)
    limit = None if seconds is None else seconds + HELPER_START_SECONDS
    try:
        ended = child.wait(limit)
    except BaseException:  # Ctrl-C while waiting: the child must not go on
        child.kill()
        raise
    if ended is None:  # the helper did not keep the deadline: end the child ourselves
        child.kill()
        return Ended("timeout")
    return ended


def _stop_locked() -> None:
    global _helper
    if _helper is None:
        return
    proc, sock = _helper
    _helper = None
    sock.close()  # the helper leaves when it sees its socket closed
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_helper() -> None:
    """Stop the helper (it is started again when next needed); it also stops with this process."""
    with _lock:
        _stop_locked()
