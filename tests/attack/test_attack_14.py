"""Hostile review of issue 14 (direct writes under ``gunicorn -k gevent``).

Each test reproduces a way a live (direct-write) stream breaks a promise.
The live streams' heartbeats come from a timer greenlet of the fan-out's
own, not from the listener, so a stalled Redis does not hold them up; the controls that
pass show the same scenario through gunicorn (``NOTIFICATIONS_SSE_DIRECT_WRITE
= False``) keeps the promise.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flask_notifications import Event
from flask_notifications.backends.base import Backend

from ..apps.sse_app import create_app
from ..conftest import make_config
from ..helpers import free_port, wait_for
from ..sse_servers import Server

NEWS = "event-hub-news"
URL = f"/notifications/{NEWS}/events"


def news(n: int, *, tags: tuple[str, ...] = ()) -> str:
    return Event(f"e{n}", "news", f"title {n}", "body", tags=list(tags)).to_json()


@pytest.fixture
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private redis-server (so that it can be stalled with SIGSTOP)."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def accepts() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    try:
        wait_for(accepts, timeout=30)
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture
def served(redis_url: str, unique: str) -> Iterator[Callable[..., tuple[Server, Backend]]]:
    servers: list[Server] = []

    def start(url: str | None = None, **config: Any) -> tuple[Server, Backend]:
        settings = make_config(url or redis_url, unique, NOTIFICATIONS_BACKEND="redis", SECRET_KEY=unique, **config)
        server = Server("gunicorn", settings)
        servers.append(server)
        app = create_app(settings)
        return server, app.extensions["notifications"].get_backend(app)

    yield start
    for server in servers:
        server.kill()


def _heartbeats_while_redis_stalls(
    served: Callable[..., tuple[Server, Backend]],
    private_redis: tuple[str, subprocess.Popen[bytes]],
    direct: bool,
) -> int:
    url, redis_proc = private_redis
    server, backend = served(url, NOTIFICATIONS_SSE_HEARTBEAT=1, NOTIFICATIONS_SSE_DIRECT_WRITE=direct)
    with server.stream(URL) as client:
        client.wait_open()
        first = backend.publish(NEWS, news(0)).id
        assert [e.last_event_id for e in client.take(1)] == [first]
        before = len(client.parser.comments)
        # Redis stops answering (a stalled node, a network partition without
        # RST): its TCP connections stay up and replies never come.
        redis_proc.send_signal(signal.SIGSTOP)
        try:
            try:
                # NOTIFICATIONS_SSE_HEARTBEAT = 1: four heartbeats are due
                # well within eight seconds.
                client.wait_until(lambda: len(client.parser.comments) - before >= 4, timeout=8)
            except TimeoutError:
                pass
            return len(client.parser.comments) - before
        finally:
            redis_proc.send_signal(signal.SIGCONT)


def test_control_heartbeats_go_on_while_redis_stalls_through_gunicorn(
    served: Callable[..., tuple[Server, Backend]],
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    assert _heartbeats_while_redis_stalls(served, private_redis, direct=False) >= 4


def test_live_streams_get_heartbeats_while_redis_stalls(
    served: Callable[..., tuple[Server, Backend]],
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> None:
    assert _heartbeats_while_redis_stalls(served, private_redis, direct=True) >= 4
