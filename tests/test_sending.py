"""``Notifications.send_many``: a batch of events in one broker message,
all or nothing, delivered by a real Celery worker over the real Redis broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from flask import Flask

from flask_notifications import Notifications, signals
from flask_notifications.errors import BrokerUnavailableError, InvalidEventError
from flask_notifications.event import Event
from flask_notifications.filters.with_event_type import WithEventType
from flask_notifications.worker.delivery import current_delivery
from tests.helpers import WorkerFactory, make_config, wait_for
from tests.worker.test_dispatch import Recorder, make_event, queue_length

pytestmark = [pytest.mark.redis]


def test_a_batch_is_one_message_and_every_consumer_gets_its_events_once(
    app: Flask, notifications: Notifications, celery_worker: WorkerFactory, redis_client: redis.Redis[bytes]
) -> None:
    one, two = notifications.create_hub("ManyOne"), notifications.create_hub("ManyTwo")
    one.filter_by(WithEventType("one"))
    two.filter_by(WithEventType("two"))
    first, second = Recorder(), Recorder()
    one.register_consumer(first)
    two.register_consumer(second)
    events = [make_event("one" if n % 3 else "two", title=f"t{n}") for n in range(60)]
    events.append(make_event("nobody", title="unmatched"))
    sent: list[tuple[str, tuple[str, ...]]] = []

    def on_sent(sender: Flask, event: Event, hub_ids: tuple[str, ...]) -> None:
        sent.append((event["title"], hub_ids))

    with signals.event_sent.connected_to(on_sent, app):
        dispatches = notifications.send_many([e.to_json() for e in events[:30]] + events[30:])
    assert queue_length(redis_client, app) == 1
    assert [d.event for d in dispatches] == events
    assert [d.hub_ids for d in dispatches] == [
        (one.hub_id,) if e["event_type"] == "one" else (two.hub_id,) if e["event_type"] == "two" else () for e in events
    ]
    task_ids = {d.task_id for d in dispatches[:-1]}
    assert len(task_ids) == 1 and None not in task_ids
    assert dispatches[-1].task_id is None
    assert sent == [(e["title"], d.hub_ids) for e, d in zip(events, dispatches, strict=True)]
    with celery_worker():
        wait_for(lambda: len(first.events) + len(second.events) == 60)
    assert sorted(e["title"] for e in first.events) == sorted(e["title"] for e in events if e["event_type"] == "one")
    assert sorted(e["title"] for e in second.events) == sorted(e["title"] for e in events if e["event_type"] == "two")


def test_an_invalid_event_anywhere_sends_nothing(
    app: Flask, notifications: Notifications, redis_client: redis.Redis[bytes]
) -> None:
    hub = notifications.create_hub("ManyInvalid")
    hub.register_consumer(Recorder())
    app.config["NOTIFICATIONS_MAX_EVENT_SIZE"] = 1000
    good = make_event().to_json()
    with pytest.raises(InvalidEventError, match="Event 2 of the batch is invalid"):
        notifications.send_many([good, good, '{"event_type": "no id"}', good])
    with pytest.raises(InvalidEventError, match="Event 1 of the batch is .* bytes"):
        notifications.send_many([good, make_event(body="x" * 2000)])
    assert queue_length(redis_client, app) == 0


def test_expired_events_are_left_out(
    app: Flask, notifications: Notifications, celery_worker: WorkerFactory, redis_client: redis.Redis[bytes]
) -> None:
    hub = notifications.create_hub("ManyExpiry")
    recorder = Recorder()
    hub.register_consumer(recorder)
    past = datetime.now(UTC) - timedelta(seconds=1)
    assert [d.task_id for d in notifications.send_many([make_event(expiration_datetime=past)])] == [None]
    assert queue_length(redis_client, app) == 0
    later = datetime.now(UTC) + timedelta(hours=1)
    dispatches = notifications.send_many(
        [make_event(title="gone", expiration_datetime=past), make_event(title="kept", expiration_datetime=later)]
    )
    assert dispatches[0].task_id is None and dispatches[1].task_id is not None
    with celery_worker():
        wait_for(lambda: recorder.events)
    assert [e["title"] for e in recorder.events] == ["kept"]


def test_broker_down_raises_and_enqueues_nothing(redis_url: str, unique: str) -> None:
    app = Flask("down")
    app.config.update(make_config(redis_url, unique, CELERY_BROKER_URL="redis://127.0.0.1:1/0"))
    ext = Notifications(app)
    hub = ext.create_hub("ManyDown")
    hub.register_consumer(Recorder())
    with app.app_context(), pytest.raises(BrokerUnavailableError, match="none of the 3 events were sent"):
        ext.send_many([make_event(), make_event(), make_event()])


def test_every_event_of_a_batch_is_a_delivery_of_its_own(
    notifications: Notifications, celery_worker: WorkerFactory
) -> None:
    hub = notifications.create_hub("ManyDeliveries")
    seen: list[tuple[str, str | None]] = []

    class Deliveries(Recorder):
        def consume(self, event: Event) -> None:
            delivery = current_delivery()
            seen.append((event["title"], delivery.delivery_id if delivery else None))

    hub.register_consumer(Deliveries())

    twin = make_event(title="twin")
    # The same event twice: two deliveries, as two send() calls would be.
    dispatches = notifications.send_many([twin, twin, make_event(title="other")])
    ids = [d.delivery_id for d in dispatches]
    assert None not in ids and len(set(ids)) == 3
    with celery_worker():
        wait_for(lambda: len(seen) == 3)
    assert sorted(seen) == sorted(zip(["twin", "twin", "other"], ids, strict=True))
