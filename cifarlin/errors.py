"""The errors cifarlin reports to its user.

Library code raises these; the command line (``cifarlin.cli``) turns each into one line on stderr
and the exit code below. Every message names the file or value at fault and, where there is one,
the fix. Values are named by their field, as in ``batch_size=500: larger than the training set``;
the command line shows the same message with its own flag names (``--batch-size 500: ...``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class CifarlinError(Exception):
    """A failure the user can understand and act on (exit code 1: the job failed)."""

    exit_code = 1


class ConfigError(CifarlinError, ValueError):
    """A bad option or value (exit code 2: a usage error)."""

    exit_code = 2


def bad_value(field: str, value: object, why: str) -> ConfigError:
    """``field=value: why``, the one form of a message about a bad value."""
    return ConfigError(f"{field}={value!r}: {why}")


class WriteError(CifarlinError):
    """A file could not be written (full disk, no permission, read-only folder)."""


class DataError(CifarlinError):
    """A data file (a CIFAR-10 batch, an image, an array) is missing, truncated, malformed or hostile."""


class DataNotFoundError(DataError):
    """No CIFAR-10 folder where cifarlin looked."""


class DownloadError(CifarlinError):
    """Fetching, verifying or unpacking an archive failed."""


class ModelFileError(CifarlinError):
    """A file is not a usable cifarlin model, checkpoint or history."""


class RunError(CifarlinError):
    """A run folder is not as the job needs it (no checkpoint to resume, no history to draw)."""


class RunExistsError(RunError):
    """The output folder already holds another run, or another cifarlin is writing into it."""


class ReportError(CifarlinError):
    """A report cannot be made or written as asked (no runs, no Chromium for a PDF)."""


class Interrupted(CifarlinError):
    """Ctrl-C (exit 130) or SIGTERM (exit 143) stopped a job; the message says what was kept and
    how to continue."""

    exit_code = 130

    def __init__(
        self,
        message: str,
        exit_code: int = 130,
        *,
        folder: str | None = None,
        epoch: int | None = None,
        kept: str | None = None,
    ):
        super().__init__(message)
        self.exit_code = exit_code
        self.folder = folder  # a training run's folder,
        self.epoch = epoch  # the epoch it was stopped in,
        self.kept = kept  # and what the folder keeps ("RUN/checkpoint.h5 holds epoch 3")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the signal lands (the command line installs the handler), so that it
    is handled exactly like Ctrl-C: the work of the last finished step is kept."""


_received: list[bool] = []  # a stop signal per entry: True for SIGTERM, False for Ctrl-C

# Above 0 while a temporary file is being made or removed (files.atomic_path): a stop signal that
# lands then is only noted, and raised by raise_held_stop once the file is named (or, during its
# removal, not at all: an exception is already on its way out). Raised where it landed, it could
# leave the file behind. A list, so that `STOPS_HELD[0] += 1` is one store without a call: Python
# runs signal handlers only at calls and backward jumps, so an except clause can hold them off
# from its first bytecode.
STOPS_HELD = [0]
_held_back: list[bool] = []


def stop_signal(terminate: bool) -> None:
    """What the command line's SIGINT and SIGTERM handlers do: note the signal, and raise where it
    lands (KeyboardInterrupt, or :class:`Terminated`), unless stops are held (:data:`STOPS_HELD`)."""
    _received.append(terminate)
    if STOPS_HELD[0]:
        _held_back.append(terminate)
        return
    raise Terminated() if terminate else KeyboardInterrupt()


def raise_held_stop() -> None:
    """Raise a stop signal that was noted while stops were held, once none are (main thread only:
    the one that runs signal handlers; elsewhere check_stop will find it)."""
    if _held_back and not STOPS_HELD[0] and threading.current_thread() is threading.main_thread():
        terminate = _held_back[0]
        _held_back.clear()
        raise Terminated() if terminate else KeyboardInterrupt()


#: How long a wait on another thread lasts with stops held, before they are checked again.
HELD_WAIT = 0.05


def wait_held(wait: Callable[[float], Any], done: Callable[[], bool] | None = None) -> Any:
    """``wait(timeout)`` (a future's ``result``, with its ``done``; a queue's ``get``: they raise
    TimeoutError or queue.Empty when the time is up), called again until it answers, with stop signals held
    while it waits; a stop signal that landed meanwhile is raised between the calls.

    Waiting on another thread means waiting on a lock inside ``threading.Condition.wait``; a stop
    signal raised there, and a second one raised while the first is unwinding through its
    ``finally`` (which takes the condition's lock back), leaves the lock not taken back and the
    ``with`` around it fails with RuntimeError ('cannot release un-acquired lock'): seen with
    Ctrl-C then SIGTERM 5 ms apart. Held, a signal lands between waits instead, at most
    :data:`HELD_WAIT` seconds late."""
    import queue
    from concurrent.futures import TimeoutError as FutureTimeout

    while True:
        STOPS_HELD[0] += 1
        try:
            value = wait(HELD_WAIT)
        except (FutureTimeout, queue.Empty):
            if done is not None and done():  # the task's own TimeoutError: the answer
                raise
            waiting = True
        else:
            waiting = False
        finally:
            STOPS_HELD[0] -= 1
        raise_held_stop()
        if not waiting:
            return value


def check_stop() -> None:
    """Raise again a stop signal that was received: one that landed in a finaliser or a weakref
    callback was printed as 'Exception ignored' and swallowed, and long loops call this at each
    step so that such a Ctrl-C still stops them."""
    if _received:
        raise Terminated() if _received[-1] else KeyboardInterrupt()


def reset_stop() -> None:
    _received.clear()
    _held_back.clear()


def terminated() -> bool:
    """Whether the first stop signal received was SIGTERM."""
    return bool(_received) and _received[0]


def stopped(e: BaseException) -> tuple[str, int]:
    """How a KeyboardInterrupt is named, and its exit code: ('interrupted', 130) for Ctrl-C,
    ('terminated (SIGTERM)', 143) for :class:`Terminated`. When several stop signals came, the
    first decides (a Ctrl-C after a SIGTERM does not turn 143 into 130)."""
    term = _received[0] if _received else isinstance(e, Terminated)
    return ("terminated (SIGTERM)", 143) if term else ("interrupted", 130)


class DivergenceError(CifarlinError):
    """Training produced NaN or infinite values."""

    def __init__(self, message: str, epoch: int, kept: str | None = None):
        super().__init__(message)
        self.epoch = epoch
        self.kept = kept  # a training run's: what its folder keeps ("RUN/checkpoint.h5 holds epoch 3")


def one_line(e: BaseException) -> str:
    """An exception as one line: our own messages as they are, others with their type."""
    text = " ".join(str(e).split())
    return text if isinstance(e, CifarlinError) else f"{type(e).__name__}: {text}"


def printable(text: object, keep: str = "") -> str:
    """``text`` with control characters (terminal escape sequences, a bell) shown as escapes, but
    for those in ``keep``: what comes from a file or the network never drives the terminal (and a
    font has no glyph for them, which matplotlib's warning would print raw)."""
    s = str(text)
    if not s.isprintable():
        s = "".join(ch if ch.isprintable() or ch in keep else ascii(ch)[1:-1] for ch in s)
    return s
