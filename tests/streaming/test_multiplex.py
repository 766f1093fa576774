"""One stream for several hubs (``GET <prefix>/events?hub=a&hub=b``): each
event names its hub, the id holds every hub's position and a resume replays
each hub from its own; authorization and filters apply per hub; a backend
that cannot be read gets 200 and ``backend-down``, never 503."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.backends.redis import RedisPubSub
from flask_notifications.errors import StreamFormatError
from flask_notifications.streaming.multiplex import format_position, parse_position
from tests.helpers import RedisServer, make_config, wait_for
from tests.helpers.sse_client import SSEEvent
from tests.helpers.web_servers import Server

NEWS, PRIVATE = "event-hub-news", "event-hub-private"
BOTH = "/notifications/events?hub=news&hub=private"

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]


def event(n: int, *, recipients: tuple[str, ...] = (), event_type: str = "test") -> Event:
    return Event(f"e{n}", event_type, f"title {n}", "body", recipients=recipients)


def envelopes(events: list[SSEEvent]) -> list[tuple[str, str]]:
    """(hub, event_id) of each event."""
    found = []
    for item in events:
        assert item.type == "message", item
        data = json.loads(item.data)
        found.append((data["hub"], data["event"]["event_id"]))
    return found


def test_the_id_holds_each_hubs_position() -> None:
    positions = {"news": "1700000000000-0", "privé.x-1": "1700000000001-12"}
    text = format_position(positions)
    assert text == "news:1700000000000-0,priv%C3%A9.x-1:1700000000001-12"
    assert parse_position(text) == positions
    assert parse_position("") == parse_position(None) == {}
    for bad in (
        "news",
        "news:1-0,news:2-0",
        "news:abc",
        ":1-0",
        "ne ws:1-0",
        "news:1-0,",
        "%ZZ:1-0",
        "%FF:1-0",
        "a" * 10**5,
    ):
        with pytest.raises(StreamFormatError, match="multiplexed"):
            parse_position(bad)


@pytest.fixture
def server(redis_url: str, unique: str) -> Iterator[Server]:
    running = Server("threaded", make_config(redis_url, unique, SECRET_KEY=unique, NOTIFICATIONS_SSE_HEARTBEAT=0.5))
    yield running
    running.kill()


def test_each_event_names_its_hub_and_a_resume_replays_each_hub(server: Server) -> None:
    alice = server.login("alice")
    with server.stream(BOTH, headers=alice) as stream:
        stream.wait_open()
        first = stream.next_event()
        assert first.type == "hubs" and json.loads(first.data) == {"hubs": ["news", "private"]}
        assert set(parse_position(first.last_event_id)) == {"news", "private"}
        # Each hub is its own stream, so events of two hubs may arrive in
        # either order: wait for e1 before publishing to the other hub.
        server.publish(NEWS, event(1))
        received = stream.take(1)
        server.publish(PRIVATE, event(2, recipients=("bob",)))  # alice's filter withholds it
        server.publish(PRIVATE, event(3, recipients=("alice",), event_type="alert"))
        received += stream.take(1)
        assert envelopes(received) == [("news", "e1"), ("private", "e3")]
        data = json.loads(received[1].data)
        assert data["type"] == "alert" and data["id"] == parse_position(received[1].last_event_id)["private"]
        resume_at = received[0].last_event_id  # after e1, before e3

    server.publish(NEWS, event(4))
    # Resumed from the id of e1: news replays e4, private replays e3 (and not e2).
    with server.stream(BOTH, headers=alice, last_event_id=resume_at) as stream:
        stream.wait_open()
        assert stream.next_event().type == "hubs"
        assert sorted(envelopes(stream.take(2))) == [("news", "e4"), ("private", "e3")]
    # The same by query parameter, as a client's own reconnect sends it.
    with server.stream(BOTH + "&last_event_id=" + resume_at.replace(",", "%2C"), headers=alice) as stream:
        stream.wait_open()
        assert stream.next_event().type == "hubs"
        assert sorted(envelopes(stream.take(2))) == [("news", "e4"), ("private", "e3")]


def test_refusals_are_per_hub(server: Server) -> None:
    alice = server.login("alice")
    # "closed" is refused by the authorizer, "private" without a login.
    assert server.status("/notifications/events?hub=news&hub=closed", headers=alice) == 403
    assert server.status(BOTH) == 403
    assert server.status("/notifications/events?hub=news&hub=nope", headers=alice) == 404
    assert server.status("/notifications/events", headers=alice) == 400
    assert server.status(BOTH, headers=alice, last_event_id="1700000000000-0") == 400
    assert server.status("/notifications/events?" + "&".join(f"hub=h{n}" for n in range(21))) == 400
    assert server.status("/notifications/events?hub=news&hub=event-hub-news") == 200


def test_a_hub_named_twice_is_streamed_once_and_released_on_hang_up(gunicorn: Any) -> None:
    server = gunicorn(NOTIFICATIONS_SSE_PUBLIC=True, NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT=5)
    twice = "/notifications/events?hub=news&hub=event-hub-news"
    with server.stream(twice) as stream:
        stream.wait_open()
        first = stream.next_event()
        assert json.loads(first.data) == {"hubs": ["news"]}
        assert server.stats()["connections"] == 1
    wait_for(lambda: server.stats()["connections"] == 0, timeout=30)
    # More hang-ups than the per-client cap: none leaks a stream, none is refused.
    for _ in range(8):
        with server.stream(twice) as stream:
            assert stream.status == 200
            stream.wait_open()
        wait_for(lambda: server.stats()["connections"] == 0, timeout=30)
    assert server.status(twice) == 200
    assert server.status("/notifications/events?hub=news", last_event_id="%FF:1-0") == 400


def test_a_stalled_reader_of_a_multiplexed_stream_is_evicted_not_grown(gunicorn: Any) -> None:
    server = gunicorn(sndbuf=4096, NOTIFICATIONS_SSE_PUBLIC=True, NOTIFICATIONS_SSE_QUEUE_SIZE=20)
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect(("127.0.0.1", server.port))
    try:
        reader.sendall(b"GET /notifications/events?hub=news HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reader.recv(12) == b"HTTP/1.1 200"
        wait_for(lambda: server.stats()["connections"] == 1, timeout=30)
        body = "y" * 20_000
        published = 0
        # The reader never reads again: the stream must end, not buffer.
        while server.stats()["evicted"] == 0 and published < 1000:
            for _ in range(10):
                server.backend.publish(NEWS, Event(f"e{published}", "test", "t", body).to_json())
                published += 1
        assert server.stats()["evicted"] == 1, published
        assert published < 1000
        wait_for(lambda: server.stats()["connections"] == 0, timeout=30)
    finally:
        reader.close()


def _outage_server(tmp_path: Path, unique: str) -> tuple[RedisServer, Server]:
    redis_server = RedisServer(tmp_path / "redis", persistent=True)
    (tmp_path / "redis").mkdir()
    redis_server.start()
    config = make_config(redis_server.url, unique, SECRET_KEY=unique, NOTIFICATIONS_SSE_HEARTBEAT=0.5)
    return redis_server, Server("gunicorn", config, log=tmp_path / "server.log")


@pytest.mark.parametrize("path", [f"/notifications/{NEWS}/events", "/notifications/events?hub=news"])
def test_a_resume_during_an_outage_is_held_not_refused(path: str, tmp_path: Path, unique: str) -> None:
    redis_server, server = _outage_server(tmp_path, unique)
    publisher = RedisPubSub(url=redis_server.url, key_prefix=unique)
    try:
        with server.stream(path) as stream:
            stream.wait_open()
            publisher.publish(NEWS, event(1).to_json())
            seen = stream.next_event()
            while seen.type in ("hubs",):
                seen = stream.next_event()
            resume_at = seen.last_event_id
        publisher.publish(NEWS, event(2).to_json())  # kept on disk, missed by the client
        redis_server.kill()
        with server.stream(path, last_event_id=resume_at) as held:
            assert held.status == 200
            assert held.next_event().type == "backend-down"
            redis_server.start()
            publisher.publish(NEWS, event(3).to_json())
            types: list[str] = []
            ids: list[str] = []
            while len(ids) < 2:
                item = held.next_event(timeout=60)
                types.append(item.type)
                if item.type not in ("backend-up", "backend-down", "gap", "hubs"):
                    data: Any = json.loads(item.data)
                    ids.append(data["event"]["event_id"] if "hub" in data else data["event_id"])
            assert ids == ["e2", "e3"]
            assert "backend-up" in types and "gap" not in types
    finally:
        publisher.close()
        server.kill()
        redis_server.remove()


def test_a_stopping_process_sends_a_resuming_client_on_with_its_own_position() -> None:
    app = Flask("stopping_app")
    app.config.update(
        NOTIFICATIONS_BACKEND="memory",
        CELERY_BROKER_URL="memory://",
        CELERY_TASK_ALWAYS_EAGER=True,
        NOTIFICATIONS_SSE_BLUEPRINT=True,
        NOTIFICATIONS_SSE_PUBLIC=True,
    )
    notifications = Notifications(app)
    for label in ("news", "private"):
        notifications.create_hub(label)
    notifications.runtime(app).fanout.end_streams()  # a graceful stop began
    answer = app.test_client().get(BOTH, headers={"Last-Event-ID": "news:1700000000000-5"})
    body = answer.get_data(as_text=True)
    # The client keeps the id it sent for news, and is told to reconnect.
    assert body.startswith("retry: 3000\nid: news:1700000000000-5,private:0-0\nevent: hubs\n"), body
    assert "event: reconnect\n" in body
    notifications.get_backend(app).close()
