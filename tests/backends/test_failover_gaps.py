"""A browser that comes back after a failover with an id of the old master is
told the true reason of its gap, ``failover``: whether its id is older than
the failover (its replay cannot be vouched for) or newer than anything the
new master holds (a write the old master took with it), not ``trimmed`` or
``ahead``.

The failover is the record the Redis backend keeps of one
(:meth:`~flask_notifications.backends.redis.RedisPubSub.note_failover`),
written as a reader that noticed a promoted replica writes it; the real
failovers are in ``test_redis_sentinel.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest

from flask_notifications import Event
from flask_notifications.backends.base import parse_id
from flask_notifications.backends.redis import RedisPubSub
from tests.helpers.web_servers import Server

pytestmark = [pytest.mark.redis, pytest.mark.subprocess]

NEWS = "event-hub-news"
URL = f"/notifications/{NEWS}/events"


@pytest.fixture
def backend(redis_url: str, redis_keys: str) -> Iterator[RedisPubSub]:
    backend = RedisPubSub(url=redis_url, key_prefix=redis_keys)
    yield backend
    backend.close()


def _gap(server: Server, last_event_id: str) -> dict[str, object]:
    with server.stream(URL, last_event_id=last_event_id) as client:
        assert client.status == 200
        gap = client.next_event()
        assert gap.type == "gap", gap
        return dict(json.loads(gap.data))


def test_an_id_older_than_a_failover_gets_a_failover_gap(gunicorn: Callable[..., Server], backend: RedisPubSub) -> None:
    server = gunicorn()
    before = server.publish(NEWS, Event(None, "t", "before", "body"))
    time.sleep(0.01)  # the failover is noticed after the write, by the clock
    backend.note_failover("replid-of-the-new-master")
    server.publish(NEWS, Event(None, "t", "after", "body"))
    assert backend.history(NEWS, before).reason == "failover"
    assert _gap(server, before)["reason"] == "failover"


def test_an_id_the_new_master_never_had_gets_a_failover_gap(
    gunicorn: Callable[..., Server], backend: RedisPubSub
) -> None:
    server = gunicorn()
    newest = server.publish(NEWS, Event(None, "t", "kept", "body"))
    # The old master wrote one more entry, which the failover lost: its id
    # is newer than the new master's newest and older than the failover.
    lost = f"{parse_id(newest)[0] + 1}-0"
    time.sleep(0.01)
    backend.note_failover("replid-of-the-new-master")
    gap = _gap(server, lost)
    assert gap["reason"] == "failover"
    assert gap["last_event_id"] == lost
    # An id beyond anything the hub had, with no failover since, is "ahead".
    assert _gap(server, "99999999999999-0")["reason"] == "ahead"
