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


EARLY_HINTS = r"""
from gevent import monkey

monkey.patch_all()

import socket

from flask_notifications.ops.gunicorn_worker import _OfferConnection
from flask_notifications.streaming.green import ENVIRON_KEY


def gunicorns_hints(headers):
    raise AssertionError("gunicorn's callback was called")


def serve(claim):
    def app(environ, start_response):
        environ[ENVIRON_KEY].claimed = claim
        return [b""]

    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    environ = {"gunicorn.socket": ours, "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.early_hints": gunicorns_hints}
    _OfferConnection(app)(environ, lambda *args: None)
    return environ["wsgi.early_hints"]


print("other response keeps it", serve(False) is gunicorns_hints)
hints = serve(True)
print("live stream drops it", hints is not gunicorns_hints, hints([("Link", "</a.css>; rel=preload")]))
"""


def test_a_live_stream_holds_no_early_hints_callback() -> None:
    done = subprocess.run([sys.executable, "-c", EARLY_HINTS], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["other response keeps it True", "live stream drops it True None"], done.stderr
