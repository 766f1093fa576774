"""Delivery by recipient (issue 20): a stream that follows one user
(``WithRecipient(user)``, alone or as a conjunct of ``&``) gets only that
user's events, and an event costs what its recipients cost, not what the
open streams do (the ``queued`` counter: one per event and stream it went
to). Other streams keep today's evaluation; predefined filters are judged by
the fan-out and written straight to live streams under gunicorn.

The fan-out runs on the memory backend here, with threads; the last tests
serve the SSE app under gunicorn, on real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from flask import Flask

from flask_notifications import ConfigurationError, Event, EventFilter, Notifications
from flask_notifications.backends.memory import MemoryPubSub
from flask_notifications.event_filter import And
from flask_notifications.filters import WithEventType, WithField, WithRecipient, WithRecipients, WithTag
from flask_notifications.streaming.fanout import Fanout
from flask_notifications.streaming.routing import route
from flask_notifications.streaming.stream import Stream
from flask_notifications.streaming.wire import format_id
from tests.helpers import wait_for
from tests.helpers.sse_client import Parser, SSEEvent
from tests.helpers.web_servers import Server

HUB = "event-hub-private"


class Titled(EventFilter):
    """An application's own filter: the fan-out cannot know it never waits."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def filter(self, event: Mapping[str, Any]) -> bool:
        return str(event.get("title", "")).startswith(self.prefix)


class Mine(WithRecipient):
    """A subclass may filter otherwise: not indexed."""


def event_json(n: int, *recipients: str | int, tags: tuple[str, ...] = (), title: str = "") -> str:
    return Event(f"e{n}", "note", title or f"title {n}", "body", recipients=recipients, tags=list(tags)).to_json()


class Reader:
    """Reads the frames of one stream (replay included), as a server does."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self._frames = stream.frames(retry=1000, heartbeat=0.1)
        self._parser = Parser()
        self._ids: list[str] = []

    def take(self, count: int) -> list[str]:
        """The next ``count`` event ids."""
        deadline = time.monotonic() + 30
        while len(self._ids) < count:
            assert time.monotonic() < deadline, f"only {self._ids} arrived"
            for event in self._parser.feed(next(self._frames).decode("utf-8")):
                if event.data:
                    self._ids.append(json.loads(event.data)["event_id"])
        taken, self._ids = self._ids[:count], self._ids[count:]
        return taken


# -- which shapes are indexed --------------------------------------------------------


def test_the_shapes_that_are_indexed() -> None:
    assert route(None) == (None, None, True)
    assert route(WithRecipient("alice")) == ("alice", None, True)
    assert route(WithRecipient(7)).recipient == "7"
    tagged = route(WithTag("billing") & WithRecipient("alice"))
    assert tagged.recipient == "alice" and tagged.rest == WithTag("billing") and tagged.inline
    deep = route(WithEventType("note") & (WithTag("a") & WithRecipient("bob")))
    assert deep.recipient == "bob" and deep.rest == And(WithEventType("note"), WithTag("a"))
    custom = route(Titled("x") & WithRecipient("alice"))
    assert custom.recipient == "alice" and custom.rest == Titled("x") and not custom.inline
    # Not indexed: any event may pass them whoever it is for.
    assert route(WithRecipient("alice") | WithTag("all")).recipient is None
    assert route(~WithRecipient("alice")).recipient is None
    assert route(WithRecipients(["alice"])).recipient is None
    assert route(Mine("alice")) == (None, Mine("alice"), False)
    assert route(WithRecipient(True)).recipient is None  # matches no recipient, as the filter says
    assert route(WithTag("a") | WithEventType("b")).inline
    assert not route(WithField("priority", lambda value: value == "high")).inline
    assert route(WithField("priority", "high")).inline


# -- what reaches whom -------------------------------------------------------------------


def test_an_event_reaches_every_tab_of_its_recipients_and_no_one_else(fanout: Fanout, backend: MemoryPubSub) -> None:
    alice = [Reader(fanout.open(HUB, event_filter=WithRecipient("alice"))) for _ in range(3)]
    bob = Reader(fanout.open(HUB, event_filter=WithRecipient("bob")))
    seven = Reader(fanout.open(HUB, event_filter=WithRecipient(7)))  # an integer user id
    everyone = Reader(fanout.open(HUB))
    backend.publish(HUB, event_json(1, "alice"))
    backend.publish(HUB, event_json(2, "bob", "alice", "alice"))
    backend.publish(HUB, event_json(3))  # no recipients: no indexed stream
    backend.publish(HUB, event_json(4, 7))
    backend.publish(HUB, event_json(5, "carol"))
    backend.publish(HUB, event_json(6, "bob"))
    assert everyone.take(6) == ["e1", "e2", "e3", "e4", "e5", "e6"]
    for tab in alice:
        assert tab.take(2) == ["e1", "e2"]
    assert bob.take(2) == ["e2", "e6"]
    assert seven.take(1) == ["e4"]
    # Nothing more came to any of them: a last event for each, and the
    # first thing each gets next is that one.
    probes = {"alice": 7, "bob": 8, "7": 9}
    for user, n in probes.items():
        backend.publish(HUB, event_json(n, user))
    for stream, n in [(alice[0], 7), (bob, 8), (seven, 9)]:
        assert stream.take(1) == [f"e{n}"]


def test_the_cost_of_an_event_follows_its_recipients(fanout: Fanout, backend: MemoryPubSub) -> None:
    streams = [fanout.open(HUB, event_filter=WithRecipient(f"u{n}"), queue_size=4) for n in range(300)]
    plain = Reader(fanout.open(HUB, queue_size=100))
    before = fanout.stats()["queued"]
    for n in range(20):
        backend.publish(HUB, event_json(n, f"u{n}"))
    assert len(plain.take(20)) == 20
    stats = fanout.stats()
    # Each event went to its recipient's stream and the unindexed one: 2,
    # not the 301 open streams.
    assert stats["queued"] - before == 20 * 2
    assert stats["evicted"] == 0
    for n in (0, 19):
        assert Reader(streams[n]).take(1) == [f"e{n}"]


def test_the_rest_of_a_composite_filter_still_applies(fanout: Fanout, backend: MemoryPubSub) -> None:
    billing = Reader(fanout.open(HUB, event_filter=WithTag("billing") & WithRecipient("alice")))
    titled = Reader(fanout.open(HUB, event_filter=Titled("urgent") & WithRecipient("alice")))
    either = Reader(fanout.open(HUB, event_filter=WithRecipient("bob") | WithTag("billing")))
    backend.publish(HUB, event_json(1, "alice", tags=("billing",)))
    backend.publish(HUB, event_json(2, "alice", title="urgent: pay"))
    backend.publish(HUB, event_json(3, "bob", tags=("billing",), title="urgent: bob"))
    backend.publish(HUB, event_json(4, "carol", tags=("billing",)))
    backend.publish(HUB, event_json(5, "alice", tags=("billing",), title="urgent: both"))
    assert billing.take(2) == ["e1", "e5"]
    assert titled.take(2) == ["e2", "e5"]
    assert either.take(4) == ["e1", "e3", "e4", "e5"]


def test_a_replay_applies_the_same_filter(fanout: Fanout, backend: MemoryPubSub) -> None:
    fanout.open(HUB).close()  # the hub joins the subscription
    start = format_id(fanout.newest(HUB))
    for n, user in enumerate(["alice", "bob", 7, "alice", "7"]):
        backend.publish(HUB, event_json(n, user))
    alice = Reader(fanout.open(HUB, event_filter=WithRecipient("alice"), last_event_id=start))
    seven = Reader(fanout.open(HUB, event_filter=WithRecipient(7), last_event_id=start))
    either = Reader(fanout.open(HUB, event_filter=WithTag("x") | WithRecipient(7), last_event_id=start))
    assert alice.take(2) == ["e0", "e3"]
    assert seven.take(2) == ["e2", "e4"]
    assert either.take(2) == ["e2", "e4"]
    backend.publish(HUB, event_json(5, "bob"))
    backend.publish(HUB, event_json(6, "alice", 7))
    assert alice.take(1) == ["e6"]
    assert seven.take(1) == ["e6"]
    assert either.take(1) == ["e6"]


def test_every_indexed_stream_is_ended_with_its_reconnect_frame(fanout: Fanout, backend: MemoryPubSub) -> None:
    streams = [fanout.open(HUB, event_filter=WithRecipient(f"u{n % 3}")) for n in range(6)]
    assert fanout.end_streams() == 6
    for stream in streams:
        events = Parser().feed(b"".join(stream.frames(retry=1000, heartbeat=60)).decode("utf-8"))
        assert [event.type for event in events if event.type != "message"] == ["reconnect"]
    assert fanout.stats()["connections"] == 0


# -- the idle linger ---------------------------------------------------------------------------


def test_the_idle_linger_is_configured_and_checked() -> None:
    app = Flask("linger")
    app.config.update(CELERY_BROKER_URL="memory://", NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_SSE_IDLE_LINGER=-1)
    with pytest.raises(ConfigurationError, match="NOTIFICATIONS_SSE_IDLE_LINGER"):
        Notifications(app)
    app = Flask("linger")
    app.config.update(CELERY_BROKER_URL="memory://", NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_SSE_IDLE_LINGER=0)
    ext = Notifications(app)
    runtime = ext.runtime(app)
    try:
        assert runtime.fanout.idle_linger == 0
        runtime.fanout.open(HUB).close()
        assert ext.stream_stats(app)["listening"] == 1
        wait_for(lambda: ext.stream_stats(app)["listening"] == 0)
    finally:
        runtime.close_streams()


# -- under gunicorn: direct writes to filtered streams ----------------------------------------


def ids_of(events: list[SSEEvent]) -> list[str]:
    return [json.loads(event.data)["event_id"] for event in events]


@pytest.mark.redis
@pytest.mark.subprocess
def test_filtered_live_streams_get_direct_writes_and_only_their_events(gunicorn: Callable[..., Server]) -> None:
    server = gunicorn(NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT=None)
    alice, bob = server.login("alice"), server.login("bob")
    private = "/notifications/private/events"
    tabs = [server.stream(private, headers=alice) for _ in range(3)]
    # The view's filter and the authorizer's: WithRecipient("bob") & WithRecipient("bob").
    mine = server.stream("/mine", headers=bob)
    news = server.stream("/notifications/news/events")
    tagged = server.stream("/tagged/red")
    clients = [*tabs, mine, news, tagged]
    try:
        for client in clients:
            client.wait_open()
        hub = "event-hub-private"
        before = server.stats()
        # One event a batch: each is received before the next is published,
        # so the count of direct writes below is exact (a batch of several
        # events is one write to a stream). p3 has no recipient.
        sent = [server.publish(hub, Event("p1", "note", "t", "b", recipients=["alice"]))]
        for tab in tabs:
            assert ids_of(tab.take(1)) == ["p1"]
        sent.append(server.publish(hub, Event("p2", "note", "t", "b", recipients=["bob"])))
        assert ids_of(mine.take(1)) == ["p2"]
        sent.append(server.publish(hub, Event("p3", "note", "t", "b")))
        sent.append(server.publish(hub, Event("p4", "note", "t", "b", recipients=["carol", "alice"])))
        assert len(set(sent)) == 4
        for tab in tabs:
            assert ids_of(tab.take(1)) == ["p4"]
        news_hub = "event-hub-news"
        server.publish(news_hub, Event("n1", "note", "t", "b", tags=["blue"]))
        assert ids_of(news.take(1)) == ["n1"]
        server.publish(news_hub, Event("n2", "note", "t", "b", tags=["red"]))
        assert ids_of(news.take(1)) == ["n2"]
        assert ids_of(tagged.take(1)) == ["n2"]
        # Probes: the next event each stream gets is its own.
        server.publish(hub, Event("p5", "note", "t", "b", recipients=["alice", "bob"]))
        for client in [*tabs, mine]:
            assert ids_of(client.take(1)) == ["p5"]
        # Every write to the filtered streams was direct: 3 (p1) + 1 (p2) +
        # 3 (p4), 1 (n1) + 2 (n2), 4 (the probe). The listener counts a
        # batch once it has written it to every stream, so the count is
        # waited for, not read at once.
        wait_for(lambda: server.stats()["direct_writes"] - before["direct_writes"] >= 3 + 1 + 3 + 1 + 2 + 4, timeout=10)
        stats = server.stats()
        assert stats["evicted"] == 0
    finally:
        for client in clients:
            client.close()
