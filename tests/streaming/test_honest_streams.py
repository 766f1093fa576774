"""Honest streams (issue 12): no event is skipped without a ``gap`` event,
an outage is announced once, failures are counted, refusals tell nothing
about which hubs exist, an open blueprint is warned about, and a slow
stream filter stalls only its own stream.

Each test runs the app under ``gunicorn -k gevent`` on a real Redis (a
private one where the test stops it) and reads it with the independent
client of :mod:`tests.helpers.sse_client`.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from flask_notifications import Event, Notifications, signals
from flask_notifications.backends.redis import RedisPubSub
from tests.helpers import RedisServer, make_config, wait_for
from tests.helpers.sse_client import SSEEvent
from tests.helpers.web_servers import Server

NEWS = "event-hub-news"
URL = f"/notifications/{NEWS}/events"
ANNOUNCEMENTS = ("gap", "backend-down", "backend-up")

ServeFactory = Callable[..., Server]


def event(n: int, recipients: tuple[str, ...] = ()) -> Event:
    return Event(f"e{n}", "test", f"title {n}", "body", recipients=recipients)


def number(received: SSEEvent) -> int:
    return int(json.loads(received.data)["event_id"][1:])


# -- 1. replay in bounded pages -------------------------------------------------------


@pytest.mark.redis
@pytest.mark.subprocess
def test_replay_and_joining_read_the_history_in_bounded_pages(
    private_redis: Callable[..., RedisServer], gunicorn: ServeFactory, tmp_path: Path, unique: str
) -> None:
    private = private_redis()
    # No socket timeout (redis-py's default is 5 s): a quiet moment must not end the recording.
    monitor_client = redis.Redis.from_url(private.url, socket_timeout=None)
    commands: list[str] = []
    try:
        server = gunicorn(NOTIFICATIONS_REDIS_URL=private.url, CELERY_BROKER_URL=private.url)
        backend = RedisPubSub(url=private.url, key_prefix=unique)
        ids = [backend.publish(NEWS, event(n).to_json()).id for n in range(350)]
        with monitor_client.monitor() as monitor:

            def record() -> None:
                while "stop-monitor" not in (command := monitor.next_command()["command"]):
                    commands.append(command)

            recorder = threading.Thread(target=record)
            recorder.start()
            with server.stream(URL, last_event_id="0-0") as client:
                received = client.take(350)
                assert [e.last_event_id for e in received] == ids
            backend.client.echo("stop-monitor")
            recorder.join(timeout=30)
        backend.close()
    finally:
        monitor_client.close()
    reads = [c for c in commands if c.split()[0].upper() in ("XRANGE", "XREVRANGE") and f"{unique}:hub:" in c]
    assert reads, commands
    for command in reads:
        words = command.upper().split()
        assert "COUNT" in words, f"a history read without a bound: {command}"
        assert int(words[words.index("COUNT") + 1].strip('"')) <= 100, command


# -- 2. no silent gaps ------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.subprocess
def test_a_last_event_id_beyond_the_newest_gets_a_gap_and_then_live_events(gunicorn: ServeFactory) -> None:
    server = gunicorn()
    newest = server.publish(NEWS, event(0))
    with server.stream(URL, last_event_id="99999999999999-0") as client:
        assert client.status == 200
        gap = client.next_event()
        assert gap.type == "gap" and gap.last_event_id == newest
        assert json.loads(gap.data) == {"last_event_id": "99999999999999-0", "oldest_id": None, "reason": "ahead"}
        server.publish(NEWS, event(1))
        assert number(client.next_event()) == 1


@pytest.mark.redis
@pytest.mark.subprocess
def test_ids_that_go_backwards_do_not_silence_the_hub(gunicorn: ServeFactory, redis_client: Any, unique: str) -> None:
    server = gunicorn()
    key = f"{unique}:hub:{NEWS}"
    with server.stream(URL) as client:
        client.wait_open()
        # An id from a clock far ahead, then the stream starts over (a Redis
        # restarted empty with its clock behind the last id).
        redis_client.xadd(key, {"d": event(0).to_json()}, id="99999999999999-0")
        assert number(client.next_event()) == 0
        redis_client.delete(key)
        server.publish(NEWS, event(1))
        gap = client.next_event()
        assert gap.type == "gap" and json.loads(gap.data)["reason"] == "reset"
        assert number(client.next_event()) == 1
        server.publish(NEWS, event(2))
        assert number(client.next_event()) == 2


@pytest.mark.redis
@pytest.mark.subprocess
def test_a_server_that_falls_behind_the_history_announces_the_gap(gunicorn: ServeFactory, unique: str) -> None:
    server = gunicorn(NOTIFICATIONS_HISTORY_SIZE=10)
    with server.stream(URL) as client:
        client.wait_open()
        server.publish(NEWS, event(0))
        assert number(client.next_event()) == 0
        worker = server.worker_pid()
        os.kill(worker, signal.SIGSTOP)  # a paused process (a long GC, a busy CPU)
        try:
            backend = RedisPubSub(url=server.config["NOTIFICATIONS_REDIS_URL"], key_prefix=unique, history_size=10)
            for n in range(1, 501):
                backend.publish(NEWS, event(n).to_json())
            backend.close()
        finally:
            os.kill(worker, signal.SIGCONT)
        received: list[SSEEvent] = []
        while not received or received[-1].type == "gap" or number(received[-1]) != 500:
            received.append(client.next_event())
    assert received[0].type == "gap", [(e.type, e.data[:40]) for e in received[:5]] + [len(received)]
    assert json.loads(received[0].data)["reason"] == "overrun"
    # Every skip is announced: between two events with no gap in between,
    # nothing is missing.
    for before, after in zip(received, received[1:], strict=False):
        if before.type != "gap" and after.type != "gap":
            assert number(after) == number(before) + 1


# -- 3 and 4. one outage, one announcement, counted and logged once ------------------------------


@pytest.mark.redis
@pytest.mark.subprocess
def test_one_outage_is_announced_once_per_stream_counted_and_logged_once(
    private_redis: Callable[..., RedisServer], gunicorn: ServeFactory, tmp_path: Path, unique: str
) -> None:
    private = private_redis(persistent=True)
    server = gunicorn(NOTIFICATIONS_REDIS_URL=private.url, CELERY_BROKER_URL=private.url)
    alice = server.login("alice")
    with (
        server.stream(URL) as news,
        server.stream("/notifications/event-hub-private/events", headers=alice) as mine,
    ):
        news.wait_open()
        mine.wait_open()
        server.publish(NEWS, event(1))
        assert number(news.next_event()) == 1
        private.kill()
        assert news.next_event().type == "backend-down"
        assert mine.next_event().type == "backend-down"
        # Several reads fail while it is away.
        wait_for(lambda: server.stats()["backend_failures"] >= 3, timeout=60)
        assert server.stats()["backend_down"] == 1
        private.start()  # with everything it had: nothing was lost
        backend = RedisPubSub(url=private.url, key_prefix=unique)
        backend.publish(NEWS, event(2).to_json())
        backend.publish("event-hub-private", event(3, recipients=("alice",)).to_json())
        backend.close()
        assert [e.type for e in news.take(2)] == ["backend-up", "test"]
        assert [e.type for e in mine.take(2)] == ["backend-up", "test"]
        stats = server.stats()
        assert stats["outages"] == 1 and stats["backend_down"] == 0 and stats["gaps"] == 0
        assert stats["backend_failures"] >= 3
    log = server.log_text()
    assert log.count("The notifications backend cannot be read") == 1, log
    assert log.count("answers again") == 1, log
    assert "works again" not in log


@pytest.mark.redis
@pytest.mark.subprocess
def test_an_outage_sends_one_signal_each_way(
    private_redis: Callable[..., RedisServer], redis_url: str, unique: str, tmp_path: Path
) -> None:
    private = private_redis()
    app = Flask("outage")
    app.config.update(make_config(redis_url, unique, NOTIFICATIONS_REDIS_URL=private.url))
    ext = Notifications(app)
    ext.create_hub("news")
    down: list[BaseException] = []
    up: list[int] = []

    def on_down(sender: Flask, exception: BaseException) -> None:
        down.append(exception)

    def on_up(sender: Flask, failures: int) -> None:
        up.append(failures)

    signals.stream_backend_down.connect(on_down, app)
    signals.stream_backend_up.connect(on_up, app)
    runtime = ext.runtime(app)
    try:
        stream = runtime.fanout.open(NEWS)
        private.kill()
        wait_for(lambda: runtime.stream_stats()["backend_failures"] >= 3, timeout=60)
        private.start()
        wait_for(lambda: up, timeout=60)
        assert len(down) == 1 and len(up) == 1 and up[0] >= 3
        assert "Redis" in str(down[0])
        stream.close()
    finally:
        signals.stream_backend_down.disconnect(on_down, app)
        signals.stream_backend_up.disconnect(on_up, app)
        runtime.close_streams()
        runtime.backend.close()


# -- 5. no hub enumeration; issue 13 item 9: labels and JSON answers ----------------------------


@pytest.mark.redis
@pytest.mark.subprocess
def test_refusals_do_not_tell_which_hubs_exist(gunicorn: ServeFactory) -> None:
    server = gunicorn(SSE_TEST_LOGIN_REQUIRED=True)
    for path in (URL, "/notifications/event-hub-nothing/events", "/notifications/nothing/events"):
        assert server.status(path) == 403, path
    alice = server.login("alice")
    assert server.status("/notifications/event-hub-nothing/events", headers=alice) == 404
    assert server.status(URL, headers=alice) == 200


@pytest.mark.redis
@pytest.mark.subprocess
def test_the_stream_url_takes_the_label_and_answers_json_in_kind(gunicorn: ServeFactory) -> None:
    server = gunicorn()
    with server.stream("/notifications/news/events") as client:
        client.wait_open()
        server.publish(NEWS, event(1))
        assert number(client.next_event()) == 1
    with server.stream("/notifications/closed/events", headers={"Accept": "application/json"}) as refused:
        assert refused.status == 403
        assert refused.headers["content-type"].startswith("application/json")
        assert json.loads(refused.body)["status"] == 403
    with server.stream("/notifications/news/events", last_event_id="garbage") as bad:
        assert bad.status == 400 and bad.headers["content-type"].startswith("text/html")


# -- 6. an open blueprint is warned about ----------------------------------------------------------


@pytest.mark.redis
@pytest.mark.subprocess
@pytest.mark.parametrize("public", [False, True])
def test_a_blueprint_without_an_authorizer_warns_once(gunicorn: ServeFactory, public: bool) -> None:
    server = gunicorn(SSE_TEST_NO_AUTHORIZER=True, NOTIFICATIONS_SSE_PUBLIC=public)
    for _ in range(3):
        with server.stream(URL) as client:
            client.wait_open()
    warnings = server.log_text().count("no stream_authorizer is registered")
    assert warnings == (0 if public else 1)


def test_the_snippets_that_turn_on_the_blueprint_show_the_authorizer() -> None:
    root = Path(__file__).resolve().parents[2]
    for page in (root / "README.rst", root / "docs" / "usage.rst"):
        blocks = page.read_text().split(".. code-block:: python")[1:]
        enabling = [block for block in blocks if '"NOTIFICATIONS_SSE_BLUEPRINT"] = True' in block]
        assert enabling, page
        for block in enabling:
            assert "@notifications.stream_authorizer" in block, page


# -- 7. a slow stream filter stalls only its own stream ---------------------------------------------


@pytest.mark.redis
@pytest.mark.subprocess
def test_a_stream_filter_that_waits_stalls_only_its_own_stream(gunicorn: ServeFactory) -> None:
    server = gunicorn()
    with server.stream("/gated") as gated, server.stream(URL) as news:
        gated.wait_open()
        news.wait_open()
        for n in range(5):
            server.publish(NEWS, event(n))
        assert [number(e) for e in news.take(5)] == list(range(5))
        server.request("POST", "/gate/open")
        assert [number(e) for e in gated.take(5)] == list(range(5))
