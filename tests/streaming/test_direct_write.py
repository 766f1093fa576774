"""Under ``gunicorn -k gevent`` the fan-out writes each batch of events
straight to the streams' sockets (issue 14). These tests serve the app with
real gunicorn on real Redis, read with the independent client of
:mod:`tests.helpers.sse_client` (which checks the HTTP/1.1 chunk framing), and
assert what arrived; the ``direct_writes`` and ``direct_fallbacks``
counters show which path carried it. Eviction, hang-ups, heartbeats and
Last-Event-ID under gunicorn are in :mod:`tests.streaming.test_stream`."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest

from flask_notifications import Event
from flask_notifications.backends.base import Backend
from tests.helpers import wait_for
from tests.helpers.web_servers import Server

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

NEWS = "event-hub-news"
URL = f"/notifications/{NEWS}/events"


def news(n: int, *, body: str = "body", tags: tuple[str, ...] = ()) -> str:
    return Event(f"e{n}", "news", f"title {n}", body, tags=list(tags)).to_json()


def ids_of(events: list[Any]) -> list[str]:
    return [json.loads(e.data)["event_id"] for e in events]


def publish_all(backend: Backend, payloads: list[str], threads: int = 3) -> list[tuple[str, str]]:
    """Publish from several threads at once, so the listener reads batches
    of many events; return (id, payload) pairs in the hub's order."""
    published: list[tuple[str, str]] = []
    lock = threading.Lock()

    def run(part: list[str]) -> None:
        for payload in part:
            message = backend.publish(NEWS, payload)
            with lock:
                published.append((message.id, payload))

    workers = [threading.Thread(target=run, args=(payloads[i::threads],)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sorted(published, key=lambda pair: tuple(int(part) for part in pair[0].split("-")))


def test_every_frame_arrives_once_and_in_order_in_parsed_chunks(
    gunicorn: Callable[..., Server],
) -> None:
    server = gunicorn(NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT=None)
    backend = server.backend
    clients = [server.stream(URL) for _ in range(20)]
    # A filtered stream's filter runs in its own greenlet, between direct writes.
    tagged = server.stream("/tagged/odd")
    try:
        for client in [*clients, tagged]:
            client.wait_open()
        published = publish_all(backend, [news(n, tags=("odd",) if n % 2 else ()) for n in range(600)])
        ids = [backend_id for backend_id, _ in published]
        odd = [backend_id for backend_id, payload in published if json.loads(payload)["tags"] == ["odd"]]
        for client in clients:
            assert [e.last_event_id for e in client.take(len(ids))] == ids
            with pytest.raises(TimeoutError):
                client.next_event(timeout=0.3)
            # Chunks that parse (the client checks every size line and CR LF).
            assert client.chunks > 1
        assert [e.last_event_id for e in tagged.take(len(odd))] == odd
        with pytest.raises(TimeoutError):
            tagged.next_event(timeout=0.3)
        stats = server.stats()
        assert stats["direct_writes"] > 0
        assert stats["evicted"] == 0
    finally:
        for client in [*clients, tagged]:
            client.close()


def test_a_full_socket_buffer_falls_back_to_the_greenlet_without_loss_or_reordering(
    gunicorn: Callable[..., Server],
) -> None:
    server = gunicorn(sndbuf=4096, NOTIFICATIONS_SSE_QUEUE_SIZE=100_000)
    backend = server.backend
    stalled = server.stream(URL, rcvbuf=4096)
    try:
        stalled.wait_open()
        # The client reads nothing while ~2 MB are published: the socket's
        # buffers fill, and the rest waits in the stream.
        ids = [backend_id for backend_id, _ in publish_all(backend, [news(n, body="x" * 4000) for n in range(500)])]
        wait_for(lambda: server.stats()["direct_fallbacks"] > 0)
        assert [e.last_event_id for e in stalled.take(len(ids))] == ids
        # Once drained, the stream takes direct writes again.
        before = server.stats()["direct_writes"]
        more = [backend.publish(NEWS, news(n)).id for n in range(500, 510)]
        assert [e.last_event_id for e in stalled.take(len(more))] == more
        with pytest.raises(TimeoutError):
            stalled.next_event(timeout=0.3)
        stats = server.stats()
        assert stats["direct_writes"] > before
        assert stats["evicted"] == 0
    finally:
        stalled.close()


def test_a_live_stream_holds_only_its_request_greenlet(gunicorn: Callable[..., Server]) -> None:
    # The request's greenlet is gunicorn's (it counts toward
    # --worker-connections); delivering spawns none per stream.
    server = gunicorn(NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT=None)
    backend = server.backend
    before = server.request("GET", "/greenlets")[1]["count"]
    clients = [server.stream(URL) for _ in range(100)]
    try:
        for client in clients:
            client.wait_open()
        wait_for(lambda: server.request("GET", "/greenlets")[1]["count"] < before + 100 + 10)
        message = backend.publish(NEWS, news(0))
        for client in clients:
            assert [e.last_event_id for e in client.take(1)] == [message.id]
        assert server.request("GET", "/greenlets")[1]["count"] < before + 100 + 10
        assert server.stats()["connections"] == 100
    finally:
        for client in clients:
            client.close()


def test_an_http_1_0_client_gets_the_frames_unchunked(gunicorn: Callable[..., Server]) -> None:
    server = gunicorn()
    backend = server.backend
    with server.stream(URL, http10=True) as client:
        client.wait_open()
        assert "transfer-encoding" not in client.headers
        ids = [backend_id for backend_id, _ in publish_all(backend, [news(n) for n in range(100)])]
        assert [e.last_event_id for e in client.take(len(ids))] == ids
        assert client.chunks == 0
    assert server.stats()["direct_writes"] > 0


def test_with_direct_writes_off_the_server_writes_every_frame(gunicorn: Callable[..., Server]) -> None:
    server = gunicorn(NOTIFICATIONS_SSE_DIRECT_WRITE=False, NOTIFICATIONS_SSE_HEARTBEAT=1)
    backend = server.backend
    with server.stream(URL) as client:
        client.wait_open()
        ids = [backend_id for backend_id, _ in publish_all(backend, [news(n) for n in range(100)])]
        assert [e.last_event_id for e in client.take(len(ids))] == ids
        client.wait_until(lambda: len(client.parser.comments) >= 1, timeout=15)
    assert server.stats()["direct_writes"] == 0


def test_live_streams_get_heartbeats_and_announcements_in_order(gunicorn: Callable[..., Server]) -> None:
    server = gunicorn(NOTIFICATIONS_SSE_HEARTBEAT=1)
    backend = server.backend
    with server.stream(URL) as client:
        client.wait_open()
        first = backend.publish(NEWS, news(0)).id
        assert [e.last_event_id for e in client.take(1)] == [first]
        client.wait_until(lambda: len(client.parser.comments) >= 2, timeout=15)
        assert set(client.parser.comments) == {" heartbeat"}
        second = backend.publish(NEWS, news(1)).id
        assert [e.last_event_id for e in client.take(1)] == [second]


def test_a_stopping_server_ends_live_streams_after_what_was_sent(
    gunicorn: Callable[..., Server],
) -> None:
    server = gunicorn()
    backend = server.backend
    client = server.stream(URL)
    try:
        client.wait_open()
        ids = [backend_id for backend_id, _ in publish_all(backend, [news(n) for n in range(50)])]
        assert [e.last_event_id for e in client.take(len(ids))] == ids
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        # The stream that went on outside gunicorn is ended when the worker
        # exits, as Stream.end() ends one: the reconnect event, then the
        # response's last chunk (it was ended, not cut).
        assert [e.type for e in client.read_to_end(timeout=30)] == ["reconnect"]
        assert client.finished
        assert server.proc.wait(timeout=30) == 0
    finally:
        client.close()
