"""``notifications.publish(hub, event)`` pushes one event straight to the
hub's stream through the backend, without Celery (issue 23, the flask-sse
use case): no broker is reachable here, and the stream still receives it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask

from flask_notifications import Event, HubError, InvalidEventError, Notifications
from tests.helpers import free_port, make_config, wait_for

pytestmark = pytest.mark.redis


@pytest.fixture
def no_broker_app(redis_url: str, unique: str) -> Flask:
    app = Flask("publish")
    # A broker URL nothing answers at: publish() must not need it.
    app.config.update(make_config(redis_url, unique, CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0"))
    return app


def test_publish_reaches_the_stream_without_celery(no_broker_app: Flask) -> None:
    notifications = Notifications(no_broker_app)
    hub = notifications.create_hub("Chat")
    event = Event(None, "chat", "Hi", "there", recipients=[7])
    with no_broker_app.app_context(), notifications.sse_notifier_for(hub.hub_id) as stream:
        message = notifications.publish(hub, event)
        assert message is not None
        frames = iter(stream)
        frame = wait_for(lambda: (found := next(frames)) and b"data: " in found and found)
    assert f"id: {message.id}\n".encode() in frame
    assert f"data: {event.to_json()}\n".encode() in frame
    # It is in the replay history too, as a PushConsumer's publish would be.
    with no_broker_app.app_context():
        assert [m.id for m in notifications.backend.history(hub.hub_id, "0-0").messages] == [message.id]
    notifications.get_backend(no_broker_app).close()


def test_publish_takes_a_label_and_refuses_what_send_refuses(no_broker_app: Flask) -> None:
    notifications = Notifications(no_broker_app)
    hub = notifications.create_hub("Chat")
    with no_broker_app.app_context():
        assert notifications.publish("Chat", {"event_type": "chat", "title": "By label"}) is not None
        assert notifications.publish(hub.hub_id, {"event_type": "chat", "title": "By id"}) is not None
        with pytest.raises(HubError):
            notifications.publish("Nope", {"event_type": "chat", "title": "x"})
        with pytest.raises(InvalidEventError):
            notifications.publish(hub, {"title": "no type"})
        expired = Event(None, "chat", "Old", "", expiration_datetime=datetime.now(UTC) - timedelta(seconds=1))
        assert notifications.publish(hub, expired) is None
    notifications.get_backend(no_broker_app).close()
