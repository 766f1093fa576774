"""Issue 11, item 6: several processes publishing to one hub of the AMQP
backend, against the real RabbitMQ. Every event reaches a subscriber, in one
order, and a replay from any id is exactly what followed it."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
from kombu.connection import Connection

from flask_notifications.backends.amqp import AmqpPubSub
from flask_notifications.backends.base import Message
from flask_notifications.errors import BackendError

pytestmark = [pytest.mark.amqp]

EVENTS = 600


def publish_many(url: str, prefix: str, name: str, count: int, start: Any) -> None:
    backend = AmqpPubSub(url, key_prefix=prefix)
    start.wait()
    try:
        for i in range(count):
            backend.publish("hub", f"{name}:{i}")
    finally:
        backend.close()


@pytest.mark.parametrize("publishers", [2, 4])
def test_every_event_of_several_publishers_arrives_once_in_one_order(
    amqp_url: str,  # noqa: F811
    unique: str,
    publishers: int,
) -> None:
    backend = AmqpPubSub(amqp_url, key_prefix=unique, history_size=10_000)
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


def _get_until(sub: Any, count: int) -> tuple[list[Message], list[Any]]:
    """Read ``sub`` until ``count`` messages came, with the losses it reported."""
    messages: list[Message] = []
    losses: list[Any] = []
    for _ in range(40):
        try:
            messages.extend(sub.get(0.5))
        except BackendError:
            continue  # reconnecting
        losses.extend(sub.lost())
        if len(messages) >= count:
            break
    return messages, losses


def test_a_subscription_reports_a_reset_when_its_stream_is_recreated(
    amqp_url: str,  # noqa: F811
    unique: str,
) -> None:
    backend = AmqpPubSub(amqp_url, key_prefix=unique, reconnect_backoff=0.05)
    sub = backend.subscribe()
    queue = f"{unique}.hub.hub"
    try:
        sub.add("hub")
        backend.publish("hub", "old-0")
        backend.publish("hub", "old-1")
        old, losses = _get_until(sub, 2)
        assert [m.data for m in old] == ["old-0", "old-1"] and losses == []
        with Connection(amqp_url) as conn:
            conn.default_channel.queue_delete(queue)
            # Declared again by someone else, and written to before the
            # subscription is back.
            conn.default_channel.queue_declare(
                queue=queue, durable=True, auto_delete=False, arguments=backend.stream_arguments
            )
        backend.publish("hub", "new-0")
        new, losses = _get_until(sub, 1)
        backend.publish("hub", "new-1")
        more, _ = _get_until(sub, 1)
    finally:
        sub.close()
        with Connection(amqp_url) as conn:
            conn.default_channel.queue_delete(queue)
        backend.close()
    assert [(lost.channel, lost.after_id, lost.reason) for lost in losses] == [("hub", old[-1].id, "reset")]
    assert [m.data for m in new + more] == ["new-0", "new-1"]
