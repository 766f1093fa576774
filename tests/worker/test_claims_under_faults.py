"""Claims, completion records and dead letters when the backend or the worker
fails at the worst moment (the hostile review of issue 11): an unknown task
while the backend is down, a redelivery after the visibility timeout, a dead
letter whose removal failed after its retry. Against the real Redis (private
ones where the test kills them) and Celery workers, in processes of their
own where the test kills them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis
from celery.signals import after_task_publish, task_postrun, task_unknown
from flask import Flask

from flask_notifications import Notifications
from flask_notifications.event import Event
from flask_notifications.worker import dead_letters
from flask_notifications.worker.messages import enqueue_delivery
from tests.helpers import RedisServer, WorkerProcess, make_config, running_worker, wait_for

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

FAULT_APP = "tests.apps.fault_app"


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def backend_apart(
    redis_url: str, redis_keys: str, private_redis: Callable[..., RedisServer]
) -> Callable[..., tuple[Flask, RedisServer]]:
    """``backend_apart(name, **config)``: an app whose broker is the shared
    Redis (under the test's keys) and whose backend is a private Redis that
    the test may kill and start again (its data kept)."""

    def make(name: str, **config: Any) -> tuple[Flask, RedisServer]:
        redis_server = private_redis(persistent=True)
        app = Flask(name)
        app.config.update(make_config(redis_url, redis_keys, NOTIFICATIONS_REDIS_URL=redis_server.url, **config))
        return app, redis_server

    return make


def make_event(title: str = "Title") -> Event:
    return Event(None, "effect", title, "Body", sender="system")


# -- 1. an unknown task, while the backend is down, is dropped ---------------------------


def test_unknown_task_while_backend_is_down_is_not_lost(
    backend_apart: Callable[..., tuple[Flask, RedisServer]], redis_client: redis.Redis[bytes], unique: str
) -> None:
    app, redis_server = backend_apart("unknown_down")
    ext = Notifications(app)
    hub = ext.create_hub("Renamed")
    hub.register_consumer(celery_task_name="attack.known")(lambda event: None)
    seen = threading.Event()

    def on_unknown(**kwargs: Any) -> None:
        seen.set()

    task_unknown.connect(on_unknown, weak=False)  # after the library's handler
    try:
        with app.app_context(), running_worker(ext.celery, concurrency=1, loglevel="ERROR"):
            redis_server.kill()  # the backend is down (a failover, a restart)
            # A consumer task renamed by a deploy, queued while Redis restarts.
            enqueue_delivery(ext.celery, "attack.renamed", hub.hub_id, make_event().to_json(), "d-unknown")
            assert seen.wait(30)
        redis_server.start()
        with app.app_context():
            letters = ext.dead_letters()
        # The message is gone from the broker too: nothing can deliver it again.
        assert redis_client.llen(unique) == 0
        assert [letter["delivery_id"] for letter in letters] == ["d-unknown"]
    finally:
        task_unknown.disconnect(on_unknown)
        ext.get_backend(app).close()


# -- 2. a completion record lives only the visibility timeout --------------------------


def test_a_redelivery_after_the_visibility_timeout_does_not_repeat_the_effect(
    fault_app: ModuleType, fault_env: dict[str, str], redis_client: redis.Redis[bytes], unique: str, tmp_path: Path
) -> None:
    effects = tmp_path / "effects"
    (tmp_path / "die-after-complete").write_text("")
    worker = WorkerProcess(FAULT_APP, fault_env, tmp_path / "worker.log", pool="solo")
    worker.start()
    try:
        with fault_app.app.app_context():
            sent = fault_app.notifications.send(make_event())
        # The worker ran the consumer, recorded it as done, and died before
        # acknowledging the message (the only worker: it is restarted).
        wait_for(lambda: worker.proc is not None and worker.proc.poll() is not None, timeout=60)
        assert _lines(effects) == [sent.event["event_id"]]
        # The message is still there, unacknowledged: the restarted worker
        # gets it back, at the earliest one visibility timeout after it was
        # delivered, whenever it next sweeps. Let twice that pass (the record
        # used to expire after one)...
        index = f"{unique}:unacked_index"
        assert redis_client.zcard(index) == 1
        delivered_at = redis_client.zrange(index, 0, 0, withscores=True)[0][1]
        timeout = float(fault_env["FAULT_VISIBILITY_TIMEOUT"])
        wait_for(lambda: time.time() > delivered_at + 2 * timeout, timeout=30)
        # ... and the completion record is still kept.
        assert list(redis_client.scan_iter(f"{unique}:claim:*"))
        worker.start()
        # The restarted worker restores the message and runs it (acknowledged
        # once it returns, so settled means done).
        wait_for(lambda: _settled(redis_client, unique), timeout=60)
    finally:
        worker.stop()
    assert _lines(effects) == [sent.event["event_id"]]


def _settled(client: redis.Redis[bytes], unique: str) -> bool:
    return not client.llen(unique) and not client.zcard(f"{unique}:unacked_index")


# -- 6. a dead letter left listed is retried with a second effect ----------------------


def test_a_letter_left_listed_after_its_retry_is_not_delivered_again(
    backend_apart: Callable[..., tuple[Flask, RedisServer]], redis_client: redis.Redis[bytes], unique: str
) -> None:
    app, redis_server = backend_apart("retry_twice", NOTIFICATIONS_IDEMPOTENCY_TTL=1)
    ext = Notifications(app)
    hub = ext.create_hub("Letters")
    effects: list[str] = []
    hub.register_consumer(celery_task_name="attack.letters", pass_event=True)(
        lambda event: effects.append(event["title"])
    )
    ledger = ext.get_ledger(app)
    letter = dead_letters.keep(
        app,
        ledger,
        hub_id=hub.hub_id,
        consumer="attack.letters",
        event_json=make_event("charge card").to_json(),
        delivery_id="d-letter",
        attempts=6,
        error="RuntimeError: boom",
    )

    def crash_backend(sender: Any = None, **kwargs: Any) -> None:
        if sender == "attack.letters" and redis_server.proc is not None and redis_server.proc.poll() is None:
            redis_server.kill()  # between the enqueue and the removal

    runs: list[Any] = []

    def on_postrun(sender: Any = None, retval: Any = None, **kwargs: Any) -> None:
        if sender is not None and sender.name == "attack.letters":
            runs.append(retval)

    published: list[Any] = []

    def on_publish(sender: Any = None, **kwargs: Any) -> None:
        if sender == "attack.letters":
            published.append(sender)

    task_postrun.connect(on_postrun, weak=False)
    after_task_publish.connect(crash_backend, weak=False)
    try:
        with app.app_context():
            ext.retry_dead_letter(letter["id"])  # enqueued; the removal fails and is logged
        after_task_publish.disconnect(crash_backend)
        redis_server.start()
        with app.app_context(), running_worker(ext.celery, concurrency=1, loglevel="ERROR"):
            wait_for(lambda: runs == ["consumed"], timeout=60)
            assert [d["id"] for d in ext.dead_letters()] == [letter["id"]]  # still listed
            private = redis.Redis.from_url(redis_server.url)
            # Later (an hour, by default), an operator retries what is listed.
            wait_for(lambda: not list(private.scan_iter(f"{unique}:claim:*")), timeout=30)
            private.close()
            after_task_publish.connect(on_publish, weak=False)
            # The letter's retry ran: retrying it again enqueues nothing, and
            # removes the letter.
            ext.retry_dead_letter(letter["id"])
            assert published == []
            assert ext.dead_letters() == []
    finally:
        task_postrun.disconnect(on_postrun)
        after_task_publish.disconnect(crash_backend)
        after_task_publish.disconnect(on_publish)
        ext.get_backend(app).close()
    assert runs == ["consumed"]
    assert effects == ["charge card"]
