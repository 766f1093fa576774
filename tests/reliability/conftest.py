"""Fixtures of the reliability suite: private servers and worker processes
that a test may kill, and the hypothesis budget.

Everything here runs against real services. A test that kills a server
starts its own on a free port, so the shared Redis of the other tests is
never disturbed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..helpers import RedisServer

ROOT = Path(__file__).resolve().parents[2]

#: How many examples each hypothesis test tries; RELIABILITY_EXAMPLES scales
#: the whole suite up for a longer run (docs/reliability.rst).
EXAMPLES = int(os.environ.get("RELIABILITY_EXAMPLES", "300"))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis server this test may kill and restart."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, persistent=True)
    server.start()
    yield server
    server.stop()


class WorkerProcess:
    """A Celery worker in a subprocess that imports ``app_module``, as a
    user's worker imports their application; a test may SIGKILL it."""

    def __init__(self, app_module: str, env: dict[str, str], log: Path, pool: str = "solo") -> None:
        self.app_module = app_module
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.log = log
        self.pool = pool
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    f"{self.app_module}:celery",
                    "worker",
                    "--pool",
                    self.pool,
                    "--concurrency",
                    "1",
                    "--loglevel",
                    "INFO",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL the worker and every process of its pool at once."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc is not None:
            # Reap pool children left behind by a killed parent.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def report(test: str, **figures: object) -> None:
    """Append a test's figures (events sent, lost, examples tried, RSS) as a
    JSON line to the file named by ``RELIABILITY_REPORT``, if it is set;
    docs/reliability.rst quotes them."""
    path = os.environ.get("RELIABILITY_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"test": test, **figures}, default=str) + "\n")
