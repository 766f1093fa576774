"""A graceful restart of gunicorn (``SIGHUP``: new workers start, the old
ones get ``SIGTERM``) under 200 open streams while events keep being
published: with the hooks of :mod:`flask_notifications.ops.gunicorn`, the old
workers end their streams at once with a ``reconnect`` event instead of
holding them until ``graceful_timeout``, and every browser receives every
event exactly once across the restart, without a gap.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from flask_notifications.backends.redis import RedisPubSub
from flask_notifications.event_hub import hub_id_for
from tests.helpers import report, wait_for
from tests.helpers.resuming_client import ResumingClient, SteadyPublisher, stop_all
from tests.helpers.web_servers import Gunicorn

pytestmark = [pytest.mark.reliability, pytest.mark.redis, pytest.mark.subprocess]

NEWS = hub_id_for("news")
BROWSERS, EVENTS, RATE = 200, 300, 50.0
#: Long enough that a worker which waited for its streams would be seen to.
GRACEFUL_TIMEOUT = 30


@pytest.fixture
def server(gunicorn_deployment: Callable[..., Gunicorn]) -> Gunicorn:
    return gunicorn_deployment(
        workers=2,
        graceful_timeout=GRACEFUL_TIMEOUT,
        NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT=None,
        NOTIFICATIONS_HEALTH_BLUEPRINT=True,
    )


@pytest.mark.timeout(400)
def test_a_graceful_restart_under_200_streams_loses_and_repeats_nothing(
    server: Gunicorn, redis_url: str, unique: str
) -> None:
    backend = RedisPubSub(url=redis_url, key_prefix=unique)
    browsers = [ResumingClient(f"{server.base}/notifications/{NEWS}/events") for _ in range(BROWSERS)]
    publisher = SteadyPublisher(backend, NEWS, unique, EVENTS, RATE)
    published = publisher.published

    for browser in browsers:
        browser.start()
    try:
        wait_for(lambda: all(b.connections for b in browsers), timeout=120)
        publisher.start()
        wait_for(lambda: len(published) >= EVENTS // 3)
        old = server.worker_pids()
        hup = time.monotonic()
        os.kill(server.proc.pid, signal.SIGHUP)
        wait_for(lambda: not (old & server.worker_pids()), timeout=GRACEFUL_TIMEOUT * 2, interval=0.05)
        stopped_after = time.monotonic() - hup
        publisher.join()
        wait_for(lambda: all(b.received >= EVENTS for b in browsers), timeout=180)
        assert server.get("/health/ready")[0] == 200
    finally:
        stop_all(browsers)
        backend.close()
    log = server.output()
    # The old workers did not wait out graceful_timeout for their streams.
    assert "Worker graceful timeout" not in log, log
    for browser in browsers:
        assert browser.event_ids() == published
        assert browser.gaps() == 0
        # Its stream on an old worker ended with the reconnect event, not cut.
        assert browser.count("reconnect") >= 1
        assert browser.connections >= 2
    report(
        "gunicorn graceful restart",
        browsers=BROWSERS,
        events=EVENTS,
        deliveries=sum(len(b.event_ids()) for b in browsers),
        lost=sum(len(set(published) - set(b.event_ids())) for b in browsers),
        duplicates=sum(len(b.event_ids()) - len(set(b.event_ids())) for b in browsers),
        old_workers_gone_after_s=round(stopped_after, 2),
    )
