"""The subscription of the Redis backend on a Redis Cluster."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import redis

from ..errors import BackendError
from .base import Message, parse_id
from .redis_client import decode, field
from .redis_lineage import info_field
from .redis_subscription import RedisSubscription, redis_errors

if TYPE_CHECKING:
    from .redis import RedisPubSub

log = logging.getLogger(__name__)


class ClusterSubscription(RedisSubscription):
    """The streams of hubs spread over a Redis Cluster.

    A blocking ``XREAD`` can only name keys of one slot, so the subscription
    waits on sharded pub/sub instead: one connection per node (redis-py's
    ``ClusterPubSub``) subscribed to the keys of the hubs on that node, each
    watched by a thread (a greenlet under gevent), and ``publish`` rings the
    key's channel after ``XADD``. A ring, a new channel, or ``max_block``
    without one, starts a read of every channel through the cluster
    client's pool. A missed ring (while a node's connection is re-made)
    delays a read by at most ``max_block``; it loses nothing, as the read
    starts from the last ids.

    Each channel's read is ``XINFO STREAM`` then ``XRANGE``, pipelined to
    its node in that order. The counters that check the read for losses
    are taken from ``XINFO``, plus the entries ``XRANGE`` returned past its
    ``last-generated-id`` (added between the two commands).
    """

    def __init__(self, backend: RedisPubSub) -> None:
        super().__init__(backend)
        self._pubsub: Any = backend.client.pubsub()
        self._ring = threading.Event()
        self._watchers: dict[str, threading.Thread] = {}

    def connections(self) -> int:
        """The pub/sub connections held: one per node with a hub read."""
        return len(self._watchers)

    def add(self, channel: str) -> None:
        key = self._backend.stream_key(channel)
        try:
            self._pubsub.ssubscribe(key)
            node = self._backend.client.get_node_from_key(key)
        except redis.exceptions.RedisError as exc:
            raise BackendError(f"Redis subscription failed: {exc}") from exc
        with self._lock:
            if node.name not in self._watchers and not self._closed:
                watcher = threading.Thread(
                    target=self._watch, args=(node,), name=f"flask-notifications-ring-{node.name}", daemon=True
                )
                self._watchers[node.name] = watcher
                watcher.start()
        super().add(channel)

    def remove(self, channel: str) -> None:
        super().remove(channel)
        try:
            self._pubsub.sunsubscribe(self._backend.stream_key(channel))
        except redis.exceptions.RedisError as exc:
            log.debug("SUNSUBSCRIBE of %r failed: %s", channel, exc)

    def _watch(self, node: Any) -> None:
        failures = 0
        while not self._closed:
            try:
                message = self._pubsub.get_sharded_message(timeout=0.25, target_node=node)
                failures = 0
            except (redis.exceptions.RedisError, OSError) as exc:
                failures += 1
                log.debug("Sharded pub/sub of %s failed (%s); attempt %d", node.name, exc, failures)
                self._stop.wait(min(self._backend.reconnect_backoff_max, 0.1 * 2**failures))
                continue
            if message is not None and message.get("type") in ("smessage", b"smessage"):
                self._ring.set()

    def _interrupt(self, generation: int | None) -> None:
        self._ring.set()

    def _start_rings(self) -> None:
        pass  # the sharded pub/sub connections ring instead

    def _to_check(self, following: int) -> dict[str, str]:
        # The watchers do not note which key rang: read them all.
        return self._all_positions()

    def _read_now(self, positions: dict[str, str], following: int) -> list[Message]:
        backend = self._backend
        channels = list(positions)
        pipe = backend.client.pipeline(transaction=False)
        for channel in channels:
            # The entry at the position first: a trim between the two
            # commands then shows in the counters that explain it.
            pipe.xrange(backend.stream_key(channel), min=positions[channel], max=positions[channel], count=1)
            pipe.xinfo_stream(backend.stream_key(channel))
            pipe.xrange(backend.stream_key(channel), min=f"({positions[channel]}")
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis_errors() as exc:
            raise self._failed(exc) from exc
        except redis.exceptions.RedisError as exc:
            raise BackendError(f"Redis subscription failed: {exc}") from exc
        if self._failures:
            log.info("Redis subscription reconnected after %d failed attempts", self._failures)
            self._failures = 0
        messages: list[Message] = []
        with self._lock:
            for index, channel in enumerate(channels):
                at, info, entries = replies[3 * index : 3 * index + 3]
                if isinstance(entries, Exception):
                    if isinstance(entries, redis_errors()):
                        raise self._failed(entries)
                    raise BackendError(f"Redis subscription failed: {entries}")
                if self._positions.get(channel) != positions[channel]:
                    continue
                got = [Message(channel, decode(eid), field(fields)) for eid, fields in entries]
                if isinstance(info, Mapping) and got:
                    info = self._counted(info, got)
                present = None if parse_id(positions[channel]) == (0, 0) or isinstance(at, Exception) else bool(at)
                lost = self._check(channel, positions[channel], info, got, present)
                if lost is not None:
                    self._lost.append(lost)
                    if lost.reason == "reset":
                        continue
                messages.extend(got)
        return messages

    @staticmethod
    def _counted(info: Mapping[Any, Any], got: list[Message]) -> dict[str, Any]:
        """``info`` with the entries read after it counted in."""
        last = parse_id(decode(info_field(info, "last-generated-id")))
        later = [message for message in got if message.sort_key > last]
        counted = {decode(name): value for name, value in info.items()}
        added = info_field(info, "entries-added")
        if added is not None:
            counted["entries-added"] = int(added) + len(later)
        if later:
            counted["last-generated-id"] = later[-1].id
        return counted

    def _wait(self, generation: int, deadline: float) -> None:
        block = min(max(deadline - time.monotonic(), 0.001), self._backend.max_block)
        self._ring.wait(block)
        self._ring.clear()

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        self._wakeup.set()
        self._ring.set()
        with self._lock:
            watchers = list(self._watchers.values())
        # Each watcher returns within its read's timeout; closing the
        # connections under it would make it read a closed socket.
        for watcher in watchers:
            if watcher is not threading.current_thread():
                watcher.join(timeout=5)
        with self._reader:
            try:
                self._pubsub.close()
            except redis.exceptions.RedisError as exc:
                log.debug("Closing the sharded pub/sub failed: %s", exc)
