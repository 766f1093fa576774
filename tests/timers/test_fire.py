"""Firing: a timer whose claim another run holds is left for later; a timer
of a consumer this worker does not know waits for one that does; the tick
task, the beat entry, the queue of the ticks and the config keys."""

from __future__ import annotations

import logging

import pytest
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.config import DEFAULTS
from flask_notifications.consumers import Delayed, Digest
from flask_notifications.errors import BackendError, ConfigurationError
from flask_notifications.ledger.base import Claim, DueTimer
from flask_notifications.ledger.memory import MemoryLedger
from flask_notifications.timers import BEAT_ENTRY, TICK_TASK, TimerTicker
from flask_notifications.timers.fire import fire_key
from flask_notifications.timers.owner import record
from tests.timers.conftest import Collect, ticked_until


def test_a_fire_whose_claim_is_held_leaves_the_timer_for_later(eager: tuple[Flask, Notifications]) -> None:
    """As when a fire outlives its lease: the second fire finds the first
    one's claim and does nothing; once it is free, the timer fires once."""
    app, notifications = eager
    inner = Collect()
    notifications.create_hub("h").register_consumer(Delayed(inner, after=0.05))
    notifications.send(Event(None, "t", "T", ""))
    ledger = notifications.get_ledger()
    (timer,) = ledger.timer_claim(10**13, 10**13 + 1, 10)
    ledger.timer_retry(timer.id, timer.version, 0)  # due now again
    key = fire_key(timer)
    assert ledger.claim(key, "another-run", 30) is Claim.ACQUIRED
    notifications.timers.tick()
    assert inner.events == [] and ledger.timer_get(timer.id) is not None
    ledger.release(key, "another-run")
    ticked_until(notifications, lambda: inner.events)
    ticked_until(notifications, lambda: notifications.timers.pending() == 0)
    assert len(inner.events) == 1


def test_a_timer_of_an_unknown_consumer_waits(
    eager: tuple[Flask, Notifications], caplog: pytest.LogCaptureFixture
) -> None:
    app, notifications = eager
    ledger = notifications.get_ledger()
    ledger.timer_set("t1", record("delayed", "event-hub-gone", "app.removed"), 0, "v1")
    with caplog.at_level(logging.ERROR, "flask_notifications.timers.fire"):
        assert notifications.timers.tick() == 1
    assert "No consumer app.removed with timers on hub 'event-hub-gone'" in caplog.text
    kept = ledger.timer_get("t1")
    assert kept is not None and kept.version == "v1" and kept.due_ms > 0


def test_a_timer_whose_consumer_became_another_kind_waits(
    eager: tuple[Flask, Notifications], caplog: pytest.LogCaptureFixture
) -> None:
    # A deploy put a Digest where a Delayed was, under the same task name: the
    # Digest took the Delayed's timer for an empty window and removed it.
    app, notifications = eager
    inner = Collect()
    hub = notifications.create_hub("h")
    hub.register_consumer(Digest(inner, window=60, name="app.later"))
    ledger = notifications.get_ledger()
    event = Event(None, "t", "Later", "", recipients=["alice"])
    ledger.timer_set("t1", record("delayed", hub.hub_id, "app.later", d="d1", e=event.to_json()), 0, "v1")
    with caplog.at_level(logging.ERROR, "flask_notifications.timers.fire"):
        assert notifications.timers.tick() == 1
    assert "No consumer app.later with timers on hub" in caplog.text
    kept = ledger.timer_get("t1")
    assert kept is not None and kept.version == "v1" and inner.events == []


def test_an_unreadable_timer_is_dropped(eager: tuple[Flask, Notifications]) -> None:
    app, notifications = eager
    ledger = notifications.get_ledger()
    ledger.timer_set("t1", "not json", 0, "v1")
    notifications.timers.tick()
    assert ledger.timer_get("t1") is None


def test_the_tick_task_and_the_beat_entry(eager: tuple[Flask, Notifications]) -> None:
    app, notifications = eager
    celery = notifications.get_celery(app)
    assert TICK_TASK in celery.tasks
    entry = notifications.timers.beat_schedule(every=2.0)
    assert celery.conf.beat_schedule[BEAT_ENTRY] == entry
    assert entry == {"task": TICK_TASK, "schedule": 2.0, "options": {"expires": 2.0, "queue": "notifications.timers"}}
    # The ticks' queue is declared, so a worker started without -Q consumes it.
    assert "notifications.timers" in {queue.name for queue in celery.conf.task_queues}
    assert TimerTicker in celery.steps["worker"]
    inner = Collect()
    notifications.create_hub("h").register_consumer(Delayed(inner, after=0.05))
    notifications.send(Event(None, "t", "T", ""))
    ticked_until(notifications, lambda: celery.tasks[TICK_TASK].apply().get() >= 0 and inner.events)


@pytest.mark.parametrize("key", ["NOTIFICATIONS_TIMER_TICK", "NOTIFICATIONS_TIMER_CLAIM_LEASE"])
def test_the_config_keys_are_checked(key: str) -> None:
    assert key in DEFAULTS
    app = Flask("timers")
    app.config.update({"NOTIFICATIONS_BACKEND": "memory", "CELERY_BROKER_URL": "memory://", key: -1})
    with pytest.raises(ConfigurationError, match=key):
        Notifications(app)


def test_a_due_timer_is_a_value() -> None:
    assert DueTimer("a", "{}", "v", 1) == DueTimer("a", "{}", "v", 1, 0)


class _LocksTheFirstRecord(MemoryLedger):
    """Its first record of a fire fails, as a SQLite database locked by
    another writer for longer than its busy timeout."""

    failed = False

    def complete(self, key: str, token: str, ttl: float) -> bool:
        if key.startswith("timer:") and not self.failed:
            self.failed = True
            raise BackendError("database is locked")
        return super().complete(key, token, ttl)


def test_a_fire_whose_record_fails_once_does_not_repeat_its_effect() -> None:
    """The SQLite kill test mailed a window twice: the record of its fire
    failed once, the fire was tried again, found the claim free once it
    expired, and ran the effect again."""
    app = Flask("timers")
    app.config.update(
        NOTIFICATIONS_BACKEND="memory",
        NOTIFICATIONS_LEDGER=_LocksTheFirstRecord(),
        CELERY_BROKER_URL="memory://",
        CELERY_TASK_ALWAYS_EAGER=True,
        NOTIFICATIONS_TIMER_TICK=None,
        NOTIFICATIONS_CLAIM_TIMEOUT=0.2,
        NOTIFICATIONS_TIMER_CLAIM_LEASE=2,
        NOTIFICATIONS_RETRY_BACKOFF=0.01,
        NOTIFICATIONS_RETRY_BACKOFF_MAX=0.05,
    )
    notifications = Notifications(app)
    inner = Collect()
    notifications.create_hub("h").register_consumer(Delayed(inner, after=0.05))
    with app.app_context():
        notifications.send(Event(None, "t", "Once", ""))
        ticked_until(notifications, lambda: notifications.timers.pending() == 0)
        assert notifications.get_ledger().failed  # type: ignore[attr-defined]
    assert [event["title"] for event in inner.events] == ["Once"]
