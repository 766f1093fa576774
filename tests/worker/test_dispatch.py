"""Delivery through a real Celery worker over the real Redis broker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from celery.signals import task_postrun, task_revoked
from flask import Flask

from flask_notifications import Notifications, signals
from flask_notifications.consumers.consumer import EventConsumer
from flask_notifications.errors import BrokerUnavailableError, InvalidEventError, PermanentConsumerError
from flask_notifications.event import Event
from flask_notifications.filters.with_event_type import WithEventType
from flask_notifications.worker.messages import DISPATCH_TASK
from tests.helpers import WorkerFactory, wait_for

pytestmark = [pytest.mark.redis]


class Recorder(EventConsumer):
    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def consume(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)


def make_event(event_type: str = "test", title: str = "Title", body: str = "Body", **fields: Any) -> Event:
    return Event(None, event_type, title, body, sender="system", **fields)


def queue_length(redis_client: redis.Redis[bytes], app: Flask) -> int:
    return int(redis_client.llen(app.config["CELERY_TASK_DEFAULT_QUEUE"]))


def test_delivery_through_a_real_worker(notifications: Notifications, celery_worker: WorkerFactory) -> None:
    hub = notifications.create_hub("Delivery")
    hub.filter_by(WithEventType("test"))
    seen: list[tuple[Event, bool]] = []

    @hub.register_consumer(celery_task_name="tests.delivery", pass_event=True)
    def record(event: Event) -> None:
        from flask import has_app_context

        seen.append((event, has_app_context()))

    with celery_worker():
        event = make_event(priority="high")
        result = notifications.send(event.to_json())
        notifications.send(make_event("system"))
        wait_for(lambda: seen)
        assert result.hub_ids == (hub.hub_id,) and result.task_id
    (got, in_context), *rest = seen
    assert rest == []
    assert got == event and got["priority"] == "high" and isinstance(got, Event)
    assert in_context


def test_consumers_on_two_hubs_do_not_collide(notifications: Notifications, celery_worker: WorkerFactory) -> None:
    one, two = notifications.create_hub("One"), notifications.create_hub("Two")
    one.filter_by(WithEventType("one"))
    two.filter_by(WithEventType("two"))
    a, b, c = Recorder(), Recorder(), Recorder()
    one.register_consumer(a)
    one.register_consumer(b)
    two.register_consumer(c)
    with celery_worker():
        notifications.send(make_event("one", title="first"))
        notifications.send(make_event("two", title="second"))
        wait_for(lambda: a.events and b.events and c.events)
    assert [e["title"] for e in a.events] == ["first"]
    assert [e["title"] for e in b.events] == ["first"]
    assert [e["title"] for e in c.events] == ["second"]


def test_deregister_stops_delivery(notifications: Notifications, celery_worker: WorkerFactory) -> None:
    hub = notifications.create_hub("Dereg")
    kept, dropped = Recorder(), Recorder()
    hub.register_consumer(kept)
    hub.register_consumer(dropped)
    with celery_worker():
        notifications.send(make_event(title="both"))
        wait_for(lambda: kept.events and dropped.events)
        hub.deregister_consumer(dropped)
        notifications.send(make_event(title="only kept"))
        wait_for(lambda: len(kept.events) == 2)
        notifications.send(make_event(title="barrier"))
        wait_for(lambda: len(kept.events) == 3)
    assert [e["title"] for e in dropped.events] == ["both"]


def test_invalid_event_enqueues_nothing(
    app: Flask, notifications: Notifications, redis_client: redis.Redis[bytes]
) -> None:
    hub = notifications.create_hub("Invalid")
    hub.register_consumer(Recorder())
    sent: list[object] = []

    def on_sent(sender: object, **kw: object) -> None:
        sent.append(kw)

    signals.event_sent.connect(on_sent, weak=False)
    try:
        for bad in ('{"event_id": 1}', "not json", 42, {"title": "t"}):
            with pytest.raises(InvalidEventError):
                notifications.send(bad)  # type: ignore[arg-type]
        event = make_event()
        dict.__setitem__(event, "recipients", "tom")  # past the check of item assignment (issue 23)
        with pytest.raises(InvalidEventError, match="'recipients'"):
            notifications.send(event)
        app.config["NOTIFICATIONS_MAX_EVENT_SIZE"] = 1024
        with pytest.raises(InvalidEventError, match="NOTIFICATIONS_MAX_EVENT_SIZE"):
            notifications.send(make_event(body="x" * 2000))
    finally:
        # Only its own receiver: the metrics' stay connected.
        signals.event_sent.disconnect(on_sent)
    assert queue_length(redis_client, app) == 0
    assert sent == []


def test_broker_down_raises_and_enqueues_nothing(redis_url: str, unique: str) -> None:
    from tests.helpers import make_config

    app = Flask("down")
    app.config.update(make_config(redis_url, unique, CELERY_BROKER_URL="redis://127.0.0.1:1/0"))
    ext = Notifications(app)
    hub = ext.create_hub("Down")
    hub.register_consumer(Recorder())
    with app.app_context(), pytest.raises(BrokerUnavailableError, match="not sent"):
        ext.send(make_event())


def test_failing_consumer_is_retried_then_dead_lettered(
    app: Flask, notifications: Notifications, celery_worker: WorkerFactory
) -> None:
    app.config["NOTIFICATIONS_MAX_RETRIES"] = 2
    hub = notifications.create_hub("Failing")
    attempts: list[str] = []
    ok = Recorder()

    @hub.register_consumer(name="tests.always_fails", pass_event=True)
    def always_fails(event: Event) -> None:
        attempts.append(event["event_id"])
        raise RuntimeError("SMTP is on fire")

    hub.register_consumer(ok)
    failures: list[dict[str, Any]] = []
    dead: list[dict[str, Any]] = []

    def on_failed(sender: Flask, **kw: Any) -> None:
        failures.append(kw)

    def on_dead(sender: Flask, **kw: Any) -> None:
        dead.append(kw["dead_letter"])

    signals.consumer_failed.connect(on_failed)
    signals.event_dead_lettered.connect(on_dead)
    try:
        with celery_worker():
            event = make_event()
            notifications.send(event)
            wait_for(lambda: dead)
            assert [e["event_id"] for e in ok.events] == [event["event_id"]]
    finally:
        signals.consumer_failed.disconnect(on_failed)
        signals.event_dead_lettered.disconnect(on_dead)
    assert attempts == [event["event_id"]] * 3
    assert [f["will_retry"] for f in failures] == [True, True, False]
    letters = notifications.dead_letters()
    assert len(letters) == 1
    letter = letters[0]
    assert letter["consumer"] == "tests.always_fails" and letter["hub_id"] == hub.hub_id
    assert letter["attempts"] == 3 and "SMTP is on fire" in letter["error"]
    assert Event.from_json(letter["event"]) == event
    assert letter["id"] == dead[0]["id"]

    # Retrying a dead letter delivers again, with a fresh budget.
    hub.deregister_consumer(always_fails)
    fixed: list[Event] = []
    hub.register_consumer(name="tests.always_fails", pass_event=True)(fixed.append)
    with celery_worker():
        notifications.retry_dead_letter(letter["id"])
        wait_for(lambda: fixed)
    assert fixed == [event]
    assert notifications.dead_letters() == []


def test_permanent_failure_is_dead_lettered_at_once(
    app: Flask, notifications: Notifications, celery_worker: WorkerFactory
) -> None:
    app.config["NOTIFICATIONS_MAX_RETRIES"] = 5
    hub = notifications.create_hub("Permanent")
    attempts: list[str] = []

    class NoSuchAccount(PermanentConsumerError):
        pass

    @hub.register_consumer(name="tests.refused_for_good", pass_event=True)
    def refused_for_good(event: Event) -> None:
        attempts.append(event["event_id"])
        raise NoSuchAccount(f"account of {event['recipients']} was closed")

    failures: list[dict[str, Any]] = []

    def on_failed(sender: Flask, **kw: Any) -> None:
        failures.append(kw)

    signals.consumer_failed.connect(on_failed)
    try:
        with celery_worker():
            event = make_event(recipients=["u1"])
            notifications.send(event)
            (letter,) = wait_for(notifications.dead_letters)
    finally:
        signals.consumer_failed.disconnect(on_failed)
    # One attempt of the six NOTIFICATIONS_MAX_RETRIES allows, and the letter says why.
    assert attempts == [event["event_id"]]
    assert [f["will_retry"] for f in failures] == [False]
    assert isinstance(failures[0]["exception"], NoSuchAccount)
    assert letter["attempts"] == 1 and letter["consumer"] == "tests.refused_for_good"
    assert "NoSuchAccount: account of ['u1'] was closed" in letter["error"]


def test_expired_event_is_not_delivered(
    app: Flask, notifications: Notifications, celery_worker: WorkerFactory, redis_client: redis.Redis[bytes]
) -> None:
    hub = notifications.create_hub("Expiry")
    recorder = Recorder()
    hub.register_consumer(recorder)
    past = datetime.now(UTC) - timedelta(seconds=1)
    result = notifications.send(make_event(expiration_datetime=past))
    assert result.task_id is None and queue_length(redis_client, app) == 0

    # Expiring while queued: Celery drops it in the worker, and says so.
    soon = datetime.now(UTC) + timedelta(milliseconds=300)
    expiring = notifications.send(make_event(title="expires", expiration_datetime=soon))
    wait_for(lambda: datetime.now(UTC) > soon + timedelta(milliseconds=100))
    with finished_tasks() as finished, celery_worker():
        wait_for(lambda: ("expired", expiring.task_id) in finished)
        delivered = notifications.send(make_event(title="delivered"))
        wait_for(lambda: recorder.events)
    assert [e["title"] for e in recorder.events] == ["delivered"]
    assert ("ran", delivered.task_id) in finished


class Keeper(Recorder):
    honours_expiry = False


def test_a_consumer_that_opts_out_of_expiry_gets_an_event_that_expired_while_queued(
    notifications: Notifications, celery_worker: WorkerFactory
) -> None:
    hub = notifications.create_hub("KeepExpired")
    recorder, keeper = Recorder(), Keeper()
    hub.register_consumer(recorder)
    hub.register_consumer(keeper)
    soon = datetime.now(UTC) + timedelta(milliseconds=300)
    notifications.send(make_event(title="expires", expiration_datetime=soon))
    wait_for(lambda: datetime.now(UTC) > soon + timedelta(milliseconds=100))
    with celery_worker():
        wait_for(lambda: keeper.events)
        notifications.send(make_event(title="delivered"))
        wait_for(lambda: recorder.events and len(keeper.events) == 2)
    assert [e["title"] for e in keeper.events] == ["expires", "delivered"]
    assert [e["title"] for e in recorder.events] == ["delivered"]


@contextmanager
def finished_tasks() -> Iterator[list[tuple[str, str]]]:
    """What the in-process worker finished, as (``"ran"``, task id) or
    (``"expired"``, task id), from Celery's signals: what to synchronise on."""
    finished: list[tuple[str, str]] = []

    def ran(sender: Any = None, task_id: str = "", **_: Any) -> None:
        finished.append(("ran", task_id))

    def revoked(sender: Any = None, request: Any = None, expired: bool = False, **_: Any) -> None:
        finished.append(("expired" if expired else "revoked", request.id))

    task_postrun.connect(ran, weak=False)
    task_revoked.connect(revoked, weak=False)
    try:
        yield finished
    finally:
        task_postrun.disconnect(ran)
        task_revoked.disconnect(revoked)


def test_redelivered_task_has_one_effect(notifications: Notifications, celery_worker: WorkerFactory) -> None:
    hub = notifications.create_hub("Once")
    recorder = Recorder()
    hub.register_consumer(recorder)
    event = make_event()
    celery = notifications.celery
    consumer = hub.consumer_names[0]
    with finished_tasks() as finished, celery_worker():
        for _ in range(3):
            celery.tasks[DISPATCH_TASK].apply_async(args=(event.to_json(), [[hub.hub_id, consumer]]))
        # Each dispatch enqueues one consumer task: wait until all three ran.
        wait_for(lambda: len([task_id for state, task_id in finished if state == "ran"]) == 6)
    assert [e["event_id"] for e in recorder.events] == [event["event_id"]]


def test_veto_in_before_consume(notifications: Notifications, celery_worker: WorkerFactory) -> None:
    calls: list[str] = []

    class Picky(EventConsumer):
        def before_consume(self, event: Event) -> bool:
            calls.append("before")
            return event["title"] != "veto"

        def consume(self, event: Event) -> None:
            calls.append(f"consume {event['title']}")

        def after_consume(self, event: Event) -> None:
            calls.append("after")

    hub = notifications.create_hub("Veto")
    hub.register_consumer(Picky())
    with celery_worker(concurrency=1):
        notifications.send(make_event(title="veto"))
        wait_for(lambda: calls == ["before"])
        notifications.send(make_event(title="ok"))
        wait_for(lambda: len(calls) == 4)
    assert calls == ["before", "before", "consume ok", "after"]
