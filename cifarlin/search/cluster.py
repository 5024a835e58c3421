"""The Dask engine the sweep and feature extraction run on: a :class:`distributed.LocalCluster` of
single-threaded worker processes on this machine, or an existing cluster given by its scheduler's
address; the hooks its worker processes run. Dask is imported when a client is made.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from cifarlin.core.config import TrainConfig
from cifarlin.errors import CifarlinError, bad_value, one_line
from cifarlin.search.plan import RETRIES

if TYPE_CHECKING:
    from cifarlin.search.plan import Trial

CONNECT_SECONDS = 10


def dask_setup(worker: Any) -> None:
    """Dask preload hook of the local cluster's workers: Ctrl-C in the terminal reaches every
    process of the command, and the sweep stops its workers itself (without their tracebacks)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def check_scheduler(address: str) -> str:
    if not re.fullmatch(r"(tcp|tls|ucx|ws|wss|inproc)://\S+", address):
        raise bad_value("scheduler", address, "expected the scheduler's address, e.g. tcp://HOST:8786")
    return address


def check_cluster(scheduler: str | None, workers: int | None, retries: int = RETRIES) -> None:
    """The cluster options: a scheduler's address, or the size of a local cluster."""
    if scheduler is not None:
        check_scheduler(scheduler)
        if workers is not None:
            raise bad_value(
                "workers", workers, "sizes a local cluster; with scheduler=ADDRESS the cluster has its own"
            )
    if workers is not None and not 1 <= workers <= 512:
        raise bad_value("workers", workers, "must be between 1 and 512")
    if not 0 <= retries <= 100:
        raise bad_value("retries", retries, "must be between 0 and 100")


def local_workers(requested: int | None, trials: Sequence[Trial]) -> int:
    """Worker processes of a local cluster: as asked, else one per core, no more than trials, and
    no more than the memory holds (each worker keeps one copy of the data)."""
    if requested is not None:
        return requested
    n = min(os.cpu_count() or 1, max(1, len(trials)))
    try:
        import psutil

        total = psutil.virtual_memory().total
    except Exception:  # psutil comes with distributed; without it, no memory cap
        return n
    per_worker = max((_data_bytes(t.config) for t in trials), default=0) + (300 << 20)
    return max(1, min(n, int(0.8 * total) // per_worker))


def _data_bytes(cfg: TrainConfig) -> int:
    images = 10_000 * len(cfg.train_batches) + (10_000 if cfg.val_size is None else 0) + 10_000
    return images * 3072 * (8 if cfg.dtype == "float64" else 4)


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int, retries: int = RETRIES) -> Iterator[Any]:
    """A Dask client: of the cluster at ``scheduler``, or of a new local cluster of ``workers``
    single-threaded worker processes (scheduler and workers on 127.0.0.1, free ports, no
    dashboard; a trial whose worker dies is tried ``retries`` more times)."""
    from distributed import Client

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError) as e:
            raise CifarlinError(
                f"scheduler={scheduler!r}: cannot connect ({one_line(e)}); start one with 'dask scheduler' "
                "and workers with 'dask worker ADDRESS'"
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    # The scheduler runs in this process: its logs stay quiet until it has closed (LocalCluster's
    # silence_logs lowers its handlers only until then, and a worker stopped by Ctrl-C makes the
    # closing scheduler log a 'comm closed' traceback at INFO level after the sweep's last line).
    log = logging.getLogger("distributed")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield from _local_client(workers, retries)
    finally:
        log.setLevel(level)


def _local_client(workers: int, retries: int) -> Iterator[Any]:
    import dask
    from distributed import Client, LocalCluster

    # Worker processes inherit an ignored SIGINT: Ctrl-C stops the sweep here, not them.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    # Dask sets MALLOC_TRIM_THRESHOLD_ in its workers, which makes glibc map and zero fresh pages
    # for the training loop's every temporary: seven times the page faults of `cifarlin train`.
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    try:
        with dask.config.set(
            {
                "distributed.scheduler.worker-saturation": 1.0,  # a trial waits on no busy worker
                "distributed.scheduler.allowed-failures": retries,
                "distributed.nanny.pre-spawn-environ": environ,
            }
        ):
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                scheduler_port=0,
                dashboard_address=":0",  # a free port: no clash with another cluster
                silence_logs=logging.CRITICAL,
                preload=["cifarlin.search.cluster"],
            )
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    client = Client(cluster)
    try:
        yield client
    except BaseException:
        _stop_local_workers(client)  # at once: a running trial keeps its last checkpoint
        raise
    finally:
        client.close()
        cluster.close()


def _stop_local_workers(client: Any) -> None:
    try:
        pids = client.run(os.getpid)
    except Exception:
        return
    for pid in pids.values():
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
