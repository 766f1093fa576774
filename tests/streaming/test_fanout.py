"""The per-process fan-out on the memory backend, and the answers of the
stream endpoint through Flask's test client (no server needed)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, url_for

from flask_notifications import Event, EventFilter, Notifications
from flask_notifications.backends.memory import MemoryPubSub
from flask_notifications.backends.redis import RedisPubSub
from flask_notifications.errors import BackendError
from flask_notifications.streaming.fanout import Fanout
from flask_notifications.streaming.wire import HEARTBEAT, backend_frame
from tests.apps.sse_app import configure, setup
from tests.helpers import free_port, wait_for
from tests.helpers.sse_client import Parser, SSEEvent

HUB = "event-hub-news"


def event_json(n: int, recipients: tuple[str, ...] = ()) -> str:
    return Event(f"e{n}", "test", f"title {n}", "body", recipients=recipients).to_json()


def drain(frames: Iterator[bytes], parser: Parser, until: int, sink: list[SSEEvent]) -> None:
    for chunk in frames:
        sink += parser.feed(chunk.decode("utf-8"))
        if len(sink) >= until:
            return


def test_each_event_is_encoded_once_for_every_connection(fanout: Fanout, backend: MemoryPubSub) -> None:
    connections = [fanout.open(HUB) for _ in range(3)]
    backend.publish(HUB, event_json(1))
    batches = [wait_for(lambda c=c: c.take(0.1)) for c in connections]
    frames = [batch[0][1] for batch in batches]
    assert frames[0] is frames[1] is frames[2]
    assert b"id: " in frames[0] and b"event: test" in frames[0]


def test_replay_then_live_has_no_duplicate_and_no_gap_while_events_keep_coming(
    fanout: Fanout, backend: MemoryPubSub
) -> None:
    published: list[str] = []
    stop = threading.Event()

    def publish() -> None:
        n = 0
        while not stop.is_set() and n < 3000:
            published.append(backend.publish(HUB, event_json(n)).id)
            n += 1

    fanout.open(HUB).close()  # the hub joins the subscription first
    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        for resume_at in (50, 400, 900):
            wait_for(lambda n=resume_at: len(published) > n + 100)
            last = published[resume_at]
            connection = fanout.open(HUB, last_event_id=last, queue_size=100000)
            received: list[SSEEvent] = []
            parser = Parser()
            target = 1000 + resume_at
            drain(connection.frames(retry=100, heartbeat=30), parser, target - resume_at, received)
            connection.close()
            ids = [event.last_event_id for event in received]
            assert ids == published[resume_at + 1 : resume_at + 1 + len(ids)]
            assert len(ids) >= target - resume_at
    finally:
        stop.set()
        publisher.join()


def test_a_full_queue_evicts_only_that_connection(fanout: Fanout, backend: MemoryPubSub) -> None:
    slow = fanout.open(HUB, queue_size=3)
    healthy = fanout.open(HUB, queue_size=3)
    received: list[Any] = []
    ids = []
    for n in range(10):
        ids.append(backend.publish(HUB, event_json(n)).id)
        received += wait_for(lambda: healthy.take(1.0))
    assert [key for key, *_ in received] == [tuple(map(int, i.split("-"))) for i in ids]
    assert slow.evicted and slow.closed and not healthy.closed
    assert fanout.stats()["evicted"] == 1
    tail = list(slow.frames(retry=100, heartbeat=30))
    assert tail[-1].startswith(b": ") and b"Last-Event-ID" in tail[-1]
    assert fanout.stats()["connections"] == 1


def test_a_closed_connection_frees_its_place_at_once(fanout: Fanout) -> None:
    connection = fanout.open(HUB, client="10.0.0.1", max_per_client=1)
    assert fanout.stats()["connections"] == 1
    frames = connection.frames(retry=100, heartbeat=30)
    next(frames)
    frames.close()  # what the WSGI server does when the client leaves
    assert fanout.stats()["connections"] == 0
    fanout.open(HUB, client="10.0.0.1", max_per_client=1).close()


def test_the_listener_stops_when_idle_and_restarts_on_demand(backend: MemoryPubSub) -> None:
    fanout = Fanout(backend, poll_interval=0.02, idle_linger=0.05)
    try:
        fanout.open(HUB).close()
        wait_for(lambda: fanout.stats()["listening"] == 0)
        connection = fanout.open(HUB)
        backend.publish(HUB, event_json(1))
        assert wait_for(lambda: connection.take(0.1))
        connection.close()
    finally:
        fanout.close()


def test_an_unreachable_backend_leaves_nothing_registered() -> None:
    fanout = Fanout(RedisPubSub(url=f"redis://127.0.0.1:{free_port()}/0"))  # nothing listens
    with pytest.raises(BackendError):
        fanout.open(HUB)
    assert fanout.stats()["connections"] == 0
    fanout.close()


# -- the HTTP answers ----------------------------------------------------------------


@pytest.fixture
def web(redis_url: str, unique: str) -> Iterator[tuple[Flask, Notifications]]:
    app = configure(
        {
            "TESTING": True,
            "SECRET_KEY": unique,
            "NOTIFICATIONS_BACKEND": "memory",
            "CELERY_BROKER_URL": redis_url,
            "CELERY_TASK_DEFAULT_QUEUE": unique,
            "NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT": 2,
        }
    )
    ext = Notifications(app)
    setup(app, ext)
    yield app, ext
    ext.runtime(app).close_streams()


@pytest.mark.redis
def test_a_stream_has_the_sse_headers_and_starts_with_retry_and_an_id(web: tuple[Flask, Notifications]) -> None:
    app, _ = web
    response = app.test_client().get(f"/notifications/{HUB}/events", buffered=False)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert next(iter(response.response)) == b"retry: 3000\nid: 0-0\n\n"
    response.close()


@pytest.mark.redis
@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/notifications/event-hub-nope/events", {}, 404),
        ("/notifications/not a hub/events", {}, 404),
        ("/notifications/event-hub-closed/events", {}, 403),
        ("/notifications/event-hub-private/events", {}, 403),
        (f"/notifications/{HUB}/events", {"Last-Event-ID": "garbage"}, 400),
        (f"/notifications/{HUB}/events", {"Last-Event-ID": "1-2-3"}, 400),
        (f"/notifications/{HUB}/events", {"Last-Event-ID": "9" * 30 + "-0"}, 400),
        (f"/notifications/{HUB}/events?last_event_id=%0A1-0", {}, 400),
    ],
)
def test_refusals_come_before_any_stream(
    web: tuple[Flask, Notifications], path: str, headers: dict[str, str], status: int
) -> None:
    app, ext = web
    response = app.test_client().get(path, headers=headers)
    assert response.status_code == status
    assert ext.stream_stats(app)["connections"] == 0


@pytest.mark.redis
def test_the_header_wins_over_the_query_parameter(web: tuple[Flask, Notifications]) -> None:
    app, ext = web
    ext.get_backend(app).publish(HUB, event_json(1))
    second = ext.get_backend(app).publish(HUB, event_json(2))
    client = app.test_client()
    response = client.get(
        f"/notifications/{HUB}/events?last_event_id=garbage", headers={"Last-Event-ID": second.id}, buffered=False
    )
    assert response.status_code == 200
    assert next(iter(response.response)) == f"retry: 3000\nid: {second.id}\n\n".encode()
    response.close()
    response = client.get(f"/notifications/{HUB}/events?last_event_id=0-0", buffered=False)
    chunks = iter(response.response)
    next(chunks)
    assert b"e1" in next(chunks)
    response.close()


@pytest.mark.redis
def test_the_connection_cap_answers_429_until_a_stream_closes(web: tuple[Flask, Notifications]) -> None:
    app, _ = web
    client = app.test_client()
    url = f"/notifications/{HUB}/events"
    first, second = (client.get(url, buffered=False) for _ in range(2))
    refused = client.get(url)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "3"
    assert b"NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT" in refused.data
    other = client.get(url, environ_base={"REMOTE_ADDR": "10.1.2.3"}, buffered=False)
    assert other.status_code == 200
    first.close()
    again = client.get(url, buffered=False)
    assert again.status_code == 200
    for response in (second, other, again):
        response.close()


@pytest.mark.redis
def test_the_authorizer_filter_and_the_view_filter_both_apply(web: tuple[Flask, Notifications]) -> None:
    app, ext = web
    private = "event-hub-private"
    client = app.test_client()
    client.post("/login/alice")
    for n, recipients in enumerate([("alice",), ("bob",), ("alice", "bob"), ()]):
        ext.get_backend(app).publish(private, event_json(n, recipients))
    response = client.get(f"/notifications/{private}/events?last_event_id=0-0", buffered=False)
    parser, events = Parser(), []
    for chunk in response.response:
        events += parser.feed(chunk.decode())
        if len(events) == 2:
            break
    response.close()
    assert [Event.from_json(e.data)["event_id"] for e in events] == ["e0", "e2"]


@pytest.mark.redis
def test_an_authorizer_must_return_a_verdict(web: tuple[Flask, Notifications]) -> None:
    app, ext = web
    ext.stream_authorizer(lambda hub, request: "yes")
    with pytest.raises(TypeError, match="EventFilter"):
        app.test_client().get(f"/notifications/{HUB}/events")


@pytest.mark.redis
def test_the_blueprint_is_opt_in_and_its_prefix_configurable(redis_url: str, unique: str) -> None:
    base = {"NOTIFICATIONS_BACKEND": "memory", "CELERY_BROKER_URL": redis_url}
    closed = Flask("closed")
    closed.config.update(base)
    Notifications(closed).create_hub("news")
    assert closed.test_client().get(f"/notifications/{HUB}/events").status_code == 404
    moved = Flask("moved")
    moved.config.update(base, NOTIFICATIONS_SSE_BLUEPRINT=True, NOTIFICATIONS_SSE_URL_PREFIX="/live")
    ext = Notifications(moved)
    ext.create_hub("news")
    with moved.test_request_context():
        assert url_for("notifications.events", hub_id=HUB) == f"/live/{HUB}/events"
    response = moved.test_client().get(f"/live/{HUB}/events", buffered=False)
    assert response.status_code == 200
    response.close()
    ext.runtime(moved).close_streams()


@pytest.mark.redis
def test_flask_sse_notifier_takes_a_filter(web: tuple[Flask, Notifications]) -> None:
    app, ext = web
    response = app.test_client().get("/tagged/red", buffered=False)
    chunks = iter(response.response)
    next(chunks)
    ext.get_backend(app).publish(HUB, Event("plain", "test", "t", "b").to_json())
    ext.get_backend(app).publish(HUB, Event("red", "test", "t", "b", tags=["red"]).to_json())
    assert b'"event_id":"red"' in next(chunks)
    response.close()


class _Broken(EventFilter):
    def filter(self, event: Any) -> bool:
        raise KeyError("boom")


def test_a_failing_filter_withholds_the_event_and_spares_the_others(
    fanout: Fanout, backend: MemoryPubSub, caplog: pytest.LogCaptureFixture
) -> None:
    broken = fanout.open(HUB, event_filter=_Broken())
    fine = fanout.open(HUB)
    frames = broken.frames(retry=100, heartbeat=0.2)
    next(frames)  # retry and the start id
    backend.publish(HUB, event_json(1))
    assert wait_for(lambda: fine.take(0.1))
    assert next(frames) == HEARTBEAT and not broken.closed
    assert "failed; the event is withheld" in caplog.text
    frames.close()


def test_a_new_client_of_a_stopping_process_comes_back_from_the_newest_id(
    fanout: Fanout, backend: MemoryPubSub
) -> None:
    ids = [backend.publish(HUB, event_json(n)).id for n in range(3)]
    fanout.end_streams()
    parser = Parser()
    received = parser.feed(b"".join(fanout.open(HUB).frames(retry=1000, heartbeat=60.0)).decode())
    assert [e.type for e in received] == ["reconnect"]
    # Back with Last-Event-ID, it is replayed what was published meanwhile.
    assert parser.last_event_id == ids[-1]
    # A client that sent an id keeps it.
    raw = b"".join(fanout.open(HUB, last_event_id=ids[0]).frames(retry=1000, heartbeat=60.0))
    assert [e.type for e in Parser().feed(raw.decode())] == ["reconnect"] and b"id:" not in raw


def test_a_replay_that_overflows_its_queue_keeps_the_announcements(fanout: Fanout, backend: MemoryPubSub) -> None:
    first = backend.publish(HUB, event_json(0)).id
    fanout.open(HUB).close()  # the hub joins the subscription first
    stream = fanout.open(HUB, last_event_id=first, queue_size=2)
    stream.announce(backend_frame(False))
    stream.announce(backend_frame(True))
    ids = [backend.publish(HUB, event_json(n)).id for n in range(1, 6)]
    # The listener handed the live events to the replaying stream, whose
    # queue overflowed: the history holds them, not the announcements.
    wait_for(lambda: fanout.stats()["queued"] >= len(ids))
    frames = stream.frames(retry=1000, heartbeat=60.0)
    parser = Parser()
    received: list[SSEEvent] = []
    drain(frames, parser, 5, received)
    ids.append(backend.publish(HUB, event_json(6)).id)  # queued behind the announcements
    while received[-1].last_event_id != ids[-1]:
        received += parser.feed(next(frames).decode())
    stream.close()
    assert sorted(e.type for e in received) == ["backend-down", "backend-up"] + ["test"] * 6
    assert [e.last_event_id for e in received if e.type == "test"] == ids
