from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cifar_files import write_binary_dataset, write_disagreeing_dataset, write_python_dataset

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("CIFARLIN_REAL_DATA", REPO.parent / "shared" / "cifar-10-batches-py"))


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test sees the user's data folder, mirror settings, colours or the network defaults, and
    none writes into the repository: each runs in its own temporary folder."""
    monkeypatch.chdir(tmp_path)
    for var in ("CIFARLIN_DATA_DIR", "CIFARLIN_URL", "CIFARLIN_MD5", "CIFARLIN_DEBUG", "NO_COLOR", "COLUMNS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    from cifarlin.data import download
    from cifarlin.data import http as paced_http

    monkeypatch.setattr(paced_http, "BACKOFF", 0.01)
    from cifarlin.work import runs

    # a checkpoint after every epoch, as tests of resuming and stopping expect (tiny epochs take
    # milliseconds: the once-a-second rule would skip them); test_checkpoint_pace sets its own
    monkeypatch.setattr(runs, "CHECKPOINT_SECONDS", 0.0)
    monkeypatch.setattr(
        download,
        "OFFICIAL_URL",
        {"python": "http://127.0.0.1:9/none.tar.gz", "binary": "http://127.0.0.1:9/none.tar.gz"},
    )


@pytest.fixture(scope="session")
def tiny_py(tmp_path_factory) -> Path:
    """A tiny python-version dataset: 50 images per batch, shared read-only by the tests."""
    return write_python_dataset(tmp_path_factory.mktemp("data") / "cifar-10-batches-py")


@pytest.fixture
def prepared(tiny_py):
    """The tiny data prepared for training (default splits); some test files keep their own."""
    from cifarlin.core import config
    from cifarlin.data import cifar as data
    from cifarlin.work.prepare import prepare

    return prepare(data.Dataset(tiny_py, "python"), config.SplitSpec())


@pytest.fixture(scope="session")
def tiny_bin(tmp_path_factory) -> Path:
    return write_binary_dataset(tmp_path_factory.mktemp("data") / "cifar-10-batches-bin")


@pytest.fixture(scope="session")
def disagreeing_py(tmp_path_factory) -> Path:
    """A python-version dataset of noisy images on which validation and test disagree (200 per
    batch; see cifar_files.write_disagreeing_dataset): for the choices made on validation data,
    which tiny_py cannot test (there every candidate scores 1.00 on every split)."""
    return write_disagreeing_dataset(tmp_path_factory.mktemp("data") / "cifar-10-batches-py")


@pytest.fixture(scope="session")
def report_outputs(tmp_path_factory, disagreeing_py) -> Path:
    """An outputs folder of every kind of run (tests/report_runs.py), made once: copy it before
    anything that may write into it (the report draws missing figures into the run folders)."""
    from report_runs import build_outputs

    root = tmp_path_factory.mktemp("report")
    return build_outputs(root, disagreeing_py, root / "cache")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def real_data() -> Path:
    if not (REAL_DATA / "data_batch_1").is_file():
        pytest.skip(f"the CIFAR-10 stand-in is not at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture
def dask_cluster(tmp_path):
    """A scheduler and a worker started as `dask scheduler` and `dask worker` processes on
    127.0.0.1 (free ports), stopped even when the test fails."""
    info = tmp_path / "scheduler.json"
    common = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(info),
            ],
            **common,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not info.is_file() or not info.read_text().strip():
            assert time.monotonic() < deadline and procs[0].poll() is None, "the scheduler did not start"
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "dask",
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--nworkers",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                    "--death-timeout",
                    "60",
                ],
                **common,
            )
        )
        yield address
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@pytest.fixture
def serve():
    """``serve(body, name=..., tls=None)``: a local HTTP server of ``body`` for this test
    (:class:`servers.Server`), closed after it."""
    from servers import Server

    servers: list[Server] = []

    def start(body: bytes, name: str = "cifar-10-python.tar.gz", tls=None) -> Server:
        servers.append(Server(body, name, tls))
        return servers[-1]

    yield start
    for s in servers:
        s.close()
