"""Deliveries (issue 11): an id per send, claims per (delivery, hub,
consumer) owned by one run, a bounded ledger, unknown tasks and dead letters
that are never lost. Through a real Celery worker on the real Redis."""

from __future__ import annotations

import threading
import time
import tracemalloc
from typing import Any

import pytest
import redis
from celery.signals import after_task_publish, task_postrun
from flask import Flask

from flask_notifications import Notifications, signals
from flask_notifications.errors import BackendError, BrokerUnavailableError, InvalidEventError
from flask_notifications.event import Event
from flask_notifications.event_filter import EventFilter
from flask_notifications.ledger.base import Claim
from flask_notifications.ledger.memory import MemoryLedger
from flask_notifications.worker.claims import idempotency_ttl
from flask_notifications.worker.delivery import Delivery, current_delivery
from flask_notifications.worker.messages import DISPATCH_TASK, claim_key, enqueue_delivery
from tests.helpers import WorkerFactory, free_port, make_config, wait_for


def make_event(event_id: str | None = None, title: str = "Title") -> Event:
    return Event(event_id, "test", title, "Body", sender="system")


class Outcomes:
    """The return values of one task name's runs on the worker."""

    def __init__(self, task_name: str) -> None:
        self.task_name = task_name
        self.values: list[Any] = []
        task_postrun.connect(self._record, weak=False)

    def _record(self, sender: Any = None, retval: Any = None, **kwargs: Any) -> None:
        if sender is not None and sender.name == self.task_name:
            self.values.append(retval)

    def close(self) -> None:
        task_postrun.disconnect(self._record)


# -- item 1: a delivery id per send ---------------------------------------------------


@pytest.mark.redis
def test_two_events_with_one_event_id_are_both_delivered(
    notifications: Notifications, celery_worker: WorkerFactory
) -> None:
    hub = notifications.create_hub("Reused")
    seen: list[tuple[str, Delivery | None]] = []

    @hub.register_consumer(celery_task_name="tests.reused", pass_event=True)
    def record(event: Event) -> None:
        seen.append((event["title"], current_delivery()))

    with celery_worker():
        first = notifications.send(make_event("order-1", "first"))
        second = notifications.send(make_event("order-1", "second"))
        wait_for(lambda: len(seen) == 2)
    assert first.delivery_id and second.delivery_id and first.delivery_id != second.delivery_id
    by_title = dict(seen)
    assert sorted(by_title) == ["first", "second"]
    assert by_title["first"] == Delivery(first.delivery_id, hub.hub_id, "tests.reused", 1)
    assert by_title["second"] == Delivery(second.delivery_id, hub.hub_id, "tests.reused", 1)


@pytest.mark.redis
def test_the_delivery_id_is_kept_on_retry_and_redelivery(
    notifications: Notifications, celery_worker: WorkerFactory
) -> None:
    hub = notifications.create_hub("Retried")
    runs: list[Delivery | None] = []

    @hub.register_consumer(celery_task_name="tests.flaky", pass_event=True)
    def flaky(event: Event) -> None:
        runs.append(current_delivery())
        if len(runs) == 1:
            raise RuntimeError("first attempt fails")

    outcomes = Outcomes(DISPATCH_TASK)
    try:
        with celery_worker():
            sent = notifications.send(make_event())
            wait_for(lambda: len(runs) == 2)
            # The broker redelivers the dispatch: the same delivery, no new effect.
            task = notifications.celery.tasks[DISPATCH_TASK]
            task.apply_async(
                args=(sent.event.to_json(), [[hub.hub_id, "tests.flaky"]]), kwargs={"delivery_id": sent.delivery_id}
            )
            wait_for(lambda: len(outcomes.values) == 2)
            notifications.send(make_event(title="barrier"))
            wait_for(lambda: len(runs) == 3)
    finally:
        outcomes.close()
    assert [(r.delivery_id, r.attempt) for r in runs[:2] if r] == [(sent.delivery_id, 1), (sent.delivery_id, 2)]
    assert runs[2] is not None and runs[2].delivery_id not in (None, sent.delivery_id)


@pytest.mark.redis
def test_messages_queued_without_a_delivery_id_still_run(
    notifications: Notifications, celery_worker: WorkerFactory
) -> None:
    """The 0.x message format: no delivery id. The event id stands in for it,
    as the claims were keyed then."""
    hub = notifications.create_hub("Legacy")
    seen: list[Delivery | None] = []
    hub.register_consumer(celery_task_name="tests.legacy", pass_event=True)(
        lambda event: seen.append(current_delivery())
    )
    celery = notifications.celery
    event = make_event("legacy-1")
    with celery_worker():
        celery.tasks[DISPATCH_TASK].apply_async(args=(event.to_json(), [[hub.hub_id, "tests.legacy"]]))
        wait_for(lambda: len(seen) == 1)
        celery.tasks["tests.legacy"].apply_async(args=(hub.hub_id, make_event("legacy-2").to_json(), 0))
        wait_for(lambda: len(seen) == 2)
    assert [d.delivery_id for d in seen if d] == ["legacy-1", "legacy-2"]


@pytest.mark.redis
def test_idempotency_key_dedups_sends_within_its_window(
    app: Flask, notifications: Notifications, celery_worker: WorkerFactory
) -> None:
    app.config["NOTIFICATIONS_IDEMPOTENCY_WINDOW"] = 1
    hub = notifications.create_hub("Keyed")
    seen: list[str] = []
    hub.register_consumer(celery_task_name="tests.keyed", pass_event=True)(lambda event: seen.append(event["title"]))
    with celery_worker():
        first = notifications.send(make_event(title="a"), idempotency_key="order-1")
        again = notifications.send(make_event(title="b"), idempotency_key="order-1")
        other = notifications.send(make_event(title="c"), idempotency_key="order-2")
        assert not first.duplicate and again.duplicate and not other.duplicate
        assert again.task_id is None and again.hub_ids == ()
        wait_for(lambda: len(seen) == 2)
        # After the window the key may be sent again.
        time.sleep(1.1)
        later = notifications.send(make_event(title="d"), idempotency_key="order-1")
        wait_for(lambda: len(seen) == 3)
    assert not later.duplicate
    assert sorted(seen) == ["a", "c", "d"]
    with pytest.raises(InvalidEventError, match="idempotency_key"):
        notifications.send(make_event(), idempotency_key="")


@pytest.mark.redis
def test_a_send_that_fails_frees_its_idempotency_key(redis_url: str, unique: str) -> None:
    app = Flask("keyed_down")
    app.config.update(make_config(redis_url, unique, CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0"))
    ext = Notifications(app)
    ext.create_hub("KeyedDown").register_consumer(celery_task_name="tests.keyed_down", pass_event=True)(
        lambda event: None
    )
    with app.app_context():
        with pytest.raises(BrokerUnavailableError):
            ext.send(make_event(), idempotency_key="k")
        assert ext.ledger.claim("send:k", "probe", 30) is Claim.ACQUIRED
    ext.get_backend(app).close()


@pytest.mark.redis
def test_a_concurrent_send_with_the_same_key_waits_and_is_a_duplicate(app: Flask, notifications: Notifications) -> None:
    """A second send with a key while the first is still enqueueing waits
    for it; once the first is enqueued, the second is a duplicate."""
    inside, release = threading.Event(), threading.Event()

    class Gate(EventFilter):
        def filter(self, event: Any) -> bool:
            if event["title"] == "first":
                inside.set()
                release.wait(30)
            return True

    app.config["NOTIFICATIONS_SEND_CLAIM_TIMEOUT"] = 30
    hub = notifications.create_hub("KeyedGate").filter_by(Gate())
    hub.register_consumer(celery_task_name="tests.keyed_gate", pass_event=True)(lambda event: None)
    outcome: dict[str, Any] = {}

    def first() -> None:
        with app.app_context():
            outcome["first"] = notifications.send(make_event(title="first"), idempotency_key="k")

    sent: list[str] = []

    def on_sent(sender: Any, event: Event, **kwargs: Any) -> None:
        sent.append(event["title"])

    thread = threading.Thread(target=first)
    thread.start()
    assert inside.wait(30)
    timer = threading.Timer(0.2, release.set)  # the first finishes while the second waits
    timer.start()
    signals.event_sent.connect(on_sent, weak=False)
    try:
        second = notifications.send(make_event(title="second"), idempotency_key="k")
        # The second answered only once the first had been enqueued and recorded.
        assert sent == ["first"]
    finally:
        signals.event_sent.disconnect(on_sent)
        release.set()
        thread.join(30)
        timer.cancel()
    assert not outcome["first"].duplicate and outcome["first"].task_id is not None
    assert second.duplicate and second.task_id is None


# -- item 2: a claim owned by its run, kept alive while the consumer runs --------------


@pytest.mark.redis
def test_a_consumer_slower_than_the_claim_timeout_has_one_effect(
    app: Flask, notifications: Notifications, celery_worker: WorkerFactory
) -> None:
    timeout = 0.6
    app.config["NOTIFICATIONS_CLAIM_TIMEOUT"] = timeout
    hub = notifications.create_hub("Slow")
    effects: list[str] = []
    started, finish = threading.Event(), threading.Event()

    @hub.register_consumer(celery_task_name="tests.slow", pass_event=True)
    def slow(event: Event) -> None:
        started.set()
        finish.wait(60)
        effects.append(event["title"])

    outcomes = Outcomes("tests.slow")
    try:
        with celery_worker(concurrency=2):
            sent = notifications.send(make_event())
            assert started.wait(30)
            # Outlive the claim timeout three times over, then let the broker
            # redeliver the task (as after a visibility timeout).
            time.sleep(3 * timeout)
            enqueue_delivery(notifications.celery, "tests.slow", hub.hub_id, sent.event.to_json(), sent.delivery_id)
            wait_for(lambda: len(outcomes.values) >= 1)  # the copy found the claim busy
            finish.set()
            wait_for(lambda: "duplicate" in outcomes.values)
    finally:
        finish.set()
        outcomes.close()
    assert effects == ["Title"]
    assert outcomes.values.count("consumed") == 1


# -- item 3: records kept only as long as a redelivery can happen, and bounded --------


def test_memory_ledger_is_bounded_after_50000_deliveries() -> None:
    ledger = MemoryLedger(ledger_size=10_000)

    def deliver(count: int, start: int) -> None:
        for i in range(start, start + count):
            key = claim_key(f"d{i:08d}", "hub", "tests.consumer")
            assert ledger.claim(key, "t", 300) is Claim.ACQUIRED
            assert ledger.complete(key, "t", 3600)

    tracemalloc.start()
    try:
        deliver(20_000, 0)  # past the bound, once the table has grown to it
        after_20k = tracemalloc.get_traced_memory()[0]
        deliver(30_000, 20_000)
        after_50k = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert ledger.ledger_stats()["entries"] == 10_000
    # 30,000 more deliveries leave the ledger no bigger (5% for noise), where
    # an unbounded ledger grows by about 250 bytes per delivery.
    assert after_50k <= after_20k * 1.05
    # The newest records are the ones kept.
    assert ledger.claim(claim_key("d00049999", "hub", "tests.consumer"), "u", 300) is Claim.DONE


@pytest.mark.redis
def test_redis_records_live_as_long_as_a_redelivery_can_happen(
    app: Flask,
    notifications: Notifications,
    celery_worker: WorkerFactory,
    redis_client: redis.Redis[bytes],
    unique: str,
) -> None:
    celery = notifications.celery
    # kombu's default visibility timeout (3600 s) is when a redelivery may
    # START; the record outlives it by a wide margin, and by 6 hours at least.
    assert idempotency_ttl(app, celery) == 6 * 3600
    celery.conf.broker_transport_options = {"visibility_timeout": 36000, "unacked_restore_interval": 60}
    assert idempotency_ttl(app, celery) == 2 * (36000 + 300 + 60)
    app.config["NOTIFICATIONS_IDEMPOTENCY_TTL"] = 120  # the operator's choice is taken as is
    assert idempotency_ttl(app, celery) == 120
    hub = notifications.create_hub("Ttl")
    seen: list[str] = []
    hub.register_consumer(celery_task_name="tests.ttl", pass_event=True)(lambda event: seen.append(event["event_id"]))
    with celery_worker():
        for _ in range(20):
            notifications.send(make_event())
        wait_for(lambda: len(seen) == 20)
    keys = list(redis_client.scan_iter(f"{unique}:claim:*"))
    # One record for each consumer run, and one for each dispatch (the
    # outbox's: a copy of the dispatch message enqueues nothing).
    dispatches = [key for key in keys if key.startswith(f"{unique}:claim:dispatch:".encode())]
    assert len(keys) - len(dispatches) == 20 and len(dispatches) == 20
    assert all(0 < redis_client.ttl(key) <= 120 for key in keys)


# -- item 4: a task no worker knows is a dead letter -----------------------------------


@pytest.mark.redis
def test_an_unknown_consumer_task_becomes_a_dead_letter_that_retry_delivers(
    notifications: Notifications, celery_worker: WorkerFactory
) -> None:
    hub = notifications.create_hub("Renamed")
    celery = notifications.celery
    event = make_event()
    with celery_worker():
        # A task renamed by a deploy: no worker has "tests.renamed" yet.
        enqueue_delivery(celery, "tests.renamed", hub.hub_id, event.to_json(), "delivery-1")
        (letter,) = wait_for(notifications.dead_letters)
    assert letter["consumer"] == "tests.renamed" and letter["hub_id"] == hub.hub_id
    assert letter["delivery_id"] == "delivery-1" and "NotRegistered" in letter["error"]
    seen: list[Delivery | None] = []
    hub.register_consumer(celery_task_name="tests.renamed", pass_event=True)(
        lambda event: seen.append(current_delivery())
    )
    with celery_worker():
        notifications.retry_dead_letter(letter["id"])
        wait_for(lambda: seen)
    assert seen[0] is not None and seen[0].delivery_id == "delivery-1"
    assert notifications.dead_letters() == []


@pytest.mark.redis
def test_a_consumer_missing_from_its_hub_becomes_a_dead_letter(
    notifications: Notifications, celery_worker: WorkerFactory
) -> None:
    hub = notifications.create_hub("Gone")
    hub.register_consumer(celery_task_name="tests.known", pass_event=True)(lambda event: None)
    with celery_worker():
        enqueue_delivery(notifications.celery, "tests.known", "no-such-hub", make_event().to_json(), "d2")
        (letter,) = wait_for(notifications.dead_letters)
    assert letter["hub_id"] == "no-such-hub" and "NotRegistered" in letter["error"]


# -- item 5: retrying a dead letter never loses it ----------------------------------


class NoRemoval(MemoryLedger):
    """A ledger that fails when a dead letter is removed, as a crash right
    after the retry was enqueued would."""

    def remove_dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        raise BackendError("the backend went away (injected)")


@pytest.mark.redis
def test_a_retry_interrupted_after_enqueueing_keeps_the_letter_and_one_effect(
    redis_keys: str, redis_url: str, unique: str, redis_client: redis.Redis[bytes], celery_worker: WorkerFactory
) -> None:
    ledger = NoRemoval()
    app = Flask("no_removal")
    app.config.update(make_config(redis_url, unique, NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_LEDGER=ledger))
    ext = Notifications(app)
    hub = ext.create_hub("Interrupted")
    effects: list[str] = []
    hub.register_consumer(celery_task_name="tests.interrupted", pass_event=True)(
        lambda event: effects.append(event["title"])
    )
    from flask_notifications.worker import dead_letters

    letter = dead_letters.keep(
        app,
        ledger,
        hub_id=hub.hub_id,
        consumer="tests.interrupted",
        event_json=make_event().to_json(),
        delivery_id="d-interrupted",
        attempts=6,
        error="RuntimeError: boom",
    )
    from celery.contrib.testing.worker import start_worker

    with app.app_context(), start_worker(ext.celery, perform_ping_check=False, pool="threads", loglevel="WARNING"):
        ext.retry_dead_letter(letter["id"])
        wait_for(lambda: effects)
        assert [d["id"] for d in ext.dead_letters()] == [letter["id"]]
        ext.retry_dead_letter(letter["id"])  # the same delivery again
        ext.send(make_event(title="barrier"))
        wait_for(lambda: len(effects) == 2)
    assert sorted(effects) == ["Title", "barrier"]


@pytest.mark.redis
def test_a_letter_marked_by_an_interrupted_retry_is_retried_as_that_same_retry(
    app: Flask, notifications: Notifications
) -> None:
    """A retry killed between marking the letter and enqueueing leaves the
    mark; the next retry enqueues that same retry (its token), not a new one."""
    from flask_notifications.worker import dead_letters

    ledger = notifications.get_ledger(app)
    letter = dead_letters.keep(
        app,
        ledger,
        hub_id="h",
        consumer="tests.marked",
        event_json=make_event().to_json(),
        delivery_id="d-marked",
        attempts=6,
        error="e",
    )
    assert ledger.mark_dead_letter(letter["id"], "", "retrying:first") == "retrying:first"
    bodies: list[Any] = []

    def on_publish(sender: Any = None, body: Any = None, **kwargs: Any) -> None:
        if sender == "tests.marked":
            bodies.append(body)

    after_task_publish.connect(on_publish, weak=False)
    try:
        with app.app_context():
            notifications.retry_dead_letter(letter["id"])
    finally:
        after_task_publish.disconnect(on_publish)
    assert [body[1] for body in bodies] == [{"delivery_id": "d-marked", "letter": [letter["id"], "first"]}]
    assert notifications.dead_letters() == []


@pytest.mark.redis
def test_a_retry_the_broker_refuses_leaves_the_letter_untouched(redis_url: str, unique: str) -> None:
    app = Flask("broker_down")
    app.config.update(
        make_config(
            redis_url, unique, NOTIFICATIONS_BACKEND="memory", CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0"
        )
    )
    app.config["CELERY_BROKER_TRANSPORT_OPTIONS"] = {"max_retries": 0}
    ext = Notifications(app)
    from flask_notifications.worker import dead_letters

    letter = dead_letters.keep(
        app,
        ext.get_ledger(app),
        hub_id="h",
        consumer="tests.c",
        event_json=make_event().to_json(),
        delivery_id="d",
        attempts=6,
        error="e",
    )
    with app.app_context():
        ext.celery.conf.broker_connection_retry = False
        with pytest.raises(BrokerUnavailableError, match="kept"):
            ext.retry_dead_letter(letter["id"])
        assert ext.dead_letters() == [letter]
