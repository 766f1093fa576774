"""Hostile review of issues 12 and 15 (the stream layer split, honest
streams, outages, paged replay, graceful restarts, metrics and health).

Each test reproduces one way to lose an event without a ``gap`` event,
deliver one twice on a stream, grow a server process's memory without
bound, or break a promise of the docs, against real Redis servers (private
ones, on free ports, where the test kills, restarts or pauses them),
``gunicorn -k gevent`` and the independent client of :mod:`tests.helpers.sse_client`.
A test marked ``xfail(strict=True)`` describes what should happen and fails
today; it turns into an XPASS (and so a failure of the suite) once the
library is fixed, and the mark must go.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
from collections.abc import Callable

import pytest

from flask_notifications import Event
from flask_notifications.backends.redis import RedisPubSub
from tests.helpers import RedisServer, wait_for
from tests.helpers.sse_client import SSEEvent
from tests.helpers.web_servers import Server

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

NEWS = "event-hub-news"
URL = f"/notifications/{NEWS}/events"

ServeFactory = Callable[..., Server]


def event(n: int, body: str = "body") -> Event:
    return Event(f"e{n}", "test", f"title {n}", body)


def number(received: SSEEvent) -> int:
    return int(json.loads(received.data)["event_id"][1:])


def kinds(received: list[SSEEvent]) -> list[str]:
    return [e.type if e.type != "test" else f"e{number(e)}" for e in received]


# -- 1. a Redis that restarts empty is not always noticed ----------------------------------------


def test_a_redis_restarted_empty_with_more_new_events_loses_the_unread_ones_without_a_gap(
    gunicorn: ServeFactory, private_redis: Callable[..., RedisServer], unique: str
) -> None:
    own_redis = private_redis()  # no persistence: a restart comes back empty
    server = gunicorn(NOTIFICATIONS_REDIS_URL=own_redis.url, CELERY_BROKER_URL=own_redis.url)
    with server.stream(URL) as client:
        client.wait_open()
        for n in (1, 2):
            server.publish(NEWS, event(n))
        assert [number(e) for e in client.take(2)] == [1, 2]
        worker = server.worker_pid()
        os.kill(worker, signal.SIGSTOP)  # a paused process: a long GC, a busy CPU, a swapped page
        try:
            old = RedisPubSub(url=own_redis.url, key_prefix=unique)
            for n in (3, 4, 5):  # accepted by Redis, never read by the paused listener
                old.publish(NEWS, event(n).to_json())
            old.close()
            own_redis.restart()  # no persistence: it comes back empty
            new = RedisPubSub(url=own_redis.url, key_prefix=unique)
            for n in range(6, 11):  # more entries than the old stream had when last read
                new.publish(NEWS, event(n).to_json())
            new.close()
        finally:
            os.kill(worker, signal.SIGCONT)
        received: list[SSEEvent] = []
        while not received or received[-1].type != "test" or number(received[-1]) != 10:
            received.append(client.next_event())
    delivered = [number(e) for e in received if e.type == "test"]
    gaps = [e for e in received if e.type == "gap"]
    # Events 3, 4 and 5 are gone with the old server: that must be announced.
    assert {3, 4, 5} <= set(delivered) or gaps, kinds(received)


# -- 2. a reset during a resuming stream's replay delivers events twice ------------------------


def test_a_reset_during_a_resuming_streams_replay_delivers_events_twice(
    gunicorn: ServeFactory, private_redis: Callable[..., RedisServer], unique: str
) -> None:
    own_redis = private_redis()  # no persistence: a restart comes back empty
    server = gunicorn(NOTIFICATIONS_REDIS_URL=own_redis.url, CELERY_BROKER_URL=own_redis.url)
    backend = RedisPubSub(url=own_redis.url, key_prefix=unique)
    big = "x" * 40_000
    # 12 MB of history: a client that does not read holds the replay in its
    # first pages, far from the end of the history.
    ids = [backend.publish(NEWS, event(n, big).to_json()).id for n in range(300)]
    backend.close()
    with server.stream(URL, last_event_id=ids[0], rcvbuf=4096, timeout=60) as client:
        wait_for(lambda: server.stats()["replayed"] > 0 or server.stats()["connections"] == 1)
        own_redis.restart()  # comes back empty: a reset of the hub's stream
        backend = RedisPubSub(url=own_redis.url, key_prefix=unique)
        for n in (1001, 1002, 1003):
            backend.publish(NEWS, event(n).to_json())
        # The listener reported the reset to the stream and queued the new events.
        wait_for(lambda: server.stats()["gaps"] >= 1 and server.stats()["queued"] >= 3)
        received: list[SSEEvent] = []
        while not any(e.type == "test" and number(e) == 1003 for e in received):
            received.append(client.next_event())
        backend.publish(NEWS, event(9999).to_json())
        while received[-1].type != "test" or number(received[-1]) != 9999:
            received.append(client.next_event())
        backend.close()
    numbers = [number(e) for e in received if e.type == "test"]
    # The old history went with the restart (a gap says so); what remains
    # must arrive once.
    duplicated = sorted({n for n in numbers if numbers.count(n) > 1})
    assert not duplicated, [k for k in kinds(received) if not k.startswith("e") or int(k[1:]) > 299]


# -- 3. a client that sent a byte before hanging up keeps its slot --------------------------------


def test_a_client_that_sent_a_byte_then_hung_up_releases_its_place(gunicorn: ServeFactory) -> None:
    server = gunicorn(NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT=2, NOTIFICATIONS_SSE_HEARTBEAT=600.0)
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
        sock.sendall(f"GET {URL} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
        assert sock.recv(12) == b"HTTP/1.1 200"
        sock.sendall(b"\r\n")  # a stray CRLF after the request, as some clients and proxies send
        server.stats()  # a round trip: the server's loop has seen the CRLF
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
    # The hang-ups are noticed, and the client may stream again.
    wait_for(lambda: server.stats()["connections"] == 0, timeout=60)
    assert server.status(URL) == 200
