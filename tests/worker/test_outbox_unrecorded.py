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

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.errors import (
    BackendError,
    BrokerUnavailableError,
    LedgerUnavailableError,
    OutboxUnavailableError,
    SendInProgressError,
)
from flask_notifications.ledger.redis import RedisLedger
from tests.helpers import RedisServer, make_config

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]


@pytest.fixture
def ledger_server(private_redis: Callable[..., RedisServer]) -> RedisServer:
    return private_redis()


def unrecorded_ext(redis_url: str, redis_keys: str, ledger_server: RedisServer, **config: Any) -> Notifications:
    """An app whose ledger is ``ledger_server``; ``config`` overrides."""
    app = Flask("unrecorded")
    # A short read timeout, so that a paused ledger fails the record in
    # seconds (redis-py retries it three times).
    app.config.update(
        make_config(redis_url, redis_keys, NOTIFICATIONS_LEDGER_URL=f"{ledger_server.url}?socket_timeout=0.5", **config)
    )
    ext = Notifications(app)
    ext.create_hub("Unrecorded").register_consumer(celery_task_name="tests.unrecorded", pass_event=True)(
        lambda event: None
    )
    return ext


def closed(ext: Notifications) -> None:
    app = ext.runtime().app
    ext.get_ledger(app).close()
    ext.get_backend(app).close()


@contextmanager
def refusing_broker(
    redis_url: str,
    redis_keys: str,
    ledger_server: RedisServer,
    private_redis: Callable[..., RedisServer],
    retries: int = 1,
) -> Iterator[Notifications]:
    """An app whose broker is a private Redis: one send goes through (the
    ledger's script loaded, a connection in its pool), then the broker
    stops, and each publish is refused after ``retries`` retries (0.2 s
    apart, then longer)."""
    broker = private_redis()
    ext = unrecorded_ext(
        redis_url,
        redis_keys,
        ledger_server,
        CELERY_BROKER_URL=broker.url,
        NOTIFICATIONS_PUBLISH_RETRY_POLICY={"max_retries": retries, "interval_start": 0, "interval_step": 0.2},
    )
    try:
        with ext.runtime().app.app_context():
            ext.send(event("before"))
        broker.stop()
        yield ext
    finally:
        closed(ext)


@pytest.fixture
def ext(redis_url: str, redis_keys: str, ledger_server: RedisServer) -> Iterator[Notifications]:
    ext = unrecorded_ext(redis_url, redis_keys, ledger_server)
    yield ext
    closed(ext)


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


def test_a_first_send_whose_record_may_have_landed_goes_out_and_says_so(
    ext: Notifications, redis_url: str, redis_keys: str, ledger_server: RedisServer, redis_client: redis.Redis[bytes]
) -> None:
    # Another process (a worker, say) wrote to the outbox already, so the
    # server knows the record's script; this process has not, and its
    # first record goes out on a connection it opened (the ping). The ledger
    # then goes silent: the record's command is written, its reply never
    # comes, and the command runs once the ledger answers again. Sending
    # again would then deliver the event twice, so the send must not say
    # that nothing was sent.
    other = unrecorded_ext(redis_url, redis_keys, ledger_server)
    try:
        with other.runtime().app.app_context():
            other.send(event("other"))
    finally:
        closed(other)
    app = ext.runtime().app
    assert ext.get_ledger(app).ping()
    ledger_server.pause()
    try:
        with app.app_context(), pytest.raises(OutboxUnavailableError) as failed:
            ext.send(event("first"))
    finally:
        ledger_server.resume()
    assert failed.value.may_be_delivered is True
    # Its message went out, beside the other process's.
    assert queued(redis_client, ext) == 2
    # And its record landed once the ledger answered: the sweeper would
    # have delivered it even had the broker lost the message.
    assert outbox_size(ledger_server, ext) == 2


def test_a_refused_send_whose_record_may_stay_says_so_and_is_sent_again(
    redis_url: str, redis_keys: str, ledger_server: RedisServer, private_redis: Callable[..., RedisServer]
) -> None:
    with refusing_broker(redis_url, redis_keys, ledger_server, private_redis) as ext:
        app = ext.runtime().app
        assert outbox_size(ledger_server, ext) == 1  # "before"
        # The ledger answers: the record of the refused send is removed, and
        # the error is the broker's, with nothing sent.
        with app.app_context(), pytest.raises(BrokerUnavailableError, match="was not sent") as refused:
            ext.send(event("refused"))
        assert not isinstance(refused.value, OutboxUnavailableError)
        assert outbox_size(ledger_server, ext) == 1
        # The ledger silent too: the record's command went out, and whether
        # it ran is unknown. The error says the record may stay, and asks
        # for the send again (the broker's error, not "may be delivered"):
        # told "may be delivered", a caller whose record was absent would
        # lose the event; sent again, it can only be delivered twice.
        ledger_server.pause()
        try:
            with app.app_context(), pytest.raises(BrokerUnavailableError, match="may stay") as unknown:
                ext.send(event("unknown"))
        finally:
            ledger_server.resume()
        assert not isinstance(unknown.value, OutboxUnavailableError)
        # Here it landed: the sweeper delivers it once the broker answers.
        assert outbox_size(ledger_server, ext) == 2


def test_a_refused_send_whose_record_the_ledger_refused_says_nothing_was_sent(
    redis_url: str, redis_keys: str, ledger_server: RedisServer, private_redis: Callable[..., RedisServer]
) -> None:
    # The broker down, and the ledger answering every write with an error
    # (out of memory; READONLY or MISCONF answer alike): Redis refuses a
    # script that writes before running it, so nothing was recorded and
    # nothing enqueued, and the caller must send again.
    client = redis.Redis.from_url(ledger_server.url)
    try:
        with refusing_broker(redis_url, redis_keys, ledger_server, private_redis) as ext:
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("maxmemory", 1)
            with ext.runtime().app.app_context(), pytest.raises(BrokerUnavailableError, match="was not sent") as no:
                ext.send(event("refused"))
            assert not isinstance(no.value, OutboxUnavailableError)
            client.config_set("maxmemory", 0)
            assert outbox_size(ledger_server, ext) == 1  # "before" only
    finally:
        client.close()


def test_a_refused_plain_write_may_have_landed(ext: Notifications, ledger_server: RedisServer) -> None:
    # A refusal is certain only as the answer to the one command written:
    # the plain write (a cluster's, or the retry after a lost reply) may be
    # redis-py's second try of a command whose first try ran, so its
    # refusal says nothing about that one.
    ledger = ext.get_ledger(ext.runtime().app)
    client = redis.Redis.from_url(ledger_server.url)
    try:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)
        with pytest.raises(BackendError) as plain:
            ledger.outbox_add({"d:plain": "{}"}, 0)
        assert not isinstance(plain.value, LedgerUnavailableError)
    finally:
        client.config_set("maxmemory", 0)
        client.close()


def test_a_retry_with_the_key_of_a_send_still_failing_is_not_a_duplicate(
    redis_url: str, redis_keys: str, ledger_server: RedisServer, private_redis: Callable[..., RedisServer]
) -> None:
    # Send A's broker refuses it, and A retries the publish for about two
    # seconds; meanwhile its caller's retry B comes with the same key. B must
    # not be told "duplicate": A then fails, and nothing would deliver it.
    with refusing_broker(redis_url, redis_keys, ledger_server, private_redis, retries=5) as ext:
        app = ext.runtime().app
        first: list[BaseException] = []

        def send_a() -> None:
            with app.app_context():
                try:
                    ext.send(event("keyed"), idempotency_key="order-42")
                except BaseException as exc:  # noqa: BLE001 - what A raised
                    first.append(exc)

        thread = threading.Thread(target=send_a)
        thread.start()
        time.sleep(0.5)
        with app.app_context(), pytest.raises((BrokerUnavailableError, SendInProgressError)):
            ext.send(event("keyed"), idempotency_key="order-42")
        thread.join(30)
        assert first and isinstance(first[0], BrokerUnavailableError)
        assert not isinstance(first[0], OutboxUnavailableError)
        assert outbox_size(ledger_server, ext) == 1  # "before" only


def test_a_refused_batch_is_forgotten_whole_or_kept_whole(
    redis_url: str, redis_keys: str, private_redis: Callable[..., RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker refuses a batch, and the ledger dies as send_many() forgets
    # the batch's records. Forgotten one by one, the first record would be
    # gone and the others kept (a review found that, when the error still
    # said "may be delivered", losing the first): the batch is forgotten in
    # one step, and the error is the broker's, which asks for the send again.
    ledger_server = private_redis(persistent=True)
    real_remove_many = RedisLedger.outbox_remove_many

    def die_then_remove(self: RedisLedger, entry_ids: Sequence[str]) -> int:
        ledger_server.stop()
        return real_remove_many(self, entry_ids)

    with refusing_broker(redis_url, redis_keys, ledger_server, private_redis) as ext:
        monkeypatch.setattr(RedisLedger, "outbox_remove_many", die_then_remove)
        with ext.runtime().app.app_context(), pytest.raises(BrokerUnavailableError, match="may stay") as raised:
            ext.send_many([event("a"), event("b"), event("c")])
        monkeypatch.undo()
        assert not isinstance(raised.value, OutboxUnavailableError)
        ledger_server.start()
        # The whole batch kept (none half forgotten), for the sweeper.
        assert outbox_size(ledger_server, ext) == 4
