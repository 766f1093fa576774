"""Hostile review of issue 14 (direct writes under ``gunicorn -k gevent``).

Each test reproduces a way a live (direct-write) stream breaks a promise.
The live streams' heartbeats come from a timer greenlet of the fan-out's
own, not from the listener, so a stalled Redis does not hold them up; the
controls that pass show the same scenario through gunicorn (``NOTIFICATIONS_SSE_DIRECT_WRITE
= False``) keeps the promise.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from flask_notifications import Event
from tests.helpers import RedisServer
from tests.helpers.web_servers import Server

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

NEWS = "event-hub-news"
URL = f"/notifications/{NEWS}/events"


def news(n: int, *, tags: tuple[str, ...] = ()) -> str:
    return Event(f"e{n}", "news", f"title {n}", "body", tags=list(tags)).to_json()


def _heartbeats_while_redis_stalls(
    gunicorn: Callable[..., Server],
    private_redis: Callable[..., RedisServer],
    direct: bool,
) -> int:
    stalled = private_redis()
    server = gunicorn(
        NOTIFICATIONS_REDIS_URL=stalled.url,
        CELERY_BROKER_URL=stalled.url,
        NOTIFICATIONS_SSE_HEARTBEAT=1,
        NOTIFICATIONS_SSE_DIRECT_WRITE=direct,
    )
    backend = server.backend
    with server.stream(URL) as client:
        client.wait_open()
        first = backend.publish(NEWS, news(0)).id
        assert [e.last_event_id for e in client.take(1)] == [first]
        before = len(client.parser.comments)
        # Redis stops answering (a stalled node, a network partition without
        # RST): its TCP connections stay up and replies never come.
        stalled.pause()
        try:
            try:
                # NOTIFICATIONS_SSE_HEARTBEAT = 1: four heartbeats are due
                # well within eight seconds.
                client.wait_until(lambda: len(client.parser.comments) - before >= 4, timeout=8)
            except TimeoutError:
                pass
            return len(client.parser.comments) - before
        finally:
            stalled.resume()


def test_control_heartbeats_go_on_while_redis_stalls_through_gunicorn(
    gunicorn: Callable[..., Server],
    private_redis: Callable[..., RedisServer],
) -> None:
    assert _heartbeats_while_redis_stalls(gunicorn, private_redis, direct=False) >= 4


def test_live_streams_get_heartbeats_while_redis_stalls(
    gunicorn: Callable[..., Server],
    private_redis: Callable[..., RedisServer],
) -> None:
    assert _heartbeats_while_redis_stalls(gunicorn, private_redis, direct=True) >= 4
