"""PushConsumer through a real worker and the real Redis: the pushed event
reaches a live subscription of the hub (what the SSE endpoint reads) and its
replay history, once however often the task runs."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import redis
from celery.signals import task_postrun
from flask import Flask

from flask_notifications import Notifications, signals
from flask_notifications.consumers.push_consumer import PushConsumer
from flask_notifications.errors import BackendError, ConsumerError
from flask_notifications.event import Event
from flask_notifications.pubsub.backend import Message

from .conftest import WorkerFactory
from .helpers import wait_for


def make_event(title: str = "Title", **fields: Any) -> Event:
    return Event(None, "test", title, "Body ✓", sender="system", **fields)


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


def test_task_run_twice_pushes_once(notifications: Notifications, celery_worker: WorkerFactory) -> None:
    hub = notifications.create_hub("PushOnce")
    hub.register_consumer(PushConsumer(None, hub.hub_id))
    (task_name,) = hub.consumer_names
    task = notifications.celery.tasks[task_name]
    event = make_event()
    outcomes: list[Any] = []

    def on_postrun(sender: Any = None, retval: Any = None, **kwargs: Any) -> None:
        if sender is not None and sender.name == task_name:
            outcomes.append(retval)

    task_postrun.connect(on_postrun, weak=False)
    try:
        with celery_worker(concurrency=1):
            for _ in range(2):
                task.apply_async(args=(hub.hub_id, event.to_json()))
            wait_for(lambda: len(outcomes) == 2)
    finally:
        task_postrun.disconnect(on_postrun)
    assert outcomes == ["consumed", "duplicate"]
    (message,) = notifications.backend.history(hub.hub_id, None).messages
    assert Event.from_json(message.data) == event


def test_unreachable_redis_is_retried_then_dead_lettered(
    app: Flask, notifications: Notifications, celery_worker: WorkerFactory
) -> None:
    app.config["NOTIFICATIONS_MAX_RETRIES"] = 1
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    down = redis.Redis(host="127.0.0.1", port=closed, socket_connect_timeout=1)
    hub = notifications.create_hub("PushDown")
    hub.register_consumer(PushConsumer(down, hub.hub_id))
    errors: list[BaseException] = []

    def on_failed(sender: Flask, exception: BaseException, **kwargs: Any) -> None:
        errors.append(exception)

    signals.consumer_failed.connect(on_failed)
    try:
        with celery_worker():
            notifications.send(make_event())
            (letter,) = wait_for(notifications.dead_letters)
    finally:
        signals.consumer_failed.disconnect(on_failed)
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
