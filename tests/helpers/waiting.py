"""Small helpers for tests that wait on other processes or threads."""

from __future__ import annotations

import errno
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import NoReturn, TypeVar

import pytest

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


#: The ports :func:`free_port` handed out: a test's own, where nothing
#: listens or a server that it started does (tests/conftest.py allows them).
FREE_PORTS: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    FREE_PORTS.add(port)
    return port


def listening_socket(port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:``port``, to hand to a server process
    (gunicorn's ``--bind fd://N``): bound by the test itself, the port cannot
    be taken by another process between :func:`free_port` and the server's
    start, which then answered in its place."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # A server killed to be started again on its port may take a moment to
    # let go of it (gunicorn's worker outlives its killed master until it
    # sees it gone); gunicorn's own bind waits the same way.
    deadline = time.monotonic() + 15
    while True:
        try:
            sock.bind(("127.0.0.1", port))
            break
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                sock.close()
                raise
            time.sleep(0.2)
    sock.listen(2048)
    return sock


def missing(reason: str) -> NoReturn:
    """Skip a test that lacks a service or a tool, saying why; but fail it in
    CI (``CI=true``), where .ci/run installs and starts all of them, so that
    no backend goes untested there unnoticed."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; in CI, .ci/run installs and starts everything the suite needs")
    pytest.skip(reason)


def probe(
    publish: Callable[[int], str], arrived: Callable[[str], bool], *, per_probe: float = 5.0, probes: int = 20
) -> str:
    """Publish probes one at a time until one arrives, and return its id.

    ``publish(n)`` publishes the ``n``-th probe and returns its id; after
    each, this waits up to ``per_probe`` seconds for ``arrived(id)`` before it
    publishes the next, so a check never races the delivery it checks for
    (a subscription that is not live yet loses a probe, a slow one is only
    late). Fails after ``probes`` probes that did not arrive.
    """
    for n in range(probes):
        sent = publish(n)
        deadline = time.monotonic() + per_probe
        while time.monotonic() < deadline:
            if arrived(sent):
                return sent
            time.sleep(0.02)
    raise AssertionError(f"none of {probes} probes arrived, each waited for {per_probe}s")
