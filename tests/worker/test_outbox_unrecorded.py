"""A ``send()`` whose outbox record fails raises
:class:`~flask_notifications.errors.OutboxUnavailableError` rather than
return: a ``send()`` that returned must be delivered across a broker crash,
and without its record nothing would enqueue a message the broker lost.

The broker is the shared Redis; the ledger (claims and outbox) is a private
Redis that the test stops or pauses, so the broker stays up and only the
record fails. No worker runs: the test reads the broker's queue, which
holds what ``send()`` enqueued.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.errors import BackendError, BrokerUnavailableError, OutboxUnavailableError
from flask_notifications.ledger.redis import RedisLedger
from tests.helpers import RedisServer, make_config

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]


@pytest.fixture
def ledger_server(private_redis: Callable[..., RedisServer]) -> RedisServer:
    return private_redis()


@pytest.fixture
def ext(redis_url: str, redis_keys: str, ledger_server: RedisServer) -> Iterator[Notifications]:
    app = Flask("unrecorded")
    # A short read timeout, so that a paused ledger fails the record in
    # seconds (redis-py retries it three times).
    app.config.update(
        make_config(redis_url, redis_keys, NOTIFICATIONS_LEDGER_URL=f"{ledger_server.url}?socket_timeout=0.5")
    )
    ext = Notifications(app)
    ext.create_hub("Unrecorded").register_consumer(celery_task_name="tests.unrecorded", pass_event=True)(
        lambda event: None
    )
    yield ext
    ext.get_ledger(app).close()
    ext.get_backend(app).close()


def queued(redis_client: redis.Redis[bytes], ext: Notifications) -> int:
    """Dispatch messages in the broker's queue."""
    return int(redis_client.llen(ext.runtime().app.config["CELERY_TASK_DEFAULT_QUEUE"]))


def outbox_size(server: RedisServer, ext: Notifications) -> int:
    ledger = ext.get_ledger(ext.runtime().app)
    assert isinstance(ledger, RedisLedger)
    client = redis.Redis.from_url(server.url)
    try:
        return int(client.hlen(f"{ledger.key_prefix}:{{outbox}}"))
    finally:
        client.close()


def event(title: str) -> Event:
    return Event(None, "unrecorded", title, "body")


def test_a_send_that_cannot_record_raises_and_enqueues_nothing(
    ext: Notifications, ledger_server: RedisServer, redis_client: redis.Redis[bytes]
) -> None:
    app = ext.runtime().app
    ledger_server.stop()
    with app.app_context():
        with pytest.raises(OutboxUnavailableError, match="send again once the ledger answers") as one:
            ext.send(event("one"))
        with pytest.raises(OutboxUnavailableError, match="none of the 3 events were sent") as many:
            ext.send_many([event("a"), event("b"), event("c")])
    # Caught where an outage of the broker or of the ledger was caught before.
    assert isinstance(one.value, BrokerUnavailableError) and isinstance(one.value, BackendError)
    assert one.value.may_be_delivered is False
    assert len(one.value.delivery_ids) == 1
    assert many.value.may_be_delivered is False
    assert len(many.value.delivery_ids) == 3
    assert queued(redis_client, ext) == 0
    # The ledger back (empty: it kept nothing): sends are recorded again.
    ledger_server.start()
    with app.app_context():
        dispatch = ext.send(event("after"))
    assert dispatch.delivery_id is not None
    assert queued(redis_client, ext) == 1
    assert outbox_size(ledger_server, ext) == 1


def test_a_send_whose_record_fails_after_its_enqueue_says_it_may_be_delivered(
    ext: Notifications, ledger_server: RedisServer, redis_client: redis.Redis[bytes]
) -> None:
    app = ext.runtime().app
    with app.app_context():
        # Loads the record's script and leaves a connection in the pool: the
        # next record is written on it at once, and its reply read after
        # the enqueue.
        ext.send(event("before"))
    assert queued(redis_client, ext) == 1
    ledger_server.pause()
    try:
        with app.app_context(), pytest.raises(OutboxUnavailableError, match="may deliver twice") as failed:
            ext.send(event("during"))
    finally:
        ledger_server.resume()
    assert failed.value.may_be_delivered is True
    assert len(failed.value.delivery_ids) == 1
    # The message went out while the record's reply was awaited.
    assert queued(redis_client, ext) == 2
