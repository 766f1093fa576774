"""Code written for Flask-Notifications 0.1 runs unchanged.

The first part asserts what 0.1's own suite (tests/test_events.py) asserted,
against the real Redis; the rest runs each API of 0.1 that docs/migrating.rst
says still works, through a real worker where 0.1 ran it in one.
"""

from __future__ import annotations

import ast
import email
import email.policy
import importlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from aiosmtpd.controller import Controller
from flask import Flask, render_template_string

import flask_notifications
from flask_notifications import Notifications
from flask_notifications.consumers.consumer import Consumer, EventConsumer
from flask_notifications.consumers.flaskemail_consumer import FlaskEmailConsumer
from flask_notifications.consumers.flaskmail_consumer import FlaskMailConsumer
from flask_notifications.consumers.log_consumer import LogConsumer
from flask_notifications.consumers.push_consumer import PushConsumer
from flask_notifications.errors import ConfigurationError, ConsumerError, HubError, InvalidEventError
from flask_notifications.event import Event
from flask_notifications.event_hub import EventHub
from flask_notifications.filters import (
    AfterDate,
    Always,
    BeforeDate,
    Expired,
    Not,
    WithEventType,
    WithId,
    WithRecipients,
    WithSender,
)
from flask_notifications.pubsub.backend import Message
from flask_notifications.pubsub.memory_pubsub import MemoryPubSub
from flask_notifications.pubsub.redis_pubsub import RedisPubSub
from tests.helpers import WorkerFactory, free_port, make_config, wait_for

SENDER = "invnotifications@example.org"
TOMORROW = datetime.now() + timedelta(days=1)
NEXT_TO_TOMORROW_TM = (datetime.now() + timedelta(days=2)).timestamp()


@pytest.fixture
def event() -> Event:
    """0.1's test event."""
    return Event(
        "1234",
        event_type="user",
        title="This is a test",
        body="This is the body of a test",
        sender="system",
        recipients=["jvican"],
        expiration_datetime=TOMORROW,
    )


# -- 0.1's own tests -----------------------------------------------------------


def test_json_parser(event: Event) -> None:
    parsed = Event.from_json(event.to_json())
    assert parsed["event_id"] == event["event_id"]
    assert parsed["title"] == event["title"]
    assert parsed["body"] == event["body"]
    assert str(event) == event.to_json()


def test_log(event: Event, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    event_json = event.to_json()
    LogConsumer("events.log").consume(event_json)
    with open("events.log") as f:
        assert f.readline().rstrip("\n") == event_json


@pytest.mark.redis
def test_flaskmail_email_delivery(app: Flask, notifications: Notifications, event: Event) -> None:
    consumer = FlaskMailConsumer.from_app(app, SENDER, [SENDER])
    with app.test_request_context():
        with consumer.mail.record_messages() as outbox:
            assert consumer(event.to_json()) is True
    assert len(outbox) == 1
    assert outbox[0].recipients == [SENDER]


@pytest.mark.redis
def test_flaskmail_consumer_writes_01s_message_with_two_templates(
    app: Flask, notifications: Notifications, event: Event
) -> None:
    """The replacement docs/migrating.rst gives for 0.1's subject and body."""
    consumer = FlaskMailConsumer.from_app(
        app, SENDER, [SENDER], subject="Event {{ event.event_id }}", body="{{ event }}"
    )
    with app.test_request_context(), consumer.mail.record_messages() as outbox:
        consumer(event.to_json())
    assert outbox[0].subject == "Event 1234"
    assert outbox[0].body == event.to_json()


@pytest.fixture
def smtp_messages() -> Iterator[tuple[int, list[email.message.Message]]]:
    received: list[email.message.Message] = []
    lock = threading.Lock()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with lock:
                received.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, received
    controller.stop()


@pytest.mark.redis
def test_flaskemail_email_delivery_with_01s_positional_signature(
    app: Flask, event: Event, smtp_messages: tuple[int, list[email.message.Message]]
) -> None:
    port, received = smtp_messages
    app.config.update(EMAIL_HOST="127.0.0.1", EMAIL_PORT=port)
    consumer = FlaskEmailConsumer(app, SENDER, [SENDER])
    with app.test_request_context():
        assert consumer(event.to_json()) != 0
    assert len(received) == 1 and received[0]["To"] == SENDER
    from_app = FlaskEmailConsumer.from_app(app, SENDER, [SENDER])
    assert from_app.mail is app


def test_flaskemail_refuses_a_mailbox_it_cannot_use() -> None:
    with pytest.raises(ConsumerError, match="Flask-Email's mailboxes do not run on Python 3"):
        FlaskEmailConsumer(object(), SENDER, [SENDER])  # type: ignore[arg-type]


@pytest.mark.redis
def test_push(app: Flask, notifications: Notifications, event: Event) -> None:
    hub = notifications.create_hub("TestPush")
    backend = notifications.create_backend()
    push_function = PushConsumer(backend, hub.hub_id)
    with notifications.sse_notifier_for(hub.hub_id) as sse_notifier:
        push_function.consume(event.to_json())
        frames = iter(sse_notifier)
        frame = wait_for(lambda: (found := next(frames)) and b"data: " in found and found)
    assert f"data: {event.to_json()}\n".encode() in frame
    assert b"event: user\n" in frame


@pytest.mark.redis
def test_register_consumer(notifications: Notifications) -> None:
    event_hub = notifications.create_hub("TestFilters")

    @event_hub.register_consumer
    def write_to_file(event_json: str, *args: Any, **kwargs: Any) -> None:
        with open("events.log", "a") as f:
            f.write(event_json)

    push_consumer = PushConsumer(None, event_hub.hub_id)
    event_hub.register_consumer(push_consumer)
    assert event_hub.is_registered(push_consumer) is True
    assert event_hub.is_registered(write_to_file) is True
    event_hub.deregister_consumer(write_to_file)
    event_hub.deregister_consumer(push_consumer)
    assert event_hub.consumers == []
    assert event_hub.is_registered(write_to_file) is False


def test_and_filters(event: Event) -> None:
    f1 = WithEventType("user")
    f2 = WithSender("system")
    f3 = WithRecipients(["jvican"])
    f1f2 = f1 & f2
    f1f2f3 = f1 & f2 & f3
    assert f1f2f3(event) is True
    assert f1(event) is True
    event["event_type"] = "info"
    assert f1(event) is False
    assert f1f2(event) is False
    assert f1f2f3(event) is False
    assert f2(event) is True
    event["sender"] = "antisystem"
    assert f2(event) is False
    assert f1f2f3(event) is False
    assert f3(event) is True
    event["recipients"] = ["johndoe"]
    assert f3(event) is False
    assert f1f2f3(event) is False


def test_or_filters(event: Event) -> None:
    f1 = BeforeDate(TOMORROW)
    f2 = WithId("1234")
    f3 = Not(Expired())
    f1f2f3 = f1 | f2 | f3
    assert f1f2f3(event) is True
    assert f1(event) is True
    event["timestamp"] = NEXT_TO_TOMORROW_TM  # an epoch float, as 0.1 stored it
    assert f1(event) is False
    assert f1f2f3(event) is True
    assert f2(event) is True
    event["event_id"] = "123"
    assert f2(event) is False
    assert f1f2f3(event) is True
    assert f3(event) is True
    event["expiration_datetime"] = datetime.now()
    assert f3(event) is False
    assert f1f2f3(event) is False


def test_xor_filters(event: Event) -> None:
    f1 = AfterDate(datetime.now() + timedelta(days=2))
    f2 = WithId("1234")
    f1f2 = f1 ^ f2
    assert f1f2(event) is True
    event["timestamp"] = (datetime.now() + timedelta(days=3)).timestamp()
    assert f1(event) is True
    assert f1f2(event) is False
    event["event_id"] = "123"
    assert f1f2(event) is True


# -- events of 0.1 ------------------------------------------------------------------

#: An event as 0.1 serialised it: an epoch timestamp, an HTTP-date expiration.
JSON_01 = json.dumps(
    {
        "event_id": "0.1-event",
        "event_type": "user",
        "title": "Queued before the upgrade",
        "body": "body",
        "timestamp": 1496570400.25,
        "sender": "system",
        "recipients": ["jvican"],
        "tags": [],
        "expiration_datetime": "Thu, 01 Jan 2099 10:00:00 GMT",
    }
)


def test_epoch_timestamp_is_accepted() -> None:
    now = time.time()
    event = Event(None, "t", "title", "body", timestamp=now)
    assert event["timestamp"] == datetime.fromtimestamp(now, UTC)
    assert Event.from_json(event.to_json()) == event


def test_01_json_is_read() -> None:
    event = Event.from_json(JSON_01)
    assert event["timestamp"] == datetime.fromtimestamp(1496570400.25, UTC)
    assert event["expiration_datetime"] == datetime(2099, 1, 1, 10, tzinfo=UTC)
    assert Event.from_json(event.to_json()) == event


# -- the consumer contract, through a real worker --------------------------------------


@pytest.mark.redis
def test_consumers_get_what_01_gave_them_and_new_code_gets_an_event(
    app: Flask, notifications: Notifications, celery_worker: WorkerFactory, tmp_path: Path
) -> None:
    hub = notifications.create_hub("Contract")
    got: dict[str, Any] = {}
    log = tmp_path / "events.log"

    class Archive(Consumer):  # written for 0.1
        def consume(self, event_json: str, *args: Any, **kwargs: Any) -> None:
            got["json.loads"] = json.loads(event_json)
            got["from_json"] = Event.from_json(event_json)

    class Modern(EventConsumer):
        def consume(self, event: Event) -> None:
            got["event"] = event

    @hub.register_consumer(celery_task_name="compat.write_to_file")
    def write_to_file(event: Any, *args: Any, **kwargs: Any) -> None:
        with open(log, "a") as f:
            f.write(str(event))

    @hub.register_consumer(celery_task_name="compat.modern", pass_event=True)
    def modern(event: Event) -> None:
        got["function"] = event

    hub.register_consumer(Archive())
    hub.register_consumer(Modern())
    with celery_worker():
        # 0.1's JSON, sent as 0.1 sent events.
        notifications.send(JSON_01)
        wait_for(lambda: len(got) == 4 and log.exists() and log.read_text())
    sent = Event.from_json(JSON_01)
    assert got["json.loads"]["event_id"] == "0.1-event"
    assert got["from_json"] == sent and got["event"] == sent and got["function"] == sent
    assert isinstance(got["event"], Event) and isinstance(got["function"], Event)
    assert Event.from_json(log.read_text()) == sent


# -- the extension outside an application context ---------------------------------


@pytest.mark.redis
def test_send_and_the_extension_work_outside_an_app_context_with_one_app(
    notifications: Notifications, celery_worker: WorkerFactory
) -> None:
    hub = notifications.create_hub("Outside")
    seen: list[Event] = []
    hub.register_consumer(pass_event=True, celery_task_name="compat.outside")(seen.append)
    event = Event(None, "t", "title", "body")
    found: dict[str, Any] = {}

    def outside() -> None:
        # A new thread has no application context, as module level has none.
        from flask import has_app_context

        found["context"] = has_app_context()
        found["hubs"] = notifications.hubs
        found["celery"] = notifications.celery
        found["backend"] = notifications.backend
        found["hub"] = notifications.create_hub("Outside")
        found["dispatch"] = notifications.send(event.to_json())

    with celery_worker():
        thread = threading.Thread(target=outside)
        thread.start()
        thread.join()
        wait_for(lambda: seen)
    assert found["context"] is False and found["hub"] is hub and found["hubs"] == {hub.hub_id: hub}
    assert found["celery"] is notifications.celery and found["backend"] is notifications.backend
    assert found["dispatch"].hub_ids == (hub.hub_id,) and seen == [event]


@pytest.mark.redis
def test_two_apps_still_need_a_context(redis_url: str, unique: str) -> None:
    notifications = Notifications()
    apps = []
    for n in range(2):
        app = Flask(f"app{n}")
        app.config.update(make_config(redis_url, f"{unique}-{n}"))
        notifications.init_app(app)
        apps.append(app)
    with pytest.raises(RuntimeError, match="set up on 2 applications"):
        notifications.send(Event(None, "t", "title", "body"))
    with pytest.raises(RuntimeError, match="needs an application context"):
        notifications.backend  # noqa: B018
    for app in apps:
        notifications.get_backend(app).close()


# -- 0.1 names ----------------------------------------------------------------


@pytest.mark.redis
def test_root_and_templates(app: Flask, notifications: Notifications) -> None:
    notifications.create_hub("Templates")
    assert Notifications.root() is notifications
    with app.test_request_context():
        assert render_template_string("{{ current_notifications.hubs|length }}") == "1"


@pytest.mark.redis
def test_01_backend_path_resolves(redis_url: str, unique: str) -> None:
    app = Flask("legacy")
    app.config.update(make_config(redis_url, unique, NOTIFICATIONS_BACKEND=None))
    app.config["BACKEND"] = "flask_notifications.backend.redis_backend.RedisBackend"
    notifications = Notifications(app)
    assert isinstance(notifications.get_backend(app), RedisPubSub)
    notifications.get_backend(app).close()


class Backend01:
    """A custom backend as 0.1's documentation asked for one."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker

    def publish(self, channel: str, event: str) -> None: ...

    def subscribe(self, channel: str) -> None: ...

    def listen(self) -> None: ...


@pytest.mark.redis
def test_01_backend_class_says_what_to_implement(redis_url: str, unique: str) -> None:
    app = Flask("legacy")
    app.config.update(make_config(redis_url, unique, NOTIFICATIONS_BACKEND=f"{__name__}.Backend01"))
    with pytest.raises(ConfigurationError, match=r"0\.1 backend .* implement from_config, history, publish, subscribe"):
        Notifications(app)


@pytest.mark.redis
def test_unnamed_events_for_onmessage_pages(redis_url: str, unique: str, event: Event) -> None:
    app = Flask("unnamed")
    app.config.update(make_config(redis_url, unique, NOTIFICATIONS_SSE_EVENT_NAMES=False))
    notifications = Notifications(app)
    hub = notifications.create_hub("Unnamed")
    with app.app_context(), notifications.sse_notifier_for(hub.hub_id) as stream:
        PushConsumer(None, hub.hub_id).consume(event)
        frames = iter(stream)
        frame = wait_for(lambda: (found := next(frames)) and b"data: " in found and found)
    assert b"event:" not in frame and f"data: {event.to_json()}\n".encode() in frame
    notifications.get_backend(app).close()


# -- Celery task options ---------------------------------------------------------------


@pytest.mark.redis
def test_register_consumer_passes_celery_task_options(
    app: Flask,
    notifications: Notifications,
    celery_worker: WorkerFactory,
    unique: str,
    redis_client: redis.Redis[bytes],
) -> None:
    hub = notifications.create_hub("Options")
    slow = f"{unique}-slow"
    ran: list[str] = []

    @hub.register_consumer(name="compat.slow", queue=slow, rate_limit="10/m")
    def slow_consumer(event_json: str) -> None:
        ran.append(event_json)

    task = notifications.celery.tasks["compat.slow"]
    assert task.rate_limit == "10/m"
    with celery_worker():  # it consumes the default queue only
        notifications.send(Event(None, "t", "title", "body"))
        wait_for(lambda: redis_client.llen(slow) == 1)
    assert ran == []
    redis_client.delete(slow)
    with pytest.raises(ConsumerError, match="cannot set the task option"):
        hub.register_consumer(PushConsumer(None, hub.hub_id), serializer="pickle")


# -- the public surface -------------------------------------------------------------

FILTERS_01 = [
    "AfterDate",
    "Always",
    "BeforeDate",
    "Expired",
    "Not",
    "WithEventType",
    "WithId",
    "WithRecipients",
    "WithSender",
]


@pytest.mark.parametrize("package", ["filters", "consumers", "pubsub"])
def test_packages_say_what_is_public(package: str) -> None:
    module = importlib.import_module(f"flask_notifications.{package}")
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_filters_are_reexported_as_in_01() -> None:
    filters = importlib.import_module("flask_notifications.filters")
    assert set(FILTERS_01) <= set(filters.__all__)
    assert filters.Always is Always and filters.Not is flask_notifications.Not


def test_event_filter_imports_nothing_from_filters() -> None:
    source = Path(importlib.import_module("flask_notifications.event_filter").__file__ or "").read_text()
    imported = [
        node.module or ""
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and (node.level or "filters" in (node.module or ""))
    ]
    assert not [name for name in imported if "filters" in name], imported


def test_mail_consumer_lives_in_a_public_module() -> None:
    from flask_notifications.consumers import MailConsumer
    from flask_notifications.consumers.mail_consumer import MailConsumer as Public

    assert MailConsumer is Public


@pytest.mark.redis
def test_01s_hub_constructor_says_what_replaces_it(notifications: Notifications) -> None:
    with pytest.raises(HubError, match=r"notifications\.create_hub\(label\)"):
        EventHub("TestFilters", notifications.celery)  # type: ignore[arg-type]


class PortedBackend(MemoryPubSub):
    """The port of a 0.1 backend that docs/migrating.rst shows."""

    published: list[tuple[str, str]] = []

    def publish(self, channel: str, data: str) -> Message:
        message = super().publish(channel, data)
        self.published.append((channel, data))  # what 0.1's publish did
        return message


@pytest.mark.redis
def test_the_ported_backend_of_the_migration_guide(redis_url: str, unique: str, event: Event) -> None:
    app = Flask("ported")
    app.config.update(make_config(redis_url, unique, NOTIFICATIONS_BACKEND=f"{__name__}.PortedBackend"))
    notifications = Notifications(app)
    hub = notifications.create_hub("Ported")
    with app.app_context():
        PushConsumer(None, hub.hub_id).consume(event)
    assert PortedBackend.published == [(hub.hub_id, event.to_json())]
    assert [m.data for m in notifications.get_backend(app).history(hub.hub_id, None).messages] == [event.to_json()]


def test_01_events_without_a_sender() -> None:
    data = json.loads(JSON_01)
    data["sender"] = None
    assert Event.from_json(json.dumps(data))["sender"] == ""
    with pytest.raises(InvalidEventError, match="'sender' must be a string"):
        Event(None, "t", "title", "body", sender=None)  # type: ignore[arg-type]
