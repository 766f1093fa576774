"""The dispatch's claim (flask_notifications/worker/outbox.py) never makes a
delivery that the broker lost unrecoverable: a run that claimed the dispatch
and then lost its message holds a lease that expires, and a dispatch whose
fan-out the ledger did not record is not recorded done, so the sweeper's copy
of the delivery's entry dispatches it again. Each test loses the broker's
messages by deleting the queue, as a SIGKILLed Redis loses the message
between kombu's ``BRPOP`` and its record as unacknowledged."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask

from flask_notifications import Notifications
from flask_notifications.consumers.consumer import EventConsumer
from flask_notifications.errors import BackendError
from flask_notifications.event import Event
from flask_notifications.state import runtime
from flask_notifications.worker import outbox
from flask_notifications.worker.messages import DISPATCH_TASK
from tests.helpers import make_config, running_worker, wait_for

pytestmark = [pytest.mark.redis]


class Recorder(EventConsumer):
    def __init__(self) -> None:
        super().__init__("tests.outbox_claim.recorder")
        self.delivered: list[str] = []
        self.lock = threading.Lock()

    def consume(self, event: Event) -> None:
        with self.lock:
            self.delivered.append(event["event_id"])


@pytest.fixture
def outbox_app(redis_url: str, redis_keys: str) -> Iterator[tuple[Flask, Notifications, Recorder]]:
    app = Flask(__name__)
    app.config.update(
        make_config(
            redis_url,
            redis_keys,
            NOTIFICATIONS_OUTBOX_TIMEOUT=0.5,
            NOTIFICATIONS_OUTBOX_SWEEP_INTERVAL=0.2,
            NOTIFICATIONS_CLAIM_TIMEOUT=1,
        )
    )
    ext = Notifications(app)
    recorder = Recorder()
    ext.create_hub("OutboxClaim").register_consumer(recorder)
    with app.app_context():
        yield app, ext, recorder
    ext.get_backend(app).close()


def _lose_the_queue(app: Flask, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.delete(app.config["CELERY_TASK_DEFAULT_QUEUE"])
    client.close()


def _deliver_what_the_outbox_holds(app: Flask, ext: Notifications, redis_url: str) -> None:
    """Run a worker and sweep until the outbox and the queue are empty."""
    celery = ext.get_celery(app)
    ledger = runtime(app).ledger
    client = redis.Redis.from_url(redis_url)

    def settled() -> bool:
        outbox.sweep(celery, app, ledger)
        return ledger.outbox_size() == 0 and not client.llen(app.config["CELERY_TASK_DEFAULT_QUEUE"])

    try:
        with running_worker(celery):
            wait_for(settled, timeout=60, interval=0.2)
    finally:
        client.close()


def test_a_dispatch_claimed_by_a_run_whose_message_was_lost_is_dispatched_by_the_copy(
    outbox_app: tuple[Flask, Notifications, Recorder], redis_url: str
) -> None:
    app, ext, recorder = outbox_app
    event = Event(None, "claim", "Claimed, then lost", "body", sender="system")
    sent = ext.send(event)
    # A worker took the dispatch message and claimed the dispatch; then the
    # broker lost the message and the worker its run.
    ledger = runtime(app).ledger
    ledger.claim(outbox.dispatch_key(str(sent.delivery_id)), "a run that died", 1.0)
    _lose_the_queue(app, redis_url)
    _deliver_what_the_outbox_holds(app, ext, redis_url)
    assert recorder.delivered == [event["event_id"]]


def test_a_fan_out_the_ledger_did_not_record_leaves_the_delivery_to_the_sweeper(
    outbox_app: tuple[Flask, Notifications, Recorder], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, ext, recorder = outbox_app
    ledger = runtime(app).ledger
    real_add = ledger.outbox_add
    failed: list[str] = []

    def outbox_add(entries: Any, due_ms: int, *, remove: str | None = None) -> None:
        # The fan-out's write (it replaces the delivery's entry) fails once,
        # as it does while Redis restarts.
        if remove and not failed:
            failed.append(remove)
            raise BackendError("Redis outbox failed: Connection refused.")
        real_add(entries, due_ms, remove=remove)

    monkeypatch.setattr(ledger, "outbox_add", outbox_add)
    event = Event(None, "claim", "Fanned out, unrecorded", "body", sender="system")
    sent = ext.send(event)
    _lose_the_queue(app, redis_url)
    # The dispatch runs once the ledger failed; its consumer's message, and
    # anything else it enqueued, is then lost by the broker.
    hub = ext.hubs[sent.hub_ids[0]]
    targets = [[hub.hub_id, name] for name in hub.consumer_names]
    try:
        ext.get_celery(app).tasks[DISPATCH_TASK].apply(
            args=(event.to_json(), targets), kwargs={"delivery_id": str(sent.delivery_id)}
        )
    finally:
        _lose_the_queue(app, redis_url)
    assert failed, "the fan-out's write did not fail: the test proved nothing"
    _deliver_what_the_outbox_holds(app, ext, redis_url)
    assert recorder.delivered == [event["event_id"]]
