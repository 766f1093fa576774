"""InboxConsumer through a real Celery worker, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_notifications import Event, Notifications, signals
from flask_notifications.backends.base import Message
from flask_notifications.errors import ConsumerError, InboxUnavailableError, PermanentConsumerError
from flask_notifications.inbox import BADGE_EVENT_TYPE, Inbox, define_table, define_versions_table
from flask_notifications.inbox.consumer import InboxConsumer
from tests.helpers import WorkerFactory, deliver_twice, wait_for
from tests.helpers.tcp_proxy import TcpProxy
from tests.inbox.conftest import table_name


def make_event(recipients: tuple[str, ...] = ("alice", "bob"), **extra: Any) -> Event:
    return Event(None, "comment", "New comment", "On your post", sender="carol", recipients=recipients, **extra)


@contextmanager
def collected(signal: Any) -> Iterator[list[Event]]:
    """The events ``signal`` is sent with while the block runs."""
    events: list[Event] = []

    def receive(sender: Any, **kwargs: Any) -> None:
        events.append(kwargs["event"])

    signal.connect(receive)
    try:
        yield events
    finally:
        signal.disconnect(receive)


def badges(messages: list[Message]) -> dict[str, int]:
    found: dict[str, int] = {}
    for message in messages:
        data = json.loads(message.data)
        if data["event_type"] == BADGE_EVENT_TYPE:
            (user,) = data["recipients"]
            found[user] = data["unread_count"]
    return found


@pytest.mark.redis
def test_worker_stores_each_recipient_once_and_sends_badges(
    notifications: Notifications, inbox: Inbox, celery_worker: WorkerFactory
) -> None:
    hub = notifications.create_hub("Inbox")
    hub.register_consumer(InboxConsumer())
    subscription = notifications.backend.subscribe()
    subscription.add(hub.hub_id)
    received: list[Message] = []
    try:
        with celery_worker():
            event = make_event(("alice", "bob", "alice"))
            dispatch = notifications.send(event)
            wait_for(lambda: received.extend(subscription.get(0.2)) or len(badges(received)) == 2)
    finally:
        subscription.close()
    assert badges(received) == {"alice": 1, "bob": 1}
    for user in ("alice", "bob"):
        (item,) = inbox.list(user).items
        # Each row names only its own user among the recipients.
        assert item.event == {**event.to_dict(), "recipients": [user]}
        assert item.delivery_id == dispatch.delivery_id


@pytest.mark.redis
def test_redelivered_task_stores_nothing_twice(
    notifications: Notifications, inbox: Inbox, celery_worker: WorkerFactory
) -> None:
    hub = notifications.create_hub("InboxTwice")
    consumer = InboxConsumer()
    # Without the backend's claim, both runs reach the database: only the
    # unique (delivery_id, recipient) key keeps the second from storing.
    consumer.idempotent = False
    hub.register_consumer(consumer)
    event = make_event()
    assert deliver_twice(notifications, celery_worker, hub, event) == ["consumed", "consumed"]
    assert [len(inbox.list(user).items) for user in ("alice", "bob")] == [1, 1]
    assert inbox.unread_count("alice") == 1


@pytest.mark.redis
def test_badge_channel_and_badge_off(notifications: Notifications, inbox: Inbox) -> None:
    other = notifications.create_hub("Badges")
    hub = notifications.create_hub("InboxElsewhere")
    hub.register_consumer(InboxConsumer(badge_channel=other.hub_id))
    quiet = notifications.create_hub("InboxQuiet")
    quiet.register_consumer(InboxConsumer(badge=False))
    assert inbox.badge_channels() == [other.hub_id]
    subscription = notifications.backend.subscribe()
    subscription.add(other.hub_id)
    subscription.add(hub.hub_id)
    received: list[Message] = []
    try:
        inbox.add(make_event(("alice",)), ["alice"], delivery_id="d1")
        wait_for(lambda: received.extend(subscription.get(0.2)) or received)
    finally:
        subscription.close()
    assert [m.channel for m in received] == [other.hub_id]
    assert badges(received) == {"alice": 1}


@pytest.mark.redis
def test_recipients_function(notifications: Notifications, inbox: Inbox, celery_worker: WorkerFactory) -> None:
    hub = notifications.create_hub("InboxFollowers")
    hub.register_consumer(InboxConsumer(recipients=lambda event: [f"follower-of-{event['sender']}"], badge=False))
    with collected(signals.consumer_succeeded) as stored, celery_worker():
        notifications.send(make_event(()))
        wait_for(lambda: stored)
    assert inbox.unread_count("follower-of-carol") == 1
    assert inbox.unread_count("alice") == 0


@pytest.mark.redis
def test_called_directly_the_event_id_is_the_delivery(notifications: Notifications, inbox: Inbox) -> None:
    consumer = InboxConsumer(badge=False)
    event = make_event(("alice",))
    assert consumer(event) and consumer(event)
    (item,) = inbox.list("alice").items
    assert item.delivery_id == event["event_id"]


@pytest.mark.redis
def test_an_invalid_recipient_is_skipped_permanently_and_the_others_are_stored(
    notifications: Notifications, inbox: Inbox
) -> None:
    consumer = InboxConsumer(badge=False)
    with pytest.raises(PermanentConsumerError, match="1 recipient id.*the 2 others were stored"):
        consumer.consume(make_event(("alice", "x" * 256, "bob")))
    assert inbox.unread_counts(["alice", "bob", "x" * 255]) == {"alice": 1, "bob": 1, "x" * 255: 0}


@pytest.mark.redis
def test_recipients_given_as_a_string_are_refused(notifications: Notifications, inbox: Inbox) -> None:
    with pytest.raises(TypeError, match="list of ids"):
        inbox.add(make_event(), "carol", delivery_id="d1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="returned a str"):
        InboxConsumer(recipients=lambda event: event["sender"], badge=False).consume(make_event())
    assert inbox.unread_counts(list("carol")) == dict.fromkeys("carol", 0)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ConsumerError, match="function"):
        InboxConsumer(recipients=["alice"])  # type: ignore[arg-type]
    with pytest.raises(ConsumerError, match="channel"):
        InboxConsumer(badge_channel="")


@pytest.mark.redis
@pytest.mark.postgres
def test_database_down_is_retried_and_nothing_is_lost(
    app: Flask, notifications: Notifications, celery_worker: WorkerFactory, postgres_url: str, unique: str
) -> None:
    proxy = TcpProxy.in_front_of(postgres_url, 5432)
    proxy.refusing.set()  # the database is down: connections are dropped at once
    metadata = sa.MetaData()
    table = define_table(metadata, table_name(unique))
    define_versions_table(metadata, table.name)
    engine = sa.create_engine(postgres_url)
    metadata.create_all(engine)
    app.config["NOTIFICATIONS_INBOX_URL"] = proxy.url_through(postgres_url)
    app.config["NOTIFICATIONS_INBOX_TABLE"] = table.name
    hub = notifications.create_hub("InboxDown")
    hub.register_consumer(InboxConsumer())
    failures: list[BaseException] = []

    def on_failed(sender: Any, exception: BaseException, **kwargs: Any) -> None:
        failures.append(exception)
        if len(failures) == 1:
            proxy.refusing.clear()  # the database comes back after the first failure

    signals.consumer_failed.connect(on_failed)
    try:
        with collected(signals.consumer_succeeded) as done, celery_worker():
            event = make_event()
            delivery_id = notifications.send(event).delivery_id
            wait_for(lambda: done)
        assert len(failures) == 1 and isinstance(failures[0], InboxUnavailableError)
        assert "database failed" in str(failures[0])
        with engine.connect() as conn:
            rows = conn.execute(sa.select(table.c.recipient, table.c.delivery_id).order_by(table.c.recipient)).all()
        assert [tuple(row) for row in rows] == [("alice", delivery_id), ("bob", delivery_id)]
        assert notifications.dead_letters() == []
    finally:
        signals.consumer_failed.disconnect(on_failed)
        notifications.inbox.close()
        proxy.close()
        metadata.drop_all(engine)
        engine.dispose()
