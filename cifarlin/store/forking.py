"""The helper process's side (see :mod:`cifarlin.store.helper`): its loop, which forks a child for each
request after checking that it has one thread (:func:`safe_fork`, the one ``fork`` in cifarlin),
keeps each child's deadline from the child's start, reaps the children as they end and writes how
each ended on its caller's pipe.

A child writes ``P<pid>`` first, then ``R<json>`` (what its function returned) or ``X<json>``
(what it raised); the helper, once the child has ended, ``E<json>`` (how). JSON only: a child
reads foreign files, and its caller must not unpickle what it sends.
"""

from __future__ import annotations

import json
import os
import pickle
import select
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

_PRELOAD = ("numpy", "h5py", "cifarlin.store.h5safe")  # what every probe needs, imported once


def threads() -> int | None:
    """The number of this process's threads (all of them, not only Python's), or None if unknown."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def can_fork() -> bool:
    """Whether this platform has fork() at all (the helper's children need it)."""
    return hasattr(os, "fork")


def safe_fork() -> int | None:
    """``os.fork()`` when this process has exactly one thread, else None (nothing forked): a
    fork of a process with threads may deadlock in the child. The only fork in cifarlin."""
    if not can_fork() or threads() != 1:
        return None
    try:
        return os.fork()
    except OSError:
        return None


def serve() -> None:
    """The helper's loop: fork a child for each request on stdin's socket, reap them, keep their
    deadlines; leave (killing the children) when the socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for name in _PRELOAD:
        try:
            __import__(name)
        except ImportError:  # the child imports what it needs, and reports what fails
            pass
    children: dict[int, tuple[int, float | None]] = {}  # pid -> (pipe to the caller, deadline)
    pending: dict[int, bytes] = {}  # a caller's pipe -> the end of the record it had no room for
    wake_r, wake_w = os.pipe()  # a child's end wakes the loop (SIGCHLD), nothing is polled
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    try:
        while True:
            deadlines = [d for _, d in children.values() if d is not None]
            wait = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            ready, room, _ = select.select([sock, wake_r], list(pending), [], wait)
            for fd in room:
                _put(fd, pending.pop(fd), pending)
            if wake_r in ready:
                while True:
                    try:
                        if not os.read(wake_r, 4096):
                            break
                    except BlockingIOError:
                        break
            if sock in ready:
                msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 16)
                if not msg:
                    return  # the command has gone
                _fork_one(sock, msg, fds, children, (wake_r, wake_w), pending)
            _reap(children, pending)
    finally:
        for pid, (fd, _) in children.items():
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            os.close(fd)
        for fd in pending:
            os.close(fd)


def _fork_one(
    sock: socket.socket,
    msg: bytes,
    fds: list[int],
    children: dict[int, tuple[int, float | None]],
    wake: tuple[int, int],
    pending: dict[int, bytes],
) -> None:
    out, passed = fds[0], fds[1:]
    try:
        fn, args, seconds, cwd = pickle.loads(msg)  # from the command that started this helper
    except Exception as e:  # a function the helper cannot import: the caller's bug, said so
        for fd in passed:
            os.close(fd)
        _write_error(out, e)
        _end(out, {"how": "refused", "code": 1}, pending)
        return
    pid = safe_fork()
    if pid == 0:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (sock.fileno(), *wake, *(o for o, _ in children.values()), *pending):
            os.close(fd)  # another caller's pipe held open here would keep its end from it
        _child(out, fn, args, passed, cwd)
    for fd in passed:
        os.close(fd)
    if pid is None:
        _end(out, {"how": "refused", "code": 0}, pending)
        return
    children[pid] = (out, None if seconds is None else time.monotonic() + seconds)


def _child(
    out: int, fn: Callable[..., Any], args: tuple[Any, ...], passed: list[int], cwd: str | None
) -> None:
    """In the forked child: run, write the result, and leave without any of the helper's cleanup."""
    code = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _write(out, b"P%d\n" % os.getpid())
        if cwd is not None:
            os.chdir(cwd)
        args = tuple(passed.pop(0) if a is FDS else a for a in args)
        result = fn(*args)
        try:
            line = b"R" + json.dumps(result).encode() + b"\n"
        except (TypeError, ValueError):
            line = b"R null\n"
        _write(out, line)
    except BaseException as e:
        _write_error(out, e)
        code = 3
    finally:
        os._exit(code)


def _write_error(out: int, e: BaseException) -> None:
    try:
        error = {"type": type(e).__name__, "message": str(e)}
        _write(out, b"X" + json.dumps(error).encode() + b"\n")
    except BaseException:
        pass


def _reap(children: dict[int, tuple[int, float | None]], pending: dict[int, bytes]) -> None:
    now = time.monotonic()
    for pid, (out, deadline) in list(children.items()):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if not done and deadline is not None and now >= deadline:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            end = {"how": "timeout", "code": 0}
        elif not done:
            continue
        elif os.WIFSIGNALED(status):
            end = {"how": "signal", "code": os.WTERMSIG(status)}
        else:
            end = {"how": "exit", "code": os.waitstatus_to_exitcode(status)}
        del children[pid]
        _end(out, end, pending)


def _end(out: int, end: dict[str, Any], pending: dict[int, bytes]) -> None:
    _put(out, b"\nE" + json.dumps(end).encode() + b"\n", pending)


def _put(out: int, record: bytes, pending: dict[int, bytes]) -> None:
    """Write ``record`` on a caller's pipe and close it. Without blocking (a caller that stopped
    reading cannot stall the helper): what a full pipe (a large result not read yet) has no room
    for waits in ``pending`` until it has, instead of being lost."""
    try:
        os.set_blocking(out, False)
        written = os.write(out, record)
    except BlockingIOError:
        written = 0
    except OSError:  # the caller has gone
        written = len(record)
    if written < len(record):
        pending[out] = record[written:]
        return
    os.close(out)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Fds:
    """Marks an argument of :func:`start` to be replaced in the child by the next passed descriptor."""

    def __repr__(self) -> str:
        return "FDS"

    def __reduce__(self) -> str:
        return "FDS"


FDS = _Fds()
