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
restarted empty) it reports through ``lost()``. A read of a stream also
reads the entry at its position, and a stream that lacks it although neither
``XDEL`` nor trimming can have removed it is another stream (a ``"reset"``),
however many entries it holds.

A subscription waits on one stream however many hubs it follows: each
publication also appends its hub's name to ``<prefix>:rings`` (trimmed to
about ``RINGS_KEPT`` entries), after the event, and a subscription
reads the rings and then only the hubs they name. It checks every hub
it follows in turn too, a share at each read, so that a hub's stream that
was deleted, or gained entries that no ring announced, is noticed within
:attr:`RedisPubSub.lineage_interval`. So its load on Redis follows the
events, not the number of hubs (:doc:`/performance`).

``NOTIFICATIONS_REDIS_URL`` may name a master managed by Redis Sentinel or a
Redis Cluster (:mod:`~flask_notifications.backends.redis_client`). Replication
is asynchronous, so a master that fails may take its last writes with it. A
subscription therefore compares the server's replication id on every
read (in the read's transaction; another one makes it read every stream
again): a server promoted from a replica of the one it read before
(``master_replid2``) means a failover, and every channel it reads gets a
``"failover"`` loss. The backend records the failover (``<prefix>:failovers``,
by the time it was first noticed), so a replay from an id older than it
reports a gap too. On a cluster, each hub's stream lives on the node of its
key's slot; a subscription holds one sharded pub/sub connection per node
(``SSUBSCRIBE`` to the hubs' keys, which ``publish`` rings with
``SPUBLISH``) and reads the streams through the cluster client.

A publish with a ``dedupe_key`` (:class:`PushConsumer` passes its delivery
id and name) is one Lua script: ``<prefix>:pushed:<hub>:<key>`` is read, and
only if it is absent is the entry added and the key set to its id, for the
history's TTL. The key replicates with the entry, so a task that a failover
hands out again finds it on the new master, and the stream gets the event
once. On a cluster the two keys live on different slots, so the check and
the write are two steps there (a crash between them may repeat an event).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from ..errors import BackendError, ConfigurationError
from ..ledger.redis import RedisLedger
from .base import Backend, History, Message, Subscription, parse_id
from .redis_client import RedisClient, answers_ping, client_or_url, decode, field, guarded, is_client, is_cluster
from .redis_cluster import ClusterSubscription
from .redis_lineage import trimmed_after
from .redis_subscription import RedisSubscription
from .stream_ends import end_of

# KEYS: the stream, the dedupe key, the rings. ARGV: the data, MAXLEN, the
# dedupe key's TTL in seconds, the MINID and stream TTL ('' when the history
# has no TTL), the rings' MAXLEN and the channel.
_PUBLISH_ONCE = """
local found = redis.call('GET', KEYS[2])
if found then
    return {0, found}
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'd', ARGV[1])
redis.call('SET', KEYS[2], id, 'EX', ARGV[3])
if ARGV[4] ~= '' then
    redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[4])
    redis.call('EXPIRE', KEYS[1], ARGV[5])
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'h', ARGV[7])
return {1, id}
"""

#: How long a dedupe key lasts when the history has no TTL, in seconds.
DEDUPE_TTL = 24 * 3600
#: The connections of the pool a backend built from a ``redis://`` URL, and
#: how long a command waits for one when all are in use, in seconds.
POOL_SIZE = 100
POOL_WAIT = 20.0
#: The rings kept (approximately): a subscription that falls further behind
#: them reads every hub it follows once.
RINGS_KEPT = 10_000


class RedisPubSub(Backend):
    """Pub/sub on Redis streams, with history. Its ledger
    (:meth:`own_ledger`) keeps claims and dead letters on the same server.

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
    :param reconnect_backoff: seconds a subscription waits before its first
        new attempt after losing the server; doubled after every failure.
    :param reconnect_backoff_max: the longest wait between two attempts.
    """

    alias = "redis"
    dedupes = True
    #: Longest single XREAD BLOCK. A channel added meanwhile interrupts it with
    #: ``CLIENT UNBLOCK``; this bounds the wait where that command is refused.
    max_block = 2.0
    #: Seconds within which a subscription checks every stream it follows,
    #: rung or not: a stream deleted, or replaced by one whose ids are all
    #: older than the subscription's position, or with entries no ring
    #: announced, is noticed within this time (plus a second and one
    #: ``max_block``). The checks owed go out together in one script at most
    #: once a second (a tenth of this interval, if shorter), and cost
    #: ``channels / lineage_interval`` ``XREVRANGE`` a second in Redis,
    #: however many events there are.
    lineage_interval = 10.0

    def __init__(
        self,
        client: RedisClient | None = None,
        *,
        url: str = "redis://localhost:6379/0",
        key_prefix: str = "notifications",
        history_size: int = 1000,
        history_ttl: float | None = 24 * 3600,
        reconnect_backoff: float = 0.1,
        reconnect_backoff_max: float = 5.0,
    ) -> None:
        if history_size < 1:
            raise ConfigurationError(f"NOTIFICATIONS_HISTORY_SIZE must be at least 1, not {history_size!r}.")
        if history_ttl is not None and history_ttl <= 0:
            raise ConfigurationError(f"NOTIFICATIONS_HISTORY_TTL must be positive or None, not {history_ttl!r}.")
        self.reconnect_backoff = reconnect_backoff
        self.reconnect_backoff_max = reconnect_backoff_max
        self._own_pool: Any = None
        if client is None and url.partition("://")[0].lower() in ("redis", "rediss", "unix"):
            # A pool that makes a request wait for a free connection, where
            # redis-py's default fails it once 100 are in use: thousands of
            # streams opening at once (each hub's first one subscribes).
            pool = redis.BlockingConnectionPool.from_url(
                url, max_connections=POOL_SIZE, timeout=POOL_WAIT, socket_connect_timeout=5, health_check_interval=30
            )
            client = redis.Redis(connection_pool=pool)
            self._own_pool = pool
        self.client: Any = client_or_url(client, url)
        #: Whether the client talks to a Redis Cluster.
        self.cluster = is_cluster(self.client)
        self.key_prefix = key_prefix
        self.history_size = history_size
        self.history_ttl = history_ttl
        self._publish_once: Any = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any], broker: Any = None) -> RedisPubSub:
        url = config.get("NOTIFICATIONS_REDIS_URL") or config.get("REDIS_URL")
        return cls(
            broker if is_client(broker) else None,
            url=url or "redis://localhost:6379/0",
            key_prefix=config["NOTIFICATIONS_KEY_PREFIX"],
            history_size=config["NOTIFICATIONS_HISTORY_SIZE"],
            history_ttl=config["NOTIFICATIONS_HISTORY_TTL"],
            reconnect_backoff=config.get("NOTIFICATIONS_RECONNECT_BACKOFF", 0.1),
            reconnect_backoff_max=config.get("NOTIFICATIONS_RECONNECT_BACKOFF_MAX", 5.0),
        )

    def stream_key(self, channel: str) -> str:
        """The key of ``channel``'s stream."""
        return f"{self.key_prefix}:hub:{channel}"

    @property
    def rings_key(self) -> str:
        """The key of the stream that names the channel of every publication
        (not on a cluster), after its entries: what subscriptions wait on."""
        return f"{self.key_prefix}:rings"

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        return guarded(what, func, *args, **kwargs)

    def last_id(self, channel: str) -> str | None:
        entries = self._call("read", self.client.xrevrange, self.stream_key(channel), count=1)
        return decode(entries[0][0]) if entries else None

    def stream_end(self, channel: str) -> tuple[str, int | None]:
        """The last id a stream generated and its entries-added counter
        (``None`` before Redis 7), read together; ``("0-0", 0)`` for none."""
        return self.key_end(self.stream_key(channel))

    def key_end(self, key: str) -> tuple[str, int | None]:
        """:meth:`stream_end` of the stream at ``key``."""
        try:
            info = self.client.xinfo_stream(key)
        except redis.exceptions.ResponseError:
            return "0-0", 0
        except redis.exceptions.RedisError as exc:
            raise BackendError(f"Redis read failed: {exc}") from exc
        return end_of(info)

    def publish(self, channel: str, data: str, *, dedupe_key: str | None = None) -> Message:
        if dedupe_key is None:
            return self.publish_many(channel, [data])[0]
        if self.cluster:
            return self._publish_once_on_cluster(channel, data, dedupe_key)
        if self._publish_once is None:
            self._publish_once = self.client.register_script(_PUBLISH_ONCE)
        ttl = int(self.history_ttl) + 1 if self.history_ttl is not None else DEDUPE_TTL
        minid = ""
        if self.history_ttl is not None:
            minid = f"{max(int((time.time() - self.history_ttl) * 1000), 0)}-0"
        keys = [self.stream_key(channel), self.pushed_key(channel, dedupe_key), self.rings_key]
        args = [data, self.history_size, ttl, minid, ttl, RINGS_KEPT, channel]
        _, entry_id = self._call("publish", self._publish_once, keys=keys, args=args)
        return Message(channel, decode(entry_id), data)

    def pushed_key(self, channel: str, dedupe_key: str) -> str:
        """The key that records the publication ``dedupe_key`` to ``channel``."""
        return f"{self.key_prefix}:pushed:{channel}:{dedupe_key}"

    def _publish_once_on_cluster(self, channel: str, data: str, dedupe_key: str) -> Message:
        key = self.pushed_key(channel, dedupe_key)
        ttl = int(self.history_ttl) + 1 if self.history_ttl is not None else DEDUPE_TTL
        if not self._call("publish", self.client.set, key, "", nx=True, ex=ttl):
            found = self._call("publish", self.client.get, key)
            return Message(channel, decode(found or b""), data)
        message = self.publish_many(channel, [data])[0]
        self._call("publish", self.client.set, key, message.id, ex=ttl)
        return message

    def publish_many(self, channel: str, items: Sequence[str]) -> list[Message]:
        """Publish ``items`` in one pipeline: one round trip for them all."""
        key = self.stream_key(channel)
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
        else:
            pipe.xadd(self.rings_key, {"h": channel}, maxlen=RINGS_KEPT, approximate=True)
        replies = self._call("publish", pipe.execute)
        return [Message(channel, decode(reply), data) for reply, data in zip(replies, items, strict=False)]

    def subscribe(self) -> Subscription:
        if self.cluster:
            return ClusterSubscription(self)
        return RedisSubscription(self)

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
        latest = (decode(marks[-1][0]), int(marks[-1][1])) if marks else None
        replid = str(replication.get("master_replid", ""))
        if str(replication.get("master_replid2", "0")).strip("0") and (latest is None or latest[0] != replid):
            return self.note_failover(replid)
        return latest[1] if latest else 0

    def history(self, channel: str, after_id: str | None, limit: int | None = None) -> History:
        key = self.stream_key(channel)
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
        messages = [Message(channel, decode(eid), field(fields)) for eid, fields in entries]
        if after is None:
            return History(messages)
        if lineage and after[0] < self._last_failover(*lineage):
            # The client's id predates a failover, which may have lost
            # writes of the old master that followed it.
            return History(messages, gap=True, reason="failover")
        if isinstance(info, redis.exceptions.ResponseError):
            # No such stream (never written, expired, or lost in a restart):
            # whatever followed after_id is gone.
            return History(messages, gap=after > (0, 0))
        if isinstance(info, Exception):
            raise BackendError(f"Redis history failed: {info}")
        return History(messages, gap=trimmed_after(info, after))

    def own_ledger(self, config: Mapping[str, Any]) -> RedisLedger:
        """A :class:`~flask_notifications.ledger.redis.RedisLedger` on this
        backend's client (it is the backend's to close)."""
        return RedisLedger(
            self.client,
            key_prefix=self.key_prefix,
            dead_letter_limit=config.get("NOTIFICATIONS_DEAD_LETTER_LIMIT", 10000),
        )

    def ping(self) -> bool:
        return answers_ping(self.client)

    def close(self) -> None:
        self.client.close()
        if self._own_pool is not None:
            self._own_pool.disconnect()
