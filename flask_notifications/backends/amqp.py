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

**Idempotency claims and dead letters** cannot live in a stream. With
``NOTIFICATIONS_AMQP_LEDGER_URL`` set to a Redis URL they are kept there,
shared by every process, exactly as the Redis backend keeps them. Without it
they are kept in the memory of each process, bounded by
``NOTIFICATIONS_LEDGER_SIZE`` (a warning is logged): a task redelivered to
another worker may repeat its effect, and ``notifications.dead_letters()``
shows only the dead letters of the process that asks.

**Failures.** A publish that fails is tried once more on a new connection,
then raises :class:`BackendError`. Stream messages are published
``mandatory``, so one that no queue takes (its stream was deleted) counts as
failed, and the second attempt declares the stream again. A subscription that loses its connection
raises :class:`BackendError` from ``get()``; later calls wait out an
exponential backoff (a blocking wait, which gevent makes cooperative and
``close()`` ends), then connect and resume.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import amqp.exceptions
import kombu.exceptions
from kombu.connection import Connection

from ..backoff import backoff
from ..errors import BackendError
from .base import Backend, Claim, History, Lost, Message, Subscription, parse_id
from .memory import MemoryPubSub

log = logging.getLogger(__name__)

#: The URL used when neither NOTIFICATIONS_AMQP_URL nor an AMQP Celery broker
#: is configured.
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672//"

_AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")

#: Exceptions meaning the connection (or its channel) is unusable.
_ERRORS: tuple[type[BaseException], ...] = (kombu.exceptions.KombuError, amqp.exceptions.AMQPError, OSError)


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError)


def _format_id(offset: int) -> str:
    return f"{offset}-1"


def _offset_of(message_id: str) -> int | None:
    """The stream offset of one of this backend's ids, or ``None`` for an id
    it did not make (an old publisher-clock id, or a foreign one)."""
    head, tail = parse_id(message_id)
    return head if tail == 1 else None


def _fingerprint(headers: dict[str, Any], body: bytes) -> bytes:
    """What tells one message of a stream from another at the same offset."""
    return hashlib.blake2b(str(headers.get("fence", "")).encode() + b"\0" + body, digest_size=16).digest()


def _delivery(raw: Any) -> tuple[int, dict[str, Any]] | None:
    """The offset and headers of a message read from a stream."""
    headers = raw.properties.get("application_headers") or {}
    offset = headers.get("x-stream-offset")
    return (offset, headers) if isinstance(offset, int) else None


class _Turns:
    """A mutex over one AMQP connection that lets ``add``, ``remove`` and
    ``close`` in before the next slice of a blocked ``get``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._urgent = 0

    @contextmanager
    def hold(self, urgent: bool, nudge: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold the connection. An urgent holder goes before the next
        non-urgent one, and calls ``nudge`` (once it has said it waits) to cut
        short the current holder's wait."""
        with self._cond:
            if urgent:
                self._urgent += 1
            busy = self._busy
        try:
            if busy and nudge is not None:
                nudge()
            with self._cond:
                while self._busy or (not urgent and self._urgent):
                    self._cond.wait()
                self._busy = True
        finally:
            if urgent:
                with self._cond:
                    self._urgent -= 1
                    self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


class _AmqpSubscription(Subscription):
    """One connection, one consumer per added stream.

    ``add`` starts a consumer at the end of the stream before it returns, so
    every message published after it is delivered. A connection is not
    thread-safe, so ``add``, ``remove`` and ``close`` take it from a blocked
    ``get``: they wake the ``get`` with an empty message to this
    subscription's own small queue, and otherwise wait at most
    :attr:`AmqpPubSub.max_block`.
    """

    def __init__(self, backend: AmqpPubSub) -> None:
        self._backend = backend
        self._channels: set[str] = set()
        self._bound: set[str] = set()
        # The offset to resume each stream from, once a message was read,
        # and a fingerprint of the message read last (at _next - 1).
        self._next: dict[str, int] = {}
        self._prints: dict[str, bytes] = {}
        # Streams attached again whose last message read is still to be
        # checked, on its delivery, against its fingerprint.
        self._verifying: set[str] = set()
        self._lost: list[Lost] = []
        # When each channel was added (to resume one that read nothing yet).
        self._added: dict[str, float] = {}
        self._inbox: list[Message] = []
        self._turns = _Turns()
        self._conn: Any = None
        self._chan: Any = None
        self._queue = ""
        self._closed = False
        self._draining = False
        self._stop = threading.Event()
        self._failures = 0
        self._retry_at = 0.0
        #: How many times ``get`` tried the server again after a failure.
        self.reconnect_attempts = 0
        #: The ``connection_name`` this subscription's connections announce.
        self.connection_name = f"{backend.exchange_prefix}.sub.{uuid.uuid4().hex[:12]}"

    # -- connection ------------------------------------------------------------

    def _connect(self) -> None:
        conn = self._backend._connection(self.connection_name, publisher=False)
        try:
            conn.ensure_connection(max_retries=0)
            chan = conn.channel()
            # A stream consumer needs a prefetch: acknowledgements are its credit.
            chan.basic_qos(0, self._backend.prefetch, False)
            queue = f"{self.connection_name}.{uuid.uuid4().hex[:8]}"
            chan.queue_declare(queue=queue, exclusive=True, auto_delete=True, arguments={"x-max-length": 10})
            chan.basic_consume(queue=queue, no_ack=True, callback=lambda raw: None)
            self._conn, self._chan, self._queue = conn, chan, queue
            self._bound = set()
            for channel in sorted(self._channels):
                self._consume(channel)
        except BaseException:
            self._conn = self._chan = None
            conn.release()
            raise

    def _consume(self, channel: str) -> None:
        """Start the consumer of ``channel``'s stream where it left off: the
        offset after the last message read, else (a reconnection before any
        message) the time it was added, else the end."""
        self._backend._declare(self._chan, channel)
        start: Any = self._next.get(channel)
        if start is None:
            added = self._added.get(channel)
            start = "next" if added is None else datetime.fromtimestamp(int(added) - 1, UTC)
        else:
            start = self._resume_at(channel, start - 1)
        self._chan.basic_consume(
            queue=self._backend._queue_name(channel),
            no_ack=False,
            consumer_tag=f"{self._queue}.{channel}",
            callback=functools.partial(self._on_message, channel),
            arguments={"x-stream-offset": start},
        )
        self._bound.add(channel)

    def _resume_at(self, channel: str, last: int) -> Any:
        """Where to resume ``channel``'s stream, whose message ``last`` was
        read last: at ``last`` again, to check that it is the same message,
        or, if the stream now ends before it (it was deleted and declared
        again, so its offsets started over), at its start, with a ``reset``
        reported by :meth:`lost`."""
        backend = self._backend
        token = uuid.uuid4().hex
        try:
            end = backend._read(
                self._chan,
                self._conn,
                channel,
                "next",
                lambda offset, headers: headers.get("fence") == token,
                lambda: backend._append(channel, backend._queue_name(channel), b"", {"fence": token}),
            )[-1][0]
        except BackendError as exc:
            # Like a lost connection: get() tries again after a backoff.
            raise ConnectionError(f"could not find the end of stream {channel!r}: {exc}") from exc
        if end > last:
            self._verifying.add(channel)
            return last
        self._reset(channel, last)
        return "first"

    def _reset(self, channel: str, last: int) -> None:
        log.warning("The stream of %r was deleted and declared again: its offsets started over.", channel)
        self._lost.append(Lost(channel, _format_id(last), "reset"))
        self._next.pop(channel, None)
        self._prints.pop(channel, None)

    def _drop(self) -> None:
        conn, self._conn, self._chan = self._conn, None, None
        if conn is not None:
            try:
                conn.release()
            except _ERRORS as exc:
                log.debug("Closing a broken AMQP connection: %s", exc)

    def _failed(self, exc: BaseException) -> BackendError:
        self._drop()
        self._failures += 1
        backend = self._backend
        delay = backoff(self._failures - 1, backend.reconnect_backoff, backend.reconnect_backoff_max, jitter=False)
        self._retry_at = time.monotonic() + delay
        log.warning("AMQP subscription lost its connection (%s); attempt %d", exc, self._failures)
        return BackendError(f"AMQP subscription failed: {exc}. Call get() again: it reconnects after a backoff.")

    def _wake(self) -> None:
        """Cut short the wait of a ``get`` blocked on the socket, so that the
        caller has the connection at once: the publisher's connection sends
        an empty message straight to this subscription's queue."""
        if self._draining and self._queue:
            self._backend._wake(self._queue)

    def _on_message(self, channel: str, raw: Any) -> None:
        raw.channel.basic_ack(raw.delivery_tag)
        found = _delivery(raw)
        if found is None or channel not in self._channels:
            return
        offset, headers = found
        body = raw.body if isinstance(raw.body, bytes) else str(raw.body).encode("utf-8")
        if channel in self._verifying:
            last = self._next[channel] - 1
            if offset < last:
                return  # the rest of the chunk that holds it
            self._verifying.discard(channel)
            if offset == last and _fingerprint(headers, body) != self._prints.get(channel):
                # Another message under its offset: a new stream that grew
                # past it already.
                self._reset(channel, last)
        # A consumer starts at the beginning of the chunk holding its offset.
        if offset < self._next.get(channel, 0):
            return
        self._next[channel] = offset + 1
        self._prints[channel] = _fingerprint(headers, body)
        if "fence" in headers:
            return
        self._inbox.append(Message(channel, _format_id(offset), body.decode("utf-8")))

    # -- Subscription ----------------------------------------------------------

    def add(self, channel: str) -> None:
        """Start receiving ``channel``.

        :raises BackendError: the broker cannot be reached; the channel is
            kept and read when ``get`` reconnects.
        """
        with self._turns.hold(urgent=True, nudge=self._wake):
            if self._closed:
                return
            if channel not in self._channels:
                self._channels.add(channel)
                self._added[channel] = time.time()
            if channel in self._bound:
                return
            try:
                if self._conn is None:
                    if self._failures:
                        raise BackendError("AMQP subscription is reconnecting; the channel joins when it is back.")
                    self._connect()
                else:
                    self._consume(channel)
            except _ERRORS as exc:
                raise self._failed(exc) from exc

    def remove(self, channel: str) -> None:
        with self._turns.hold(urgent=True, nudge=self._wake):
            self._channels.discard(channel)
            self._next.pop(channel, None)
            self._prints.pop(channel, None)
            self._verifying.discard(channel)
            self._added.pop(channel, None)
            self._inbox = [m for m in self._inbox if m.channel != channel]
            if channel not in self._bound or self._conn is None:
                return
            self._bound.discard(channel)
            try:
                self._chan.basic_cancel(f"{self._queue}.{channel}")
            except _ERRORS as exc:
                # Messages of the channel are dropped on arrival anyway.
                self._failed(exc)

    @property
    def connected(self) -> bool:
        return not self._failures

    def lost(self) -> list[Lost]:
        """The streams found deleted and declared again (``reset``) by the
        last :meth:`get`. Other losses (a stream trimmed past the offset a
        subscription resumes from) are not reported here, so
        :attr:`tracks_losses` is ``False``."""
        return list(self._lost)

    def get(self, timeout: float) -> list[Message]:
        """Wait up to ``timeout`` seconds for messages.

        After a failure it first waits out the backoff (at most ``timeout``
        per call) and returns ``[]`` if that is not over yet.

        :raises BackendError: the broker cannot be reached.
        """
        deadline = time.monotonic() + timeout
        self._lost = []
        if self._failures and not self._closed:
            delay = self._retry_at - time.monotonic()
            if delay > 0:
                # Like time.sleep (gevent patches both), but close() ends it.
                self._stop.wait(min(delay, timeout))
                if time.monotonic() < self._retry_at:
                    return []
            with self._turns.hold(urgent=False):
                if self._conn is None and not self._closed:
                    self.reconnect_attempts += 1
                    try:
                        self._connect()
                    except _ERRORS as exc:
                        raise self._failed(exc) from exc
                    log.info("AMQP subscription reconnected after %d failed attempts", self._failures)
                self._failures = 0
        while True:
            remaining = deadline - time.monotonic()
            with self._turns.hold(urgent=False):
                if self._closed:
                    return []
                if self._inbox or self._conn is None:
                    messages, self._inbox = self._inbox, []
                    if messages or remaining <= 0:
                        return messages
                if self._conn is None:
                    idle = True
                else:
                    idle = False
                    self._draining = True
                    try:
                        self._conn.drain_events(timeout=min(max(remaining, 0.001), self._backend.max_block))
                    except _ERRORS as exc:
                        if not _is_timeout(exc):
                            raise self._failed(exc) from exc
                    finally:
                        self._draining = False
                    try:
                        self._conn.heartbeat_check()
                    except _ERRORS as exc:
                        raise self._failed(exc) from exc
                    if self._inbox or time.monotonic() >= deadline:
                        messages, self._inbox = self._inbox, []
                        return messages
            if idle:
                # No channel added yet: nothing can arrive before add().
                self._stop.wait(min(max(remaining, 0.0), self._backend.max_block))
                if time.monotonic() >= deadline:
                    return []

    def close(self) -> None:
        self._stop.set()
        with self._turns.hold(urgent=True, nudge=self._wake):
            self._closed = True
            self._drop()


class AmqpPubSub(Backend):
    """Pub/sub, history and replay on RabbitMQ stream queues.

    :param url: the broker's URL.
    :param key_prefix: prefix of every stream and queue name.
    :param ledger: where claims and dead letters are kept: a backend such as
        a :class:`RedisPubSub`, or ``None`` for the memory of this process.
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
        ledger: Backend | None = None,
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
        if ledger is None:
            log.warning(
                "The AMQP backend keeps idempotency claims and dead letters in the memory of each process; "
                "set NOTIFICATIONS_AMQP_LEDGER_URL to a Redis URL to share them between workers."
            )
            ledger = MemoryPubSub()
        self.ledger = ledger
        self._lock = threading.Lock()
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
        ledger: Backend | None = None
        ledger_url = config.get("NOTIFICATIONS_AMQP_LEDGER_URL")
        if ledger_url:
            from .redis import RedisPubSub

            ledger = RedisPubSub(
                url=ledger_url,
                key_prefix=config["NOTIFICATIONS_KEY_PREFIX"],
                dead_letter_limit=config["NOTIFICATIONS_DEAD_LETTER_LIMIT"],
            )
        else:
            ledger = MemoryPubSub.from_config(config)
            log.warning(
                "The AMQP backend keeps idempotency claims and dead letters in the memory of each process; "
                "set NOTIFICATIONS_AMQP_LEDGER_URL to a Redis URL to share them between workers."
            )
        return cls(
            url,
            key_prefix=config["NOTIFICATIONS_KEY_PREFIX"],
            ledger=ledger,
            history_size=config["NOTIFICATIONS_HISTORY_SIZE"],
            history_ttl=config["NOTIFICATIONS_HISTORY_TTL"],
            max_bytes=config.get("NOTIFICATIONS_AMQP_STREAM_MAX_BYTES", 64 * 1024 * 1024),
            reconnect_backoff=config.get("NOTIFICATIONS_RECONNECT_BACKOFF", 0.1),
            reconnect_backoff_max=config.get("NOTIFICATIONS_RECONNECT_BACKOFF_MAX", 5.0),
        )

    # -- helpers ------------------------------------------------------------------

    def _queue_name(self, channel: str) -> str:
        return f"{self.exchange_prefix}.hub.{channel}"

    def _connection(self, name: str, *, publisher: bool) -> Any:
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

    def _declare(self, chan: Any, channel: str) -> None:
        chan.queue_declare(
            queue=self._queue_name(channel), durable=True, auto_delete=False, arguments=self.stream_arguments
        )

    def _reset(self) -> None:
        conn, self._conn, self._chan = self._conn, None, None
        self._declared.clear()
        if conn is not None:
            try:
                conn.release()
            except _ERRORS as exc:
                log.debug("Closing a broken AMQP connection: %s", exc)

    def _publish_once(self, queue: str, body: bytes, headers: dict[str, Any], channel: str | None) -> None:
        """Append ``body`` to the stream of ``channel``, or, with ``channel``
        ``None``, send it to the plain queue ``queue``."""
        if self._conn is None:
            conn = self._connection(self._name, publisher=True)
            try:
                conn.ensure_connection(max_retries=0)
                self._chan = conn.channel()
            except BaseException:
                conn.release()
                raise
            self._conn = conn
        if channel is not None and queue not in self._declared:
            self._declare(self._chan, channel)
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

    def _append(self, channel: str | None, queue: str, body: bytes, headers: dict[str, Any]) -> None:
        with self._lock:
            for attempt in (1, 2):
                try:
                    self._publish_once(queue, body, headers, channel)
                    return
                except _ERRORS as exc:
                    self._reset()
                    if attempt == 2:
                        raise BackendError(f"AMQP publish to {self.url_display} failed: {exc}") from exc
                    log.info("AMQP publish failed (%s); trying once more on a new connection", exc)

    def _wake(self, queue: str) -> None:
        with self._lock:
            try:
                self._publish_once(queue, b"", {"wake": 1}, None)
            except _ERRORS as exc:
                self._reset()
                log.debug("Could not wake an AMQP subscription (%s); it wakes within max_block", exc)

    # -- pub/sub -----------------------------------------------------------------

    def publish(self, channel: str, data: str) -> Message:
        """Append ``data`` to the stream of ``channel``, confirmed by the
        broker. The returned message's ``id`` is empty: RabbitMQ assigns the
        offset, and readers get it with the message."""
        self._append(channel, self._queue_name(channel), data.encode("utf-8"), {})
        return Message(channel, "", data)

    def subscribe(self) -> Subscription:
        return _AmqpSubscription(self)

    def _read(
        self, chan: Any, conn: Any, channel: str, start: Any, until: Callable[[int, dict[str, Any]], bool], then: Any
    ) -> list[tuple[int, dict[str, Any], bytes]]:
        """Read ``channel``'s stream from ``start`` until ``until(offset,
        headers)`` holds, calling ``then()`` once the consumer is attached."""
        got: list[tuple[int, dict[str, Any], bytes]] = []
        finished = threading.Event()
        first = start if isinstance(start, int) else -1

        def on_message(raw: Any) -> None:
            raw.channel.basic_ack(raw.delivery_tag)
            found = _delivery(raw)
            if found is None or found[0] < first or finished.is_set():
                return
            body = raw.body if isinstance(raw.body, bytes) else str(raw.body).encode("utf-8")
            got.append((found[0], found[1], body))
            if until(*found):
                finished.set()

        tag = f"{self._name}.history.{uuid.uuid4().hex[:8]}"
        chan.basic_consume(
            queue=self._queue_name(channel),
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
        after = None if after_id is None else _offset_of(after_id)
        conn = self._connection(f"{self._name}.history", publisher=False)
        try:
            conn.ensure_connection(max_retries=0)
            chan = conn.channel()
            chan.basic_qos(0, self.prefetch, False)
            self._declare(chan, channel)
            token = uuid.uuid4().hex
            fence = self._read(
                chan,
                conn,
                channel,
                "next",
                lambda offset, headers: headers.get("fence") == token,
                lambda: self._append(channel, self._queue_name(channel), b"", {"fence": token}),
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
            read = [] if start >= end else self._read(chan, conn, channel, start, lambda o, h: o >= end - 1, None)
        except _ERRORS as exc:
            raise BackendError(f"AMQP history of {channel!r} failed: {exc}") from exc
        finally:
            conn.release()
        if after is not None and read and read[0][0] > start:
            gap = True  # RabbitMQ trimmed what followed after_id
        messages = [
            Message(channel, _format_id(offset), body.decode("utf-8"))
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

    # -- ledger ---------------------------------------------------------------------

    def claim(self, key: str, token: str, timeout: float) -> Claim:
        return self.ledger.claim(key, token, timeout)

    def extend(self, key: str, token: str, timeout: float) -> bool:
        return self.ledger.extend(key, token, timeout)

    def complete(self, key: str, token: str, ttl: float) -> bool:
        return self.ledger.complete(key, token, ttl)

    def release(self, key: str, token: str) -> bool:
        return self.ledger.release(key, token)

    def add_dead_letter(self, record: Mapping[str, Any]) -> str:
        return self.ledger.add_dead_letter(record)

    def dead_letters(self) -> list[dict[str, Any]]:
        return self.ledger.dead_letters()

    def get_dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        return self.ledger.get_dead_letter(letter_id)

    def dead_letter_count(self) -> int:
        return self.ledger.dead_letter_count()

    def remove_dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        return self.ledger.remove_dead_letter(letter_id)

    def mark_dead_letter(self, letter_id: str, expected: str, state: str) -> str | None:
        return self.ledger.mark_dead_letter(letter_id, expected, state)

    # -- lifecycle -------------------------------------------------------------------

    def ping(self) -> bool:
        conn = self._connection(f"{self._name}.ping", publisher=True)
        try:
            conn.ensure_connection(max_retries=0)
            return True
        except _ERRORS:
            return False
        finally:
            conn.release()

    def close(self) -> None:
        with self._lock:
            self._reset()
        self.ledger.close()
