"""The contract every pub/sub backend honours, run against real servers.

One module, parametrised over ``memory``, ``redis`` (the real Redis) and
``amqp`` (the real RabbitMQ). The amqp cases skip, saying why, only when no
RabbitMQ answers at ``AMQP_URL``. Then come the failure tests: a private
``redis-server`` killed and restarted under a subscription, and an AMQP
connection closed by the broker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from kombu.connection import Connection

from flask_notifications.backends.amqp import DEFAULT_URL, AmqpPubSub
from flask_notifications.backends.base import (
    Backend,
    Claim,
    History,
    Message,
    Subscription,
    build_backend,
    parse_id,
    resolve_backend,
)
from flask_notifications.backends.memory import MemoryPubSub
from flask_notifications.backends.redis import RedisPubSub
from flask_notifications.config import DEFAULTS
from flask_notifications.errors import BackendError
from tests.helpers import REDIS_URL, RedisServer, delete_keys, free_port, missing, wait_for, wait_until_waiting

#: The channels tests use; the prefix (``unique``) keeps them apart.
CHANNELS = ("a", "b", "c")
#: Data no layer may alter: newlines of every kind, NUL, separators, non-BMP.
AWKWARD = 'line1\nline2\r\nline3\rNUL\x00VT\x0bFS\x1cLS\u2028PS\u2029NEL\x85 snow☃ clef\U0001d11e "q" \\ end\n'


BackendFactory = Callable[..., Backend]


@pytest.fixture(
    params=["memory", pytest.param("redis", marks=pytest.mark.redis), pytest.param("amqp", marks=pytest.mark.amqp)]
)
def make_backend(request: pytest.FixtureRequest, unique: str) -> Iterator[BackendFactory]:
    """Build the parametrised backend from a config isolated by ``unique``;
    keyword arguments override config keys. Everything built is closed, and
    every key or exchange removed, after the test."""
    kind: str = request.param
    config: dict[str, Any] = {**DEFAULTS, "NOTIFICATIONS_KEY_PREFIX": unique}
    if kind == "redis":
        config["NOTIFICATIONS_REDIS_URL"] = request.getfixturevalue("redis_url")
    if kind == "amqp":
        config["NOTIFICATIONS_AMQP_URL"] = request.getfixturevalue("amqp_url")
    built: list[Backend] = []

    def make(**overrides: Any) -> Backend:
        backend = build_backend(kind, {**config, **overrides})
        built.append(backend)
        return backend

    yield make
    for backend in built:
        backend.close()
    if kind == "redis":
        client = redis.Redis.from_url(config["NOTIFICATIONS_REDIS_URL"])
        delete_keys(client, unique)
        client.close()
    if kind == "amqp":
        delete_exchanges(config["NOTIFICATIONS_AMQP_URL"], unique)


def delete_exchanges(url: str, prefix: str) -> None:
    """Delete the streams (durable queues) the AMQP backend made for ``prefix``."""
    conn = Connection(url, connect_timeout=2)
    try:
        chan = conn.channel()
        for name in CHANNELS:
            chan.queue_delete(f"{prefix}.hub.{name}")
    finally:
        conn.release()


@pytest.fixture
def backend(make_backend: BackendFactory) -> Backend:
    return make_backend()


@pytest.fixture
def subscription(backend: Backend) -> Iterator[Subscription]:
    sub = backend.subscribe()
    yield sub
    sub.close()


def collect(sub: Subscription, count: int) -> list[Message]:
    """Read until ``count`` messages arrived (the timeout only bounds a hang)."""
    got: list[Message] = []

    def enough() -> bool:
        got.extend(sub.get(0.2))
        return len(got) >= count

    wait_for(enough, timeout=20, interval=0)
    return got


def keeps_history(backend: Backend) -> bool:
    return True


def same(got: list[Message], sent: list[Message]) -> bool:
    """Whether ``got`` is what was ``sent``. RabbitMQ assigns the id of a
    message only when it is stored, so an AMQP publish returns none: compare
    channels and data then, and the ids of ``got`` must grow."""
    if all(m.id for m in sent):
        return got == sent
    ids = [m.sort_key for m in got]
    return [(m.channel, m.data) for m in got] == [(m.channel, m.data) for m in sent] and ids == sorted(set(ids))


def with_ids(backend: Backend, channel: str, sent: list[Message]) -> list[Message]:
    """``sent`` with the ids the backend gave them (read back from the
    history where the publisher could not know them)."""
    if all(m.id for m in sent):
        return sent
    kept = backend.history(channel, None).messages[-len(sent) :]
    assert [m.data for m in kept] == [m.data for m in sent]
    return kept


# -- pub/sub ----------------------------------------------------------------------


def test_publish_reaches_subscriber_in_order(backend: Backend, subscription: Subscription) -> None:
    subscription.add("a")
    sent = [backend.publish("a", f"m{i}") for i in range(25)]
    got = collect(subscription, 25)
    assert same(got, sent)
    assert [m.data for m in got] == [f"m{i}" for i in range(25)]
    assert all(m.channel == "a" for m in got)


def test_a_repeat_of_one_dedupe_key_is_published_once(backend: Backend, subscription: Subscription) -> None:
    assert backend.dedupes
    subscription.add("d")
    first = backend.publish("d", "m1", dedupe_key="delivery-1:push")
    again = backend.publish("d", "m1", dedupe_key="delivery-1:push")
    backend.publish("d", "m2", dedupe_key="delivery-2:push")
    backend.publish("d", "m3")
    backend.publish("d", "m3")  # without a key, a repeat is published
    backend.publish("e", "m1", dedupe_key="delivery-1:push")  # another channel
    backend.publish("d", "end")
    got = collect(subscription, 5)
    assert [m.data for m in got] == ["m1", "m2", "m3", "m3", "end"]
    assert again.data == "m1" and again.id == first.id
    assert [m.data for m in backend.history("d", None).messages] == ["m1", "m2", "m3", "m3", "end"]
    assert [m.data for m in backend.history("e", None).messages] == ["m1"]


def test_publish_many_is_publish_in_order(backend: Backend, subscription: Subscription) -> None:
    subscription.add("a")
    first = backend.publish("a", "m0")
    sent = backend.publish_many("a", [f"m{i}" for i in range(1, 30)])
    assert [m.data for m in sent] == [f"m{i}" for i in range(1, 30)]
    got = collect(subscription, 30)
    assert same(got, [first, *sent])
    kept = with_ids(backend, "a", [first, *sent])
    assert backend.history("a", kept[0].id).messages == kept[1:]
    assert backend.publish_many("a", []) == []


def test_ids_strictly_increase_per_channel(backend: Backend, subscription: Subscription) -> None:
    subscription.add("a")
    subscription.add("b")
    sent = [backend.publish("a" if i % 3 else "b", str(i)) for i in range(60)]
    got = collect(subscription, 60)
    for channel in ("a", "b"):
        keys = [parse_id(m.id) for m in got if m.channel == channel]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        assert same([m for m in got if m.channel == channel], [m for m in sent if m.channel == channel])


def test_one_subscription_reads_several_channels(backend: Backend, subscription: Subscription) -> None:
    for channel in CHANNELS:
        subscription.add(channel)
    sent = [backend.publish(CHANNELS[i % 3], f"{CHANNELS[i % 3]}{i}") for i in range(30)]
    got = collect(subscription, 30)
    for channel in CHANNELS:
        assert same([m for m in got if m.channel == channel], [m for m in sent if m.channel == channel])


def test_channel_added_while_get_blocks(backend: Backend, subscription: Subscription) -> None:
    if isinstance(backend, RedisPubSub):
        # Without CLIENT UNBLOCK the blocked XREAD would outlast the test.
        backend.max_block = 600
    subscription.add("a")
    got: list[Message] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            got.extend(subscription.get(300 if isinstance(backend, RedisPubSub) else 1))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    try:
        wait_until_waiting(listener, "get")
        subscription.add("b")
        sent = backend.publish("b", "late")
        wait_for(lambda: got, timeout=20)
        assert same(got, [sent])
    finally:
        stop.set()
        backend.publish("a", "wake the listener")
        listener.join(timeout=20)
    assert not listener.is_alive()


def test_close_ends_a_blocked_get(backend: Backend) -> None:
    if isinstance(backend, RedisPubSub):
        backend.max_block = 600  # close() must interrupt the XREAD itself
    sub = backend.subscribe()
    sub.add("a")
    results: list[list[Message]] = []
    listener = threading.Thread(target=lambda: results.append(sub.get(300)), daemon=True)
    listener.start()
    wait_until_waiting(listener, "get")
    sub.close()
    listener.join(timeout=20)
    assert not listener.is_alive()
    assert results == [[]]


GEVENT_SCRIPT = """
import json, sys
from gevent import monkey
monkey.patch_all()
import gevent
from flask_notifications.backends.base import build_backend
config = json.loads(sys.argv[1])
backend = build_backend(config["NOTIFICATIONS_BACKEND"], config)
sub = backend.subscribe()
sub.add("a")
got, ticks = [], [0]
def listen():
    while not got:
        got.extend(m.data for m in sub.get(5))
def tick():
    while not got:
        ticks[0] += 1
        gevent.sleep(0.01)
greenlets = [gevent.spawn(listen), gevent.spawn(tick)]
gevent.sleep(0.3)
sub.add("b")
backend.publish("b", "to b")
gevent.joinall(greenlets, timeout=30)
sub.close()
backend.close()
print(json.dumps({"got": got, "ticks": ticks[0]}))
"""


@pytest.mark.subprocess
def test_cooperative_under_gevent(make_backend: BackendFactory, unique: str) -> None:
    """In a monkey-patched process a blocked get() yields to other greenlets,
    and a channel added by another greenlet is delivered."""
    backend = make_backend()  # resolves the servers, and cleans up after
    config: dict[str, Any] = {**DEFAULTS, "NOTIFICATIONS_KEY_PREFIX": unique}
    if isinstance(backend, RedisPubSub):
        config.update(NOTIFICATIONS_BACKEND="redis", NOTIFICATIONS_REDIS_URL=os.environ.get("REDIS_URL", REDIS_URL))
    elif isinstance(backend, AmqpPubSub):
        config.update(NOTIFICATIONS_BACKEND="amqp", NOTIFICATIONS_AMQP_URL=backend.url)
    else:
        config.update(NOTIFICATIONS_BACKEND="memory")
    done = subprocess.run(
        [sys.executable, "-c", GEVENT_SCRIPT, json.dumps(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["got"] == ["to b"]
    # The ticker ran while the listener was blocked in get().
    assert result["ticks"] >= 10


def test_remove_stops_delivery(backend: Backend, subscription: Subscription) -> None:
    subscription.add("a")
    subscription.add("b")
    backend.publish("a", "before")
    assert [m.data for m in collect(subscription, 1)] == ["before"]
    subscription.remove("a")
    backend.publish("a", "after remove")
    last = backend.publish("b", "still here")
    got = collect(subscription, 1)
    got += subscription.get(0.3)
    assert same(got, [last])


def test_get_times_out_empty(backend: Backend, subscription: Subscription) -> None:
    """An idle get() returns nothing, and a blocked one waits (no busy
    loop: it is found blocked in a wait) until a message arrives.
    bench/ measures the CPU an idle subscription costs."""
    subscription.add("a")
    for timeout in (0.0, 0.3):
        assert subscription.get(timeout) == []
    got: list[list[Message]] = []
    listener = threading.Thread(target=lambda: got.append(subscription.get(60)), daemon=True)
    listener.start()
    wait_until_waiting(listener, "get")
    sent = backend.publish("a", "wakes it")
    listener.join(timeout=30)
    assert len(got) == 1 and same(got[0], [sent])


def test_get_without_channels_waits(backend: Backend, subscription: Subscription) -> None:
    """Without channels get() waits too, and returns nothing: a message on a
    channel it does not read never reaches it."""
    got: list[list[Message]] = []
    listener = threading.Thread(target=lambda: got.append(subscription.get(0.5)), daemon=True)
    listener.start()
    wait_until_waiting(listener, "get")
    backend.publish("a", "not subscribed")
    listener.join(timeout=30)
    assert got == [[]]


def test_close_is_idempotent(backend: Backend) -> None:
    assert backend.ping() is True
    sub = backend.subscribe()
    sub.add("a")
    sub.close()
    sub.close()
    assert sub.get(0.1) == []
    backend.close()
    backend.close()


def test_awkward_data_round_trips_byte_exact(backend: Backend, subscription: Subscription) -> None:
    subscription.add("a")
    sent = backend.publish("a", AWKWARD)
    backend.publish("a", "")
    got = collect(subscription, 2)
    assert same(got[:1], [sent]) and got[0].data.encode("utf-8") == AWKWARD.encode("utf-8")
    assert got[1].data == ""
    if keeps_history(backend):
        assert [m.data for m in backend.history("a", None).messages] == [AWKWARD, ""]


# -- history --------------------------------------------------------------------------


def test_history_after_id_is_exactly_the_later_messages(backend: Backend) -> None:
    sent = [backend.publish("a", f"m{i}") for i in range(10)]
    backend.publish("b", "other channel")
    sent = with_ids(backend, "a", sent)
    if not keeps_history(backend):
        assert backend.history("a", None).messages == []
        after = backend.history("a", sent[3].id)
        assert after.messages == [] and after.gap is True
        return
    assert backend.history("a", None).messages == sent
    after = backend.history("a", sent[3].id)
    assert after.messages == sent[4:] and after.gap is False
    newest = backend.history("a", sent[-1].id)
    assert newest.messages == [] and newest.gap is False
    assert backend.history("c", None).messages == []
    # "0-0", the id before every other (the README's curl resumes from it),
    # replays everything kept, with no gap (the AMQP backend reported a
    # "trimmed" gap: issue 23).
    start = backend.history("a", "0-0")
    assert start.messages == sent and start.gap is False


def test_history_gap_when_trimmed(make_backend: BackendFactory) -> None:
    backend = make_backend(NOTIFICATIONS_HISTORY_SIZE=5)
    if not keeps_history(backend):
        assert backend.history("a", "1-0").gap is True
        assert backend.history("a", None).gap is False
        return
    # Redis trims whole stream nodes (100 entries), so publish well past one.
    sent = [backend.publish("a", str(i)) for i in range(260)]
    if isinstance(backend, AmqpPubSub):
        # The publisher knows no ids; read them as a subscriber from the start.
        backend.history_size = 1000
        sent = with_ids(backend, "a", sent)
        backend.history_size = 5
    kept = backend.history("a", None).messages
    assert 5 <= len(kept) < 260
    assert kept == sent[-len(kept) :]
    old = backend.history("a", sent[0].id)
    assert old.gap is True and old.messages == kept
    recent = backend.history("a", sent[-3].id)
    assert recent.gap is False and recent.messages == sent[-2:]


@pytest.mark.redis
def test_redis_with_a_resp3_client(redis_url: str, unique: str, redis_keys: str) -> None:
    """The documentation's ``broker=redis`` client may speak RESP3, whose
    replies redis-py shapes differently."""
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url, protocol=3)
    backend = RedisPubSub(client, key_prefix=unique)
    sub = backend.subscribe()
    try:
        sub.add("a")
        sub.add("b")
        sent = [backend.publish("a", AWKWARD), backend.publish("b", "b"), backend.publish("a", "a2")]
        got = collect(sub, 3)
        assert [m for m in got if m.channel == "a"] == [sent[0], sent[2]]
        assert backend.history("a", sent[0].id) == History([sent[2]], gap=False)
        ledger = backend.own_ledger(DEFAULTS)
        assert ledger.claim("k", "t", 30) is Claim.ACQUIRED
        assert ledger.complete("k", "t", 30) is True
        assert ledger.claim("k", "u", 30) is Claim.DONE
        letter = ledger.add_dead_letter({"e": 1})
        assert ledger.dead_letters() == [{"e": 1, "id": letter}]
    finally:
        sub.close()
        client.close()


def test_history_bounded_by_age(make_backend: BackendFactory) -> None:
    backend = make_backend(NOTIFICATIONS_HISTORY_TTL=1)
    if isinstance(backend, AmqpPubSub):
        # RabbitMQ applies x-max-age to whole segments, on its own schedule.
        return
    # Redis trims by age (MINID ~) in whole nodes of 100 entries.
    old = [backend.publish("a", f"old{i}") for i in range(150)]
    time.sleep(1.2)  # let them age past the bound (not a timing assertion)
    new = backend.publish("a", "new")
    kept = backend.history("a", None).messages
    assert kept[-1] == new and len(kept) < 100
    assert kept == (old + [new])[-len(kept) :]
    assert backend.history("a", old[0].id).gap is True


@pytest.mark.redis
def test_redis_history_of_a_vanished_stream_is_a_gap(
    redis_url: str, unique: str, redis_client: redis.Redis[bytes]
) -> None:
    """A Redis stream expires as a whole (or is lost in a restart)."""
    backend = RedisPubSub(url=redis_url, key_prefix=unique)
    sent = [backend.publish("a", str(i)) for i in range(3)]
    key = backend.stream_key("a")
    redis_client.pexpire(key, 1)
    wait_for(lambda: not redis_client.exists(key))
    assert backend.history("a", sent[0].id).gap is True
    assert backend.history("a", None).messages == []
    # The stream starts a new life: an id of the old one cannot be vouched for.
    fresh = backend.publish("a", "new life")
    again = backend.history("a", sent[0].id)
    assert again.gap is True and again.messages == [fresh]
    assert backend.history("a", fresh.id).gap is False
    assert backend.history("a", "0-0").gap is False
    # XDEL of a later entry is a gap too (max-deleted-entry-id).
    later = [backend.publish("a", str(i)) for i in range(3)]
    redis_client.xdel(key, later[1].id)
    assert backend.history("a", later[0].id) == History([later[2]], gap=True)
    assert backend.history("a", later[1].id) == History([later[2]], gap=False)
    backend.close()
    redis_client.delete(key)


# -- choosing a backend ------------------------------------------------------------------


def test_aliases_resolve() -> None:
    assert resolve_backend("amqp") is AmqpPubSub
    assert resolve_backend("redis") is RedisPubSub
    assert resolve_backend("memory") is MemoryPubSub


def test_amqp_url_from_config(unique: str) -> None:
    base = {**DEFAULTS, "NOTIFICATIONS_KEY_PREFIX": unique}
    assert AmqpPubSub.from_config(base).url == DEFAULT_URL
    celery_amqp = {**base, "CELERY_BROKER_URL": "amqp://u:p@broker:5672/vh"}
    assert AmqpPubSub.from_config(celery_amqp).url == "amqp://u:p@broker:5672/vh"
    celery_redis = {**base, "CELERY_BROKER_URL": "redis://broker:6379/0"}
    assert AmqpPubSub.from_config(celery_redis).url == DEFAULT_URL
    explicit = {**celery_amqp, "NOTIFICATIONS_AMQP_URL": "amqp://x:y@h//"}
    assert AmqpPubSub.from_config(explicit).url == "amqp://x:y@h//"


# -- Redis restart ----------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.subprocess
def test_redis_subscription_survives_a_restart(private_redis: Callable[..., RedisServer], unique: str) -> None:
    server = private_redis()
    backend = RedisPubSub(url=server.url, key_prefix=unique, reconnect_backoff=0.05, reconnect_backoff_max=1.0)
    sub = backend.subscribe()
    try:
        sub.add("a")
        backend.publish("a", "before")
        (first,) = collect(sub, 1)

        server.kill()
        errors = 0
        calls = 30
        for _ in range(calls):
            try:
                assert sub.get(0.1) == []
            except BackendError as exc:
                errors += 1
                assert "reconnects after a backoff" in str(exc)
        # Every try of the server failed and raised; the backoff kept the
        # tries to a few, however often get() was called.
        assert errors == 1 + sub.reconnect_attempts
        assert 2 <= sub.reconnect_attempts <= 10

        server.start()
        # Published after the server is back, before the subscription noticed.
        after = [backend.publish("a", f"after{i}") for i in range(5)]
        got: list[Message] = []

        def received_all() -> bool:
            try:
                got.extend(sub.get(0.2))
            except BackendError:
                pass
            return len(got) >= 5

        wait_for(received_all, timeout=30, interval=0)
        assert got == after
        more = backend.publish("a", "live again")
        assert collect(sub, 1) == [more]
    finally:
        sub.close()
        backend.close()


# -- AMQP connection drop -------------------------------------------------------------------


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60).stdout


def close_amqp_connection(name: str) -> None:
    """Close, from the broker's side, the connection announcing ``name``."""
    listing = rabbitmqctl("list_connections", "pid", "client_properties")
    for line in listing.splitlines():
        if name in line:
            pid = re.match(r"\s*(<[^>]+>)", line)
            assert pid is not None, line
            rabbitmqctl("close_connection", pid.group(1), "test: closed by the broker")
            return
    raise AssertionError(f"no connection named {name} in:\n{listing}")


@pytest.mark.amqp
@pytest.mark.subprocess  # rabbitmqctl
def test_amqp_subscription_survives_a_dropped_connection(amqp_url: str, unique: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        missing("rabbitmqctl is needed to close a connection from the broker's side")
    backend = AmqpPubSub(amqp_url, key_prefix=unique, reconnect_backoff=0.05, reconnect_backoff_max=0.5)
    sub = backend.subscribe()
    try:
        sub.add("a")
        backend.publish("a", "before")
        (first,) = collect(sub, 1)
        close_amqp_connection(sub.connection_name)  # type: ignore[attr-defined]

        raised: list[BackendError] = []

        def failed() -> bool:
            try:
                sub.get(0.2)
            except BackendError as exc:
                raised.append(exc)
            return bool(raised)

        wait_for(failed, timeout=30, interval=0)
        # The next calls reconnect, declare a new queue and bind it again.
        got: list[Message] = []
        sent: list[Message] = []

        def delivered() -> bool:
            try:
                got.extend(sub.get(0.2))
            except BackendError:
                return False
            if not sent and sub.reconnect_attempts:  # type: ignore[attr-defined]
                sent.append(backend.publish("a", "after"))
            return bool(got)

        wait_for(delivered, timeout=30, interval=0)
        assert same(got, sent)
        assert sub.reconnect_attempts == 1  # type: ignore[attr-defined]
        # The stream kept everything: a replay after the drop has no gap.
        assert backend.history("a", first.id) == History(got, gap=False)
    finally:
        sub.close()
        backend.close()
        delete_exchanges(amqp_url, unique)


def test_amqp_unreachable_broker_is_retried_with_backoff(unique: str) -> None:
    backend = AmqpPubSub(
        f"amqp://guest:guest@127.0.0.1:{free_port()}//",
        key_prefix=unique,
        reconnect_backoff=0.05,
        reconnect_backoff_max=1.0,
    )
    sub = backend.subscribe()
    try:
        with pytest.raises(BackendError, match="reconnects after a backoff"):
            sub.add("a")
        errors, calls = 0, 30
        for _ in range(calls):
            try:
                assert sub.get(0.1) == []
            except BackendError:
                errors += 1
        assert errors == sub.reconnect_attempts  # type: ignore[attr-defined]
        assert 2 <= errors <= 10
        with pytest.raises(BackendError, match="AMQP publish"):
            backend.publish("a", "nowhere")
        assert backend.ping() is False
    finally:
        sub.close()
        backend.close()
