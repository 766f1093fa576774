"""Idempotency keys when a send dies or races (the hostile review of issue
11): a send killed between the key's claim and the enqueue, two concurrent
sends with one key, and the in-process ledger's window.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
from flask import Flask

from flask_notifications import Notifications
from flask_notifications.backends.base import Claim
from flask_notifications.errors import BrokerUnavailableError, SendInProgressError
from flask_notifications.event import Event
from flask_notifications.event_filter import EventFilter
from flask_notifications.ledger.memory import MemoryLedger
from tests.helpers import ROOT, free_port, make_config, wait_for

FAULT_APP = "tests.apps.fault_app"


def make_event(title: str = "Title") -> Event:
    return Event(None, "effect", title, "Body", sender="system")


# -- 3. an idempotency key claimed by a send that never enqueued -----------------------


@pytest.mark.redis
@pytest.mark.subprocess
def test_a_send_killed_before_enqueueing_does_not_refuse_its_key_for_the_window(
    fault_app: ModuleType, fault_env: dict[str, str], redis_client: redis.Redis[bytes], unique: str, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", FAULT_APP, "send", "order-42"],
        cwd=ROOT,
        env={**os.environ, **fault_env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: (tmp_path / "in-send").exists(), timeout=60)
        proc.send_signal(signal.SIGKILL)  # a gunicorn timeout, an OOM kill, a deploy
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert redis_client.llen(unique) == 0  # the first send enqueued nothing
    with fault_app.app.app_context():
        again = fault_app.notifications.send(make_event("Keyed"), idempotency_key="order-42")
    assert not again.duplicate
    assert redis_client.llen(unique) == 1


# -- 4. two concurrent sends with one key: neither enqueues ----------------------------


class _Gate(EventFilter):
    """Holds the first send() between its key's claim and its enqueue."""

    def __init__(self) -> None:
        self.inside, self.release = threading.Event(), threading.Event()

    def filter(self, event: Any) -> bool:
        if not self.inside.is_set():
            self.inside.set()
            self.release.wait(30)
        return True


@pytest.mark.redis
def test_a_duplicate_is_only_reported_for_a_key_that_was_enqueued(redis_url: str, unique: str, redis_keys: str) -> None:
    app = Flask("keyed_race")
    app.config.update(make_config(redis_url, unique, CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0"))
    app.config["NOTIFICATIONS_PUBLISH_RETRY_POLICY"] = {"max_retries": 0}
    ext = Notifications(app)
    gate = _Gate()
    hub = ext.create_hub("Race").filter_by(gate)
    hub.register_consumer(celery_task_name="attack.race")(lambda event: None)
    outcome: dict[str, Any] = {}

    def first() -> None:
        with app.app_context():
            try:
                outcome["first"] = ext.send(make_event("a"), idempotency_key="k")
            except BrokerUnavailableError as exc:
                outcome["first"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    second: Any
    try:
        assert gate.inside.wait(30)
        with app.app_context():
            # The first send is still in flight (it holds the key and renews
            # it): the second waits for it, then says so. It is not told
            # "duplicate" for an event nobody has enqueued.
            try:
                second = ext.send(make_event("b"), idempotency_key="k")
            except SendInProgressError as exc:
                second = exc
    finally:
        gate.release.set()
        thread.join(60)
    try:
        assert isinstance(outcome["first"], BrokerUnavailableError)  # nothing enqueued by the first
        assert isinstance(second, SendInProgressError) or not second.duplicate  # so not a duplicate
        # The first failed and freed the key: the next send with it tries to
        # enqueue (and meets the unreachable broker) rather than being a duplicate.
        with app.app_context(), pytest.raises(BrokerUnavailableError):
            ext.send(make_event("c"), idempotency_key="k")
    finally:
        ext.get_backend(app).close()


# -- 5. the in-process ledger forgets within the window --------------------------------


@pytest.mark.redis
@pytest.mark.amqp
def test_amqp_default_ledger_keeps_an_idempotency_key_for_its_window(
    redis_url: str,
    unique: str,
    amqp_url: str,
    redis_client: redis.Redis[bytes],
    redis_keys: str,
) -> None:
    app = Flask("amqp_keys")
    app.config.update(
        make_config(
            redis_url,
            unique,
            NOTIFICATIONS_BACKEND="amqp",
            NOTIFICATIONS_AMQP_URL=amqp_url,
            NOTIFICATIONS_LEDGER_SIZE=3,
        )
    )
    ext = Notifications(app)
    ext.create_hub("Keys").register_consumer(celery_task_name="attack.keys")(lambda event: None)
    with app.app_context():
        assert not ext.send(make_event(), idempotency_key="order-1").duplicate
        for n in range(3):  # three other orders, a second later
            assert not ext.send(make_event(), idempotency_key=f"other-{n}").duplicate
        again = ext.send(make_event(), idempotency_key="order-1")
    ext.get_backend(app).close()
    assert again.duplicate, "order-1 was sent twice within NOTIFICATIONS_IDEMPOTENCY_WINDOW"
    assert redis_client.llen(unique) == 4


def test_in_process_ledger_never_evicts_a_held_claim() -> None:
    ledger = MemoryLedger(ledger_size=3)
    assert ledger.claim("d1:hub:consumer", "run-1", 300) is Claim.ACQUIRED
    for n in range(3):  # three other deliveries run meanwhile in this worker
        key = f"d{n + 2}:hub:consumer"
        assert ledger.claim(key, "t", 300) is Claim.ACQUIRED
        assert ledger.complete(key, "t", 3600)
    # The broker redelivers d1 while run-1 still runs.
    assert ledger.claim("d1:hub:consumer", "run-2", 300) is Claim.BUSY
