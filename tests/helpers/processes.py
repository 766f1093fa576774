"""Processes a test starts and may kill: a Celery worker that imports an
application module, as a user's worker does; and the figures that the
reliability tests report (docs/reliability.rst)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: How many examples each hypothesis test tries; RELIABILITY_EXAMPLES scales
#: the whole suite up for a longer run (docs/reliability.rst).
EXAMPLES = int(os.environ.get("RELIABILITY_EXAMPLES", "300"))


class WorkerProcess:
    """A Celery worker in a subprocess that imports ``app_module``, as a
    user's worker imports their application; a test may SIGKILL it."""

    def __init__(
        self, app_module: str, env: dict[str, str], log: Path, pool: str = "solo", concurrency: int = 1
    ) -> None:
        self.app_module = app_module
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.log = log
        self.pool = pool
        self.concurrency = concurrency
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._spawn(
            "worker",
            *("--pool", self.pool, "--concurrency", str(self.concurrency), "--loglevel", "INFO"),
            *("--without-gossip", "--without-mingle", "--without-heartbeat"),
        )

    def _spawn(self, command: str, *args: str) -> None:
        """``celery -A APP:celery COMMAND ARGS...`` in a session of its own,
        its output appended to the log."""
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", f"{self.app_module}:celery", command, *args],
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


class BeatProcess(WorkerProcess):
    """``celery beat`` in a subprocess for ``app_module``'s Celery app, with
    its schedule file in ``schedule``; a test may SIGKILL it."""

    def __init__(self, app_module: str, env: dict[str, str], log: Path, schedule: Path) -> None:
        super().__init__(app_module, env, log)
        self.schedule = schedule

    def start(self) -> None:
        self._spawn("beat", "--schedule", str(self.schedule), "--loglevel", "INFO")


def report(test: str, **figures: object) -> None:
    """Append a test's figures (events sent, lost, examples tried, RSS) as a
    JSON line to the file named by ``RELIABILITY_REPORT``, if it is set;
    docs/reliability.rst quotes them."""
    path = os.environ.get("RELIABILITY_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"test": test, **figures}, default=str) + "\n")
