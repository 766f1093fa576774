"""The AMQP backend, on kombu, for RabbitMQ.

Every hub is a fan-out exchange, ``<prefix>.hub.<hub id>`` (transient: it is
declared again by whoever publishes or subscribes after a broker restart).
A subscription is one connection with one exclusive, auto-delete queue, bound
to the exchange of every channel it adds; the queue disappears with the
connection, so nothing is left behind by a process that dies.

**Message ids.** RabbitMQ numbers nothing, so the publisher does: an id is
``"<milliseconds>-<sequence>"``, from the publisher's clock, with a sequence
that counts the messages one process publishes to one channel within one
millisecond. Ids grow strictly for the messages of one publishing process
(even if its clock steps back). Between processes, ids are ordered by their
clocks only: two workers publishing to one hub in the same millisecond may
mint equal ids, and one that lags may deliver a smaller id after a larger one.
Use the Redis backend where a single, total order matters.

**No replay.** A fan-out exchange keeps nothing, so :meth:`AmqpPubSub.history`
is honest about it: with no ``after_id`` it returns no messages, and with one
it returns no messages and ``gap=True``, which the SSE stream turns into its
``gap`` event so that the client refetches. RabbitMQ stream queues could keep
a bounded history, but AMQP 0.9.1 gives a reader no way to know it has reached
the end of a stream, nor a publisher the offset of what it published, so a
replay built on them would either wait on a timeout or miss messages.

**Idempotency claims and dead letters** cannot live in an exchange. With
``NOTIFICATIONS_AMQP_LEDGER_URL`` set to a Redis URL they are kept there,
shared by every process, exactly as the Redis backend keeps them. Without it
they are kept in the memory of each process (a warning is logged): a task
redelivered to another worker may repeat its effect, and
``notifications.dead_letters()`` shows only the dead letters of the process
that asks.

**Failures.** A publish that fails is tried once more on a new connection,
then raises :class:`BackendError`. A subscription that loses its connection
raises :class:`BackendError` from ``get()``; later calls wait out an
exponential backoff (a blocking wait, which gevent makes cooperative and
``close()`` ends), then connect, declare a new queue and bind it again.
Messages published while it was disconnected are lost; a reader that calls
:meth:`~AmqpPubSub.history` after a failure is told so by the gap.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import amqp.exceptions
import kombu.exceptions
from kombu.connection import Connection

from ..errors import BackendError
from .backend import Backend, Claim, History, Message, MessageIds, Subscription, parse_id
from .memory_pubsub import MemoryPubSub

log = logging.getLogger(__name__)

#: The URL used when neither NOTIFICATIONS_AMQP_URL nor an AMQP Celery broker
#: is configured.
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672//"

_AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://")

#: Exceptions meaning the connection (or its channel) is unusable.
_ERRORS: tuple[type[BaseException], ...] = (kombu.exceptions.KombuError, amqp.exceptions.AMQPError, OSError)


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError)


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
    """One connection, one exclusive queue bound to the added channels.

    ``add`` binds the queue before it returns, so every message published
    after it is delivered. A connection is not thread-safe, so ``add``,
    ``remove`` and ``close`` take it from a blocked ``get``: they wake the
    ``get`` with an empty message to the queue, and otherwise wait at most
    :attr:`AmqpPubSub.max_block`.
    """

    def __init__(self, backend: AmqpPubSub) -> None:
        self._backend = backend
        self._channels: set[str] = set()
        self._bound: set[str] = set()
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
            queue = f"{self.connection_name}.{uuid.uuid4().hex[:8]}"
            chan.queue_declare(
                queue=queue,
                exclusive=True,
                auto_delete=True,
                arguments={"x-max-length": self._backend.queue_max_length},
            )
            for channel in sorted(self._channels):
                self._backend._declare(chan, channel)
                chan.queue_bind(queue=queue, exchange=self._backend._exchange(channel), routing_key="")
            chan.basic_consume(queue=queue, no_ack=True, callback=self._on_message)
        except BaseException:
            conn.release()
            raise
        self._conn, self._chan, self._queue = conn, chan, queue
        self._bound = set(self._channels)

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
        delay = min(backend.reconnect_backoff_max, backend.reconnect_backoff * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + delay
        log.warning("AMQP subscription lost its connection (%s); attempt %d", exc, self._failures)
        return BackendError(f"AMQP subscription failed: {exc}. Call get() again: it reconnects after a backoff.")

    def _wake(self) -> None:
        """Cut short the wait of a ``get`` blocked on the socket, so that the
        caller has the connection at once: the publisher's connection sends
        an empty message straight to this subscription's queue."""
        if self._draining and self._queue:
            self._backend._wake(self._queue)

    def _on_message(self, raw: Any) -> None:
        headers = raw.properties.get("application_headers") or {}
        channel, message_id = headers.get("channel"), headers.get("id")
        if not isinstance(channel, str) or not isinstance(message_id, str) or channel not in self._channels:
            return
        body = raw.body if isinstance(raw.body, bytes) else str(raw.body).encode("utf-8")
        self._inbox.append(Message(channel, message_id, body.decode("utf-8")))

    # -- Subscription ----------------------------------------------------------

    def add(self, channel: str) -> None:
        """Start receiving ``channel``.

        :raises BackendError: the broker cannot be reached; the channel is
            kept and bound when ``get`` reconnects.
        """
        with self._turns.hold(urgent=True, nudge=self._wake):
            if self._closed:
                return
            self._channels.add(channel)
            if channel in self._bound:
                return
            try:
                if self._conn is None:
                    if self._failures:
                        raise BackendError("AMQP subscription is reconnecting; the channel joins when it is back.")
                    self._connect()
                else:
                    self._backend._declare(self._chan, channel)
                    self._chan.queue_bind(queue=self._queue, exchange=self._backend._exchange(channel), routing_key="")
                    self._bound.add(channel)
            except _ERRORS as exc:
                raise self._failed(exc) from exc

    def remove(self, channel: str) -> None:
        with self._turns.hold(urgent=True, nudge=self._wake):
            self._channels.discard(channel)
            self._inbox = [m for m in self._inbox if m.channel != channel]
            if channel not in self._bound or self._conn is None:
                return
            self._bound.discard(channel)
            try:
                self._chan.queue_unbind(queue=self._queue, exchange=self._backend._exchange(channel), routing_key="")
            except _ERRORS as exc:
                # Messages of the channel are dropped on arrival anyway.
                self._failed(exc)

    @property
    def connected(self) -> bool:
        return not self._failures

    def get(self, timeout: float) -> list[Message]:
        """Wait up to ``timeout`` seconds for messages.

        After a failure it first waits out the backoff (at most ``timeout``
        per call) and returns ``[]`` if that is not over yet.

        :raises BackendError: the broker cannot be reached.
        """
        deadline = time.monotonic() + timeout
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
    """Pub/sub on RabbitMQ fan-out exchanges, without replay.

    :param url: the broker's URL.
    :param key_prefix: prefix of every exchange and queue name.
    :param ledger: where claims and dead letters are kept: a backend such as
        a :class:`RedisPubSub`, or ``None`` for the memory of this process.
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
    #: Messages a subscription's queue holds for a process that stopped
    #: reading; beyond it the oldest are dropped, so a stuck process cannot
    #: fill the broker's memory (and block every publisher).
    queue_max_length = 100_000

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        key_prefix: str = "notifications",
        ledger: Backend | None = None,
        reconnect_backoff: float = 0.1,
        reconnect_backoff_max: float = 5.0,
        connect_timeout: float = 5.0,
        heartbeat: float = 30.0,
    ) -> None:
        self.url = url
        self.exchange_prefix = key_prefix
        self.reconnect_backoff = reconnect_backoff
        self.reconnect_backoff_max = reconnect_backoff_max
        self.connect_timeout = connect_timeout
        self.heartbeat = heartbeat
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
        self._ids = MessageIds()
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
            from .redis_pubsub import RedisPubSub

            ledger = RedisPubSub(
                url=ledger_url,
                key_prefix=config["NOTIFICATIONS_KEY_PREFIX"],
                dead_letter_limit=config["NOTIFICATIONS_DEAD_LETTER_LIMIT"],
            )
        return cls(
            url,
            key_prefix=config["NOTIFICATIONS_KEY_PREFIX"],
            ledger=ledger,
            reconnect_backoff=config.get("NOTIFICATIONS_RECONNECT_BACKOFF", 0.1),
            reconnect_backoff_max=config.get("NOTIFICATIONS_RECONNECT_BACKOFF_MAX", 5.0),
        )

    # -- helpers ------------------------------------------------------------------

    def _exchange(self, channel: str) -> str:
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
        chan.exchange_declare(exchange=self._exchange(channel), type="fanout", durable=False, auto_delete=False)

    def _reset(self) -> None:
        conn, self._conn, self._chan = self._conn, None, None
        self._declared.clear()
        if conn is not None:
            try:
                conn.release()
            except _ERRORS as exc:
                log.debug("Closing a broken AMQP connection: %s", exc)

    def _publish_once(self, channel: str, message: Message | None) -> None:
        """Publish ``message`` to the exchange of ``channel``; ``None`` sends
        an empty wake-up message to the queue named ``channel`` instead."""
        if self._conn is None:
            conn = self._connection(self._name, publisher=True)
            try:
                conn.ensure_connection(max_retries=0)
                self._chan = conn.channel()
            except BaseException:
                conn.release()
                raise
            self._conn = conn
        if message is None:
            wake = self._chan.prepare_message(b"", headers={"wake": 1}, properties={"delivery_mode": 1})
            self._chan.basic_publish(wake, exchange="", routing_key=channel, confirm_timeout=self.connect_timeout)
            return
        exchange = self._exchange(channel)
        if exchange not in self._declared:
            self._declare(self._chan, channel)
            self._declared.add(exchange)
        raw = self._chan.prepare_message(
            message.data.encode("utf-8"),
            content_type="text/plain",
            content_encoding="utf-8",
            headers={"channel": channel, "id": message.id},
            properties={"delivery_mode": 1, "message_id": message.id},
        )
        self._chan.basic_publish(raw, exchange=exchange, routing_key="", confirm_timeout=self.connect_timeout)

    def _wake(self, queue: str) -> None:
        with self._lock:
            try:
                self._publish_once(queue, None)
            except _ERRORS as exc:
                self._reset()
                log.debug("Could not wake an AMQP subscription (%s); it wakes within max_block", exc)

    # -- pub/sub -----------------------------------------------------------------

    def publish(self, channel: str, data: str) -> Message:
        with self._lock:
            message = Message(channel, self._ids.next(channel), data)
            for attempt in (1, 2):
                try:
                    self._publish_once(channel, message)
                    return message
                except _ERRORS as exc:
                    self._reset()
                    if attempt == 2:
                        raise BackendError(f"AMQP publish to {self.url_display} failed: {exc}") from exc
                    log.info("AMQP publish failed (%s); trying once more on a new connection", exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def subscribe(self) -> Subscription:
        return _AmqpSubscription(self)

    def history(self, channel: str, after_id: str | None, limit: int | None = None) -> History:
        """No messages: a fan-out exchange keeps none. With ``after_id``,
        ``gap`` is ``True``, since whatever followed it cannot be replayed."""
        if after_id is None:
            return History([])
        parse_id(after_id)
        return History([], gap=True)

    @property
    def url_display(self) -> str:
        """The broker URL without its password, for messages."""
        return str(Connection(self.url).as_uri())  # type: ignore[no-untyped-call]

    # -- ledger ---------------------------------------------------------------------

    def claim(self, key: str, timeout: float) -> Claim:
        return self.ledger.claim(key, timeout)

    def complete(self, key: str, ttl: float) -> None:
        self.ledger.complete(key, ttl)

    def release(self, key: str) -> None:
        self.ledger.release(key)

    def add_dead_letter(self, record: Mapping[str, Any]) -> str:
        return self.ledger.add_dead_letter(record)

    def dead_letters(self) -> list[dict[str, Any]]:
        return self.ledger.dead_letters()

    def dead_letter_count(self) -> int:
        return self.ledger.dead_letter_count()

    def remove_dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        return self.ledger.remove_dead_letter(letter_id)

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
