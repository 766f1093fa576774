"""The subscriptions of the Redis backend: a blocking ``XREAD`` on one
server (or a Sentinel-managed master), and the checks that tell a read's
losses (overrun, reset, failover) from the stream's counters. The
module docstring of :mod:`~flask_notifications.backends.redis` describes
the whole; :mod:`~flask_notifications.backends.redis_cluster` reads a
Redis Cluster."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..backoff import backoff, wait_until
from ..errors import BackendError
from .base import Lost, Message, Subscription, parse_id
from .redis_client import decode, field
from .redis_lineage import (
    after_failover,
    after_read,
    changed_streams,
    entries_of,
    lineage_script,
    read_rings,
)
from .stream_ends import StreamEnds

if TYPE_CHECKING:
    from .redis import RedisPubSub

log = logging.getLogger(__name__)

#: The most rings one wait takes.
RINGS_READ = 1000
#: Seconds between two calls of the lineage sweep's script, at most (or a
#: tenth of :attr:`RedisPubSub.lineage_interval`, if shorter).
SWEEP_PERIOD = 1.0


def _connection_of(client: redis.Redis[bytes]) -> Any:
    """The connection a ``single_connection_client`` holds (not in the stubs)."""
    return getattr(client, "connection", None)


def redis_errors() -> tuple[type[Exception], ...]:
    """The errors meaning the connection failed, not the command."""
    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class RedisSubscription(Subscription):
    """A blocking XREAD on a connection of its own, and reads on another,
    both from a pool of the subscription's own (from the backend's, behind
    Sentinel).

    ``add`` may be called from any thread while another blocks in ``get``: it
    resolves the stream's current end at once (in one round trip shared with
    the ``add`` calls of other threads meanwhile:
    :class:`~flask_notifications.backends.stream_ends.StreamEnds`), so
    nothing published after it returns is missed; the blocked ``XREAD`` of the rings wakes up for the
    new channel's rings as for any other, and the next read checks the new
    channel once, in case its first ring came before it.

    It waits on one stream, whatever the number of channels: every publish
    also appends the channel's name to the backend's rings stream
    (:attr:`~flask_notifications.backends.redis.RedisPubSub.rings_key`),
    after the event, and a blocking ``XREAD`` of the rings tells which
    channels have new entries. A read is then one transaction for those
    channels only: ``XREAD`` of what follows each position, ``XINFO STREAM``
    and the entry at the position of each, and ``INFO replication``. The
    stream's ``entries-added`` counter then says whether the read got every
    entry added since the last one (an *overrun* when the history was
    trimmed past the reader), and its ``last-generated-id`` and the entry at
    the position whether this is still the stream the position came from (a
    *reset*: a server that restarted empty, or a deleted stream). Either is
    reported by :meth:`lost` before the messages that follow it. So a read
    costs what its channels cost, however many channels the subscription
    follows.

    What rings cannot tell is found by checking every channel: at the first
    read after a failure, on a server with another replication id (a
    restart, a failover), and when rings were trimmed before this read them
    or the rings stream was replaced. And the reads check the channels in
    turn, a share each time, with one script on the server
    (:func:`~flask_notifications.backends.redis_lineage.changed_streams`), so
    that each is checked every
    :attr:`~flask_notifications.backends.redis.RedisPubSub.lineage_interval`
    seconds: that finds a stream deleted, or replaced by one whose ids are
    all older, and the entries of a publisher that does not ring (an older
    version of this library, or a plain ``XADD``).
    """

    tracks_losses = True

    def __init__(self, backend: RedisPubSub) -> None:
        self._backend = backend
        self._ends = StreamEnds(backend.client)
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
        # The channels the last wait found entries on: the next read's.
        self._pending: set[str] = set()
        # Whether the next read checks every channel (after a failure).
        self._check_all = False
        # The lineage sweep: the channels left to check in this round, the
        # checks owed (a fraction carried from sweep to sweep), and when it
        # last went out.
        self._sweep: list[str] = []
        self._sweep_owed = 0.0
        self._swept_at = time.monotonic()
        self._lineage: Any = None
        self._own_pool: Any = None
        # The id of the last ring read (None until the first add).
        self._rings: str | None = None
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
        # The rings first: a publication after the channel's end then rings
        # after the rings' position.
        self._start_rings()
        last, added = self._ends.find(self._backend.stream_key(channel))
        with self._lock:
            if channel in self._positions:
                return
            self._positions[channel] = last
            self._added[channel] = added
            # Its ring may have come before it was here to take it.
            self._pending.add(channel)
            self._generation += 1
            generation = self._generation
        self._wakeup.set()
        if self._rings is None:
            # Without rings (a cluster), the wait must start over to include it.
            self._interrupt(generation)

    def _start_rings(self) -> None:
        """Find where the rings end, before the first channel's stream end."""
        if self._rings is None:
            last, _ = self._ends.find(self._backend.rings_key)
            with self._lock:
                if self._rings is None:
                    self._rings = last

    def remove(self, channel: str) -> None:
        with self._lock:
            self._positions.pop(channel, None)
            self._added.pop(channel, None)
            self._pending.discard(channel)

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
            client: redis.Redis[bytes] = redis.Redis(connection_pool=self._pool(), single_connection_client=True)
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

    def _pool(self) -> Any:
        """The pool of the subscription's connections: its own, of the same
        server, unless the backend's is not a plain one (Sentinel's is
        shared), so that requests that take every connection of the
        backend's pool do not fail the reads of every stream."""
        shared = self._backend.client.connection_pool
        if type(shared) not in (redis.ConnectionPool, redis.BlockingConnectionPool):
            return shared
        if self._own_pool is None:
            self._own_pool = redis.ConnectionPool(
                connection_class=shared.connection_class, max_connections=4, **shared.connection_kwargs
            )
        return self._own_pool

    def _release(self) -> None:
        client, self._client, self._client_id = self._client, None, None
        conn = None if client is None else _connection_of(client)
        if conn is not None:
            conn.retry, conn.socket_timeout = self._saved
            conn.disconnect()
        if client is not None:
            client.close()
        if self._own_pool is not None:
            self._own_pool.disconnect()

    def _failed(self, exc: Exception) -> BackendError:
        self._failures += 1
        backend = self._backend
        delay = backoff(self._failures - 1, backend.reconnect_backoff, backend.reconnect_backoff_max, jitter=False)
        self._retry_at = time.monotonic() + delay
        conn = None if self._client is None else _connection_of(self._client)
        if conn is not None:
            conn.disconnect()
        self._client_id = None
        # The server may have restarted or failed over meanwhile.
        self._check_all = True
        log.debug("Redis subscription lost its connection (%s); attempt %d", exc, self._failures)
        return BackendError(f"Redis subscription failed: {exc}. Call get() again: it reconnects after a backoff.")

    def get(self, timeout: float) -> list[Message]:
        deadline = time.monotonic() + timeout
        self._lost = []
        with self._reader:
            if self._closed:
                return []
            if self._failures:
                if not wait_until(self._retry_at, timeout, self._stop):  # close() sets _stop
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
        except redis_errors() as exc:
            raise self._failed(exc) from exc
        except redis.exceptions.RedisError as exc:
            raise BackendError(f"Redis subscription failed: {exc}") from exc

    def _read(self, deadline: float) -> list[Message]:
        while not self._closed:
            with self._lock:
                following = len(self._positions)
                generation = self._generation
            if not following:
                self._wakeup.clear()
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._wakeup.wait(remaining):
                    return []
                continue
            self._wakeup.clear()
            # Only the positions this read reads are copied: a copy of all of
            # them cost each read 130 us at 10,000 hubs.
            checked = self._to_check(following)
            messages = self._read_now(checked, following) if checked else []
            if messages or self._lost or time.monotonic() >= deadline:
                return messages
            self._wait(generation, deadline)
        return []

    def _all_positions(self) -> dict[str, str]:
        with self._lock:
            return dict(self._positions)

    def _to_check(self, following: int) -> dict[str, str]:
        """The channels the next read reads and checks, with their
        positions: those the last wait found entries on, and those of the
        lineage sweep's share that changed (every channel after a failure)."""
        if self._check_all:
            return self._all_positions()
        now = time.monotonic()
        interval = self._backend.lineage_interval
        # The checks owed go out together, at most once a tenth of the
        # interval (a second by default): one script call a second, however
        # many reads the events make.
        due = now - self._swept_at >= min(SWEEP_PERIOD, interval / 10)
        owed = self._sweep_owed
        if due:
            owed += following * (now - self._swept_at) / interval
            self._swept_at = now
        positions = self._positions
        with self._lock:
            checked = {channel: positions[channel] for channel in self._pending if channel in positions}
            self._pending.clear()
            swept: dict[str, str] = {}
            # positions: a remove() may have taken the last channel since _read counted them.
            while due and owed >= 1 and positions:
                if not self._sweep:
                    self._sweep = list(positions)
                channel = self._sweep.pop()
                if channel in positions:
                    swept[channel] = positions[channel]
                    owed -= 1
            self._sweep_owed = min(owed, len(positions))
        if swept:
            if self._lineage is None:
                self._lineage = lineage_script(self._backend.client)
            names = list(swept)
            keys = [self._backend.stream_key(channel) for channel in names]
            found = self._call(changed_streams, self._lineage, self._call(self._connection), keys, list(swept.values()))
            checked.update((names[index], swept[names[index]]) for index in found)
        return checked

    def _read_now(self, positions: dict[str, str], following: int) -> list[Message]:
        """Read what follows ``positions`` (of some of the ``following``
        channels), with each stream's counters, in one transaction; record
        losses and advance the positions. On a server with another
        replication id than the last read's, read every channel instead."""
        if self._replid is not None and len(positions) < following:
            replies = self._transaction(positions)
            if self._replid_of(replies[-1]) in (None, self._replid):
                return self._apply(positions, replies, everything=False)
            positions = self._all_positions()
        return self._apply(positions, self._transaction(positions), everything=len(positions) >= following)

    def _transaction(self, positions: dict[str, str]) -> list[Any]:
        backend = self._backend
        channels = list(positions)
        # The entry at each position, read in the same transaction, tells
        # whether the stream is still the one the position came from.
        held = [ch for ch in channels if parse_id(positions[ch]) > (0, 0)]
        pipe = self._call(self._connection).pipeline(transaction=True)
        pipe.xread({backend.stream_key(ch): positions[ch] for ch in channels})  # type: ignore[misc,unused-ignore]
        for channel in channels:
            pipe.xinfo_stream(backend.stream_key(channel))
        for channel in held:
            pipe.xrange(backend.stream_key(channel), min=positions[channel], max=positions[channel], count=1)
        pipe.info("replication")
        replies: list[Any] = self._call(pipe.execute, raise_on_error=False)
        if self._failures:
            log.info("Redis subscription reconnected after %d failed attempts", self._failures)
            self._failures = 0
        return replies

    @staticmethod
    def _replid_of(info: Any) -> str | None:
        return str(info.get("master_replid", "")) if isinstance(info, Mapping) else None

    def _apply(self, positions: dict[str, str], replies: list[Any], *, everything: bool) -> list[Message]:
        """Record what one transaction (:meth:`_transaction` of ``positions``)
        read; ``everything``: it read every channel followed."""
        backend = self._backend
        channels = list(positions)
        held = [ch for ch in channels if parse_id(positions[ch]) > (0, 0)]
        if everything:
            self._check_all = False
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
        prefix_len = len(backend.stream_key(""))
        read: dict[str, list[Message]] = {}
        for key, entries in reply or ():
            channel = decode(key)[prefix_len:]
            read[channel] = [Message(channel, decode(eid), field(fields)) for eid, fields in entries_of(entries)]
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
        """Compare one channel's read with its stream's counters (see
        :func:`~flask_notifications.backends.redis_lineage.after_read`);
        called with the lock held. Advances the position, or resets it."""
        moved, added, reason = after_read(position, info, got, self._added.get(channel), present)
        self._positions[channel], self._added[channel] = moved, added
        return None if reason is None else Lost(channel, position, reason)

    def _rebase(self, channel: str, position: str, info: Any, got: list[Message]) -> Lost:
        """The first read of ``channel`` on a master promoted by a failover
        (see :func:`~flask_notifications.backends.redis_lineage.after_failover`).
        Called with the lock held."""
        self._positions[channel], self._added[channel] = after_failover(position, info, got)
        return Lost(channel, position, "failover")

    def _wait(self, generation: int, deadline: float) -> None:
        """Block until a publication rings (on the backend's
        :attr:`~flask_notifications.backends.redis.RedisPubSub.rings_key`
        stream), the deadline passes, or a channel is added; note the
        channels rung. Rings that were trimmed before this read them, or a
        rings stream that is not the one read before, mean a read of every
        channel."""
        backend = self._backend
        block = min(max(deadline - time.monotonic(), 0.001), backend.max_block)
        client = self._call(self._connection)
        before = self._rings or "0-0"
        self._reading = generation
        try:
            # On the connection CLIENT UNBLOCK names. A block of 0 would block forever.
            reply = self._call(
                client.xread, {backend.rings_key: before}, count=RINGS_READ, block=max(1, int(block * 1000))
            )
        finally:
            self._reading = None
        # After the XREAD: trimming only moves the first entry forward, so
        # a first entry past the position here covers a trim before the read.
        try:
            info: Any = client.xinfo_stream(backend.rings_key)
        except redis_errors() as exc:
            raise self._failed(exc) from exc
        except redis.exceptions.ResponseError as exc:
            info = exc
        hubs, last, missed = read_rings(reply, info, before)
        with self._lock:
            self._rings = last
            self._pending.update(hubs)
        if missed:
            log.info("Redis subscription missed rings (the rings stream was trimmed or replaced): reading every hub")
            self._check_all = True

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        self._wakeup.set()
        self._interrupt(None)
        with self._reader:
            self._release()
