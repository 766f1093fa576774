from __future__ import annotations

import pytest
from celery import Celery
from flask import Flask

from flask_notifications import Notifications, current_notifications
from flask_notifications.backends.memory import MemoryPubSub
from flask_notifications.backends.redis import RedisPubSub
from flask_notifications.consumers.consumer import EventConsumer
from flask_notifications.consumers.push_consumer import PushConsumer
from flask_notifications.errors import ConfigurationError, ConsumerError, HubError
from flask_notifications.event import Event
from flask_notifications.event_hub import current_notifications as hub_current_notifications
from flask_notifications.filters.with_event_type import WithEventType


class Recorder(EventConsumer):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []

    def consume(self, event: Event) -> None:
        self.events.append(event)


@pytest.mark.redis
def test_init_app_twice_raises(app: Flask) -> None:
    ext = Notifications()
    ext.init_app(app)
    assert app.extensions["notifications"] is ext
    assert not hasattr(ext, "app")
    with pytest.raises(RuntimeError, match="already initialised"):
        ext.init_app(app)


def test_used_without_init_app() -> None:
    ext = Notifications()
    app = Flask("bare")
    with app.app_context(), pytest.raises(RuntimeError, match="Did you forget to call init_app"):
        ext.send(Event(None, "t", "t", "b"))
    with app.app_context(), pytest.raises(RuntimeError, match="Did you forget to call init_app"):
        current_notifications.hubs  # noqa: B018


@pytest.mark.redis
def test_current_notifications(app: Flask, notifications: Notifications) -> None:
    assert current_notifications.hubs == {}
    assert current_notifications._get_current_object() is notifications  # type: ignore[attr-defined]
    assert hub_current_notifications is current_notifications


def test_current_notifications_outside_context() -> None:
    with pytest.raises(RuntimeError, match="application context"):
        current_notifications.hubs  # noqa: B018


@pytest.mark.redis
def test_celery_is_built_json_only(app: Flask, notifications: Notifications) -> None:
    celery = notifications.get_celery(app)
    assert celery.conf.accept_content == ["json"]
    assert celery.conf.task_serializer == "json"
    assert app.extensions["flask-celeryext"].celery is celery
    assert celery.conf.task_default_queue == app.config["CELERY_TASK_DEFAULT_QUEUE"]


@pytest.mark.redis
def test_given_celery_and_broker_are_used(app: Flask, redis_client: object) -> None:
    celery = Celery("given", set_as_current=False)
    ext = Notifications()
    ext.init_app(app=app, celery=celery, broker=redis_client)
    assert ext.get_celery(app) is celery
    backend = ext.get_backend(app)
    assert isinstance(backend, RedisPubSub) and backend.client is redis_client
    assert "flask_notifications.dispatch" in celery.tasks


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"BACKEND": "flask_notifications.backends.memory.MemoryPubSub"}, MemoryPubSub),
        ({"NOTIFICATIONS_BACKEND": "memory", "BACKEND": "redis"}, MemoryPubSub),
        ({"NOTIFICATIONS_BACKEND": "flask_notifications.backends.memory:MemoryPubSub"}, MemoryPubSub),
        ({"NOTIFICATIONS_BACKEND": MemoryPubSub}, MemoryPubSub),
        ({}, RedisPubSub),
    ],
)
def test_backend_config(config: dict[str, object], expected: type) -> None:
    app = Flask("cfg")
    app.config.update(config)
    ext = Notifications(app)
    assert type(ext.get_backend(app)) is expected


def test_backend_instance_config() -> None:
    backend = MemoryPubSub()
    app = Flask("cfg")
    app.config["NOTIFICATIONS_BACKEND"] = backend
    assert Notifications(app).get_backend(app) is backend


@pytest.mark.parametrize("name", ["nope", "os.path.join", "flask_notifications.nothing.Here", ""])
def test_unknown_backend_lists_choices(name: str) -> None:
    app = Flask("cfg")
    app.config["NOTIFICATIONS_BACKEND"] = name
    with pytest.raises(ConfigurationError) as info:
        Notifications(app)
    assert "amqp, memory, redis" in str(info.value)


@pytest.mark.redis
def test_hub_ids_are_deterministic(notifications: Notifications) -> None:
    hub = notifications.create_hub("TestHub")
    assert hub.hub_id == "event-hub-TestHub" != hub.label
    assert notifications.create_hub("TestHub") is hub
    assert notifications.get_hub("event-hub-TestHub") is hub
    assert list(notifications.hubs) == ["event-hub-TestHub"]
    with pytest.raises(HubError, match="no hub"):
        notifications.get_hub("event-hub-Other")


@pytest.mark.redis
@pytest.mark.parametrize("label", ["", "a b", "a/b", "x" * 101, None, "é\n"])
def test_invalid_labels(notifications: Notifications, label: object) -> None:
    with pytest.raises(HubError, match="Invalid hub label"):
        notifications.create_hub(label)  # type: ignore[arg-type]


@pytest.mark.redis
def test_register_and_deregister_every_form(notifications: Notifications) -> None:
    hub = notifications.create_hub("Forms")

    @hub.register_consumer
    def plain(event: Event) -> None: ...

    @hub.register_consumer(celery_task_name="app.write_to_file")
    def write_to_file(event: Event) -> None: ...

    @hub.register_consumer(name="app.named")
    def named(event: Event) -> None: ...

    instance = Recorder()
    assert hub.register_consumer(instance) is instance
    second = Recorder()
    hub.register_consumer(second)

    assert hub.consumer_names == [
        f"{__name__}.test_register_and_deregister_every_form.<locals>.plain",
        "app.write_to_file",
        "app.named",
        "flask_notifications.event-hub-Forms.Recorder",
        "flask_notifications.event-hub-Forms.Recorder-2",
    ]
    for consumer in (plain, write_to_file, named, instance, second):
        assert hub.is_registered(consumer)
    celery = notifications.celery
    assert all(name in celery.tasks for name in hub.consumer_names)

    hub.deregister_consumer(write_to_file)
    hub.deregister_consumer(instance)
    assert not hub.is_registered(write_to_file) and not hub.is_registered(instance)
    assert len(hub.consumers) == 3
    with pytest.raises(ConsumerError, match="not registered"):
        hub.deregister_consumer(instance)
    with pytest.raises(ConsumerError, match="already has a consumer named"):
        hub.register_consumer(name="app.named")(lambda event: None)
    with pytest.raises(ConsumerError, match="already registered"):
        hub.register_consumer(second)
    with pytest.raises(ConsumerError, match="not int"):
        hub.register_consumer(3)


@pytest.mark.redis
def test_push_consumers_on_two_hubs_get_their_own_tasks(notifications: Notifications) -> None:
    one = notifications.create_hub("One")
    two = notifications.create_hub("Two")
    one.register_consumer(PushConsumer(None, one.hub_id))
    two.register_consumer(PushConsumer(None, two.hub_id))
    assert one.consumer_names != two.consumer_names


@pytest.mark.redis
def test_filter_by_checks_type(notifications: Notifications) -> None:
    hub = notifications.create_hub("F")
    assert hub.filter_by(WithEventType("x")) is hub
    with pytest.raises(TypeError):
        hub.filter_by(lambda e: True)  # type: ignore[arg-type]


@pytest.mark.redis
def test_hubs_registered_before_init_app_get_tasks(app: Flask) -> None:
    ext = Notifications()
    hub = ext.create_hub("Early")

    @hub.register_consumer(name="early.consumer")
    def early(event: Event) -> None: ...

    ext.init_app(app)
    assert "early.consumer" in ext.get_celery(app).tasks
