"""The backend (claims, completion records, dead letters) unreachable while
a real worker delivers: the delivery is retried, not lost, not dead-lettered
for it, and the consumer's effect still happens once.

The backend fails on cue through a subclass of the memory backend (the worker
runs in the test process, so it shares it); Redis really going away is
``test_redis_restart.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask

from flask_notifications import Event, Notifications, signals
from flask_notifications.errors import BackendError
from flask_notifications.ledger.base import Claim
from flask_notifications.ledger.memory import MemoryLedger
from flask_notifications.worker.outbox import dispatch_key
from tests.helpers import WorkerFactory, make_config, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.redis]

DISPATCH = dispatch_key("")


class FlakyBackend(MemoryLedger):
    """Raises BackendError on the next ``failures[name]`` calls of ``name``.

    The claims of the consumer runs fail and count; those of the dispatches
    (the outbox's, ``dispatch:<id>``) neither, so that an outage injected
    here hits the consumer run the test watches (the dispatch's own are
    tested in tests/worker/test_outbox_dispatch_claim.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self._flaky_lock = threading.Lock()

    def _maybe_fail(self, name: str) -> None:
        with self._flaky_lock:
            self.calls[name] = self.calls.get(name, 0) + 1
            if self.failures.get(name, 0) > 0:
                self.failures[name] -= 1
                raise BackendError(f"{name}: the backend is down (injected)")

    def claim(self, key: str, token: str, timeout: float) -> Claim:
        if not key.startswith(DISPATCH):
            self._maybe_fail("claim")
        return super().claim(key, token, timeout)

    def complete(self, key: str, token: str, ttl: float) -> bool:
        if not key.startswith(DISPATCH):
            self._maybe_fail("complete")
        return super().complete(key, token, ttl)

    def add_dead_letter(self, record: Any) -> str:
        self._maybe_fail("add_dead_letter")
        return super().add_dead_letter(record)


@pytest.fixture
def flaky() -> FlakyBackend:
    return FlakyBackend()


@pytest.fixture
def app(
    redis_keys: str, redis_url: str, unique: str, flaky: FlakyBackend, redis_client: redis.Redis[bytes]
) -> Iterator[Flask]:
    app = Flask("outage_app")
    app.config.update(
        make_config(
            redis_url, unique, NOTIFICATIONS_BACKEND="memory", NOTIFICATIONS_LEDGER=flaky, NOTIFICATIONS_MAX_RETRIES=0
        )
    )
    yield app


@pytest.fixture
def failed() -> Iterator[list[Any]]:
    seen: list[Any] = []

    def record(sender: Any, **extra: Any) -> None:
        seen.append(extra["exception"])

    signals.consumer_failed.connect(record)
    yield seen
    signals.consumer_failed.disconnect(record)


@pytest.mark.parametrize("down", ["claim", "complete"])
def test_an_unreachable_backend_delays_the_effect_but_never_repeats_or_drops_it(
    down: str, notifications: Notifications, flaky: FlakyBackend, celery_worker: WorkerFactory, failed: list[Any]
) -> None:
    hub = notifications.create_hub("Outage")
    effects: list[str] = []

    @hub.register_consumer(celery_task_name=f"outage.{down}", pass_event=True)
    def effect(event: Event) -> None:
        effects.append(event["event_id"])

    # MAX_RETRIES is 0: had the outage spent a consumer retry, the event would
    # be dead-lettered instead of delivered.
    flaky.failures[down] = 2
    event = Event(None, "t", "title", "body")
    with celery_worker():
        notifications.send(event)
        wait_for(lambda: flaky.calls.get("complete", 0) >= 1 + (2 if down == "complete" else 0), timeout=60)
    assert effects == [event["event_id"]]
    assert flaky.calls[down] == 3 and flaky.failures[down] == 0
    assert failed == [] and notifications.dead_letters() == []


def test_a_dead_letter_the_backend_cannot_take_is_retried_not_dropped(
    notifications: Notifications, flaky: FlakyBackend, celery_worker: WorkerFactory, failed: list[Any]
) -> None:
    hub = notifications.create_hub("Doomed")

    @hub.register_consumer(celery_task_name="outage.doomed")
    def doomed(event: Event) -> None:
        raise RuntimeError("this consumer always fails")

    flaky.failures["add_dead_letter"] = 2
    event = Event(None, "t", "title", "body")
    with celery_worker():
        notifications.send(event)
        letters = wait_for(notifications.dead_letters, timeout=60)
    assert [letter["consumer"] for letter in letters] == ["outage.doomed"]
    assert Event.from_json(letters[0]["event"]) == event
    assert flaky.calls["add_dead_letter"] == 3


def test_a_dispatch_that_cannot_reach_the_broker_is_retried_not_lost(
    notifications: Notifications,
    celery_worker: WorkerFactory,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.Redis[bytes],
    unique: str,
) -> None:
    """The broker fails while the dispatch task fans an event out: the fan-out
    is retried (consumers already enqueued skip the repeat by their claim)."""
    from kombu.exceptions import OperationalError

    from flask_notifications.worker import messages, tasks

    hub = notifications.create_hub("Fanout")
    effects: list[str] = []
    for name in ("outage.first", "outage.second"):
        hub.register_consumer(celery_task_name=name, pass_event=True)(lambda event: effects.append(event["event_id"]))
    real_enqueue = messages.enqueue
    calls: list[str] = []

    def flaky_enqueue(celery: Any, task_name: str, args: Any, **options: Any) -> None:
        calls.append(task_name)
        # The first consumer goes through, the second fails twice.
        if task_name == "outage.second" and calls.count(task_name) <= 2:
            raise OperationalError("Error 111 connecting to the broker (injected)")
        real_enqueue(celery, task_name, args, **options)

    monkeypatch.setattr(messages, "enqueue", flaky_enqueue)
    monkeypatch.setattr(tasks, "backoff", lambda *args: 0.05)
    event = Event(None, "t", "title", "body")
    with celery_worker():
        notifications.send(event)
        wait_for(lambda: len(effects) >= 2 and calls.count("outage.second") >= 3, timeout=60)
        # Let the repeated first consumer tasks run: their claims skip them.
        wait_for(lambda: calls.count("outage.first") >= 3, timeout=60)
        wait_for(lambda: redis_client.llen(unique) == 0, timeout=60)
    assert sorted(effects) == [event["event_id"]] * 2
    assert notifications.dead_letters() == []


def test_a_record_that_fails_for_a_moment_keeps_the_claim_and_no_copy_repeats_the_effect(
    app: Flask,
    notifications: Notifications,
    flaky: FlakyBackend,
    celery_worker: WorkerFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The effect happened, and the ledger fails for a moment as its run
    records it done (a Redis restart). The retry message that would record it
    comes later than the claim's timeout (the broker decides when: a backlog,
    a reconnection). Meanwhile a copy of the consumer's message runs (the
    broker's redelivery of the original, the outbox's re-enqueue): it must
    find the claim held or done, not free."""
    from celery.signals import task_postrun

    from flask_notifications.worker import tasks
    from flask_notifications.worker.messages import enqueue_delivery

    app.config["NOTIFICATIONS_CLAIM_TIMEOUT"] = 1.0
    monkeypatch.setattr(tasks, "backoff", lambda *args, **kwargs: 30.0)
    hub = notifications.create_hub("Record")
    effects: list[str] = []

    @hub.register_consumer(celery_task_name="outage.record", pass_event=True)
    def effect(event: Event) -> None:
        effects.append(event["event_id"])

    runs: list[str] = []

    def ended(sender: Any = None, **extra: Any) -> None:
        if getattr(sender, "name", None) == "outage.record":
            runs.append(str(extra.get("state")))

    task_postrun.connect(ended, weak=False)
    flaky.failures["complete"] = 1
    event = Event(None, "t", "title", "body")
    try:
        with celery_worker():
            sent = notifications.send(event)
            wait_for(lambda: len(runs) >= 1, timeout=60)
            # Past the claim's timeout: a claim nobody renews has lapsed.
            time.sleep(2.0)
            enqueue_delivery(
                notifications.get_celery(app), "outage.record", hub.hub_id, event.to_json(), sent.delivery_id
            )
            wait_for(lambda: len(runs) >= 2, timeout=60)
    finally:
        task_postrun.disconnect(ended)
    assert effects == [event["event_id"]], runs
    assert flaky.calls["complete"] == 2 and flaky.failures["complete"] == 0
