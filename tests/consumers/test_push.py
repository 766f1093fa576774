"""PushConsumer through a real worker and the real Redis: the pushed event
reaches a live subscription of the hub (what the SSE endpoint reads) and its
replay history, once however often the task runs."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from flask import Flask

from flask_notifications import Notifications
from flask_notifications.backends.base import Message
from flask_notifications.backends.memory import MemoryPubSub
from flask_notifications.consumers.push_consumer import PushConsumer
from flask_notifications.errors import BackendError, ConsumerError
from flask_notifications.event import Event
from flask_notifications.worker.delivery import Delivery, delivering
from tests.helpers import WorkerFactory, deliver_twice, free_port, send_until_dead_letter, wait_for


def make_event(title: str = "Title", **fields: Any) -> Event:
    return Event(None, "test", title, "Body ✓", sender="system", **fields)


@pytest.mark.redis
@pytest.mark.parametrize("target", ["redis client", "app backend", "backend instance"])
def test_push_reaches_subscribers_and_history(
    notifications: Notifications,
    celery_worker: WorkerFactory,
    redis_client: redis.Redis[bytes],
    target: str,
) -> None:
    hub = notifications.create_hub("Push")
    backend = notifications.backend
    given = {"redis client": redis_client, "app backend": None, "backend instance": backend}[target]
    hub.register_consumer(PushConsumer(given, hub.hub_id))
    subscription = backend.subscribe()
    subscription.add(hub.hub_id)
    received: list[Message] = []
    try:
        with celery_worker():
            event = make_event(title="Grüße", priority="high")
            notifications.send(event)
            received = wait_for(lambda: received + subscription.get(0.2))
    finally:
        subscription.close()
    (message,) = received
    assert message.channel == hub.hub_id
    assert Event.from_json(message.data) == event
    assert backend.history(hub.hub_id, None).messages == [message]


@pytest.mark.redis
def test_task_run_twice_pushes_once(notifications: Notifications, celery_worker: WorkerFactory) -> None:
    hub = notifications.create_hub("PushOnce")
    hub.register_consumer(PushConsumer(None, hub.hub_id))
    event = make_event()
    assert deliver_twice(notifications, celery_worker, hub, event) == ["consumed", "duplicate"]
    (message,) = notifications.backend.history(hub.hub_id, None).messages
    assert Event.from_json(message.data) == event


@pytest.mark.redis
def test_a_repeated_delivery_is_pushed_once_without_its_claim(app: Flask, notifications: Notifications) -> None:
    # As after a failover that lost the claim: the consumer runs twice for
    # one delivery, and the stream gets the event once.
    hub = notifications.create_hub("PushDedupe")
    consumer = PushConsumer(None, hub.hub_id)
    event = make_event()
    with app.app_context():
        for _ in range(2):
            with delivering(Delivery("d1", hub.hub_id, consumer.name)):
                consumer(event)
        with delivering(Delivery("d2", hub.hub_id, consumer.name)):
            consumer(event)
        consumer(event)  # outside a delivery, nothing to dedupe on
    messages = notifications.backend.history(hub.hub_id, None).messages
    assert len(messages) == 3
    assert all(Event.from_json(m.data) == event for m in messages)


def test_a_backend_whose_publish_takes_no_dedupe_key_is_called_without_it() -> None:
    published: list[str] = []

    class OldBackend(MemoryPubSub):  # as docs/migrating.rst ports a 0.1 backend
        def publish(self, channel: str, data: str) -> Message:  # type: ignore[override]
            published.append(data)
            return super().publish(channel, data)

    consumer = PushConsumer(OldBackend(), "hub")
    with Flask(__name__).app_context(), delivering(Delivery("d1", "hub", consumer.name)):
        consumer(make_event())
    assert len(published) == 1


@pytest.mark.redis
def test_unreachable_redis_is_retried_then_dead_lettered(
    app: Flask, notifications: Notifications, celery_worker: WorkerFactory
) -> None:
    app.config["NOTIFICATIONS_MAX_RETRIES"] = 1
    down = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    hub = notifications.create_hub("PushDown")
    hub.register_consumer(PushConsumer(down, hub.hub_id))
    try:
        errors, letter = send_until_dead_letter(notifications, celery_worker, make_event())
    finally:
        down.close()
    assert len(errors) == 2 and all(isinstance(e, BackendError) for e in errors)
    assert "Redis publish failed" in str(errors[0])
    assert letter["attempts"] == 2 and "BackendError" in letter["error"]


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ConsumerError, match="not str"):
        PushConsumer("redis://localhost", "event-hub-x")  # type: ignore[arg-type]
    with pytest.raises(ConsumerError, match="id of the hub"):
        PushConsumer(None, "")


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("flask_notifications.consumers.push_consumer", "PushConsumer"),
        ("flask_notifications.consumers.log_consumer", "LogConsumer"),
        ("flask_notifications.consumers.log_consumer", "LoggingConsumer"),
        ("flask_notifications.consumers.flaskemail_consumer", "FlaskEmailConsumer"),
        ("flask_notifications.consumers.flaskmail_consumer", "FlaskMailConsumer"),
    ],
)
def test_documented_consumer_import_paths(module: str, name: str) -> None:
    import importlib

    assert isinstance(getattr(importlib.import_module(module), name), type)
