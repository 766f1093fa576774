"""The subscription of the AMQP backend: one connection with one consumer
per stream queue, resumed from the last offset read after a lost
connection. The module docstring of :mod:`~flask_notifications.backends.amqp`
describes the whole."""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import amqp.exceptions
import kombu.exceptions

from ..backoff import backoff, wait_until
from ..errors import BackendError
from .base import Lost, Message, Subscription

if TYPE_CHECKING:
    from .amqp import AmqpPubSub

log = logging.getLogger(__name__)

#: Exceptions meaning the connection (or its channel) is unusable.
ERRORS: tuple[type[BaseException], ...] = (kombu.exceptions.KombuError, amqp.exceptions.AMQPError, OSError)


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError)


def format_id(offset: int) -> str:
    return f"{offset}-1"


def _fingerprint(headers: dict[str, Any], body: bytes) -> bytes:
    """What tells one message of a stream from another at the same offset."""
    return hashlib.blake2b(str(headers.get("fence", "")).encode() + b"\0" + body, digest_size=16).digest()


def delivery_of(raw: Any) -> tuple[int, dict[str, Any]] | None:
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


class AmqpSubscription(Subscription):
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
        conn = self._backend.connection(self.connection_name, publisher=False)
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
        self._backend.declare(self._chan, channel)
        start: Any = self._next.get(channel)
        if start is None:
            added = self._added.get(channel)
            start = "next" if added is None else datetime.fromtimestamp(int(added) - 1, UTC)
        else:
            start = self._resume_at(channel, start - 1)
        self._chan.basic_consume(
            queue=self._backend.queue_name(channel),
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
            end = backend.read_stream(
                self._chan,
                self._conn,
                channel,
                "next",
                lambda offset, headers: headers.get("fence") == token,
                lambda: backend.append(channel, backend.queue_name(channel), b"", {"fence": token}),
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
        self._lost.append(Lost(channel, format_id(last), "reset"))
        self._next.pop(channel, None)
        self._prints.pop(channel, None)

    def _drop(self) -> None:
        conn, self._conn, self._chan = self._conn, None, None
        if conn is not None:
            try:
                conn.release()
            except ERRORS as exc:
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
            self._backend.wake(self._queue)

    def _on_message(self, channel: str, raw: Any) -> None:
        raw.channel.basic_ack(raw.delivery_tag)
        found = delivery_of(raw)
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
        self._inbox.append(Message(channel, format_id(offset), body.decode("utf-8")))

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
            except ERRORS as exc:
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
            except ERRORS as exc:
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
        deadline = time.monotonic() + timeout
        self._lost = []
        if self._failures and not self._closed:
            if not wait_until(self._retry_at, timeout, self._stop):  # close() sets _stop
                return []
            with self._turns.hold(urgent=False):
                if self._conn is None and not self._closed:
                    self.reconnect_attempts += 1
                    try:
                        self._connect()
                    except ERRORS as exc:
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
                    except ERRORS as exc:
                        if not _is_timeout(exc):
                            raise self._failed(exc) from exc
                    finally:
                        self._draining = False
                    try:
                        self._conn.heartbeat_check()
                    except ERRORS as exc:
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
