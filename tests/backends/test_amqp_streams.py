"""The AMQP backend's streams after RabbitMQ lost them (the hostile review of
issue 11): a subscription whose stream was deleted and recreated, and a
publish to a deleted stream.
"""

from __future__ import annotations

import pytest
from kombu.connection import Connection

from flask_notifications.backends.amqp import AmqpPubSub
from flask_notifications.backends.base import Message
from flask_notifications.errors import BackendError
from flask_notifications.event import Event

pytestmark = [pytest.mark.amqp]


def make_event(title: str = "Title") -> Event:
    return Event(None, "effect", title, "Body", sender="system")


# -- 7. AMQP: a stream that lost its offsets -------------------------------------------


def _delete_stream(url: str, queue: str) -> None:
    with Connection(url) as conn:  # type: ignore[no-untyped-call]
        conn.default_channel.queue_delete(queue)


def test_amqp_subscription_delivers_events_after_its_stream_is_recreated(
    amqp_url: str,
    unique: str,
) -> None:
    backend = AmqpPubSub(amqp_url, key_prefix=unique, reconnect_backoff=0.05)
    sub = backend.subscribe()
    try:
        sub.add("hub")
        for n in range(5):
            backend.publish("hub", f"old-{n}")
        got: list[Message] = []
        for _ in range(20):
            got.extend(sub.get(1.0))
            if len(got) >= 5:
                break
        assert [m.data for m in got] == [f"old-{n}" for n in range(5)]
        _delete_stream(amqp_url, f"{unique}.hub.hub")
        # The subscription's consumer is cancelled; it reconnects.
        for _ in range(10):
            try:
                sub.get(0.5)
            except Exception:  # BackendError while it reconnects
                continue
            if getattr(sub, "reconnect_attempts", 0):
                break
        for n in range(3):
            backend.publish("hub", f"new-{n}")
        fresh: list[Message] = []
        for _ in range(8):
            try:
                fresh.extend(sub.get(1.0))
            except Exception:
                continue
            if len(fresh) >= 3:
                break
        history = backend.history("hub", got[-1].id)
    finally:
        sub.close()
        _delete_stream(amqp_url, f"{unique}.hub.hub")
        backend.close()
    # The replay of what followed the last id read says "gap" (with nothing
    # in it), but the live subscription drops the new events without a word.
    assert history.gap and history.messages == []
    assert [m.data for m in fresh] == [f"new-{n}" for n in range(3)]


def test_amqp_publish_to_a_deleted_stream_is_kept_or_raises(
    amqp_url: str,
    unique: str,
) -> None:
    backend = AmqpPubSub(amqp_url, key_prefix=unique)
    try:
        backend.publish("hub", "before")
        _delete_stream(amqp_url, f"{unique}.hub.hub")  # to change its arguments, say
        raised = False
        try:
            backend.publish("hub", "after")
        except BackendError:
            raised = True
        kept = [m.data for m in backend.history("hub", None).messages]
    finally:
        _delete_stream(amqp_url, f"{unique}.hub.hub")
        backend.close()
    assert raised or kept == ["after"]
