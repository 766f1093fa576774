"""The liveness and readiness endpoints, against the real Redis and broker
and against servers that do not answer; and a stream's end when its process
stops serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.event_hub import hub_id_for
from flask_notifications.streaming.fanout import end_all_streams
from tests.helpers import free_port, make_config
from tests.helpers.sse_client import StreamClosed
from tests.helpers.web_servers import Server

NEWS = hub_id_for("news")


def health_app(redis_url: str, unique: str, **overrides: Any) -> Flask:
    app = Flask("health_app")
    app.config.update(make_config(redis_url, unique, NOTIFICATIONS_HEALTH_BLUEPRINT=True, **overrides))
    Notifications(app)
    return app


@pytest.mark.redis
def test_live_and_ready_answer_without_detail(redis_url: str, unique: str) -> None:
    client = health_app(redis_url, unique).test_client()
    live, ready = client.get("/health/live"), client.get("/health/ready")
    assert (live.status_code, live.data) == (200, b"ok")
    assert (ready.status_code, ready.data) == (200, b"ready")
    assert ready.headers["Cache-Control"] == "no-store"
    assert ready.mimetype == "text/plain"


@pytest.mark.redis
@pytest.mark.parametrize("setting", ["NOTIFICATIONS_REDIS_URL", "CELERY_BROKER_URL"])
def test_not_ready_when_the_backend_or_the_broker_does_not_answer(
    redis_url: str, unique: str, setting: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    nowhere = f"redis://127.0.0.1:{port}/0"
    client = health_app(redis_url, unique, **{setting: nowhere}).test_client()
    ready = client.get("/health/ready")
    assert (ready.status_code, ready.data) == (503, b"unavailable")
    assert b"redis" not in ready.data and str(port).encode() not in ready.data
    # Why is logged, not shown.
    assert "Not ready" in caplog.text
    assert client.get("/health/live").status_code == 200


@pytest.mark.redis
def test_health_and_metrics_are_off_unless_configured(notifications: Notifications, client: Any) -> None:
    assert client.get("/health/ready").status_code == 404
    assert client.get("/metrics").status_code == 404


@pytest.fixture
def server(redis_keys: str, redis_url: str, unique: str, redis_client: redis.Redis[bytes]) -> Iterator[Server]:
    config = make_config(redis_url, unique, NOTIFICATIONS_HEALTH_BLUEPRINT=True, NOTIFICATIONS_SSE_RETRY=1500)
    server = Server("threaded", config)
    yield server
    server.kill()


@pytest.mark.redis
@pytest.mark.subprocess
def test_a_stopping_process_ends_its_streams_with_a_reconnect_event(server: Server, unique: str) -> None:
    path = f"/notifications/{NEWS}/events"
    first = server.publish(NEWS, Event(f"{unique}-1", "news", "one", "body"))
    with server.stream(path) as live, server.stream(path, last_event_id="0-0") as resumed:
        live.wait_until(lambda: live.parser.last_event_id)
        assert json.loads(resumed.next_event().data)["event_id"] == f"{unique}-1"
        assert server.get_status("/health/ready") == 200
        assert end_all_streams() == 2
        for client, last in ((live, first), (resumed, first)):
            farewell = client.next_event()
            assert farewell.type == "reconnect" and json.loads(farewell.data) == {"reason": "shutdown"}
            # The browser comes back soon, from where it was.
            assert client.parser.retry is not None and 0 <= client.parser.retry <= 1500
            assert client.parser.last_event_id == last
            with pytest.raises(StreamClosed):
                client.next_event()
    # Once stopping: not ready, and a new stream is sent on at once, its
    # Last-Event-ID untouched.
    assert server.get_status("/health/ready") == 503
    assert server.get_status("/health/live") == 200
    with server.stream(path, last_event_id=first) as late:
        assert late.status == 200
        assert late.next_event().type == "reconnect"
        assert late.parser.last_event_id == ""
        with pytest.raises(StreamClosed):
            late.next_event()
