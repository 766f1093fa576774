"""AppriseConsumer against local endpoints: json:// and form:// to an HTTP
server of the test, mailto:// to aiosmtpd, through a real worker."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.consumers.apprise_consumer import AppriseConsumer, redact, scrub, secrets_of
from tests.consumers.test_mail import SmtpServer, smtp_server  # noqa: F401 - the fixture
from tests.helpers import WorkerFactory, free_port, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

SECRET = "T0KEN-s3cr3t-9f8e7d"


@dataclass
class Hooks:
    """An HTTP server that records each POST, answering each path's
    scripted statuses first, then 200."""

    server: ThreadingHTTPServer
    received: list[tuple[str, str, bytes]] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def bodies(self, path: str) -> list[bytes]:
        with self.lock:
            return [body for got, _, body in self.received if got == path]


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with hooks.lock:
                statuses = hooks.script.get(self.path) or []
                status = statuses.pop(0) if statuses else 200
                if status == 200:
                    hooks.received.append((self.path, self.headers.get("Content-Type", ""), body))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    hooks = Hooks(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield hooks
    server.shutdown()
    server.server_close()


def test_json_and_form_targets_per_hub_and_per_recipient(
    app: Flask, notifications: Notifications, hooks: Hooks, celery_worker: WorkerFactory
) -> None:
    app.config["NOTIFICATIONS_APPRISE_TARGETS"] = {"ops": [f"json://{hooks.base}/ops/{SECRET}"]}
    users = {"alice": [f"form://{hooks.base}/alice"], "bob": []}
    hub = notifications.create_hub("ops")
    hub.register_consumer(AppriseConsumer(lookup=lambda user: users.get(user, [])))
    with celery_worker():
        notifications.send(Event(None, "deploy", "Deployed", "v2 is live", recipients=["alice", "bob"]))
        wait_for(lambda: len(hooks.received) == 2)
    (ops,) = hooks.bodies(f"/ops/{SECRET}")
    assert json.loads(ops) | {"attachments": []} == {
        "version": "1.0",
        "title": "Deployed",
        "message": "v2 is live",
        "type": "info",
        "attachments": [],
    }
    (alice,) = hooks.bodies("/alice")
    assert parse_qs(alice.decode())["message"] == ["v2 is live"]
    assert parse_qs(alice.decode())["title"] == ["Deployed"]


def test_mailto_reaches_the_smtp_server(
    app: Flask,
    notifications: Notifications,
    smtp_server: SmtpServer,  # noqa: F811
    celery_worker: WorkerFactory,
) -> None:
    url = f"mailto://{smtp_server.host}:{smtp_server.port}?from=noreply@example.org&to=ops@example.org&secure=no"
    hub = notifications.create_hub("mail")
    hub.register_consumer(AppriseConsumer([url]))
    with celery_worker():
        notifications.send(Event(None, "alert", "Disk full", "on db-1"))
        (mail,) = wait_for(lambda: smtp_server.received)
    assert mail.rcpt_tos == ["ops@example.org"]
    assert mail.message["Subject"] == "Disk full"
    assert "on db-1" in mail.message.get_body(("plain", "html")).get_content()  # type: ignore[union-attr]


def test_a_target_that_is_down_ends_as_a_dead_letter_without_its_secret_and_retry_delivers_it(
    app: Flask,
    notifications: Notifications,
    hooks: Hooks,
    celery_worker: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app.config["NOTIFICATIONS_MAX_RETRIES"] = 2
    port = free_port()
    down = f"json://user:{SECRET}@127.0.0.1:{port}/hook/{SECRET}"
    up = f"json://{hooks.base}/up"
    hub = notifications.create_hub("ops")
    hub.register_consumer(AppriseConsumer([up, down]))
    caplog.set_level(logging.DEBUG)
    with celery_worker():
        notifications.send(Event(None, "deploy", "Deployed", "v2"))
        (letter,) = wait_for(notifications.dead_letters)
    assert letter["attempts"] == 3
    assert "AppriseUnavailableError" in letter["error"] and f"json://127.0.0.1:{port}/…" in letter["error"]
    assert SECRET not in json.dumps(letter)
    assert SECRET not in caplog.text
    # The target that answered was notified once, not once per attempt.
    assert len(hooks.bodies("/up")) == 1

    # The target comes up (on the same port), and `retry` delivers the letter.
    # The fixture's handler records into ``hooks``.
    revived = Hooks(ThreadingHTTPServer(("127.0.0.1", port), hooks.server.RequestHandlerClass))
    threading.Thread(target=revived.server.serve_forever, daemon=True).start()
    try:
        with celery_worker():
            result = app.test_cli_runner().invoke(args=["notifications", "retry", "--all"])
            assert result.exit_code == 0, result.output
            wait_for(lambda: len(hooks.bodies(f"/hook/{SECRET}")) == 1)
            wait_for(lambda: notifications.dead_letters() == [])
        assert SECRET not in caplog.text
    finally:
        revived.server.shutdown()
        revived.server.server_close()
    assert len(hooks.bodies("/up")) == 1


def test_a_target_that_refuses_for_good_is_dead_lettered_at_once(
    app: Flask, notifications: Notifications, hooks: Hooks, celery_worker: WorkerFactory
) -> None:
    hooks.script["/gone"] = [400]
    hub = notifications.create_hub("ops")
    hub.register_consumer(AppriseConsumer([f"json://{hooks.base}/gone", "nosuchscheme://x"]))
    with celery_worker():
        notifications.send(Event(None, "deploy", "Deployed", "v2"))
        (letter,) = wait_for(notifications.dead_letters)
    assert letter["attempts"] == 1
    assert "AppriseTargetError" in letter["error"] and "2 of 2 targets refused" in letter["error"]


def test_redaction_keeps_the_host_and_drops_every_secret() -> None:
    url = f"slack://bot:{SECRET}@T1JJ3T3L2/A1BRTD4JD/{SECRET}/#general?token={SECRET}"
    assert SECRET not in redact(url) and redact(url).startswith("slack://")
    text = f"POST https://hooks.slack.com/services/T1JJ3T3L2/{SECRET} failed"
    assert SECRET not in scrub(text, secrets_of(url))


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        # Services whose Apprise URL holds the token where a host would be.
        ("join://e90205c4a7e4a9a7d5f0b8e92d0c7ab3/group.android", "e90205c4a7e4a9a7d5f0b8e92d0c7ab3"),
        ("prowl://4b7c5e8a9d1f2e3c6b5a4d7e8f9a0b1c2d3e4f56", "4b7c5e8a9d1f2e3c6b5a4d7e8f9a0b1c2d3e4f56"),
        ("pbul://o.gn5kj6nfhv736I7jC3cj3QLRiyhgl98b", "o.gn5kj6nfhv736I7jC3cj3QLRiyhgl98b"),
        ("pover://uQiRzpo4DXghDmr9QzzfQu27cmVRsG@azGDORePK8gMaC0QOYAMyEEuzJnyUi", "azGDORePK8gMaC0QOYAMyEEuzJnyUi"),
        ("tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/12315544/", "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"),
        # A misspelt scheme: Apprise cannot say where the token is.
        ("pvoer://uQiRzpo4DXghDmr9QzzfQu27cmVRsG@azGDORePK8gMaC0QOYAMyEEuzJnyUi", "azGDORePK8gMaC0QOYAMyEEuzJnyUi"),
    ],
)
def test_a_token_in_the_host_of_an_apprise_url_is_redacted_and_scrubbed(url: str, secret: str) -> None:
    shown = redact(url)
    assert secret.lower() not in shown.lower() and shown.startswith(url.split("://")[0] + "://")
    # What urllib3 logs at DEBUG: the token in the request's path or query.
    text = f'"POST /bot{secret}/sendMessage?apikey={secret} HTTP/1.1" 200'
    assert secret not in scrub(text, secrets_of(url))


def test_a_plain_host_is_still_shown() -> None:
    assert redact("json://user:pass@localhost:8080/hook/abc") == "json://localhost:8080/…"
    assert redact("mailto://user:pass@mail.example.org?to=a@example.org") == "mailto://mail.example.org/…"


def test_what_urllib3_logs_of_a_target_with_malformed_headers_is_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        # A header line without a colon: urllib3 warns "Failed to parse
        # headers (url=...)" with the whole URL, on its own logger.
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nnot a header\r\nX-A: b\r\n\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    url = f"json://127.0.0.1:{listener.getsockname()[1]}/hooks/{SECRET}"
    with caplog.at_level(logging.DEBUG):
        try:
            AppriseConsumer().notify(url, "Deployed", "v2")
        except Exception:  # noqa: BLE001, S110 - what it raises is not the point; what it logs is
            pass
    listener.close()
    assert any("127.0.0.1" in record.getMessage() for record in caplog.records)
    assert [record.getMessage() for record in caplog.records if SECRET in record.getMessage()] == []
