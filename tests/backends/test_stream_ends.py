"""Streams opened together share the round trips that find where their
streams end (issue 20, "10,000 hubs"): :class:`StreamEnds` behind
``RedisSubscription.add``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis

from flask_notifications.backends.base import Message
from flask_notifications.backends.redis import RedisPubSub
from flask_notifications.backends.stream_ends import StreamEnds
from flask_notifications.errors import BackendError
from tests.helpers import RedisServer, free_port, wait_for

CHANNELS = 2000


def run_together(count: int, func: Callable[[int], Any]) -> list[Any]:
    """Call ``func(0)`` ... ``func(count - 1)`` from ``count`` threads
    released at once; each one's result or exception. Fails if one hangs."""
    results: list[Any] = [None] * count
    start = threading.Barrier(count)

    def run(n: int) -> None:
        start.wait()
        try:
            results[n] = func(n)
        except Exception as exc:  # noqa: BLE001 - the test checks what it is
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not [thread for thread in threads if thread.is_alive()], "an add never returned"
    return results


def reads_processed(client: redis.Redis[bytes]) -> int:
    """The read events the server processed: at least one per round trip of any client."""
    return int(client.info("stats")["total_reads_processed"])


def seed(backend: RedisPubSub, channels: int) -> None:
    """Entries in two channels of three (1 to 4 each), so the ends differ;
    the third has no stream."""
    pipe = backend.client.pipeline(transaction=False)
    for n in range(channels):
        for e in range(n % 3 and 1 + n % 4):
            pipe.xadd(backend.stream_key(f"c{n}"), {"d": f"old {e}"})
    pipe.execute()


@pytest.mark.redis
@pytest.mark.subprocess
def test_concurrent_adds_share_round_trips(private_redis: Callable[..., RedisServer], unique: str) -> None:
    server = private_redis()
    client: redis.Redis[bytes] = redis.Redis.from_url(server.url)
    backend = RedisPubSub(url=server.url, key_prefix=unique)
    sub = backend.subscribe()
    try:
        seed(backend, CHANNELS)
        before = reads_processed(client)
        results = run_together(CHANNELS, lambda n: sub.add(f"c{n}"))
        # One add after another makes 2,001 round trips at least: fewer
        # than one a channel is shared lookups. Threads queue while a
        # lookup is in flight, and how many depends on the scheduler: 653
        # under two test suites at once, so no tighter bound here (the
        # gevent test has one).
        used = reads_processed(client) - before
        assert results == [None] * CHANNELS
        assert used < CHANNELS, used
        # Every add took its stream's end: what arrives is what follows it.
        sent: list[Message] = []
        for n in range(0, CHANNELS, 97):
            sent.append(backend.publish(f"c{n}", f"new {n}"))
        got: list[Message] = []

        def all_arrived() -> bool:
            got.extend(sub.get(0.2))
            return len(got) >= len(sent)

        wait_for(all_arrived, timeout=30, interval=0)
        assert sorted(got, key=lambda m: m.channel) == sorted(sent, key=lambda m: m.channel)
        assert sub.get(0.2) == [] and sub.lost() == []
    finally:
        sub.close()
        backend.close()
        client.close()


GEVENT_SCRIPT = r"""
from gevent import monkey

monkey.patch_all()

import json, sys

import gevent
import redis

from flask_notifications.backends.redis import RedisPubSub
from tests.backends.test_stream_ends import seed

url, prefix, channels = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = redis.Redis.from_url(url)
backend = RedisPubSub(url=url, key_prefix=prefix)
seed(backend, channels)
sub = backend.subscribe()
before = client.info("stats")["total_reads_processed"]
adds = [gevent.spawn(sub.add, f"c{n}") for n in range(channels)]
gevent.joinall(adds, timeout=60, raise_error=True)
used = client.info("stats")["total_reads_processed"] - before
print(json.dumps({"used": used, "returned": sum(g.successful() for g in adds)}))
"""


@pytest.mark.redis
@pytest.mark.subprocess
def test_concurrent_adds_of_greenlets_share_round_trips(private_redis: Callable[..., RedisServer], unique: str) -> None:
    server = private_redis()
    done = subprocess.run(
        [sys.executable, "-c", GEVENT_SCRIPT, server.url, unique, str(CHANNELS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["returned"] == CHANNELS
    # Every greenlet queues while the first lookup is in flight: about one
    # pipeline per 1,000 channels, for the rings and for the streams.
    assert found["used"] < 50, found


@pytest.mark.redis
def test_each_caller_gets_its_own_streams_end(redis_url: str, redis_keys: str) -> None:
    backend = RedisPubSub(url=redis_url, key_prefix=redis_keys)
    try:
        seed(backend, CHANNELS)
        ends = StreamEnds(backend.client)
        # Some keys twice: each caller still gets the end.
        results = run_together(CHANNELS + 100, lambda n: ends.find(backend.stream_key(f"c{n % CHANNELS}")))
        expected = [backend.stream_end(f"c{n % CHANNELS}") for n in range(CHANNELS + 100)]
        assert results == expected
        assert {added for _, added in results} == {0, 1, 2, 3, 4}  # the ends differ
    finally:
        backend.close()


def test_every_concurrent_add_fails_when_the_server_cannot_be_reached() -> None:
    backend = RedisPubSub(url=f"redis://127.0.0.1:{free_port()}/0", key_prefix="unreachable")
    sub = backend.subscribe()
    try:
        results = run_together(200, lambda n: sub.add(f"c{n}"))
        assert all(isinstance(result, BackendError) for result in results), results
        assert all("Redis read failed" in str(result) for result in results)
    finally:
        sub.close()
        backend.close()


class Interrupted(BaseException):
    """What a ``gevent.Timeout`` or a killed greenlet raises into a leader."""


class _FirstPipelineInterrupted:
    """A client whose first pipeline is interrupted once every caller is in
    it or queued behind it; the others are the real client's."""

    def __init__(self, client: redis.Redis[bytes], callers: int) -> None:
        self._client, self._callers, self._first = client, callers, True
        self.ends: StreamEnds | None = None

    def pipeline(self, transaction: bool = True) -> Any:
        pipe = self._client.pipeline(transaction=transaction)
        if self._first:
            self._first = False
            ends, callers = self.ends, self._callers
            assert ends is not None

            def interrupted(raise_on_error: bool = True) -> list[Any]:
                wait_for(lambda: ends.queued + len(pipe.command_stack) >= callers, timeout=30)
                raise Interrupted

            pipe.execute = interrupted  # type: ignore[method-assign]
        return pipe


@pytest.mark.redis
def test_an_interrupted_leader_hands_the_lookups_on(redis_url: str, redis_keys: str) -> None:
    backend = RedisPubSub(url=redis_url, key_prefix=redis_keys)
    callers = 50
    try:
        seed(backend, callers)
        client = _FirstPipelineInterrupted(backend.client, callers)
        ends = client.ends = StreamEnds(client)

        def find(n: int) -> Any:
            try:
                return ends.find(backend.stream_key(f"c{n}"))
            except Interrupted:
                return "interrupted"

        results = run_together(callers, find)
        # The leader alone saw the interruption; everybody else got the end.
        assert results.count("interrupted") == 1
        assert [r for r in results if r != "interrupted"] == [
            backend.stream_end(f"c{n}") for n, r in enumerate(results) if r != "interrupted"
        ]
    finally:
        backend.close()
