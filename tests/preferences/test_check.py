"""The task layer's one preference check, in one process (eager Celery, the
in-memory backend, SQLite): a consumer that names its channel gets only the
recipients who want it, one that names none gets everyone, and with
``NOTIFICATIONS_PREFERENCES`` off nothing is filtered."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.consumers.apprise_consumer import AppriseConsumer
from flask_notifications.consumers.consumer import Consumer
from flask_notifications.consumers.flaskemail_consumer import FlaskEmailConsumer
from flask_notifications.consumers.log_consumer import LogConsumer, LoggingConsumer
from flask_notifications.consumers.push_consumer import PushConsumer
from flask_notifications.consumers.webpush_consumer import WebPushConsumer
from flask_notifications.inbox.consumer import InboxConsumer
from tests.preferences.conftest import Recording


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[Flask, Notifications]]:
    app = Flask("local")
    app.config.update(
        NOTIFICATIONS_BACKEND="memory",
        CELERY_BROKER_URL="memory://",
        CELERY_TASK_ALWAYS_EAGER=True,
        NOTIFICATIONS_INBOX_URL=f"sqlite:///{tmp_path / 'prefs.sqlite3'}",
        NOTIFICATIONS_PREFERENCES=True,
    )
    notifications = Notifications(app)
    with app.app_context():
        notifications.preferences.create_all()
        yield app, notifications
        notifications.inbox.close()


def test_each_consumer_gets_the_recipients_of_its_channel(
    local: tuple[Flask, Notifications], caplog: pytest.LogCaptureFixture
) -> None:
    app, notifications = local
    hub = notifications.create_hub("news")
    sms, email, everyone = Recording("sms"), Recording("email"), Recording(None)
    for consumer in (sms, email, everyone):
        hub.register_consumer(consumer)
    notifications.preferences.define(hub, defaults={"sms": False})
    notifications.preferences.set("bob", hub, "sms", True)
    notifications.preferences.set("carol", hub, "email", False)

    notifications.send(Event(None, "post", "Hi", "", recipients=["alice", "bob", "carol"]))
    assert [e["recipients"] for e in sms.got] == [["bob"]]
    assert [e["recipients"] for e in email.got] == [["alice", "bob"]]
    assert [e["recipients"] for e in everyone.got] == [["alice", "bob", "carol"]]

    # Nobody left: no effect for that consumer, and a line in the log.
    with caplog.at_level(logging.INFO, logger="flask_notifications.worker.tasks"):
        notifications.send(Event(None, "post", "Hi", "", recipients=["carol"]))
    assert len(sms.got) == 1 and len(email.got) == 1 and len(everyone.got) == 2
    opted = [r for r in caplog.records if "opted out" in r.getMessage()]
    assert len(opted) == 2 and {r.levelno for r in opted} == {logging.INFO}

    # Off: nothing is filtered, as before preferences existed.
    app.config["NOTIFICATIONS_PREFERENCES"] = False
    notifications.send(Event(None, "post", "Hi", "", recipients=["carol"]))
    assert [e["recipients"] for e in sms.got][-1] == ["carol"]


def test_the_predefined_consumers_name_their_channels() -> None:
    channels: dict[type[Consumer], str | None] = {
        PushConsumer: "stream",
        FlaskEmailConsumer: "email",
        InboxConsumer: "inbox",
        WebPushConsumer: "webpush",
        AppriseConsumer: "apprise",
        LogConsumer: None,
        LoggingConsumer: None,
    }
    assert {cls: cls.channel for cls in channels} == channels
