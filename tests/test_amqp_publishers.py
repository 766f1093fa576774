"""Issue 11, item 6: several processes publishing to one hub of the AMQP
backend, against the real RabbitMQ. Every event reaches a subscriber, in one
order, and a replay from any id is exactly what followed it."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
from kombu.connection import Connection

from flask_notifications.pubsub.amqp_pubsub import AmqpPubSub
from flask_notifications.pubsub.backend import Message

from .test_backend_contract import amqp_url  # noqa: F401  (the fixture)

EVENTS = 600


def publish_many(url: str, prefix: str, name: str, count: int, start: Any) -> None:
    backend = AmqpPubSub(url, key_prefix=prefix, ledger=_memory_ledger())
    start.wait()
    try:
        for i in range(count):
            backend.publish("hub", f"{name}:{i}")
    finally:
        backend.close()


def _memory_ledger() -> Any:
    from flask_notifications.pubsub.memory_pubsub import MemoryPubSub

    return MemoryPubSub()


@pytest.mark.parametrize("publishers", [2, 4])
def test_every_event_of_several_publishers_arrives_once_in_one_order(
    amqp_url: str,  # noqa: F811
    unique: str,
    publishers: int,
) -> None:
    backend = AmqpPubSub(amqp_url, key_prefix=unique, ledger=_memory_ledger(), history_size=10_000)
    sub = backend.subscribe()
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    per = EVENTS // publishers
    procs = [ctx.Process(target=publish_many, args=(amqp_url, unique, f"p{n}", per, start)) for n in range(publishers)]
    try:
        sub.add("hub")
        for proc in procs:
            proc.start()
        start.set()
        got: list[Message] = []
        while len(got) < EVENTS and (any(p.is_alive() for p in procs) or len(got) < EVENTS):
            batch = sub.get(2.0)
            if not batch and not any(p.is_alive() for p in procs):
                break
            got.extend(batch)
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
        got.extend(sub.get(0.5))
        data = [m.data for m in got]
        # Every event, once; each publisher's in the order it published.
        assert sorted(data) == sorted(f"p{n}:{i}" for n in range(publishers) for i in range(per))
        for n in range(publishers):
            mine = [int(d.split(":")[1]) for d in data if d.startswith(f"p{n}:")]
            assert mine == list(range(per))
        keys = [m.sort_key for m in got]
        assert keys == sorted(set(keys))  # one strictly increasing order
        # A replay (Last-Event-ID) from any point is exactly what followed it.
        for cut in (0, EVENTS // 3, EVENTS - 2):
            replay = backend.history("hub", got[cut].id)
            assert replay.gap is False and replay.messages == got[cut + 1 :]
    finally:
        sub.close()
        backend.close()
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        conn = Connection(amqp_url, connect_timeout=2)
        try:
            conn.channel().queue_delete(f"{unique}.hub.hub")
        finally:
            conn.release()
