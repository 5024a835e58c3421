"""How a computation uses the machine's cores: BLAS on one thread where the summation order must
not depend on the core count, and whether a run has a core to spare for its metrics thread."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS single-threaded in this block: the same numbers whatever the machine's core count, and
    the same as the training loop computes (a GEMM's summation order depends on its threads)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def metrics_thread_fits(runs_at_once: int) -> bool:
    """Whether ``runs_at_once`` runs on this machine each have a core for a metrics thread."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 2 * runs_at_once <= cores


def interruptible(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a daemon thread, the caller waiting with stop signals held between short
    waits: a long LAPACK call (an eigendecomposition of minutes) cannot see Ctrl-C, which Python
    handles only between bytecodes of the main thread; so the caller raises it within
    :data:`cifarlin.errors.HELD_WAIT` seconds and the command ends, leaving the call to die with
    the process."""
    import threading
    from concurrent.futures import Future

    from cifarlin.errors import wait_held

    done: Future = Future()

    def run() -> None:
        try:
            done.set_result(fn(*args))
        except BaseException as e:  # handed to the caller, which raises it
            done.set_exception(e)

    threading.Thread(target=run, name="cifarlin-solve", daemon=True).start()
    return wait_held(done.result, done.done)
