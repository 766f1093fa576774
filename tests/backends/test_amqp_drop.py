"""The AMQP backend's connection to RabbitMQ dropped under open SSE streams:
the SSE server's subscriber reconnects and resumes its stream queue from the
last offset it read, so the events published meanwhile still reach every
browser (and one that could not would be announced with a ``gap`` event).

The drop is made by a TCP proxy between the SSE server and the shared
RabbitMQ, so the broker itself is not disturbed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection

from flask_notifications import Event
from flask_notifications.backends.amqp import AmqpPubSub
from flask_notifications.event_hub import hub_id_for
from tests.helpers import make_config, probe, report, wait_for
from tests.helpers.resuming_client import ResumingClient, stop_all
from tests.helpers.tcp_proxy import TcpProxy
from tests.helpers.web_servers import Server

pytestmark = [pytest.mark.reliability, pytest.mark.redis, pytest.mark.amqp, pytest.mark.subprocess]

NEWS = hub_id_for("news")
BROWSERS = 5


@pytest.fixture
def proxy(amqp_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy.in_front_of(amqp_url, 5672)
    yield proxy
    proxy.close()


@pytest.fixture
def served(redis_url: str, unique: str, amqp_url: str, proxy: TcpProxy) -> Iterator[tuple[Any, list[ResumingClient]]]:
    through_proxy = proxy.url_through(amqp_url)
    config = make_config(
        redis_url,
        unique,
        NOTIFICATIONS_BACKEND="amqp",
        NOTIFICATIONS_AMQP_URL=through_proxy,
        NOTIFICATIONS_RECONNECT_BACKOFF=0.05,
        NOTIFICATIONS_RECONNECT_BACKOFF_MAX=0.5,
        NOTIFICATIONS_SSE_RETRY=200,
    )
    server = Server("gevent", config)
    browsers = [ResumingClient(f"{server.base}/notifications/{NEWS}/events") for _ in range(BROWSERS)]
    for browser in browsers:
        browser.start()
    yield server, browsers
    stop_all(browsers)
    server.kill()
    conn = Connection(amqp_url, connect_timeout=2)
    try:
        conn.channel().queue_delete(f"{unique}.hub.{NEWS}")  # the hub's stream is durable
    finally:
        conn.release()


def _publish(publisher: AmqpPubSub, run: str, seqs: range, published: list[str], pause: float = 0.02) -> None:
    for seq in seqs:
        event = Event(f"{run}-{seq}", "news", f"event {seq}", "body", seq=seq)
        publisher.publish(NEWS, event.to_json())
        published.append(event["event_id"])
        time.sleep(pause)


def _publish_one(publisher: AmqpPubSub, run: str, seq: int, published: list[str]) -> str:
    """Publish event ``seq`` of ``run``; return its id."""
    _publish(publisher, run, range(seq, seq + 1), published, 0)
    return f"{run}-{seq}"


def _drop_while_publishing(
    proxy: TcpProxy, publisher: AmqpPubSub, browsers: list[ResumingClient], run: str
) -> tuple[list[str], list[str], list[str]]:
    """Publish before, during and after a 1 s outage; return the three lists."""
    before: list[str] = []
    during: list[str] = []
    after: list[str] = []
    wait_for(lambda: all(b.connections for b in browsers), timeout=60)
    # The subscription binds when the first stream opens; make sure it is
    # live: publish a probe, wait for it to arrive, and only then (if it did
    # not) publish the next.
    probe(
        lambda n: _publish_one(publisher, f"{run}-probe", n, []),
        lambda sent: all(sent in b.event_ids() for b in browsers),
        per_probe=5,
        probes=12,
    )
    _publish(publisher, run, range(0, 20), before)
    wait_for(lambda: all(set(before) <= set(b.event_ids()) for b in browsers), timeout=30)
    proxy.refusing.set()
    proxy.cut()
    outage = threading.Thread(target=_publish, args=(publisher, run, range(20, 40), during, 0.05))
    outage.start()
    outage.join()
    proxy.refusing.clear()
    # After the reconnection, events flow again: publish one at a time, each
    # after the previous one arrived or was given up on, until every browser
    # has the latest.
    probe(
        lambda n: _publish_one(publisher, run, 40 + n, after),
        lambda sent: all(sent in b.event_ids() for b in browsers),
        per_probe=5,
        probes=20,
    )
    return before, during, after


def test_the_subscriber_reconnects_after_the_broker_drops_it_and_announces_any_loss(
    served: tuple[Any, list[ResumingClient]], proxy: TcpProxy, amqp_url: str, unique: str
) -> None:
    _server, browsers = served
    publisher = AmqpPubSub(amqp_url, key_prefix=unique)
    try:
        before, during, after = _drop_while_publishing(proxy, publisher, browsers, unique)
    finally:
        publisher.close()
    for browser in browsers:
        got = browser.event_ids()
        # It reconnected: what came before the drop and the last probe after it arrived.
        assert set(before) <= set(got) and after[-1] in got
        missed = set(during) - set(got)
        assert not missed or browser.gaps() > 0, f"{len(missed)} events lost without a gap event"
    # The stream kept what was published during the drop: nothing was missed.
    assert all(set(during) <= set(browser.event_ids()) for browser in browsers)
    report(
        "AMQP connection dropped",
        browsers=len(browsers),
        during_outage=len(during),
        missed_during_outage=sum(len(set(during) - set(b.event_ids())) for b in browsers),
        gap_events=sum(b.gaps() for b in browsers),
        resumed=all(after[-1] in b.event_ids() for b in browsers),
    )
