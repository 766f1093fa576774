"""``Digest``: one event per (recipient, key) and window, with every event
once and in order; the first at once when asked; a window kept open while it
collects; a fire whose end was lost does not repeat its effect."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.consumers import Digest
from flask_notifications.database import create_engine
from flask_notifications.errors import BackendError, ConsumerError
from flask_notifications.ledger.base import DigestAdd, DueTimer, Ledger
from flask_notifications.ledger.memory import MemoryLedger
from flask_notifications.ledger.redis import RedisLedger
from flask_notifications.ledger.sql import SqlLedger
from flask_notifications.worker.delivery import Delivery, delivering
from tests.helpers import delete_keys, wait_for
from tests.ledger.conftest import drop_sql, postgres_engine
from tests.timers.conftest import Collect, ticked_until


def _send(notifications: Notifications, title: str, *recipients: str, **fields: object) -> Event:
    event = Event(None, "comment", title, "", recipients=list(recipients), **fields)
    notifications.send(event)
    return event


def test_a_window_is_flushed_as_one_event_per_recipient(eager: tuple[Flask, Notifications]) -> None:
    app, notifications = eager
    inner = Collect()
    notifications.create_hub("h").register_consumer(Digest(inner, window=0.3))
    sent = [_send(notifications, f"e{n}", "alice", "bob") for n in range(3)]
    sent.append(_send(notifications, "only alice", "alice"))
    assert inner.events == []  # collected, not sent
    assert notifications.timers.pending() == 2  # a window per recipient
    ticked_until(notifications, lambda: len(inner.events) == 2)
    digests = {event["recipients"][0]: event for event in inner.events}
    assert set(digests) == {"alice", "bob"}
    alice = digests["alice"]
    assert alice["event_type"] == "digest"
    assert alice["title"] == "4 new notifications"
    assert [item["event_id"] for item in alice["events"]] == [event["event_id"] for event in sent]
    assert [item["title"] for item in digests["bob"]["events"]] == ["e0", "e1", "e2"]
    assert notifications.timers.pending() == 0  # nothing waits: the windows closed
    _send(notifications, "later", "alice")
    ticked_until(notifications, lambda: len(inner.events) == 3)
    assert [item["title"] for item in inner.events[-1]["events"]] == ["later"]


def test_the_key_separates_digests_and_names_them(eager: tuple[Flask, Notifications]) -> None:
    app, notifications = eager
    inner = Collect()
    hub = notifications.create_hub("h")
    hub.register_consumer(Digest(inner, window=timedelta(seconds=0.2), key="project", title="{count} in {key}"))
    _send(notifications, "a1", "alice", project="a")
    _send(notifications, "b1", "alice", project="b")
    _send(notifications, "a2", "alice", project="a")
    ticked_until(notifications, lambda: len(inner.events) == 2)
    titles = sorted(event["title"] for event in inner.events)
    assert titles == ["1 in b", "2 in a"]
    assert {event["digest_key"] for event in inner.events} == {"a", "b"}


def test_send_first_at_once_then_one_digest_per_window(eager: tuple[Flask, Notifications]) -> None:
    app, notifications = eager
    inner = Collect()
    notifications.create_hub("h").register_consumer(Digest(inner, window=0.3, send_first_at_once=True))
    _send(notifications, "first", "alice")
    assert [event["title"] for event in inner.events] == ["first"]  # at once
    _send(notifications, "second", "alice")
    _send(notifications, "third", "alice")
    ticked_until(notifications, lambda: len(inner.events) == 2)
    assert [item["title"] for item in inner.events[1]["events"]] == ["second", "third"]
    # The window stays open after a flush that sent something: the next event is digested.
    _send(notifications, "fourth", "alice")
    ticked_until(notifications, lambda: len(inner.events) == 3)
    assert inner.events[2]["event_type"] == "digest"
    # A window that collected nothing closes; the next event goes at once again.
    ticked_until(notifications, lambda: notifications.timers.pending() == 0)
    _send(notifications, "fifth", "alice")
    assert inner.events[-1]["title"] == "fifth" and inner.events[-1]["event_type"] == "comment"


def test_a_failing_flush_is_retried_and_sent_once(eager: tuple[Flask, Notifications]) -> None:
    app, notifications = eager
    inner = Collect(failures=2)
    notifications.create_hub("h").register_consumer(Digest(inner, window=0.1))
    _send(notifications, "e", "alice")
    ticked_until(notifications, lambda: len(inner.events) == 1)
    ticked_until(notifications, lambda: notifications.timers.pending() == 0)
    assert len(inner.events) == 1


class _LosesTheFirstFinish(MemoryLedger):
    """A ledger whose first ``digest_finish`` fails, as if the worker died
    after the flush's effect and before the end of its window."""

    lost = False

    def digest_finish(self, *args: object, **kwargs: object) -> bool:
        if not self.lost:
            self.lost = True
            raise BackendError("the ledger went away")
        return super().digest_finish(*args, **kwargs)  # type: ignore[arg-type]


def test_a_flush_fired_again_after_its_effect_does_not_repeat_it() -> None:
    app = Flask("timers")
    app.config.update(
        NOTIFICATIONS_BACKEND="memory",
        NOTIFICATIONS_LEDGER=_LosesTheFirstFinish(),
        CELERY_BROKER_URL="memory://",
        CELERY_TASK_ALWAYS_EAGER=True,
        NOTIFICATIONS_RETRY_BACKOFF=0.01,
        NOTIFICATIONS_RETRY_BACKOFF_MAX=0.05,
    )
    notifications = Notifications(app)
    inner = Collect()
    notifications.create_hub("h").register_consumer(Digest(inner, window=0.1))
    with app.app_context():
        _send(notifications, "e", "alice")
        ticked_until(notifications, lambda: notifications.get_ledger().lost)  # type: ignore[attr-defined]
        ticked_until(notifications, lambda: notifications.timers.pending() == 0)
    assert len(inner.events) == 1


def test_a_permanent_failure_drops_the_window(
    eager: tuple[Flask, Notifications], caplog: pytest.LogCaptureFixture
) -> None:
    from flask_notifications.errors import PermanentConsumerError

    app, notifications = eager
    inner = Collect(failures=1, error=PermanentConsumerError)
    notifications.create_hub("h").register_consumer(Digest(inner, window=0.1))
    _send(notifications, "e", "alice")
    ticked_until(notifications, lambda: notifications.timers.pending() == 0)
    assert inner.events == []
    assert "failed permanently and is dropped" in caplog.text
    _send(notifications, "next", "alice")  # a new window, which is sent
    ticked_until(notifications, lambda: inner.events)
    assert [item["title"] for item in inner.events[0]["events"]] == ["next"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window": 0}, "window is a positive timedelta"),
        ({"window": timedelta(0)}, "window is a positive timedelta"),
        ({"window": 1, "key": 3}, "key is an event field's name or a function"),
    ],
)
def test_bad_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConsumerError, match=message):
        Digest(Collect(), **options)  # type: ignore[arg-type]


def test_it_wraps_consumers_only() -> None:
    with pytest.raises(ConsumerError, match="Digest wraps a Consumer, not function"):
        Digest(lambda event: None, window=1)  # type: ignore[arg-type]


def test_called_outside_a_consumer_task_it_says_what_to_do() -> None:
    with pytest.raises(ConsumerError, match="register it on a hub"):
        Digest(Collect(), window=1)(Event(None, "t", "T", ""))


def test_a_recipient_who_opts_out_during_the_window_gets_no_digest(by_email: tuple[Notifications, Collect]) -> None:
    notifications, inner = by_email
    notifications.create_hub("h").register_consumer(Digest(inner, window=0.2))
    _send(notifications, "One", "alice", "bob")
    _send(notifications, "Two", "bob")
    notifications.preferences.set("bob", "h", "email", False)
    ticked_until(notifications, lambda: notifications.timers.pending() == 0)
    assert [(event["recipients"], len(event["events"])) for event in inner.events] == [(["alice"], 1)]
    # The window of the opted-out recipient ended all the same: a later event opens a new one.
    notifications.preferences.set("bob", "h", "email", True)
    _send(notifications, "Three", "bob")
    ticked_until(notifications, lambda: len(inner.events) == 2)
    assert [item["title"] for item in inner.events[1]["events"]] == ["Three"]


def test_windows_of_recipients_and_keys_that_share_a_joined_id_stay_apart(
    eager: tuple[Flask, Notifications],
) -> None:
    # ("t1:alice", "p") and ("t1", "alice:p") once joined with ":" named one
    # window, so one recipient received the other's events.
    app, notifications = eager
    inner = Collect()
    notifications.create_hub("h").register_consumer(Digest(inner, window=0.1, key="project"))
    _send(notifications, "For t1:alice", "t1:alice", project="p")
    _send(notifications, "For t1", "t1", project="alice:p")
    ticked_until(notifications, lambda: notifications.timers.pending() == 0)
    got = sorted((event["recipients"][0], [item["title"] for item in event["events"]]) for event in inner.events)
    assert got == [("t1", ["For t1"]), ("t1:alice", ["For t1:alice"])]


def _fails_for_bob_once(base: type[Ledger]) -> type[Ledger]:
    class FailsForBobOnce(base):  # type: ignore[valid-type, misc]
        """Its first add to a window of bob's fails, as a ledger that went
        away half-way through a delivery to two recipients."""

        failed = False

        def digest_add(self, timer: DueTimer, *args: Any, **kwargs: Any) -> DigestAdd:
            if '"bob"' in timer.id and not self.failed:
                self.failed = True
                raise BackendError("the ledger went away")
            return super().digest_add(timer, *args, **kwargs)  # type: ignore[no-any-return]

    return FailsForBobOnce


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
    ]
)
def durable_ledger(request: pytest.FixtureRequest, unique: str, tmp_path: Path) -> Iterator[Ledger]:
    """A ledger of each durable kind whose first add for bob fails."""
    found: Ledger
    if request.param == "redis":
        client = request.getfixturevalue("redis_client")
        found = _fails_for_bob_once(RedisLedger)(url=request.getfixturevalue("redis_url"), key_prefix=unique)
        yield found
        delete_keys(client, unique)
    elif request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
        found = _fails_for_bob_once(SqlLedger)(engine, key_prefix="t", owns_engine=True)
        yield found
    else:
        found = _fails_for_bob_once(SqlLedger)(postgres_engine(), key_prefix=unique, owns_engine=True)
        yield found
        assert isinstance(found, SqlLedger)
        drop_sql(found)
    found.close()


def test_a_delivery_run_again_after_its_window_was_flushed_is_not_listed_again(durable_ledger: Ledger) -> None:
    """A run of a delivery that added its event to alice's window, then
    failed for bob (or died before its run was recorded), runs again after
    alice's window was flushed: alice's next window does not list it again."""
    app = Flask("timers")
    app.config.update(
        NOTIFICATIONS_BACKEND="memory",
        NOTIFICATIONS_LEDGER=durable_ledger,
        CELERY_BROKER_URL="memory://",
        CELERY_TASK_ALWAYS_EAGER=True,
        NOTIFICATIONS_TIMER_TICK=None,
    )
    notifications = Notifications(app)
    inner = Collect()
    digest = Digest(inner, window=0.2)
    hub = notifications.create_hub("h")
    hub.register_consumer(digest)
    event = Event(None, "comment", "Once", "", recipients=["alice", "bob"])
    (task_name,) = hub.consumer_names
    run = Delivery("delivery-1", hub.hub_id, task_name, 1)
    with app.app_context():
        with delivering(run), pytest.raises(BackendError):
            digest(event)  # alice's window has it, bob's add failed
        ticked_until(notifications, lambda: inner.events)  # alice's window is flushed
        with delivering(replace(run, attempt=2)):
            digest(event)  # the task's retry
        ticked_until(notifications, lambda: notifications.timers.pending() == 0)
        notifications.get_backend().close()
    listed = sorted((mail["recipients"][0], item["event_id"]) for mail in inner.events for item in mail["events"])
    assert listed == [("alice", event["event_id"]), ("bob", event["event_id"])]


def test_a_flushed_item_is_refused_until_it_is_forgotten(durable_ledger: Ledger) -> None:
    durable_ledger.digest_seen_ttl = 0.5  # type: ignore[attr-defined]
    group = '["alice"]'

    def timer(version: str) -> DueTimer:
        return DueTimer(group, '{"kind": "digest"}', version, 0)

    assert durable_ledger.digest_add(timer("v1"), "d1", "one") is DigestAdd.OPENED
    assert durable_ledger.digest_seal(group, "v1") == [("d1", "one")]
    assert durable_ledger.digest_add(timer("v1"), "d1", "one") is DigestAdd.DUPLICATE  # in the sealed window
    assert durable_ledger.digest_finish(group, "v1", 0, "v2", keep_open=False)
    assert durable_ledger.timer_get(group) is None
    assert durable_ledger.digest_add(timer("v3"), "d1", "one") is DigestAdd.DUPLICATE  # flushed, remembered
    assert durable_ledger.timer_get(group) is None  # and no window opened for it
    assert durable_ledger.digest_size(group) == 0
    wait_for(lambda: durable_ledger.digest_add(timer("v3"), "d1", "one again") is DigestAdd.OPENED, timeout=10)
    assert durable_ledger.digest_seal(group, "v3") == [("d1", "one again")]
    assert durable_ledger.digest_finish(group, "v3", 0, "v4", keep_open=False)  # marked again
    assert durable_ledger.digest_add(timer("v5"), "d1", "one") is DigestAdd.DUPLICATE
