"""Every live stream that a graceful stop ends gets its ``reconnect`` frame
(issue 22), even one whose greenlet is in the middle of a write to a client
that reads slowly: the write finishes, whole, and the frame follows it."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from typing import Any

import pytest

from flask_notifications import Event
from tests.apps.sse_app import create_app
from tests.helpers import wait_for
from tests.helpers.sse_client import SSEClient
from tests.helpers.web_servers import Gunicorn

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

NEWS = "event-hub-news"
URL = "/notifications/news/events"


def stats(server: Gunicorn) -> dict[str, int]:
    status, body = server.get("/stats")
    assert status == 200
    return dict(json.loads(body))


def test_a_stream_busy_writing_when_the_server_stops_still_gets_its_reconnect_frame(
    gunicorn_deployment: Callable[..., Gunicorn],
) -> None:
    server = gunicorn_deployment(
        workers=1,
        worker_class="flask_notifications.gunicorn.GeventWorker",
        SSE_TEST_SNDBUF=4096,
        NOTIFICATIONS_SSE_QUEUE_SIZE=100_000,
        NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT=None,
    )
    app = create_app(server.config)
    backend: Any = app.extensions["notifications"].get_backend(app)
    stalled = SSEClient(server.base + URL, rcvbuf=4096)
    # A client that reads: its reconnect frame says the stop ended the streams.
    witness = SSEClient(server.base + URL)
    try:
        stalled.wait_open()
        witness.wait_open()
        # The stalled client reads nothing while ~800 KB are published: the
        # socket's buffers fill, and its greenlet waits in the middle of a write.
        ids = [backend.publish(NEWS, Event(f"e{n}", "news", "t", "x" * 4000).to_json()).id for n in range(200)]
        assert [event.last_event_id for event in witness.take(len(ids))] == ids
        wait_for(lambda: stats(server)["direct_fallbacks"] > 0)
        server.proc.send_signal(signal.SIGTERM)
        assert [event.type for event in witness.read_to_end(timeout=30)] == ["reconnect"]
        # Now the stalled client reads: a prefix of the events, each whole,
        # then the reconnect frame and the response's last chunk.
        events = stalled.read_to_end(timeout=30)
        assert events, "nothing arrived"
        assert events[-1].type == "reconnect"
        received = [event.last_event_id for event in events[:-1]]
        assert received == ids[: len(received)]
        assert stalled.finished
        assert server.proc.wait(timeout=30) == 0
    finally:
        stalled.close()
        witness.close()
        backend.close()
