"""The SSE serving process killed (SIGKILL) and restarted while events keep
being published: every browser reconnects with ``Last-Event-ID`` and, within
the history window, receives every event in order, none twice, with no gap.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from flask_notifications.backends.redis import RedisPubSub
from flask_notifications.event_hub import hub_id_for
from tests.helpers import make_config, report, wait_for
from tests.helpers.resuming_client import ResumingClient, SteadyPublisher, stop_all
from tests.helpers.web_servers import Server

pytestmark = [pytest.mark.reliability, pytest.mark.redis, pytest.mark.subprocess]

NEWS = hub_id_for("news")
BROWSERS, EVENTS, RATE = 20, 300, 50.0


@pytest.fixture
def server(redis_keys: str, redis_url: str, unique: str, redis_client: redis.Redis[bytes]) -> Iterator[Any]:
    config = make_config(redis_url, unique, NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT=None)
    server = Server("gevent", config)
    yield server
    server.kill()


@pytest.mark.timeout(300)
def test_browsers_resume_without_a_gap_after_the_server_is_killed(server: Any, redis_url: str, unique: str) -> None:
    backend = RedisPubSub(url=redis_url, key_prefix=unique)
    browsers = [ResumingClient(f"{server.base}/notifications/{NEWS}/events") for _ in range(BROWSERS)]
    publisher = SteadyPublisher(backend, NEWS, unique, EVENTS, RATE)
    published = publisher.published
    restarted = threading.Event()

    for browser in browsers:
        browser.start()
    try:
        wait_for(lambda: all(b.connections for b in browsers), timeout=60)
        publisher.start()
        wait_for(lambda: len(published) >= EVENTS // 3)
        server.kill()
        # Events go on being published while no server is up.
        wait_for(lambda: len(published) >= EVENTS // 2)
        server.start()
        restarted.set()
        publisher.join()
        wait_for(lambda: all(b.received >= EVENTS for b in browsers), timeout=120)
    finally:
        stop_all(browsers)
        backend.close()
    for browser in browsers:
        assert browser.event_ids() == published
        assert browser.gaps() == 0 and browser.connections >= 2
    report(
        "SSE server restart",
        browsers=BROWSERS,
        events=EVENTS,
        deliveries=sum(len(b.event_ids()) for b in browsers),
        lost=sum(len(set(published) - set(b.event_ids())) for b in browsers),
        reconnections=sum(b.connections - 1 for b in browsers),
    )
