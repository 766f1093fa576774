"""The worker class ``flask_notifications.gunicorn.GeventWorker``: live
streams are gunicorn requests (they count toward ``--worker-connections``,
and no exception ends them), a ``--protocol`` it cannot serve is refused at
boot, and plain ``-k gevent`` still streams, through WSGI iteration."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flask_notifications import Event
from tests.apps.sse_app import create_app
from tests.helpers import ROOT, free_port, make_config, wait_for
from tests.helpers.sse_client import SSEClient
from tests.helpers.tls import self_signed_certificate
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


@contextlib.contextmanager
def _serving(redis_url: str, unique: str, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], int, dict[str, Any]]]:
    """gunicorn with the worker class and ``args``, serving the SSE app on
    a port of its own: ``(process, port, the app's config)``, killed after."""
    config = make_config(redis_url, unique, NOTIFICATIONS_BACKEND="redis", SECRET_KEY=unique)
    port = free_port()
    proc = _gunicorn("-b", f"127.0.0.1:{port}", *args, config=config)
    try:
        wait_for(lambda: proc.poll() is None and _accepts(port), timeout=60)
        yield proc, port, config
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def test_a_protocol_the_worker_cannot_serve_is_refused_at_boot(redis_url: str, unique: str) -> None:
    config = make_config(redis_url, unique, NOTIFICATIONS_BACKEND="redis", SECRET_KEY=unique)
    proc = _gunicorn("-b", "127.0.0.1:0", "--protocol", "uwsgi", config=config)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "serves HTTP only, not --protocol uwsgi" in stderr.decode()


def test_live_streams_count_toward_worker_connections(redis_url: str, unique: str) -> None:
    # Two connections at most: two live streams fill the worker.
    with _serving(redis_url, unique, "--worker-connections", "2") as (_, port, _):
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
    done = tmp_path / "done"
    conf = tmp_path / "gunicorn_conf.py"
    conf.write_text(POST_REQUEST_HOOK.format(path=str(done)))
    with _serving(redis_url, unique, "-c", str(conf)) as (proc, port, config):
        app = create_app(config)
        backend: Any = app.extensions["notifications"].get_backend(app)
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
            backend.close()


def _read_until(sock: socket.socket, wanted: list[bytes], timeout: float = 30.0) -> bytes:
    """What ``sock`` sends until it has sent each of ``wanted``."""
    sock.settimeout(timeout)
    data = b""
    while not all(item in data for item in wanted):
        chunk = sock.recv(65536)
        assert chunk, f"The server closed the connection; it sent {data[-300:]!r}"
        data += chunk
    return data


def test_a_request_pipelined_behind_a_live_stream_is_not_served(gunicorn: Callable[..., Server]) -> None:
    """gunicorn has read the second request with the first: once the
    stream has the connection, gunicorn serves nothing more on it (a
    response written there would be lost, and a stream served there would
    hold the first one's greenlet)."""
    server = gunicorn()
    backend = server.backend
    pipelined = Event("pipelined", "news", "t", "b").to_json()
    sock = socket.create_connection(("127.0.0.1", server.port))
    try:
        sock.sendall(
            f"GET {URL} HTTP/1.1\r\nHost: x\r\n\r\n"
            f"POST /publish/{NEWS} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(pipelined)}\r\n\r\n{pipelined}".encode()
        )
        data = _read_until(sock, [b"retry:"])
        ids = [backend.publish(NEWS, news(n)).id for n in range(3)]
        data += _read_until(sock, [event_id.encode() for event_id in ids])
        assert data.count(b"HTTP/1.1 ") == 1
    finally:
        sock.close()
    # The connection's greenlet ends with its stream; had gunicorn served
    # the POST on it, the POST would have run before.
    wait_for(lambda: server.stats()["connections"] == 0, timeout=30)
    history = backend.history(NEWS, None)
    assert [message.id for message in history.messages] == ids


def test_a_stream_held_while_redis_was_down_stays_live_once_it_opens(
    gunicorn: Callable[..., Server], private_redis: Callable[..., Any]
) -> None:
    """A stream answered while Redis is down is held (``backend-down``),
    then opens on the same connection and writer when Redis is back: it
    stays open past its heartbeats and delivers."""
    redis_server = private_redis()
    server = gunicorn(NOTIFICATIONS_REDIS_URL=redis_server.url, NOTIFICATIONS_SSE_HEARTBEAT=0.5)
    backend = server.backend
    redis_server.kill()
    client = SSEClient(server.base + URL)
    try:
        assert client.next_event().type == "backend-down"
        redis_server.restart()
        assert client.next_event().type == "backend-up"
        # Past two heartbeats: a stream whose writer was closed would have
        # ended at the first one.
        seen = len(client.parser.comments)
        client.wait_until(lambda: len(client.parser.comments) >= seen + 2)
        ids = [backend.publish(NEWS, news(n)).id for n in range(3)]
        assert [event.last_event_id for event in client.take(3)] == ids
        assert not client.eof
        assert server.stats()["direct_writes"] > 0
    finally:
        client.close()
        backend.close()


def test_a_tls_stream_ended_by_sigterm_gets_its_reconnect_frame_encrypted(
    redis_url: str, unique: str, tmp_path: Any
) -> None:
    """gunicorn terminating TLS: the stream goes through WSGI iteration, and
    the stop's reconnect frame and the response's end come inside TLS (a
    shutdown of the TLS socket's reading side must not drop its TLS layer)."""
    cert, key = self_signed_certificate(tmp_path)
    with _serving(redis_url, unique, "--certfile", str(cert), "--keyfile", str(key)) as (proc, port, _):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="127.0.0.1") as tls:
            tls.sendall(f"GET {URL} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = _read_until(tls, [b"retry:"])
            proc.terminate()
            # Cleartext after the TLS records would never decrypt: the
            # reconnect frame and the end must come inside them. (How the
            # TLS connection then closes is gunicorn's.)
            data += _read_until(tls, [b"event: reconnect", b"\r\n0\r\n\r\n"])
        assert data.endswith(b"\r\n0\r\n\r\n")
        assert proc.wait(timeout=30) == 0


def test_a_worker_that_restarts_after_max_requests_ends_its_streams_with_reconnect(redis_url: str, unique: str) -> None:
    """``--max-requests``: the worker stops taking connections and restarts;
    its streams end at once with ``reconnect`` and the response's end, as on
    ``SIGTERM``, instead of being cut at the graceful timeout."""
    with _serving(redis_url, unique, "--max-requests", "2", "--graceful-timeout", "20") as (_, port, _):
        client = SSEClient(f"http://127.0.0.1:{port}{URL}")  # the worker's first request
        try:
            client.wait_open()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=30) as answer:  # its last
                assert answer.status == 200
            assert [event.type for event in client.read_to_end(timeout=15)] == ["reconnect"]
            assert client.finished
        finally:
            client.close()
