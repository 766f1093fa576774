"""The documentation's examples run as printed: the Usage guide's snippets,
the example application's page and forms, and ``examples/run.sh``."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from flask_notifications.event import Event
from tests.helpers import free_port, wait_for
from tests.helpers.example import ROOT, load_example


def guide_code() -> str:
    """The Python snippets of docs/usage.rst's guide, in order."""
    text = (ROOT / "docs" / "usage.rst").read_text()
    guide = text[text.index("Building a simple notification system") : text.index("Running it")]
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", guide)
    assert len(blocks) >= 4
    return "\n".join(re.sub(r"^    ", "", block, flags=re.MULTILINE) for block in blocks)


@pytest.fixture
def guide_env(
    redis_keys: str,
    redis_url: str,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis[bytes],
) -> Iterator[dict[str, str]]:
    (tmp_path / "guide_app.py").write_text(guide_code())
    env = {
        "REDIS_URL": redis_url,
        "FLASK_NOTIFICATIONS_KEY_PREFIX": unique,
        "FLASK_CELERY_TASK_DEFAULT_QUEUE": unique,
        "EVENTS_LOG": str(tmp_path / "events.log"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env


@pytest.mark.redis
@pytest.mark.subprocess
def test_the_usage_guide_runs_as_printed(
    guide_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "guide_app:celery", "worker", "--pool", "solo"]
        + ["--loglevel", "WARNING", "--without-gossip", "--without-mingle"],
        cwd=tmp_path,
        env={**os.environ, **guide_env, "PYTHONPATH": str(tmp_path)},
    )
    try:
        monkeypatch.syspath_prepend(str(tmp_path))
        sys.modules.pop("guide_app", None)
        guide: Any = importlib.import_module("guide_app")
        guide.send_examples()
        log = Path(guide_env["EVENTS_LOG"])
        [line] = wait_for(lambda: log.exists() and log.read_text().splitlines())
        assert Event.from_json(line)["title"] == "This event will pass the filter"
        with guide.app.app_context():
            [pushed] = wait_for(lambda: guide.notifications.backend.history(guide.test_hub_id, None).messages)
        assert pushed.data == line
        assert worker.poll() is None
    finally:
        sys.modules.pop("guide_app", None)
        worker.terminate()
        worker.wait(timeout=30)


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ModuleType]:
    module = load_example(monkeypatch, EXAMPLE_LOG_FILE=str(tmp_path / "events.log"))
    yield module
    module.notifications.get_backend(module.app).close()


@pytest.fixture
def client(example: ModuleType) -> FlaskClient:
    return example.app.test_client()  # type: ignore[no-any-return]


def test_the_page_links_both_streams(client: FlaskClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    # The shipped client, on the one stream of both hubs.
    assert 'from "/notifications/static/notifications.js"' in html
    assert '"url": "/notifications/events", "hubs": ["UserHub", "SystemHub"]' in html
    assert '<notification-bell hub="Inbox" api="/inbox/"' in html
    for path in ("/static/example.js", "/notifications/static/notifications.js"):
        script = client.get(path)
        assert script.status_code == 200
        script.close()
    assert "innerHTML" not in (ROOT / "examples" / "static" / "example.js").read_text()


@pytest.mark.parametrize(
    ("kind", "form", "hubs"),
    [
        ("user", {"sender": "john", "recipients": "", "title": "Hi"}, ["UserHub"]),
        ("user", {"sender": "ann", "recipients": "tim, tom", "title": "Hi"}, ["UserHub"]),
        ("user", {"sender": "ann", "recipients": "tom", "title": "Hi"}, []),
        ("system", {"title": "Maintenance", "body": "tonight"}, ["SystemHub"]),
    ],
)
def test_the_forms_send_through_the_hubs_filters(
    example: ModuleType, client: FlaskClient, kind: str, form: dict[str, str], hubs: list[str]
) -> None:
    answer = client.post(f"/send/{kind}", data=form, headers={"Accept": "application/json"})
    assert answer.status_code == 202
    assert answer.json is not None and answer.json["hubs"] == hubs
    with example.app.app_context():
        backend = example.notifications.backend
        # The Inbox hub carries the bell's badges, not sent events.
        sent_to = [hub for hub in example.notifications.hubs.values() if hub.label != "Inbox"]
        pushed = {hub.label: backend.history(hub.hub_id, None).messages for hub in sent_to}
    assert [label for label, messages in pushed.items() if messages] == hubs
    for label in hubs:
        [message] = pushed[label]
        assert Event.from_json(message.data)["event_id"] == answer.json["event_id"]


def test_the_forms_refuse_bad_input(client: FlaskClient) -> None:
    assert client.post("/send/admin", data={"title": "x"}).status_code == 404
    answer = client.post("/send/system", data={"title": "x" * 201}, headers={"Accept": "application/json"})
    assert answer.status_code == 400 and answer.json is not None
    assert answer.json["fields"] == {"title": "Title is longer than 200 characters."}
    # Without JavaScript the form posts and comes back to the page.
    assert client.post("/send/system", data={"title": "x"}).status_code == 302


@pytest.mark.parametrize(
    ("kind", "post", "fields"),
    [
        ("system", {}, {"title": "Title is required."}),
        ("system", {"data": {"title": "   ", "body": "b"}}, {"title": "Title is required."}),
        ("user", {"data": {"body": "b"}}, {"sender": "Sender is required.", "title": "Title is required."}),
        (
            "user",
            {"data": {"sender": "john", "title": "t", "body": "b" * 2001}},
            {"body": "Body is longer than 2000 characters."},
        ),
        (
            "system",
            {"data": b"\x00\xff garbage", "content_type": "application/octet-stream"},
            {"title": "Title is required."},
        ),
        ("system", {"json": {"title": "not a form"}}, {"title": "Title is required."}),
    ],
)
def test_the_forms_name_every_wrong_field(
    example: ModuleType, client: FlaskClient, kind: str, post: dict[str, Any], fields: dict[str, str]
) -> None:
    answer = client.post(f"/send/{kind}", headers={"Accept": "application/json"}, **post)
    assert answer.status_code == 400 and answer.json is not None
    assert answer.json["fields"] == fields
    assert answer.json["error"] == " ".join(fields.values())
    with example.app.app_context():
        backend = example.notifications.backend
        assert all(not backend.history(hub_id, None).messages for hub_id in example.notifications.hubs)


def test_a_broker_outage_answers_503_with_the_library_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The page's form shows the library's message, not an HTML 500."""
    example = load_example(
        monkeypatch, redis_url=f"redis://127.0.0.1:{free_port()}/0", EXAMPLE_LOG_FILE=str(tmp_path / "events.log")
    )
    try:
        answer = example.app.test_client().post(
            "/send/system", data={"title": "During the outage"}, headers={"Accept": "application/json"}
        )
        assert answer.status_code == 503
        assert answer.mimetype == "application/json" and answer.json is not None
        # The ledger is on the same unreachable Redis: the send's outbox
        # record fails first, and nothing is enqueued.
        assert answer.json["error"].startswith(
            ("Could not reach the Celery broker, so event ", "Could not record the send in the outbox, so event ")
        )
    finally:
        example.notifications.get_backend(example.app).close()


def test_the_page_has_a_favicon(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    [href] = re.findall(r'<link rel="icon" type="image/svg\+xml" href="([^"]+)">', html)
    for url in (href, "/favicon.ico"):
        icon = client.get(url)
        assert icon.status_code == 200 and icon.mimetype == "image/svg+xml"
        assert icon.get_data(as_text=True).lstrip().startswith("<svg")
        icon.close()


def read_sse_event(url: str, wanted: str) -> dict[str, str]:
    """Read an SSE stream until an event whose data contains ``wanted``."""
    with urllib.request.urlopen(url, timeout=30) as stream:
        frame: dict[str, str] = {}
        for raw in stream:
            line = raw.decode("utf-8").rstrip("\n")
            if not line:
                if wanted in frame.get("data", ""):
                    return frame
                frame = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                frame[field] = value.removeprefix(" ")
    raise AssertionError(f"The stream {url} ended without an event containing {wanted!r}.")


def _run_sh_env(port: int) -> dict[str, str]:
    """run.sh's environment: this virtualenv, the embedded default, ``port``."""
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL" and not key.startswith("FLASK_")}
    env.update(PORT=str(port), VIRTUAL_ENV=str(Path(sys.executable).parent.parent))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.subprocess
def test_run_sh_says_when_the_port_is_taken() -> None:
    """It prints no URL for a port another program holds."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(ROOT / "examples" / "run.sh")], env=_run_sh_env(port), capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "PORT=8000 ./examples/run.sh" in done.stderr
    assert "open http://" not in done.stdout + done.stderr


@pytest.mark.subprocess
def test_run_sh_starts_the_example_on_the_embedded_default(tmp_path: Path) -> None:
    """The README's one command, in the repository's virtualenv."""
    port = free_port()
    env = _run_sh_env(port)
    proc = subprocess.Popen(
        [str(ROOT / "examples" / "run.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        url = f"http://127.0.0.1:{port}/"
        while not any(url in line for line in lines):
            line = proc.stdout.readline()
            assert line, "run.sh exited:\n" + "".join(lines)
            lines.append(line)
        wait_for(lambda: _get(url), timeout=30)
        request = urllib.request.Request(
            url + "send/system",
            data=b"title=From+run.sh&body=hello",
            headers={"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            sent = json.load(answer)
        assert sent["hubs"] == ["SystemHub"]
        frame = read_sse_event(url + "notifications/event-hub-SystemHub/events?last_event_id=0-0", "From run.sh")
        assert frame["event"] == "system"
        assert json.loads(frame["data"])["event_id"] == sent["event_id"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)


def _get(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


def test_system_events_are_mailed_when_a_mail_server_is_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from email import message_from_bytes

    from aiosmtpd.controller import Controller

    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        example = load_example(
            monkeypatch, mail=("127.0.0.1", controller.port), EXAMPLE_LOG_FILE=str(tmp_path / "events.log")
        )
        client = example.app.test_client()
        answer = client.post(
            "/send/system", data={"title": "Mail me", "body": "Hi"}, headers={"Accept": "application/json"}
        )
        assert answer.status_code == 202
        [envelope] = wait_for(lambda: inbox.messages)
        assert envelope.rcpt_tos == ["admin@localhost"]
        mail = message_from_bytes(envelope.content)
        assert mail["Subject"] == "[system] Mail me"
        assert client.post("/send/user", data={"title": "Not mailed", "sender": "john"}).status_code == 302
        assert len(inbox.messages) == 1
        example.notifications.get_backend(example.app).close()
    finally:
        controller.stop()


def test_without_a_mail_server_no_mail_consumer_is_registered(example: ModuleType) -> None:
    assert [type(consumer).__name__ for consumer in example.system_hub.consumers] == ["PushConsumer"]


# -- "Notify me when the tab is closed": Web Push -------------------------------------


def _web_push_section(html: str) -> str:
    start = html.index('<section id="web-push"')
    return html[start : html.index("</section>", start)]


def test_without_vapid_keys_the_push_button_is_off_and_says_how_to_turn_it_on(client: FlaskClient) -> None:
    section = _web_push_section(client.get("/").get_data(as_text=True))
    assert 'data-state="off"' in section
    assert re.search(r'<button type="button" id="web-push-button"[^>]*\sdisabled>', section)
    assert "flask --app examples.app notifications webpush generate-keys" in section
    assert "FLASK_NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY" in section
    assert client.get("/notifications/push/vapid-public-key").status_code == 404
    script = client.get("/static/web_push.js")
    assert script.status_code == 200
    script.close()


def test_with_the_generated_keys_a_subscription_is_stored_and_user_events_are_pushed(
    example: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The README's steps: generate a pair with the CLI, set it in the
    environment, and the button subscribes; a user event then reaches the
    subscribed browser, here the local push service of the consumer tests,
    which checks the VAPID signature and decrypts the message."""
    from flask_notifications.webpush.payload import default_payload, fit
    from tests.consumers.push_service import PushService

    generated = example.app.test_cli_runner().invoke(args=["notifications", "webpush", "generate-keys"])
    assert generated.exit_code == 0, generated.output
    config = {}
    for line in generated.output.splitlines():
        if line.startswith("NOTIFICATIONS_"):
            key, _, value = line.partition(" = ")
            config[key] = json.loads(value)
    example.notifications.get_backend(example.app).close()
    public_key = generated.output.rsplit(": ", 1)[-1].strip()
    with PushService(public_key) as service:
        database = tmp_path / "inbox.sqlite3"
        on = load_example(
            monkeypatch,
            EXAMPLE_LOG_FILE=str(tmp_path / "events.log"),
            NOTIFICATIONS_INBOX_URL=f"sqlite:///{database}",
            NOTIFICATIONS_WEBPUSH_ENDPOINTS=json.dumps([service.base]),
            **config,
        )
        try:
            assert on.WEB_PUSH_OFF is None
            client = on.app.test_client()
            section = _web_push_section(client.get("/as/tim", follow_redirects=True).get_data(as_text=True))
            assert 'data-state="ready"' in section and 'data-prefix="/notifications/push"' in section
            assert " disabled" not in section
            assert client.get("/notifications/push/vapid-public-key").json == {"public_key": public_key}
            device = service.device("tims-laptop").subscription(service.base)
            stored = client.post("/notifications/push/subscribe", json=device)
            assert stored.status_code == 201, stored.json
            with sqlite3.connect(database) as db:
                rows = db.execute("SELECT recipient, endpoint FROM notifications_push_subscriptions").fetchall()
            assert rows == [("tim", device["endpoint"])]

            sent = client.post(
                "/send/user",
                data={"sender": "ann", "recipients": "tom, tim", "title": "Lunch?", "body": "At noon"},
                headers={"Accept": "application/json"},
            )
            assert sent.status_code == 202 and sent.json is not None
            (push,) = wait_for(lambda: service.received("tims-laptop"))
            event = Event(sent.json["event_id"], "user", "Lunch?", "At noon")
            assert push.plaintext == fit(default_payload(event))
            assert service.refusals == []
        finally:
            on.notifications.get_backend(on.app).close()
