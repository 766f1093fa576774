"""The AMQP backend, on kombu, for RabbitMQ 3.9+ stream queues.

Every hub is a RabbitMQ *stream* (``x-queue-type: stream``), a durable queue
named ``<prefix>.hub.<hub id>`` that keeps its messages, bounded by size and
age, whoever has read them. A publisher appends to it through the default
exchange, with publisher confirms; RabbitMQ gives every message an *offset*,
one order for all publishers, and a reader starts wherever it asks with
``x-stream-offset``.

**Message ids** are the server's offsets, ``"<offset>-1"``, so ids from any
number of publishing processes are totally ordered and nothing is dropped as
out of order. A publisher does not learn the offset of what it published:
:meth:`AmqpPubSub.publish` returns the message with an empty id, and a reader
gets the id with each message.

**Replay.** :meth:`AmqpPubSub.history` first finds the end of the stream: it
appends a *fence* (an empty message that readers skip) and reads its offset;
then it reads from the offset after ``after_id`` up to the fence. Every
message confirmed before the call is found. ``gap`` is ``True`` when the
stream no longer holds the message after ``after_id`` (trimmed by size or
age, or beyond the ``history_size`` newest), or when ``after_id`` is not one
of this backend's ids.

**A subscription** is one connection with one consumer per stream, starting
at the end (``next``) when a channel is added; after a lost connection it
resumes every stream from the offset after the last message it read, so a
reconnection loses nothing the stream still holds.

**Idempotency claims and dead letters** cannot live in a stream: they are
the ledger's (:mod:`flask_notifications.ledger`). A RabbitMQ deployment
keeps them in its database (the SQL ledger) or on a Redis server; see
``NOTIFICATIONS_LEDGER_URL``.

**Failures.** A publish that fails is tried once more on a new connection,
then raises :class:`BackendError`. Stream messages are published
``mandatory``, so one that no queue takes (its stream was deleted) counts as
failed, and the second attempt declares the stream again. A subscription that loses its connection
raises :class:`BackendError` from ``get()``; later calls wait out an
exponential backoff (a blocking wait, which gevent makes cooperative and
``close()`` ends), then connect and resume.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from kombu.connection import Connection

from ..errors import BackendError
from .amqp_subscription import ERRORS, AmqpSubscription, delivery_of, format_id
from .base import Backend, History, Message, Subscription, parse_id

log = logging.getLogger(__name__)

#: The URL used when neither NOTIFICATIONS_AMQP_URL nor an AMQP Celery broker
#: is configured.
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672//"
#: Dedupe keys a publisher remembers (see :meth:`AmqpPubSub.publish`).
DEDUPE_KEYS = 100_000

_AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")


def _offset_of(message_id: str) -> int | None:
    """The stream offset of one of this backend's ids, or ``None`` for an id
    it did not make (an old publisher-clock id, or a foreign one)."""
    head, tail = parse_id(message_id)
    return head if tail == 1 else None


class AmqpPubSub(Backend):
    """Pub/sub, history and replay on RabbitMQ stream queues.

    :param url: the broker's URL.
    :param key_prefix: prefix of every stream and queue name.
    :param history_size: messages :meth:`history` replays at most.
    :param history_ttl: seconds RabbitMQ keeps a message (``x-max-age``);
        ``None`` keeps it until the size bound trims it.
    :param max_bytes: bytes RabbitMQ keeps per stream
        (``x-max-length-bytes``); it trims whole segments of a tenth of it.
    :param reconnect_backoff: seconds a subscription waits before its first
        new attempt after losing the broker; doubled after every failure.
    :param reconnect_backoff_max: the longest wait between two attempts.
    :param connect_timeout: seconds to wait for the broker to answer.
    :param heartbeat: AMQP heartbeat in seconds, so a dead peer is noticed.
    """

    alias = "amqp"
    dedupes = True
    #: Longest single wait on the socket. ``add`` and ``close`` cut it short
    #: with a message to the subscription's own queue; this bounds their wait
    #: for the connection if that message cannot be sent.
    max_block = 1.0
    #: Unacknowledged messages a stream consumer may hold.
    prefetch = 1000

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        key_prefix: str = "notifications",
        history_size: int = 1000,
        history_ttl: float | None = 24 * 3600,
        max_bytes: int = 64 * 1024 * 1024,
        reconnect_backoff: float = 0.1,
        reconnect_backoff_max: float = 5.0,
        connect_timeout: float = 5.0,
        heartbeat: float = 30.0,
    ) -> None:
        self.url = url
        self.exchange_prefix = key_prefix
        self.history_size = history_size
        self.reconnect_backoff = reconnect_backoff
        self.reconnect_backoff_max = reconnect_backoff_max
        self.connect_timeout = connect_timeout
        self.heartbeat = heartbeat
        self.stream_arguments: dict[str, Any] = {
            "x-queue-type": "stream",
            "x-max-length-bytes": int(max_bytes),
            "x-stream-max-segment-size-bytes": max(1024 * 1024, int(max_bytes) // 10),
        }
        if history_ttl is not None:
            self.stream_arguments["x-max-age"] = f"{max(1, int(history_ttl))}s"
        self._lock = threading.Lock()
        self._published: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._conn: Any = None
        self._chan: Any = None
        self._declared: set[str] = set()
        self._name = f"{key_prefix}.pub.{uuid.uuid4().hex[:12]}"

    @classmethod
    def from_config(cls, config: Mapping[str, Any], broker: Any = None) -> AmqpPubSub:
        url = config.get("NOTIFICATIONS_AMQP_URL")
        if not url:
            celery_url = config.get("CELERY_BROKER_URL") or config.get("BROKER_URL") or ""
            url = celery_url if isinstance(celery_url, str) and celery_url.startswith(_AMQP_SCHEMES) else DEFAULT_URL
        return cls(
            url,
            key_prefix=config["NOTIFICATIONS_KEY_PREFIX"],
            history_size=config["NOTIFICATIONS_HISTORY_SIZE"],
            history_ttl=config["NOTIFICATIONS_HISTORY_TTL"],
            max_bytes=config.get("NOTIFICATIONS_AMQP_STREAM_MAX_BYTES", 64 * 1024 * 1024),
            reconnect_backoff=config.get("NOTIFICATIONS_RECONNECT_BACKOFF", 0.1),
            reconnect_backoff_max=config.get("NOTIFICATIONS_RECONNECT_BACKOFF_MAX", 5.0),
        )

    # -- helpers ------------------------------------------------------------------

    def queue_name(self, channel: str) -> str:
        return f"{self.exchange_prefix}.hub.{channel}"

    def connection(self, name: str, *, publisher: bool) -> Any:
        options: dict[str, Any] = {"client_properties": {"connection_name": name}}
        if publisher:
            # The broker acknowledges each publish, so a lost one raises.
            options["confirm_publish"] = True
        return Connection(  # type: ignore[no-untyped-call]
            self.url,
            connect_timeout=self.connect_timeout,
            # Only a subscription reads its socket often enough to answer
            # heartbeats; an idle publisher relies on its one retry instead.
            heartbeat=0 if publisher else self.heartbeat,
            transport_options=options,
        )

    def declare(self, chan: Any, channel: str) -> None:
        chan.queue_declare(
            queue=self.queue_name(channel), durable=True, auto_delete=False, arguments=self.stream_arguments
        )

    def _reset(self) -> None:
        conn, self._conn, self._chan = self._conn, None, None
        self._declared.clear()
        if conn is not None:
            try:
                conn.release()
            except ERRORS as exc:
                log.debug("Closing a broken AMQP connection: %s", exc)

    def _publish_once(self, queue: str, body: bytes, headers: dict[str, Any], channel: str | None) -> None:
        """Append ``body`` to the stream of ``channel``, or, with ``channel``
        ``None``, send it to the plain queue ``queue``."""
        if self._conn is None:
            conn = self.connection(self._name, publisher=True)
            try:
                conn.ensure_connection(max_retries=0)
                self._chan = conn.channel()
            except BaseException:
                conn.release()
                raise
            self._conn = conn
        if channel is not None and queue not in self._declared:
            self.declare(self._chan, channel)
            self._declared.add(queue)
        raw = self._chan.prepare_message(
            body,
            content_type="text/plain",
            content_encoding="utf-8",
            headers=headers,
            properties={"delivery_mode": 2 if channel is not None else 1},
        )
        # Mandatory: a stream deleted since it was declared returns the
        # message (basic.return, raised by py-amqp as a ChannelError) instead
        # of confirming and dropping it; the retry on a new connection
        # declares the stream again.
        self._chan.basic_publish(
            raw, exchange="", routing_key=queue, mandatory=channel is not None, confirm_timeout=self.connect_timeout
        )

    def append(self, channel: str | None, queue: str, body: bytes, headers: dict[str, Any]) -> None:
        with self._lock:
            for attempt in (1, 2):
                try:
                    self._publish_once(queue, body, headers, channel)
                    return
                except ERRORS as exc:
                    self._reset()
                    if attempt == 2:
                        raise BackendError(f"AMQP publish to {self.url_display} failed: {exc}") from exc
                    log.info("AMQP publish failed (%s); trying once more on a new connection", exc)

    def wake(self, queue: str) -> None:
        with self._lock:
            try:
                self._publish_once(queue, b"", {"wake": 1}, None)
            except ERRORS as exc:
                self._reset()
                log.debug("Could not wake an AMQP subscription (%s); it wakes within max_block", exc)

    # -- pub/sub -----------------------------------------------------------------

    def publish(self, channel: str, data: str, *, dedupe_key: str | None = None) -> Message:
        """Append ``data`` to the stream of ``channel``, confirmed by the
        broker. The returned message's ``id`` is empty: RabbitMQ assigns the
        offset, and readers get it with the message.

        A stream queue cannot refuse a repeat, so ``dedupe_key`` is honoured
        within this process only (the last ``DEDUPE_KEYS`` keys): a repeat
        published by another process, or after a restart, is appended
        again."""
        if dedupe_key is not None:
            with self._lock:
                if (channel, dedupe_key) in self._published:
                    return Message(channel, "", data)
        self.append(channel, self.queue_name(channel), data.encode("utf-8"), {})
        if dedupe_key is not None:
            with self._lock:
                self._published[(channel, dedupe_key)] = None
                while len(self._published) > DEDUPE_KEYS:
                    self._published.popitem(last=False)
        return Message(channel, "", data)

    def subscribe(self) -> Subscription:
        return AmqpSubscription(self)

    def read_stream(
        self, chan: Any, conn: Any, channel: str, start: Any, until: Callable[[int, dict[str, Any]], bool], then: Any
    ) -> list[tuple[int, dict[str, Any], bytes]]:
        """Read ``channel``'s stream from ``start`` until ``until(offset,
        headers)`` holds, calling ``then()`` once the consumer is attached."""
        got: list[tuple[int, dict[str, Any], bytes]] = []
        finished = threading.Event()
        first = start if isinstance(start, int) else -1

        def on_message(raw: Any) -> None:
            raw.channel.basic_ack(raw.delivery_tag)
            found = delivery_of(raw)
            if found is None or found[0] < first or finished.is_set():
                return
            body = raw.body if isinstance(raw.body, bytes) else str(raw.body).encode("utf-8")
            got.append((found[0], found[1], body))
            if until(*found):
                finished.set()

        tag = f"{self._name}.history.{uuid.uuid4().hex[:8]}"
        chan.basic_consume(
            queue=self.queue_name(channel),
            no_ack=False,
            consumer_tag=tag,
            callback=on_message,
            arguments={"x-stream-offset": start},
        )
        if then is not None:
            then()
        deadline = time.monotonic() + 4 * self.connect_timeout
        while not finished.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendError(f"AMQP history of {channel!r} did not reach the end of its stream in time.")
            try:
                conn.drain_events(timeout=min(remaining, self.max_block))
            except TimeoutError:
                continue
        chan.basic_cancel(tag)
        return got

    def history(self, channel: str, after_id: str | None, limit: int | None = None) -> History:
        """The messages of ``channel`` after ``after_id`` (the newest
        ``history_size`` at most, and the oldest ``limit`` of those), read
        from its stream up to a fence appended now; see the module's
        documentation."""
        if after_id is not None and parse_id(after_id) == (0, 0):
            after_id = None  # the id before every other: all that is kept, no gap
        after = None if after_id is None else _offset_of(after_id)
        conn = self.connection(f"{self._name}.history", publisher=False)
        try:
            conn.ensure_connection(max_retries=0)
            chan = conn.channel()
            chan.basic_qos(0, self.prefetch, False)
            self.declare(chan, channel)
            token = uuid.uuid4().hex
            fence = self.read_stream(
                chan,
                conn,
                channel,
                "next",
                lambda offset, headers: headers.get("fence") == token,
                lambda: self.append(channel, self.queue_name(channel), b"", {"fence": token}),
            )
            end = fence[-1][0]
            gap = after_id is not None and after is None  # not one of our ids
            if after is not None and after >= end:
                return History([], gap=True)  # an id from another life of the stream
            # Offsets count the fences too: read twice the bound, keep the bound.
            start = max(0, end - 2 * self.history_size)
            if after is not None:
                if after + 1 >= start:
                    start = after + 1
                else:
                    gap = True  # beyond the newest history_size
            read = [] if start >= end else self.read_stream(chan, conn, channel, start, lambda o, h: o >= end - 1, None)
        except ERRORS as exc:
            raise BackendError(f"AMQP history of {channel!r} failed: {exc}") from exc
        finally:
            conn.release()
        if after is not None and read and read[0][0] > start:
            gap = True  # RabbitMQ trimmed what followed after_id
        messages = [
            Message(channel, format_id(offset), body.decode("utf-8"))
            for offset, headers, body in read
            if offset < end and "fence" not in headers
        ]
        if len(messages) > self.history_size:
            messages = messages[-self.history_size :]
            gap = gap or after is not None
        if limit is not None:
            messages = messages[:limit]
        return History(messages, gap=gap)

    @property
    def url_display(self) -> str:
        """The broker URL without its password, for messages."""
        return str(Connection(self.url).as_uri())  # type: ignore[no-untyped-call]

    # -- lifecycle -------------------------------------------------------------------

    def ping(self) -> bool:
        conn = self.connection(f"{self._name}.ping", publisher=True)
        try:
            conn.ensure_connection(max_retries=0)
            return True
        except ERRORS:
            return False
        finally:
            conn.release()

    def close(self) -> None:
        with self._lock:
            self._reset()
