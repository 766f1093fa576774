"""Every import path the original documentation prints still imports."""

from __future__ import annotations

import importlib

import pytest

PATHS = [
    ("flask_notifications", "Notifications"),
    ("flask_notifications", "current_notifications"),
    ("flask_notifications.event_hub", "current_notifications"),
    ("flask_notifications.event_hub", "EventHub"),
    ("flask_notifications.event", "Event"),
    ("flask_notifications.event_filter", "EventFilter"),
    ("flask_notifications.consumers.consumer", "Consumer"),
    ("flask_notifications.consumers.push_consumer", "PushConsumer"),
    ("flask_notifications.pubsub.backend", "Backend"),
    ("flask_notifications.pubsub.redis_pubsub", "RedisPubSub"),
    ("flask_notifications.pubsub.memory_pubsub", "MemoryPubSub"),
    ("flask_notifications.pubsub.amqp_pubsub", "AmqpPubSub"),
    ("flask_notifications.pubsub", "RedisPubSub"),
    ("flask_notifications.filters.always", "Always"),
    ("flask_notifications.filters.before_date", "BeforeDate"),
    ("flask_notifications.filters.after_date", "AfterDate"),
    ("flask_notifications.filters.expired", "Expired"),
    ("flask_notifications.filters.not_filter", "Not"),
    ("flask_notifications.filters.with_event_type", "WithEventType"),
    ("flask_notifications.filters.with_id", "WithId"),
    ("flask_notifications.filters.with_sender", "WithSender"),
    ("flask_notifications.filters.with_recipients", "WithRecipients"),
    ("flask_notifications.filters.with_recipient", "WithRecipient"),
    ("flask_notifications.filters.with_tag", "WithTag"),
    ("flask_notifications.filters.with_field", "WithField"),
    ("flask_notifications.signals", "event_sent"),
    ("flask_notifications.errors", "NotificationsError"),
    # Paths that the documentation of 1.0 prints.
    ("flask_notifications.consumers.log_consumer", "LogConsumer"),
    ("flask_notifications.consumers.flaskmail_consumer", "FlaskMailConsumer"),
    ("flask_notifications.consumers.flaskemail_consumer", "FlaskEmailConsumer"),
    ("flask_notifications.consumers.inbox_consumer", "InboxConsumer"),
    ("flask_notifications.delivery", "current_delivery"),
    ("flask_notifications.gunicorn", "post_worker_init"),
    ("flask_notifications.gunicorn", "child_exit"),
    ("flask_notifications.metrics", "make_wsgi_app"),
    ("flask_notifications.health", "blueprint"),
    ("flask_notifications.inbox", "inbox_blueprint"),
    ("flask_notifications.ext", "Notifications"),
]

#: What the README's hello world and usage import from the package itself.
ROOT_NAMES = [
    "Notifications",
    "Event",
    "EventHub",
    "PushConsumer",
    "LogConsumer",
    "WithEventType",
    "WithRecipient",
    "Not",
    "current_notifications",
    "current_delivery",
    "signals",
]


@pytest.mark.parametrize(("module", "name"), PATHS)
def test_documented_import_path(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is not None


@pytest.mark.parametrize("name", ROOT_NAMES)
def test_the_root_package_exports(name: str) -> None:
    import flask_notifications

    assert name in flask_notifications.__all__
    assert getattr(flask_notifications, name) is not None


def test_reexports_are_the_same_objects() -> None:
    from flask_notifications import PushConsumer, WithRecipient, current_notifications
    from flask_notifications.backends.redis import RedisPubSub
    from flask_notifications.consumers.push_consumer import PushConsumer as pushed
    from flask_notifications.event_hub import current_notifications as hub_proxy
    from flask_notifications.filters.with_recipient import WithRecipient as with_recipient
    from flask_notifications.pubsub.redis_pubsub import RedisPubSub as redis_01

    assert PushConsumer is pushed and WithRecipient is with_recipient
    assert current_notifications is hub_proxy
    assert RedisPubSub is redis_01


def test_register_consumer_is_documented_on_hubs() -> None:
    """``@hub.register_consumer(celery_task_name=...)``, as the docs print it,
    registers the function under that task name and gives it back; the
    function gets the event's JSON, as in 0.1."""
    from flask_notifications import Notifications
    from flask_notifications.event import Event
    from flask_notifications.event_hub import EventHub

    hub = Notifications().create_hub("Documented")
    assert isinstance(hub, EventHub)
    seen: list[str] = []

    def write_to_file(event_json: str) -> None:
        seen.append(event_json)

    assert hub.register_consumer(celery_task_name="yourapp.write_to_file")(write_to_file) is write_to_file
    assert hub.consumer_names == ["yourapp.write_to_file"]
    event = Event(None, "test", "Title", "Body")
    hub.get_consumer("yourapp.write_to_file")(event)
    assert [Event.from_json(text) for text in seen] == [event]


def test_package_is_typed() -> None:
    from importlib.resources import files

    assert files("flask_notifications").joinpath("py.typed").is_file()
