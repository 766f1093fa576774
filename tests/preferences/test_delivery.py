"""The one preference check of the consumer tasks, through a real worker
to a real SMTP server (aiosmtpd), on SQLite and PostgreSQL: an opted-out
channel has no effect, a required hub still delivers, a change applies
within ``NOTIFICATIONS_PREFERENCES_MAX_AGE``, and a database that cannot be
read holds the delivery instead of dropping it."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.consumers.flaskemail_consumer import FlaskEmailConsumer
from flask_notifications.filters.with_event_type import WithEventType
from flask_notifications.ops.metric_families import OUTCOMES
from flask_notifications.preferences import Preferences
from flask_notifications.worker.outcome import Outcome
from tests.consumers.test_mail import SmtpServer, configure, smtp_server  # noqa: F401 - the fixture
from tests.helpers import WorkerFactory, wait_for
from tests.preferences.conftest import Recording

pytestmark = [pytest.mark.redis]


def mail_consumer(app: Flask, server: SmtpServer) -> FlaskEmailConsumer:
    configure(app, "flaskemail", server.host, server.port)
    return FlaskEmailConsumer.from_app(app, "noreply@example.org", lambda user: f"{user}@example.org")


def event(title: str, *recipients: str, event_type: str = "post") -> Event:
    return Event(None, event_type, title, "Body", recipients=recipients)


def opt_out_elsewhere(preferences: Preferences, user: str, hub: str, channel: str) -> None:
    """Store a choice as another process would: this process's copy is not told."""
    with preferences.notifications.inbox.engine.begin() as conn:
        row = {"recipient": user, "hub": hub, "channel": channel, "enabled": False}
        conn.execute(preferences.table.insert().values(**row, updated_at=datetime.now(UTC)))


def runs_of(outcomes: list[tuple[str, Any]], task: str) -> list[Any]:
    return [outcome for name, outcome in outcomes if name == task]


def test_opted_out_channel_has_no_effect_and_a_required_hub_delivers(
    app: Flask,
    notifications: Notifications,
    preferences: Preferences,
    celery_worker: WorkerFactory,
    smtp_server: SmtpServer,  # noqa: F811
    outcomes: list[tuple[str, Any]],
) -> None:
    news = notifications.create_hub("news").filter_by(WithEventType("post"))
    news.register_consumer(mail_consumer(app, smtp_server))
    news_mail = news.consumer_names[0]
    inbox = news.register_consumer(Recording("inbox"))
    security = notifications.create_hub("security").filter_by(WithEventType("alert"))
    security.register_consumer(mail_consumer(app, smtp_server))
    preferences.define(security, required=True)
    preferences.set("bob", news, "email", False)
    # A choice stored before the hub became required does not count.
    opt_out_elsewhere(preferences, "bob", "security", "email")

    with celery_worker():
        notifications.send(event("to both", "alice", "bob"))
        (first,) = wait_for(lambda: smtp_server.received)
        notifications.send(event("to bob", "bob"))
        wait_for(lambda: Outcome.OPTED_OUT in runs_of(outcomes, news_mail))
        notifications.send(event("alert", "bob", event_type="alert"))
        wait_for(lambda: len(smtp_server.received) == 2)
        # No recipients: a broadcast, which preferences never filter.
        notifications.send(event("to everyone"))
        wait_for(lambda: len(inbox.got) == 3)

    assert first.rcpt_tos == ["alice@example.org"] and first.message["Subject"] == "to both"
    assert smtp_server.received[1].rcpt_tos == ["bob@example.org"]
    assert smtp_server.received[1].message["Subject"] == "alert"
    # The inbox channel, which bob did not turn off, got every event whole
    # (in any order: its runs were not waited for one by one).
    assert sorted((e["title"], e["recipients"]) for e in inbox.got) == [
        ("to bob", ["bob"]),
        ("to both", ["alice", "bob"]),
        ("to everyone", []),
    ]
    assert runs_of(outcomes, news_mail).count(Outcome.OPTED_OUT) == 1
    # The metric of consumer runs counts it under its own label.
    assert Outcome.OPTED_OUT in OUTCOMES and Outcome.OPTED_OUT.value == "opted-out"


def test_a_change_made_elsewhere_applies_within_max_age(
    app: Flask,
    notifications: Notifications,
    preferences: Preferences,
    celery_worker: WorkerFactory,
    smtp_server: SmtpServer,  # noqa: F811
    outcomes: list[tuple[str, Any]],
) -> None:
    app.config["NOTIFICATIONS_PREFERENCES_MAX_AGE"] = 1.0
    hub = notifications.create_hub("news")
    hub.register_consumer(mail_consumer(app, smtp_server))
    (task,) = hub.consumer_names
    with celery_worker():
        notifications.send(event("before", "alice"))
        wait_for(lambda: smtp_server.received)
        opt_out_elsewhere(preferences, "alice", "news", "email")
        changed = time.monotonic()
        while time.monotonic() < changed + 1.0:
            time.sleep(0.05)
        # Every delivery that starts once the max age has passed honours it.
        notifications.send(event("after", "alice"))
        wait_for(lambda: Outcome.OPTED_OUT in runs_of(outcomes, task))
    assert [r.message["Subject"] for r in smtp_server.received] == ["before"]


def test_a_database_outage_holds_the_delivery(
    app: Flask,
    notifications: Notifications,
    preferences: Preferences,
    celery_worker: WorkerFactory,
    smtp_server: SmtpServer,  # noqa: F811
    outcomes: list[tuple[str, Any]],
) -> None:
    """The preferences cannot be read (here: their table is gone): the task
    is retried without spending the consumer's retries, so with none allowed
    the delivery is neither dropped nor dead-lettered, and it goes out once
    the database answers."""
    from celery.exceptions import Retry

    app.config["NOTIFICATIONS_MAX_RETRIES"] = 0
    hub = notifications.create_hub("news")
    hub.register_consumer(mail_consumer(app, smtp_server))
    (task,) = hub.consumer_names
    # A consumer that names no channel does not wait for the preferences.
    logs = hub.register_consumer(Recording(None))
    preferences.drop_all()
    with celery_worker():
        notifications.send(event("held", "alice"))
        wait_for(lambda: len([o for o in runs_of(outcomes, task) if isinstance(o, Retry)]) >= 2)
        assert smtp_server.received == [] and notifications.dead_letters() == []
        wait_for(lambda: logs.got)
        preferences.create_all()
        (received,) = wait_for(lambda: smtp_server.received)
    assert received.message["Subject"] == "held" and notifications.dead_letters() == []
