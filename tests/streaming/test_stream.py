"""The SSE stream end to end, over real sockets, with an independent client
(:mod:`tests.helpers.sse_client`): the app is served by gevent.pywsgi or gunicorn -k
gevent in a subprocess, or by the Flask development server in a thread."""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.backends.redis import RedisPubSub
from tests.apps.sse_app import setup
from tests.helpers import RedisServer, make_config, wait_for
from tests.helpers.sse_client import SSEClient, StreamClosed
from tests.helpers.web_servers import Server

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

NEWS = "event-hub-news"
PRIVATE = "event-hub-private"

#: (server, backend) pairs most tests run on: both servers, both backends.
SERVED = [
    pytest.param(("gevent", "redis"), id="gevent-redis"),
    pytest.param(("threaded", "memory"), id="threaded-memory"),
]

#: ... and gunicorn -k gevent, where the fan-out writes to the sockets itself.
WITH_GUNICORN = [*SERVED, pytest.param(("gunicorn", "redis"), id="gunicorn-redis")]

ServeFactory = Callable[..., Server]


@pytest.fixture
def serve(redis_url: str, unique: str) -> Iterator[ServeFactory]:
    """Start a server: ``serve(kind, backend, **config)``; all stop at the end."""
    servers: list[Server] = []

    def start(kind: str, backend: str = "redis", sndbuf: int = 0, **config: Any) -> Server:
        settings = make_config(redis_url, unique, NOTIFICATIONS_BACKEND=backend, SECRET_KEY=unique, **config)
        server = Server(kind, settings, sndbuf=sndbuf)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


def event(n: int, *, recipients: tuple[str, ...] = (), body: str = "body", event_type: str = "test") -> Event:
    return Event(f"e{n}", event_type, f"title {n} \u2028 \u2029 \x85 \r\n", body, recipients=recipients)


def event_ids(events: list[Any]) -> list[str]:
    return [json.loads(e.data)["event_id"] for e in events]


# -- live delivery --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gevent", "gunicorn", "threaded"])
def test_send_reaches_the_browser_through_a_real_worker(
    kind: str, serve: ServeFactory, app: Flask, notifications: Notifications, celery_worker: Any
) -> None:
    setup(app, notifications)  # the same hubs and PushConsumers as the served app
    server = serve(kind)
    alice = server.login("alice")
    with server.stream(f"/notifications/{NEWS}/events") as news, server.stream("/mine", headers=alice) as mine:
        news.wait_open()
        mine.wait_open()
        sent = [event(1), event(2, recipients=("bob",)), event(3, recipients=("alice",), event_type="alert")]
        with celery_worker():
            for item in sent:
                notifications.send(item.to_json())
            received = news.take(3)
            private = mine.take(1)
        assert sorted(Event.from_json(e.data)["event_id"] for e in received) == ["e1", "e2", "e3"]
        by_id = {Event.from_json(e.data)["event_id"]: e for e in received}
        for item in sent:
            assert Event.from_json(by_id[item["event_id"]].data) == item
            assert by_id[item["event_id"]].type == item["event_type"]
        assert Event.from_json(private[0].data) == sent[2]
        assert all(e.last_event_id.count("-") == 1 for e in received)


# -- replay -------------------------------------------------------------------------------


@pytest.mark.parametrize("served", WITH_GUNICORN)
def test_reconnecting_with_last_event_id_loses_and_repeats_nothing(
    served: tuple[str, str], serve: ServeFactory
) -> None:
    server = serve(*served)
    url = f"/notifications/{NEWS}/events"
    with server.stream(url) as first:
        start_id = first.wait_open()
        for n in range(5):
            server.publish(NEWS, event(n))
        assert event_ids(first.take(5)) == [f"e{n}" for n in range(5)]
        resume_at = first.last_event_id
    for n in range(5, 10):
        server.publish(NEWS, event(n))
    with server.stream(url, last_event_id=resume_at) as second:
        assert event_ids(second.take(5)) == [f"e{n}" for n in range(5, 10)]
        server.publish(NEWS, event(10))
        assert event_ids(second.take(1)) == ["e10"]
        with pytest.raises(TimeoutError):
            second.next_event(timeout=1)
    # The query parameter is the fallback, and the start id of a stream that
    # received nothing is a valid place to resume from.
    with server.stream(f"{url}?last_event_id={start_id}") as third:
        assert event_ids(third.take(11)) == [f"e{n}" for n in range(11)]
    with server.stream(url) as quiet:
        quiet_start = quiet.wait_open()
    server.publish(NEWS, event(11))
    with server.stream(url, last_event_id=quiet_start) as resumed:
        assert event_ids(resumed.take(1)) == ["e11"]


def test_replay_survives_a_restart_of_the_serving_process(serve: ServeFactory, redis_url: str, unique: str) -> None:
    server = serve("gevent")
    url = f"/notifications/{NEWS}/events"
    backend = RedisPubSub(url=redis_url, key_prefix=unique)
    with server.stream(url) as client:
        client.wait_open()
        for n in range(3):
            backend.publish(NEWS, event(n).to_json())
        assert event_ids(client.take(3)) == ["e0", "e1", "e2"]
        server.kill()
        with pytest.raises(StreamClosed):
            client.next_event(timeout=10)
        resume_at = client.last_event_id
    for n in range(3, 8):
        backend.publish(NEWS, event(n).to_json())
    server.start()
    with server.stream(url, last_event_id=resume_at) as client:
        assert event_ids(client.take(5)) == [f"e{n}" for n in range(3, 8)]
        backend.publish(NEWS, event(8).to_json())
        assert event_ids(client.take(1)) == ["e8"]
    backend.close()


@pytest.mark.parametrize("served", SERVED)
def test_an_id_older_than_the_history_gets_a_gap_event(served: tuple[str, str], serve: ServeFactory) -> None:
    server = serve(*served, NOTIFICATIONS_HISTORY_SIZE=5)
    # Redis trims MAXLEN ~ by whole nodes (100 entries), so publish past that.
    ids = [server.publish(NEWS, event(n)) for n in range(250)]
    with server.stream(f"/notifications/{NEWS}/events", last_event_id=ids[0]) as client:
        gap = client.next_event()
        assert gap.type == "gap" and gap.last_event_id == ids[0]
        detail = json.loads(gap.data)
        assert detail["last_event_id"] == ids[0]
        oldest = ids.index(detail["oldest_id"])
        assert 1 < oldest < 250
        replayed = client.take(250 - oldest)
        assert [e.last_event_id for e in replayed] == ids[oldest:]
        assert event_ids(replayed) == [f"e{n}" for n in range(oldest, 250)]
    with server.stream(f"/notifications/{NEWS}/events", last_event_id=ids[-2]) as client:
        assert event_ids(client.take(1)) == ["e249"]


# -- heartbeat, authorization, filters -------------------------------------------------


@pytest.mark.parametrize("served", WITH_GUNICORN)
def test_an_idle_stream_gets_heartbeats(served: tuple[str, str], serve: ServeFactory) -> None:
    server = serve(*served, NOTIFICATIONS_SSE_HEARTBEAT=1)
    with server.stream(f"/notifications/{NEWS}/events") as client:
        client.wait_open()
        client.wait_until(lambda: len(client.parser.comments) >= 2, timeout=15)
        assert client.pending == []


def test_per_user_streams_never_carry_another_users_event(serve: ServeFactory) -> None:
    server = serve("gevent")
    stream_url = f"/notifications/{PRIVATE}/events"
    assert server.status(stream_url) == 403
    assert server.status("/notifications/event-hub-closed/events", headers=server.login("alice")) == 403
    assert server.status("/notifications/event-hub-nothing/events") == 404
    users = ["alice", "bob", "carol"]
    cookies = {user: server.login(user) for user in users}
    clients = {user: server.stream(stream_url, headers=cookies[user]) for user in users}
    clients["alice-view"] = server.stream("/mine", headers=cookies["alice"])
    for client in clients.values():
        assert client.status == 200
        client.wait_open()
    chooser = random.Random(7)
    sent = []
    for n in range(60):
        recipients = tuple(u for u in users + ["dave"] if chooser.random() < 0.4)
        sent.append(event(n, recipients=recipients))
        server.publish(PRIVATE, sent[-1])
    try:
        for name, client in clients.items():
            user = name.split("-")[0]
            expected = [e["event_id"] for e in sent if user in e["recipients"]]
            got = client.take(len(expected))
            assert event_ids(got) == expected
            assert all(user in json.loads(e.data)["recipients"] for e in got)
            with pytest.raises(TimeoutError):
                client.next_event(timeout=0.5)
            # Replay goes through the same filter.
            middle = got[len(got) // 2].last_event_id
            with server.stream(stream_url, headers=cookies[user], last_event_id=middle) as again:
                assert event_ids(again.take(len(expected) - len(got) // 2 - 1)) == expected[len(got) // 2 + 1 :]
                with pytest.raises(TimeoutError):
                    again.next_event(timeout=0.5)
    finally:
        for client in clients.values():
            client.close()


# -- slow clients and connection counts ---------------------------------------------------


@pytest.mark.parametrize("served", WITH_GUNICORN)
def test_a_slow_client_is_evicted_while_a_healthy_one_gets_everything(
    served: tuple[str, str], serve: ServeFactory
) -> None:
    server = serve(*served, sndbuf=65536, NOTIFICATIONS_SSE_QUEUE_SIZE=8)
    url = f"/notifications/{NEWS}/events"
    total = 300
    slow = server.stream(url, rcvbuf=4096)
    slow.wait_open()
    with server.stream(url) as healthy:
        healthy.wait_open()
        # The healthy client keeps up: it has each batch before the next one.
        received: list[Any] = []
        reader = threading.Thread(target=lambda: [received.append(healthy.next_event()) for _ in range(total)])
        reader.start()
        ids: list[str] = []
        for n in range(total):
            ids.append(server.publish(NEWS, event(n, body="x" * 8000)))
            if n % 4 == 3:
                wait_for(lambda: len(received) == len(ids))
        reader.join(timeout=60)
        assert [e.last_event_id for e in received] == ids
        stats = wait_for(lambda: (s := server.stats())["evicted"] == 1 and s)
        assert stats["subscribers"] == 1
    # The evicted client reads what reached it, sees the stream end, and
    # resumes from its last id without a gap.
    try:
        before = slow.read_to_end(timeout=30)
    finally:
        slow.close()
    assert len(before) < total
    assert [e.last_event_id for e in before] == ids[: len(before)]
    with server.stream(url, last_event_id=slow.last_event_id) as resumed:
        rest = resumed.take(total - len(before))
        with pytest.raises(TimeoutError):
            resumed.next_event(timeout=0.5)
    assert [e.last_event_id for e in before + rest] == ids


@pytest.mark.parametrize("served", WITH_GUNICORN)
def test_a_client_that_leaves_frees_its_place(served: tuple[str, str], serve: ServeFactory) -> None:
    server = serve(*served, NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT=2)
    url = f"/notifications/{NEWS}/events"
    for _ in range(3):
        clients = [server.stream(url) for _ in range(2)]
        for client in clients:
            client.wait_open()
        assert server.status(url) == 429
        for client in clients:
            client.close()
        if served[0] in ("gevent", "gunicorn"):
            # A watcher on the socket notices the hang-up at once.
            wait_for(lambda: server.stats()["connections"] == 0)
        else:
            # A thread notices it at its next write (an event or a heartbeat).
            wait_for(lambda: server.publish(NEWS, event(0)) and server.stats()["connections"] == 0)
        assert server.stats()["subscribers"] == 0


def test_redis_connections_stay_constant_as_200_clients_connect(
    serve: ServeFactory, redis_client: redis.Redis[bytes], unique: str, redis_url: str
) -> None:
    name = f"{unique}-sse"
    server = serve("gevent", SSE_TEST_CLIENT_NAME=name, NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT=None)
    url = f"/notifications/{NEWS}/events"

    def connections() -> int:
        return sum(1 for entry in redis_client.client_list() if entry.get("name") == name)

    clients: list[SSEClient] = []
    try:
        for _ in range(10):
            clients.append(server.stream(url))
            clients[-1].wait_open()
        # An event read by the listener first: its connections are made at its first read.
        publisher = RedisPubSub(url=redis_url, key_prefix=unique)  # a worker's PushConsumer, not the server
        publisher.publish(NEWS, event(0).to_json())
        for client in clients:
            assert event_ids(client.take(1)) == ["e0"]
        with_ten = connections()
        for _ in range(190):
            clients.append(server.stream(url))
        for client in clients:
            client.wait_open()
        assert server.stats()["connections"] == 200
        assert connections() == with_ten
        # The listener's two (its blocking wait and its reads, from a pool of its own),
        # and one for the history read of the hub's first stream.
        assert 1 <= with_ten <= 3
        publisher.publish(NEWS, event(1).to_json())
        publisher.close()
        for client in clients:
            assert event_ids(client.take(1)) == ["e1"]
        assert connections() == with_ten
    finally:
        for client in clients:
            client.close()


# -- the backend going away ------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_streams_outlive_a_redis_restart_without_spinning(
    private_redis: Callable[..., RedisServer], serve: ServeFactory, tmp_path: Path, unique: str
) -> None:
    private = private_redis()
    try:
        server = serve(
            "gevent",
            NOTIFICATIONS_REDIS_URL=private.url,
            CELERY_BROKER_URL=private.url,
            NOTIFICATIONS_SSE_HEARTBEAT=0.5,
        )
        url = f"/notifications/{NEWS}/events"
        with server.stream(url) as client:
            client.wait_open()
            server.publish(NEWS, event(1))
            assert event_ids(client.take(1)) == ["e1"]
            private.kill()
            # Resuming needs the history: held open, never refused (a browser
            # gives up for good on anything but 200), until Redis is back.
            assert server.status(url, last_event_id=client.last_event_id) == 200
            assert server.proc is not None
            cpu_before = _cpu_seconds(server.proc.pid)
            beats = len(client.parser.comments)
            client.wait_until(lambda: len(client.parser.comments) >= beats + 4, timeout=30)
            # The listener backs off between attempts: it does not spin while Redis is away.
            assert _cpu_seconds(server.proc.pid) - cpu_before < 1.0
            private.start()
            backend = RedisPubSub(url=private.url, key_prefix=unique)
            backend.publish(NEWS, event(2).to_json())
            announced = []
            while (received := client.next_event()).type != "test":
                announced.append(received.type)
            # Down, then up once a read succeeds; Redis came back empty (it
            # keeps nothing on disk), so the listener cannot tell whether
            # events were lost meanwhile, and says so once.
            assert announced[0] == "backend-down" and announced.count("backend-down") == 1
            assert announced.count("backend-up") == 1 and announced.count("gap") <= 1
            assert event_ids([received]) == ["e2"]
            backend.close()
    finally:
        private.kill()
