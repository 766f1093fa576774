"""Integers are recipients, the same way everywhere (issue 23): an event
takes an integer user id as its decimal string, as the filters and the inbox
do, so a Flask-Login app with integer ids can send to current_user.id."""

from __future__ import annotations

import pytest
from flask import Flask

from flask_notifications import Event, InvalidEventError, Notifications
from flask_notifications.consumers.consumer import EventConsumer
from flask_notifications.filters import WithRecipient, WithRecipients


def test_event_takes_integer_recipients_as_decimal_strings() -> None:
    event = Event(None, "comment", "Title", "Body", recipients=[42, "alice"])
    assert event["recipients"] == ["42", "alice"]
    assert Event.from_json(event.to_json()) == event
    assert Event.from_dict({"event_type": "comment", "title": "T", "recipients": [7]})["recipients"] == ["7"]


@pytest.mark.parametrize("recipient", [True, 1.5, None, {"id": 1}])
def test_other_recipients_are_refused(recipient: object) -> None:
    with pytest.raises(InvalidEventError, match="'recipients' must hold string or integer ids only") as info:
        Event(None, "comment", "Title", "Body", recipients=[recipient])  # type: ignore[list-item]
    assert info.value.field == "recipients"


def test_filters_match_events_sent_to_integer_ids() -> None:
    event = Event(None, "comment", "Title", "Body", recipients=[42, 43])
    assert WithRecipient(42).filter(event)
    assert WithRecipient("42").filter(event)
    assert not WithRecipient(4).filter(event)
    assert WithRecipients([43, 42]).filter(event)


class Collect(EventConsumer):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[Event] = []

    def consume(self, event: Event) -> None:
        self.events.append(event)


def test_flask_login_style_app_sends_to_an_integer_id() -> None:
    app = Flask("integer_ids")
    app.config.update(
        NOTIFICATIONS_BACKEND="memory", CELERY_BROKER_URL="memory://", CELERY_TASK_ALWAYS_EAGER=True, TESTING=True
    )
    notifications = Notifications(app)
    hub = notifications.create_hub("Users")
    hub.filter_by(WithRecipient(42))
    consumer = Collect()
    hub.register_consumer(consumer)
    current_user_id = 42

    @app.post("/comment")
    def comment() -> dict[str, str]:
        event = Event(None, "comment", "New comment", "On your post", recipients=[current_user_id])
        notifications.send(event)
        return {"sent": event["event_id"]}

    response = app.test_client().post("/comment")
    assert response.status_code == 200
    (received,) = consumer.events
    assert received["event_id"] == response.json["sent"]
    assert received["recipients"] == ["42"]
