"""An event sent to an integer user id lands in that user's inbox (issue 23)."""

from __future__ import annotations

import pytest

from flask_notifications import Event, Notifications
from flask_notifications.consumers.inbox_consumer import InboxConsumer
from flask_notifications.inbox import Inbox

pytestmark = pytest.mark.redis


def test_inbox_consumer_stores_an_event_sent_to_an_integer_id(notifications: Notifications, inbox: Inbox) -> None:
    notifications.get_celery().conf.task_always_eager = True
    hub = notifications.create_hub("Inbox")
    hub.register_consumer(InboxConsumer())
    event = Event(None, "comment", "New comment", "On your post", recipients=[42])
    notifications.send(event)
    (item,) = inbox.list(42).items
    assert item.event["event_id"] == event["event_id"]
    assert inbox.unread_count("42") == 1
