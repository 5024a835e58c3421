"""What the download tests share: a local HTTP server per test (:mod:`servers`)."""

from __future__ import annotations

import pytest

from servers import Server


@pytest.fixture
def serve():
    """``serve(body, name=..., tls=None)``: a :class:`servers.Server` of ``body`` for this test."""
    servers: list[Server] = []

    def start(body: bytes, name: str = "cifar-10-python.tar.gz", tls=None) -> Server:
        servers.append(Server(body, name, tls))
        return servers[-1]

    yield start
    for s in servers:
        s.close()
