"""The worker class ``flask_notifications.gunicorn.GeventWorker``: live
streams are gunicorn requests (they count toward ``--worker-connections``,
and no exception ends them), a ``--protocol`` it cannot serve is refused at
boot, and plain ``-k gevent`` still streams, through WSGI iteration."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from flask_notifications import Event
from tests.apps.sse_app import create_app
from tests.helpers import ROOT, free_port, make_config, wait_for
from tests.helpers.sse_client import SSEClient
from tests.helpers.web_servers import Server, _accepts

NEWS = "event-hub-news"
URL = f"/notifications/{NEWS}/events"
WORKER = "flask_notifications.gunicorn.GeventWorker"


def news(n: int) -> str:
    return Event(f"e{n}", "news", f"title {n}", "body").to_json()


pytestmark = [pytest.mark.redis, pytest.mark.subprocess]


def test_live_streams_log_no_error_and_end_through_gunicorn(gunicorn: Callable[..., Server]) -> None:
    server = gunicorn()
    backend = server.backend
    clients = [server.stream(URL) for _ in range(5)]
    try:
        for client in clients:
            client.wait_open()
        ids = [backend.publish(NEWS, news(n)).id for n in range(3)]
        for client in clients:
            assert [e.last_event_id for e in client.take(3)] == ids
        assert server.stats()["direct_writes"] > 0
    finally:
        for client in clients:
            client.close()
    server.kill()
    log = server.log_text()
    assert "Traceback" not in log
    assert "Error handling request" not in log


def test_plain_gevent_worker_streams_through_wsgi_iteration(gunicorn: Callable[..., Server]) -> None:
    server = gunicorn(kind="gunicorn-gevent")
    backend = server.backend
    with server.stream(URL) as client:
        client.wait_open()
        ids = [backend.publish(NEWS, news(n)).id for n in range(20)]
        assert [e.last_event_id for e in client.take(len(ids))] == ids
        assert client.chunks > 0
    assert server.stats()["direct_writes"] == 0


def _gunicorn(*args: str, config: dict[str, Any]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SSE_APP_CONFIG": json.dumps(config), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-k", WORKER, "-w", "1", *args, "tests.apps.sse_app:create_app()"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_a_protocol_the_worker_cannot_serve_is_refused_at_boot(redis_url: str, unique: str) -> None:
    config = make_config(redis_url, unique, NOTIFICATIONS_BACKEND="redis", SECRET_KEY=unique)
    proc = _gunicorn("-b", "127.0.0.1:0", "--protocol", "uwsgi", config=config)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "serves HTTP only, not --protocol uwsgi" in stderr.decode()


def test_live_streams_count_toward_worker_connections(redis_url: str, unique: str) -> None:
    config = make_config(redis_url, unique, NOTIFICATIONS_BACKEND="redis", SECRET_KEY=unique)
    port = free_port()
    # Two connections at most: two live streams fill the worker.
    proc = _gunicorn("-b", f"127.0.0.1:{port}", "--worker-connections", "2", config=config)
    try:
        wait_for(lambda: proc.poll() is None and _accepts(port), timeout=60)
        # (_accepts' probe connection is closed; its slot comes back.)
        first = SSEClient(f"http://127.0.0.1:{port}{URL}")
        second = SSEClient(f"http://127.0.0.1:{port}{URL}")
        third = socket.create_connection(("127.0.0.1", port))
        try:
            first.wait_open()
            second.wait_open()
            third.sendall(f"GET {URL} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            third.settimeout(2)
            # The worker serves no third connection while both streams are open.
            with pytest.raises(TimeoutError):
                third.recv(1)
            first.close()
            third.settimeout(30)
            assert third.recv(12) == b"HTTP/1.1 200"
        finally:
            for client in (first, second):
                client.close()
            third.close()
    finally:
        proc.kill()
        proc.communicate(timeout=30)


POST_REQUEST_HOOK = """
def post_request(worker, req, environ, resp):
    with open({path!r}, "a") as done:
        done.write(req.path + "\\n")
"""


def test_gunicorn_is_done_with_a_live_streams_request_while_the_stream_goes_on(
    redis_url: str, unique: str, tmp_path: Any
) -> None:
    """A live stream takes its connection over: gunicorn ends the request
    (its post_request hook runs) while the stream stays open and goes on
    delivering, and the stream still ends its response properly."""
    config = make_config(redis_url, unique, NOTIFICATIONS_BACKEND="redis", SECRET_KEY=unique)
    done = tmp_path / "done"
    conf = tmp_path / "gunicorn_conf.py"
    conf.write_text(POST_REQUEST_HOOK.format(path=str(done)))
    port = free_port()
    proc = _gunicorn("-b", f"127.0.0.1:{port}", "-c", str(conf), config=config)
    app = create_app(config)
    backend: Any = app.extensions["notifications"].get_backend(app)
    try:
        wait_for(lambda: proc.poll() is None and _accepts(port), timeout=60)
        client = SSEClient(f"http://127.0.0.1:{port}{URL}")
        try:
            client.wait_open()
            wait_for(lambda: done.exists() and URL in done.read_text().split(), timeout=30)
            ids = [backend.publish(NEWS, news(n)).id for n in range(3)]
            assert [e.last_event_id for e in client.take(3)] == ids
            assert not client.eof
            proc.terminate()
            assert [event.type for event in client.read_to_end(timeout=30)] == ["reconnect"]
            assert client.finished
        finally:
            client.close()
    finally:
        backend.close()
        proc.kill()
        proc.communicate(timeout=30)
