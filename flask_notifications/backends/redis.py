"""The Redis backend, the default.

Every hub is a Redis stream (``<prefix>:hub:<hub id>``): ``XADD`` publishes and
records the history in one command, trimmed by count (``MAXLEN ~``) and by age
(``MINID ~``), and a subscriber reads with ``XREAD BLOCK`` from the last id it
saw, so nothing published between two reads is missed and a client can
resume from its ``Last-Event-ID``. One subscription is one connection, however
many channels it reads.

Both bounds are approximate, as Redis trims whole stream nodes (100 entries by
default): a hub keeps at least ``history_size`` events and those younger than
``history_ttl``, and somewhat more. A hub nobody publishes to for
``history_ttl`` seconds expires entirely.

A gap is detected from ``XINFO STREAM``: trimming moves
``recorded-first-entry-id`` (Redis 7) or the first entry, and ``XDEL`` moves
``max-deleted-entry-id``. An id the stream cannot vouch for (older than its
first entry in a stream that never lost an entry, as after a restart of a
Redis without persistence or the expiry of the whole stream) counts as a gap
too, so a client is told to refetch rather than silently missing events.

A subscription that loses its connection raises :class:`BackendError` from
``get()``; later calls wait out an exponential backoff (a blocking wait,
which gevent makes cooperative and ``close()`` ends) before they try the
server again, then resume from the last ids read, so the events published
meanwhile are delivered once the server is back (if it kept them). Whatever
it could not deliver (trimmed past the reader, or gone with a server that
restarted empty) it reports through ``lost()``, on every read. A read goes
through the client's pool, whose connections reconnect on their own, so no
read trusts that it reached the server of the previous one: each also reads
the entry at its position, and a stream that lacks it although neither
``XDEL`` nor trimming can have removed it is another stream (a ``"reset"``),
however many entries it holds.

``NOTIFICATIONS_REDIS_URL`` may name a master managed by Redis Sentinel or a
Redis Cluster (:mod:`~flask_notifications.backends.redis_client`). Replication
is asynchronous, so a master that fails may take its last writes with it. A
subscription therefore compares the server's replication id on every
read (in the read's transaction): a server promoted from a replica of the one it read before
(``master_replid2``) means a failover, and every channel it reads gets a
``"failover"`` loss. The backend records the failover (``<prefix>:failovers``,
by the time it was first noticed), so a replay from an id older than it
reports a gap too. On a cluster, each hub's stream lives on the node of its
key's slot; a subscription holds one sharded pub/sub connection per node
(``SSUBSCRIBE`` to the hubs' keys, which ``publish`` rings with
``SPUBLISH``) and reads the streams through the cluster client.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from ..backoff import backoff
from ..errors import BackendError, ConfigurationError
from .base import Backend, Claim, History, Lost, Message, Subscription, parse_id
from .redis_client import client_from_url, is_cluster

log = logging.getLogger(__name__)

_DONE = b"done"

# A claim's value is its owner's token, or "done"; each script checks the
# owner and acts in one step, so an owner whose claim expired cannot touch
# the next owner's.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_COMPLETE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] and holder ~= 'done' then
    return 0
end
redis.call('SET', KEYS[1], 'done', 'PX', ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


# A dead letter's retry state lives in a hash beside the letters' stream,
# set only while the letter is in the stream.
_MARK = """
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
    return false
end
local state = redis.call('HGET', KEYS[2], ARGV[1]) or ''
if state == ARGV[2] then
    if ARGV[3] == '' then
        redis.call('HDEL', KEYS[2], ARGV[1])
    else
        redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
    end
    return ARGV[3]
end
return state
"""
_REMOVE_LETTER = """
local found = redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return found
"""


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _field(fields: Mapping[Any, Any] | list[Any], name: str = "d") -> str:
    if isinstance(fields, list):
        # A raw reply, as a cluster transaction returns it: [name, value, ...].
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    value = fields.get(name.encode(), fields.get(name))
    return _text(value) if value is not None else ""


def _entries(entries: Any) -> list[Any]:
    """The ``(id, fields)`` pairs of one stream in an XREAD reply; RESP3
    replies (redis-py, ``protocol=3``) nest them one level deeper."""
    pairs: list[Any] = list(entries or ())
    if pairs and isinstance(pairs[0], list) and pairs[0] and isinstance(pairs[0][0], list | tuple):
        return [entry for group in pairs for entry in group]
    return pairs


def _info(info: Mapping[Any, Any], name: str) -> Any:
    return info.get(name, info.get(name.encode()))


def _connection_of(client: redis.Redis[bytes]) -> Any:
    """The connection a ``single_connection_client`` holds (not in the stubs)."""
    return getattr(client, "connection", None)


def _redis_errors() -> tuple[type[Exception], ...]:
    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class _RedisSubscription(Subscription):
    """A blocking XREAD on a connection of its own, taken from the backend's
    pool; the reads themselves go through the pool.

    ``add`` may be called from any thread while another blocks in ``get``: it
    resolves the stream's current end at once, so nothing published after it
    returns is missed, and ``CLIENT UNBLOCK`` makes a blocked ``XREAD`` start
    over with the new channel instead of waiting for its block to time out.

    Every read is one transaction: ``XREAD`` of what follows each position,
    ``XINFO STREAM`` and the entry at the position of each channel, and
    ``INFO replication``. The stream's ``entries-added`` counter then says
    whether the read got every entry added since the last one (an *overrun*
    when the history was trimmed past the reader), and its
    ``last-generated-id`` and the entry at the position whether this is still
    the stream the position came from (a *reset*: a server that restarted
    empty, or a deleted stream). Either is reported by
    :meth:`lost` before the messages that follow it, on every read, not
    only after a failure. When nothing is there to read, a blocking
    ``XREAD COUNT 1`` waits for the next entry.
    """

    tracks_losses = True

    def __init__(self, backend: RedisPubSub) -> None:
        self._backend = backend
        # Per channel: the last id delivered, and the stream's entries-added
        # counter at that id (None on a server without it, Redis < 7).
        self._positions: dict[str, str] = {}
        self._added: dict[str, int | None] = {}
        self._lost: list[Lost] = []
        self._lock = threading.Lock()
        # Serialises get() with the release of the connection in close().
        self._reader = threading.Lock()
        self._wakeup = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._client: redis.Redis[bytes] | None = None
        self._client_id: int | None = None
        self._saved: tuple[Any, Any] = (None, None)
        # Bumped by every add(); the generation of the positions an XREAD in
        # flight (or about to be sent) reads, or None when there is none.
        self._generation = 0
        self._reading: int | None = None
        self._failures = 0
        self._retry_at = 0.0
        # The replication id of the server the last read reached.
        self._replid: str | None = None
        #: How many times ``get`` tried the server again after a failure.
        self.reconnect_attempts = 0

    @property
    def connected(self) -> bool:
        return not self._failures

    def lost(self) -> list[Lost]:
        return list(self._lost)

    def add(self, channel: str) -> None:
        """Start receiving ``channel``.

        :raises BackendError: the server cannot be reached to find where the
            channel's stream ends.
        """
        last, added = self._backend._stream_end(channel)
        with self._lock:
            if channel in self._positions:
                return
            self._positions[channel] = last
            self._added[channel] = added
            self._generation += 1
            generation = self._generation
        self._wakeup.set()
        self._interrupt(generation)

    def remove(self, channel: str) -> None:
        with self._lock:
            self._positions.pop(channel, None)
            self._added.pop(channel, None)

    def _interrupt(self, generation: int | None) -> None:
        """Unblock an XREAD that reads positions older than ``generation``
        (any XREAD, if ``None``). It may not have reached the server yet, so
        try a few times; a miss only costs the rest of one ``max_block``."""
        for _ in range(20):
            reading, client_id = self._reading, self._client_id
            if reading is None or (generation is not None and reading >= generation):
                return
            if client_id is not None:
                try:
                    if self._backend.client.client_unblock(client_id):
                        return
                except redis.exceptions.RedisError:
                    return
            time.sleep(0.005)

    def _connection(self) -> redis.Redis[bytes]:
        if self._client is None:
            client: redis.Redis[bytes] = redis.Redis(
                connection_pool=self._backend.client.connection_pool, single_connection_client=True
            )
            conn = _connection_of(client)
            # The subscription does its own backoff between attempts; the
            # pool's retry policy would block get() well past its timeout.
            # Its reads block up to max_block, longer than a usual socket
            # timeout (redis-py's default is 5 s). Both are restored when the
            # connection goes back to the pool.
            self._saved = (conn.retry, conn.socket_timeout)
            conn.retry = Retry(NoBackoff(), 0)
            conn.socket_timeout = self._backend.max_block + 10
            conn.disconnect()  # the timeout applies from the next connect
            self._client = client
        if self._client_id is None:
            # connect() first: a command would reconnect to the address the
            # connection had, where a Sentinel-managed connection's connect()
            # asks the sentinels for the master's address again.
            _connection_of(self._client).connect()
            self._client_id = int(self._client.client_id())
        return self._client

    def _failed_over(self, info: Any) -> str | None:
        """The new replication id if the server that answered a read's
        ``INFO replication`` (``info``) was promoted from a replica of the
        one read before (another ``master_replid``, with the old one as
        ``master_replid2``): the writes its old master had not replicated
        yet are gone. The read may have reached it through any connection
        of the pool, which reconnects silently, so every read asks."""
        if not isinstance(info, Mapping):
            return None  # INFO refused (an ACL, say): nothing to compare
        replid, previous = str(info.get("master_replid", "")), self._replid
        if previous is None or replid == previous:
            self._replid = replid
            return None
        if not str(info.get("master_replid2", "0")).strip("0"):
            # Another server that was never a replica: a restart, which
            # the positions' checks (reset) tell apart on their own.
            self._replid = replid
            return None
        log.warning("Redis failed over (replication id %s, then %s): the last writes may be lost", previous, replid)
        return replid

    def _release(self) -> None:
        client, self._client, self._client_id = self._client, None, None
        conn = None if client is None else _connection_of(client)
        if conn is not None:
            conn.retry, conn.socket_timeout = self._saved
            conn.disconnect()
        if client is not None:
            client.close()

    def _failed(self, exc: Exception) -> BackendError:
        self._failures += 1
        backend = self._backend
        delay = backoff(self._failures - 1, backend.reconnect_backoff, backend.reconnect_backoff_max, jitter=False)
        self._retry_at = time.monotonic() + delay
        conn = None if self._client is None else _connection_of(self._client)
        if conn is not None:
            conn.disconnect()
        self._client_id = None
        log.debug("Redis subscription lost its connection (%s); attempt %d", exc, self._failures)
        return BackendError(f"Redis subscription failed: {exc}. Call get() again: it reconnects after a backoff.")

    def get(self, timeout: float) -> list[Message]:
        """Wait up to ``timeout`` seconds for messages.

        After a failure it first waits out the backoff (at most ``timeout``
        per call) and returns ``[]`` if that is not over yet.

        :raises BackendError: the server cannot be reached.
        """
        deadline = time.monotonic() + timeout
        self._lost = []
        with self._reader:
            if self._closed:
                return []
            if self._failures:
                delay = self._retry_at - time.monotonic()
                if delay > 0:
                    # Like time.sleep (gevent patches both), but close() ends it.
                    self._stop.wait(min(delay, timeout))
                    if time.monotonic() < self._retry_at:
                        return []
                self.reconnect_attempts += 1
            try:
                return self._read(deadline)
            finally:
                if self._closed:
                    self._release()

    def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except _redis_errors() as exc:
            raise self._failed(exc) from exc
        except redis.exceptions.RedisError as exc:
            raise BackendError(f"Redis subscription failed: {exc}") from exc

    def _read(self, deadline: float) -> list[Message]:
        while not self._closed:
            with self._lock:
                positions = dict(self._positions)
                generation = self._generation
            if not positions:
                self._wakeup.clear()
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._wakeup.wait(remaining):
                    return []
                continue
            self._wakeup.clear()
            messages = self._read_now(positions)
            if messages or self._lost or time.monotonic() >= deadline:
                return messages
            self._wait(positions, generation, deadline)
        return []

    def _read_now(self, positions: dict[str, str]) -> list[Message]:
        """Read what follows every position, with each stream's counters,
        in one transaction; record losses and advance the positions."""
        backend = self._backend
        channels = list(positions)
        # The entry at each position, read in the same transaction, tells
        # whether the stream is still the one the position came from.
        held = [ch for ch in channels if parse_id(positions[ch]) > (0, 0)]
        pipe = self._call(self._connection).pipeline(transaction=True)
        pipe.xread({backend._key(ch): positions[ch] for ch in channels})  # type: ignore[misc,unused-ignore]
        for channel in channels:
            pipe.xinfo_stream(backend._key(channel))
        for channel in held:
            pipe.xrange(backend._key(channel), min=positions[channel], max=positions[channel], count=1)
        pipe.info("replication")
        replies = self._call(pipe.execute, raise_on_error=False)
        if self._failures:
            log.info("Redis subscription reconnected after %d failed attempts", self._failures)
            self._failures = 0
        reply, infos = replies[0], replies[1 : 1 + len(channels)]
        present = {
            channel: not isinstance(found, Exception) and bool(found)
            for channel, found in zip(held, replies[1 + len(channels) : -1], strict=True)
        }
        if isinstance(reply, Exception):
            raise BackendError(f"Redis subscription failed: {reply}")
        replid = self._failed_over(replies[-1])
        if replid is not None:
            # Recorded before the positions move: if this fails, the next
            # read compares against the old replication id again.
            self._backend.note_failover(replid)
            self._replid = replid
        if isinstance(reply, Mapping):  # RESP3
            reply = list(reply.items())
        prefix_len = len(backend._key(""))
        read: dict[str, list[Message]] = {}
        for key, entries in reply or ():
            channel = _text(key)[prefix_len:]
            read[channel] = [Message(channel, _text(eid), _field(fields)) for eid, fields in _entries(entries)]
        messages: list[Message] = []
        with self._lock:
            for channel, info in zip(channels, infos, strict=True):
                if self._positions.get(channel) != positions[channel]:
                    continue  # removed (or removed and added again) meanwhile
                got = read.get(channel, [])
                lost: Lost | None
                if replid is not None:
                    lost = self._rebase(channel, positions[channel], info, got)
                else:
                    lost = self._check(channel, positions[channel], info, got, present.get(channel))
                if lost is not None:
                    self._lost.append(lost)
                    if lost.reason == "reset":
                        continue  # read the new stream from its start next round
                messages.extend(got)
        return messages

    def _check(
        self, channel: str, position: str, info: Any, got: list[Message], present: bool | None = None
    ) -> Lost | None:
        """Compare one channel's read with its stream's counters; called with
        the lock held. Advances the position, or resets it.

        :param present: whether the stream holds the entry at ``position``
            (``None`` when not asked).
        """
        after = parse_id(position)
        if isinstance(info, redis.exceptions.ResponseError):
            # No such stream: it expired, was deleted, or the server
            # restarted empty. Events past the position may have gone with it.
            self._positions[channel], self._added[channel] = "0-0", 0
            return Lost(channel, position, "reset") if after > (0, 0) else None
        if isinstance(info, Exception):
            raise BackendError(f"Redis subscription failed: {info}")
        last_generated = parse_id(_text(_info(info, "last-generated-id")))
        raw_added = _info(info, "entries-added")
        added = None if raw_added is None else int(raw_added)
        previous = self._added.get(channel)
        if (
            last_generated < after
            or (added is not None and previous is not None and added < previous)
            or (present is False and not _explains_missing(info, after, previous))
        ):
            # The ids went backwards, or the entry the position names is
            # gone although nothing removed it: another stream under the key.
            self._positions[channel], self._added[channel] = "0-0", 0
            return Lost(channel, position, "reset")
        lost = None
        if added is not None and previous is not None:
            if added - previous > len(got):
                lost = Lost(channel, position, "overrun")
        elif after > (0, 0):
            # Without the counter (Redis < 7): the position is no longer kept.
            first = _info(info, "first-entry")
            if first and parse_id(_text(first[0])) > after:
                lost = Lost(channel, position, "overrun")
        if got:
            self._positions[channel] = got[-1].id
        elif lost is not None:
            self._positions[channel] = _text(_info(info, "last-generated-id"))
        self._added[channel] = added
        return lost

    def _rebase(self, channel: str, position: str, info: Any, got: list[Message]) -> Lost:
        """The first read of ``channel`` on a master promoted by a failover:
        whatever the old master held after ``position`` and did not
        replicate is gone, and nothing can tell whether there was any. Take
        the new master's counters, keep reading after ``position`` (or
        after the new master's last id, if it never got that far), and
        report a ``"failover"`` loss. Called with the lock held."""
        if isinstance(info, redis.exceptions.ResponseError):
            self._positions[channel], self._added[channel] = got[-1].id if got else "0-0", len(got)
            return Lost(channel, position, "failover")
        if isinstance(info, Exception):
            raise BackendError(f"Redis subscription failed: {info}")
        last = _text(_info(info, "last-generated-id"))
        raw_added = _info(info, "entries-added")
        if got:
            self._positions[channel] = got[-1].id
        elif parse_id(last) < parse_id(position):
            self._positions[channel] = last
        self._added[channel] = None if raw_added is None else int(raw_added)
        return Lost(channel, position, "failover")

    def _wait(self, positions: dict[str, str], generation: int, deadline: float) -> None:
        """Block until an entry follows a position, the deadline passes, or
        a channel is added."""
        backend = self._backend
        block = min(max(deadline - time.monotonic(), 0.001), backend.max_block)
        client = self._call(self._connection)
        self._reading = generation
        try:
            # A block of 0 would block forever.
            self._call(
                client.xread,
                {backend._key(ch): pos for ch, pos in positions.items()},  # type: ignore[misc,unused-ignore]
                count=1,
                block=max(1, int(block * 1000)),
            )
        finally:
            self._reading = None

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        self._wakeup.set()
        self._interrupt(None)
        with self._reader:
            self._release()


class _ClusterSubscription(_RedisSubscription):
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
        key = self._backend._key(channel)
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
            self._pubsub.sunsubscribe(self._backend._key(channel))
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

    def _read_now(self, positions: dict[str, str]) -> list[Message]:
        backend = self._backend
        channels = list(positions)
        pipe = backend.client.pipeline(transaction=False)
        for channel in channels:
            # The entry at the position first: a trim between the two
            # commands then shows in the counters that explain it.
            pipe.xrange(backend._key(channel), min=positions[channel], max=positions[channel], count=1)
            pipe.xinfo_stream(backend._key(channel))
            pipe.xrange(backend._key(channel), min=f"({positions[channel]}")
        try:
            replies = pipe.execute(raise_on_error=False)
        except _redis_errors() as exc:
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
                    if isinstance(entries, _redis_errors()):
                        raise self._failed(entries)
                    raise BackendError(f"Redis subscription failed: {entries}")
                if self._positions.get(channel) != positions[channel]:
                    continue
                got = [Message(channel, _text(eid), _field(fields)) for eid, fields in entries]
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
        last = parse_id(_text(_info(info, "last-generated-id")))
        later = [message for message in got if message.sort_key > last]
        counted = {_text(name): value for name, value in info.items()}
        added = _info(info, "entries-added")
        if added is not None:
            counted["entries-added"] = int(added) + len(later)
        if later:
            counted["last-generated-id"] = later[-1].id
        return counted

    def _wait(self, positions: dict[str, str], generation: int, deadline: float) -> None:
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


def _first_id(info: Mapping[Any, Any]) -> tuple[int, int] | None:
    """The stream's first entry id according to ``XINFO STREAM``, if any."""
    first = _info(info, "recorded-first-entry-id")
    if first is None or parse_id(_text(first)) == (0, 0):
        entry = _info(info, "first-entry")
        first = entry[0] if entry else None
    return None if first is None else parse_id(_text(first))


def _explains_missing(info: Mapping[Any, Any], after: tuple[int, int], added_at: int | None) -> bool:
    """Whether the stream ``info`` describes may have lost its entry
    ``after`` itself: ``XDEL`` removed an entry at least as new, or trimming
    took it, which removes the oldest entries first, so ``after`` is older
    than the first entry and the stream removed at least as many entries as
    it had added up to ``after`` (``added_at``, when known). A stream
    that cannot explain it is another one under the same key, as after a
    restart of a Redis without persistence, however many entries it holds."""
    deleted = _info(info, "max-deleted-entry-id")
    if deleted is not None and parse_id(_text(deleted)) >= after:
        return True
    first = _first_id(info)
    if first is not None and first <= after:
        return False  # within the stream, and no XDEL reached it
    added = _info(info, "entries-added")
    if added is None or added_at is None:
        return True  # Redis < 7 keeps no count: trimming may explain it
    removed = int(added) - int(_info(info, "length") or 0)
    return removed >= added_at


def _trimmed_after(info: Mapping[Any, Any], after: tuple[int, int]) -> bool:
    """Whether the stream described by ``XINFO STREAM`` lost an entry newer
    than ``after``, or cannot tell because ``after`` is not one of its ids."""
    deleted = _info(info, "max-deleted-entry-id")
    if deleted is not None and parse_id(_text(deleted)) > after:
        return True  # XDEL removed a later entry
    length = int(_info(info, "length") or 0)
    added = _info(info, "entries-added")
    lost_some = added is None or int(added) > length
    if length == 0:
        last = _info(info, "last-generated-id")
        return last is not None and parse_id(_text(last)) > after
    first = _first_id(info)
    if first is None or first <= after:
        return False
    # Everything before the first entry was trimmed, or after_id belongs to
    # an earlier life of the stream (expired, or a restart without
    # persistence): either way the reader may have missed events.
    return after > (0, 0) or lost_some


class RedisPubSub(Backend):
    """Pub/sub on Redis streams, with history, idempotency and dead letters.

    :param client: a ``redis.Redis`` (or ``redis.cluster.RedisCluster``)
        client to use; built from ``url`` if ``None``. The documentation's
        ``init_app(..., broker=redis)`` passes it.
    :param url: the server's URL, used when no client is given: any form
        :func:`~flask_notifications.backends.redis_client.client_from_url`
        accepts, including ``redis+sentinel://`` and ``redis+cluster://``.
    :param key_prefix: prefix of every key this backend writes.
    :param history_size: approximate number of events kept per hub.
    :param history_ttl: seconds an event is kept for replay; ``None`` keeps it
        until the size bound trims it.
    :param dead_letter_limit: dead letters kept.
    :param reconnect_backoff: seconds a subscription waits before its first
        new attempt after losing the server; doubled after every failure.
    :param reconnect_backoff_max: the longest wait between two attempts.
    """

    alias = "redis"
    #: Longest single XREAD BLOCK. A channel added meanwhile interrupts it with
    #: ``CLIENT UNBLOCK``; this bounds the wait where that command is refused.
    max_block = 2.0

    def __init__(
        self,
        client: redis.Redis[bytes] | RedisCluster[bytes] | None = None,
        *,
        url: str = "redis://localhost:6379/0",
        key_prefix: str = "notifications",
        history_size: int = 1000,
        history_ttl: float | None = 24 * 3600,
        dead_letter_limit: int = 10000,
        reconnect_backoff: float = 0.1,
        reconnect_backoff_max: float = 5.0,
    ) -> None:
        if history_size < 1:
            raise ConfigurationError(f"NOTIFICATIONS_HISTORY_SIZE must be at least 1, not {history_size!r}.")
        if history_ttl is not None and history_ttl <= 0:
            raise ConfigurationError(f"NOTIFICATIONS_HISTORY_TTL must be positive or None, not {history_ttl!r}.")
        self.reconnect_backoff = reconnect_backoff
        self.reconnect_backoff_max = reconnect_backoff_max
        self.client: Any = (
            client if client is not None else client_from_url(url, socket_connect_timeout=5, health_check_interval=30)
        )
        #: Whether the client talks to a Redis Cluster.
        self.cluster = is_cluster(self.client)
        self.key_prefix = key_prefix
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.dead_letter_limit = dead_letter_limit
        self._scripts: dict[str, Any] = {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], broker: Any = None) -> RedisPubSub:
        url = config.get("NOTIFICATIONS_REDIS_URL") or config.get("REDIS_URL")
        return cls(
            broker if isinstance(broker, redis.Redis | RedisCluster) else None,
            url=url or "redis://localhost:6379/0",
            key_prefix=config["NOTIFICATIONS_KEY_PREFIX"],
            history_size=config["NOTIFICATIONS_HISTORY_SIZE"],
            history_ttl=config["NOTIFICATIONS_HISTORY_TTL"],
            dead_letter_limit=config["NOTIFICATIONS_DEAD_LETTER_LIMIT"],
            reconnect_backoff=config.get("NOTIFICATIONS_RECONNECT_BACKOFF", 0.1),
            reconnect_backoff_max=config.get("NOTIFICATIONS_RECONNECT_BACKOFF_MAX", 5.0),
        )

    def _key(self, channel: str) -> str:
        return f"{self.key_prefix}:hub:{channel}"

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except redis.exceptions.RedisError as exc:
            raise BackendError(f"Redis {what} failed: {exc}") from exc

    def last_id(self, channel: str) -> str | None:
        entries = self._call("read", self.client.xrevrange, self._key(channel), count=1)
        return _text(entries[0][0]) if entries else None

    def _stream_end(self, channel: str) -> tuple[str, int | None]:
        """The last id a stream generated and its entries-added counter
        (``None`` before Redis 7), read together; ``("0-0", 0)`` for none."""
        try:
            info = self.client.xinfo_stream(self._key(channel))
        except redis.exceptions.ResponseError:
            return "0-0", 0
        except redis.exceptions.RedisError as exc:
            raise BackendError(f"Redis read failed: {exc}") from exc
        added = _info(info, "entries-added")
        return _text(_info(info, "last-generated-id")), None if added is None else int(added)

    def publish(self, channel: str, data: str) -> Message:
        return self.publish_many(channel, [data])[0]

    def publish_many(self, channel: str, items: Sequence[str]) -> list[Message]:
        """Publish ``items`` in one pipeline: one round trip for them all."""
        key = self._key(channel)
        pipe = self.client.pipeline(transaction=False)
        for data in items:
            pipe.xadd(key, {"d": data}, maxlen=self.history_size, approximate=True)
        if self.history_ttl is not None:
            cutoff_ms = int((time.time() - self.history_ttl) * 1000)
            pipe.xtrim(key, minid=f"{max(cutoff_ms, 0)}-0", approximate=True)
            pipe.expire(key, int(self.history_ttl) + 1)
        if self.cluster:
            # Rings the subscriptions' sharded pub/sub connection on the
            # key's node; the stream itself is the message.
            pipe.spublish(key, b"")
        replies = self._call("publish", pipe.execute)
        return [Message(channel, _text(reply), data) for reply, data in zip(replies, items, strict=False)]

    def subscribe(self) -> Subscription:
        if self.cluster:
            return _ClusterSubscription(self)
        return _RedisSubscription(self)

    @property
    def _failovers_key(self) -> str:
        return f"{self.key_prefix}:failovers"

    def note_failover(self, replid: str, now_ms: int | None = None) -> int:
        """Record that the master with replication id ``replid`` took over
        from a failed one, at ``now_ms`` (now by default) unless an earlier
        time is recorded for it already.

        :return: the recorded time, in milliseconds since the epoch.
        :raises BackendError: the server cannot be reached.
        """
        when = int(time.time() * 1000) if now_ms is None else now_ms
        pipe = self.client.pipeline(transaction=True)
        pipe.zadd(self._failovers_key, {replid: when}, nx=True)
        pipe.zremrangebyrank(self._failovers_key, 0, -11)
        pipe.zscore(self._failovers_key, replid)
        replies = self._call("failover record", pipe.execute)
        return int(replies[-1] if replies[-1] is not None else when)

    def _last_failover(self, replication: Any, marks: Any) -> int:
        """When the newest failover of the server was noticed, in ms (0 for
        none), recording one that the server's replication info shows and
        nobody recorded yet."""
        latest = (_text(marks[-1][0]), int(marks[-1][1])) if marks else None
        replid = str(replication.get("master_replid", ""))
        if str(replication.get("master_replid2", "0")).strip("0") and (latest is None or latest[0] != replid):
            return self.note_failover(replid)
        return latest[1] if latest else 0

    def history(self, channel: str, after_id: str | None, limit: int | None = None) -> History:
        key = self._key(channel)
        after = None if after_id is None else parse_id(after_id)
        # One transaction, so a trim between the read and the stream's
        # metadata cannot hide a gap.
        pipe = self.client.pipeline(transaction=True)
        pipe.xrange(key, min="-" if after_id is None else f"({after_id}", count=limit)
        pipe.xinfo_stream(key)
        if not self.cluster and after is not None:
            pipe.info("replication")
            pipe.zrange(self._failovers_key, -1, -1, withscores=True)
        try:
            entries, info, *lineage = pipe.execute(raise_on_error=False)
        except redis.exceptions.RedisError as exc:
            raise BackendError(f"Redis history failed: {exc}") from exc
        for reply in (entries, *lineage):
            if isinstance(reply, Exception):
                raise BackendError(f"Redis history failed: {reply}")
        messages = [Message(channel, _text(eid), _field(fields)) for eid, fields in entries]
        if after is None:
            return History(messages)
        if lineage and after[0] < self._last_failover(*lineage):
            # The client's id predates a failover, which may have lost
            # writes of the old master that followed it.
            return History(messages, gap=True)
        if isinstance(info, redis.exceptions.ResponseError):
            # No such stream (never written, expired, or lost in a restart):
            # whatever followed after_id is gone.
            return History(messages, gap=after > (0, 0))
        if isinstance(info, Exception):
            raise BackendError(f"Redis history failed: {info}")
        return History(messages, gap=_trimmed_after(info, after))

    def _claim_key(self, key: str) -> str:
        return f"{self.key_prefix}:claim:{key}"

    def claim(self, key: str, token: str, timeout: float) -> Claim:
        full = self._claim_key(key)
        if self._call("claim", self.client.set, full, token, nx=True, px=max(1, int(timeout * 1000))):
            return Claim.ACQUIRED
        state = self._call("claim", self.client.get, full)
        return Claim.DONE if state is not None and state in (_DONE, "done") else Claim.BUSY

    def _run_script(self, what: str, script: str, keys: list[str], *args: Any) -> Any:
        registered = self._scripts.get(script)
        if registered is None:
            # EVALSHA, loading the script again after a restart of Redis.
            registered = self._scripts[script] = self.client.register_script(script)
        return self._call(what, registered, keys=keys, args=list(args))

    def _script(self, what: str, script: str, key: str, *args: Any) -> int:
        return int(self._run_script(what, script, [self._claim_key(key)], *args))

    def extend(self, key: str, token: str, timeout: float) -> bool:
        return bool(self._script("claim", _EXTEND, key, token, max(1, int(timeout * 1000))))

    def complete(self, key: str, token: str, ttl: float) -> bool:
        return bool(self._script("claim", _COMPLETE, key, token, max(1, int(ttl * 1000))))

    def release(self, key: str, token: str) -> bool:
        return bool(self._script("claim", _RELEASE, key, token))

    @property
    def _dead_key(self) -> str:
        # The letters and their retry marks share a hash tag, so that the
        # scripts and transactions touching both run on one Redis Cluster slot.
        return f"{self.key_prefix}:{{dead-letters}}"

    def add_dead_letter(self, record: Mapping[str, Any]) -> str:
        letter_id = self._call(
            "dead letter",
            self.client.xadd,
            self._dead_key,
            {"r": json.dumps(dict(record))},
            maxlen=self.dead_letter_limit,
            approximate=True,
        )
        return _text(letter_id)

    @property
    def _marks_key(self) -> str:
        return f"{self.key_prefix}:{{dead-letters}}:retry"

    def _letters(self, start: str, end: str) -> list[dict[str, Any]]:
        pipe = self.client.pipeline(transaction=True)
        pipe.xrange(self._dead_key, min=start, max=end)
        if start == end:
            pipe.hmget(self._marks_key, [start])
        else:
            pipe.hgetall(self._marks_key)
        entries, marks = self._call("dead letter", pipe.execute)
        states = {start: marks[0]} if start == end else dict(marks)
        states = {_text(k): _text(v) for k, v in states.items() if v is not None}
        letters = [{**json.loads(_field(fields, "r")), "id": _text(eid)} for eid, fields in entries]
        for letter in letters:
            if letter["id"] in states:
                letter["retry"] = states[letter["id"]]
        if start != end:
            # Marks of letters trimmed from the stream (its length bound).
            stale = set(states) - {letter["id"] for letter in letters}
            if stale:
                self._call("dead letter", self.client.hdel, self._marks_key, *stale)
        return letters

    def dead_letters(self) -> list[dict[str, Any]]:
        return self._letters("-", "+")

    def dead_letter_count(self) -> int:
        return int(self._call("dead letter", self.client.xlen, self._dead_key))

    def get_dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        try:
            parse_id(letter_id)
        except ValueError:
            return None
        found = self._letters(letter_id, letter_id)
        return found[0] if found else None

    def remove_dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        found = self.get_dead_letter(letter_id)
        if found is None:
            return None
        keys = [self._dead_key, self._marks_key]
        if not self._run_script("dead letter", _REMOVE_LETTER, keys, letter_id):
            return None
        return found

    def mark_dead_letter(self, letter_id: str, expected: str, state: str) -> str | None:
        try:
            parse_id(letter_id)
        except ValueError:
            return None
        found = self._run_script("dead letter", _MARK, [self._dead_key, self._marks_key], letter_id, expected, state)
        return None if found is None else _text(found)

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.exceptions.RedisError:
            return False

    def close(self) -> None:
        self.client.close()
