"""Whole cifarlin processes for the tests that need one: a command slowed down so that a signal
lands while it trains, and a command run on a pseudo-terminal."""

from __future__ import annotations

import os
import subprocess

# A `python -c` program: the cifarlin command, each training step 10 ms slower (so that a signal
# sent by a test lands while it trains)
SLOW_CLI = (
    "import time, cifarlin.core.train as t\n"
    "orig = t.model.backward\n"
    "def slow(*a):\n"
    "    time.sleep(0.01)\n"
    "    return orig(*a)\n"
    "t.model.backward = slow\n"
    "from cifarlin.cli import main\n"
    "main()\n"
)


def run_in_pty(argv: list[str], env: dict[str, str], timeout: float = 60) -> str:
    """What ``argv`` writes to a pseudo-terminal (its stdin, stdout and stderr), started without
    a fork of this process (pty.fork in a process with threads may deadlock the child)."""
    import pty
    import select

    main, child = pty.openpty()
    try:
        p = subprocess.Popen(
            argv, stdin=child, stdout=child, stderr=child, env={**os.environ, **env}, start_new_session=True
        )
    finally:
        os.close(child)
    out = b""
    try:
        while select.select([main], [], [], timeout)[0]:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the other end closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(main)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return out.decode(errors="replace")
