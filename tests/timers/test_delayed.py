"""``Delayed``: the consumer runs after the delay, for the recipients the
condition does not skip; the built-in condition reads the inbox; a cancelled
delay does nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from flask_notifications import Event, EventConsumer, Notifications
from flask_notifications.consumers import Delayed
from flask_notifications.errors import ConsumerError
from flask_notifications.filters import WithEventType
from flask_notifications.inbox.consumer import InboxConsumer
from flask_notifications.timers import read_in_inbox
from flask_notifications.worker.delivery import current_delivery
from tests.timers.conftest import Collect, ticked_until


def test_the_consumer_runs_after_the_delay_once(eager: tuple[Flask, Notifications]) -> None:
    app, notifications = eager
    inner = Collect()
    notifications.create_hub("h").register_consumer(Delayed(inner, after=0.2))
    event = Event(None, "t", "Later", "", recipients=["alice"])
    notifications.send(event)
    assert inner.events == [] and notifications.timers.pending() == 1
    ticked_until(notifications, lambda: inner.events)
    assert [received["event_id"] for received in inner.events] == [event["event_id"]]
    assert notifications.timers.pending() == 0


def test_recipients_the_condition_holds_for_are_skipped(eager: tuple[Flask, Notifications]) -> None:
    app, notifications = eager
    inner = Collect()
    handled = {"bob"}
    notifications.create_hub("h").register_consumer(
        Delayed(inner, after=0.1, unless=lambda event, recipient: recipient in handled)
    )
    notifications.send(Event(None, "t", "Some", "", recipients=["alice", "bob"]))
    notifications.send(Event(None, "t", "None", "", recipients=["bob"]))
    ticked_until(notifications, lambda: notifications.timers.pending() == 0)
    assert [(event["title"], event["recipients"]) for event in inner.events] == [("Some", ["alice"])]


def test_a_cancelled_delay_does_nothing(eager: tuple[Flask, Notifications]) -> None:
    app, notifications = eager
    inner = Collect()
    delayed = Delayed(inner, after=0.2)
    notifications.create_hub("h").register_consumer(delayed)
    kept = notifications.send(Event(None, "t", "Kept", ""))
    cancelled = notifications.send(Event(None, "t", "Cancelled", ""))
    by_consumer = notifications.send(Event(None, "t", "Cancelled too", ""))
    assert notifications.timers.cancel(cancelled) == 1
    assert notifications.timers.cancel(cancelled) == 0
    assert delayed.cancel(str(by_consumer.delivery_id)) is True
    ticked_until(notifications, lambda: inner.events)
    assert [event["title"] for event in inner.events] == ["Kept"]
    assert kept.delivery_id is not None


class CancelFirst(EventConsumer):
    """Cancels the Delayed timers of the delivery it runs in, as an
    application that resolved the cause before the Delayed's task ran."""

    def __init__(self, notifications: Notifications) -> None:
        super().__init__()
        self.notifications = notifications
        self.cancelled: list[int] = []

    def consume(self, event: Event) -> None:
        delivery = current_delivery()
        assert delivery is not None
        self.cancelled.append(self.notifications.timers.cancel(delivery.delivery_id))


def test_a_cancel_before_the_timer_is_set_holds(eager: tuple[Flask, Notifications]) -> None:
    app, notifications = eager
    inner = Collect()
    hub = notifications.create_hub("h").filter_by(WithEventType("t"))
    # Eager tasks run in registration order: the cancel runs before the
    # Delayed's task sets its timer.
    canceller = CancelFirst(notifications)
    hub.register_consumer(canceller)
    hub.register_consumer(Delayed(inner, after=0.2))
    notifications.send(Event(None, "t", "Cancelled before set", ""))
    assert canceller.cancelled == [0]  # nothing was set yet
    other = notifications.create_hub("other").filter_by(WithEventType("k"))
    other.register_consumer(Delayed(inner, after=0.2))
    notifications.send(Event(None, "k", "Kept", ""))  # a witness, set after the cancelled one
    ticked_until(notifications, lambda: inner.events)
    assert [event["title"] for event in inner.events] == ["Kept"]


def test_a_cancellation_expires(eager: tuple[Flask, Notifications]) -> None:
    app, notifications = eager
    app.config["NOTIFICATIONS_IDEMPOTENCY_TTL"] = 0.3
    inner = Collect()
    notifications.create_hub("h").register_consumer(Delayed(inner, after=0.1))
    notifications.timers.cancel("a-delivery-not-sent-yet")
    assert notifications.timers.pending() == 1
    ticked_until(notifications, lambda: notifications.timers.pending() == 0)
    assert inner.events == []


def test_unless_read_in_inbox(eager: tuple[Flask, Notifications], tmp_path: Path) -> None:
    app, notifications = eager
    app.config["NOTIFICATIONS_INBOX_URL"] = f"sqlite:///{tmp_path / 'inbox.sqlite3'}"
    notifications.inbox.create_all()
    mail = Collect()
    hub = notifications.create_hub("h")
    hub.register_consumer(InboxConsumer())
    hub.register_consumer(Delayed(mail, after=0.5, unless=read_in_inbox))
    notifications.send(Event(None, "t", "Read in time", "", recipients=["alice", "bob"]))
    notifications.send(Event(None, "t", "Unread", "", recipients=["alice"]))
    (item,) = [item for item in notifications.inbox.list("alice").items if item.event["title"] == "Read in time"]
    notifications.inbox.mark_read("alice", [item.id])
    ticked_until(notifications, lambda: notifications.timers.pending() == 0)
    assert sorted((event["title"], tuple(event["recipients"])) for event in mail.events) == [
        ("Read in time", ("bob",)),
        ("Unread", ("alice",)),
    ]
    notifications.inbox.close()


def test_bad_options_are_refused() -> None:
    with pytest.raises(ConsumerError, match="after is a positive timedelta"):
        Delayed(Collect(), after=-1)
    with pytest.raises(ConsumerError, match="unless is a function"):
        Delayed(Collect(), after=1, unless="read")  # type: ignore[arg-type]


def test_cancel_needs_the_consumer_on_a_hub(eager: tuple[Flask, Notifications]) -> None:
    with pytest.raises(ConsumerError, match="is not registered on any hub"):
        Delayed(Collect(), after=1).cancel("d")


@pytest.mark.parametrize("wrapper", ["delayed", "digest"])
def test_a_wrapper_honours_the_preferences_of_its_inner_consumers_channel(
    eager: tuple[Flask, Notifications], tmp_path: Path, wrapper: str
) -> None:
    """A recipient who turned the inner consumer's channel off sets no timer
    and gets nothing, through ``Delayed`` as through ``Digest``."""
    from flask_notifications.consumers import Digest

    app, notifications = eager
    app.config.update(NOTIFICATIONS_INBOX_URL=f"sqlite:///{tmp_path / 'prefs.sqlite3'}", NOTIFICATIONS_PREFERENCES=True)
    notifications.preferences.create_all()
    mail = Collect()
    mail.channel = "email"
    wrapped = Delayed(mail, after=0.1) if wrapper == "delayed" else Digest(mail, window=0.1)
    assert wrapped.channel == "email"
    hub = notifications.create_hub("h")
    hub.register_consumer(wrapped)
    notifications.preferences.set("bob", hub, "email", False)
    notifications.send(Event(None, "t", "For bob", "", recipients=["bob"]))
    assert notifications.timers.pending() == 0
    notifications.send(Event(None, "t", "For both", "", recipients=["alice", "bob"]))
    ticked_until(notifications, lambda: notifications.timers.pending() == 0 and mail.events)
    assert [event["recipients"] for event in mail.events] == [["alice"]]
    notifications.inbox.close()


def test_a_recipient_who_opts_out_during_the_delay_is_not_sent_to(by_email: tuple[Notifications, Collect]) -> None:
    # The preferences apply to "every delivery that starts" after a change:
    # a delayed send starts when its timer fires.
    notifications, inner = by_email
    notifications.create_hub("h").register_consumer(Delayed(inner, after=0.2))
    notifications.send(Event(None, "t", "Both", "", recipients=["alice", "bob"]))
    notifications.send(Event(None, "t", "Bob", "", recipients=["bob"]))
    notifications.preferences.set("bob", "h", "email", False)
    ticked_until(notifications, lambda: notifications.timers.pending() == 0)
    assert [(event["title"], event["recipients"]) for event in inner.events] == [("Both", ["alice"])]
