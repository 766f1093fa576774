"""Server-sent events: the wire encoding, and the per-process fan-out of a
hub's events to the connections that stream it.

Wire encoding
-------------
:func:`encode_event` writes a frame that the event-stream parser of the
WHATWG HTML standard reads back exactly as it was given:

- the data is cut into ``data:`` lines at CR LF, CR and LF, the only line ends
  that parser knows. :meth:`str.splitlines` must not be used: it also cuts at
  U+000B, U+000C, U+001C to U+001E, U+0085, U+2028 and U+2029, which the
  parser keeps inside a line, so the data would arrive changed. Event JSON is
  written with ``ensure_ascii=False`` and carries U+2028 and U+2029 literally.
- an event name or id holding a control character (U+0000 to U+001F, U+007F
  to U+009F) is refused with :class:`~flask_notifications.errors.StreamFormatError`:
  a CR or LF would end the field and let what follows be read as fields of
  its own (a forged id, say), and a browser ignores an id holding NUL.
- ``retry`` must be a non-negative integer.

The encoder is written here rather than taken from the ``sse`` package, whose
1.2 release writes the event name and id as given: with it, an event type
holding a newline could inject fields into every stream of a hub.

Streams
-------
Every event frame carries an ``id:``, the backend's message id. A stream
opens with ``retry:`` and an ``id:``-only frame that sets the browser's last
event id to where the stream starts, so even a client that received nothing
resumes from the right place. A comment (``: heartbeat``) goes out when the
stream has been idle for ``NOTIFICATIONS_SSE_HEARTBEAT`` seconds.

Fan-out
-------
A process holds one :class:`Fanout` per application. It has a single backend
subscription (one Redis connection, however many clients) and a single
listener, a greenlet when the process is monkey-patched by gevent and a
thread otherwise. The listener encodes each event once and hands the same
bytes to the bounded queue of every connection of the hub whose filter the
event passes. A connection whose queue is full is evicted: its stream ends,
without slowing the others, and the browser resumes with ``Last-Event-ID``.
A hub joins the subscription when its first connection arrives; the listener
stops, and its connection is released, once no stream has been open for a
while.

A resuming connection is registered before the history is read, and live
events at or below the last replayed id are dropped, so replay and live
delivery neither overlap nor leave a hole.
"""

from __future__ import annotations

import _socket
import json
import logging
import os
import re
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import BackendError, InvalidEventError, StreamFormatError, TooManyStreamsError
from .event import CONTROL_CHARACTERS, Event
from .event_filter import EventFilter
from .pubsub.backend import Backend, Message, Subscription, parse_id
from .tasks import backoff

logger = logging.getLogger(__name__)

#: Characters no event name or id may hold: the C0 and C1 controls and DEL.
#: The line ends of the WHATWG event-stream parser, and no others.
_LINE_END = re.compile("\r\n|\r|\n")
#: A message id, as the backends write it and a client may send it back.
_MESSAGE_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_ID_PART_MAX = 2**64 - 1

#: The comment written on an idle stream.
HEARTBEAT = b": heartbeat\n\n"
#: The comment that ends the stream of a client that fell behind.
_EVICTED = b": too far behind; reconnect with Last-Event-ID\n\n"
#: The queue key of a frame that is not an event (a gap announcement).
_ANNOUNCEMENT: tuple[int, int] = (-1, -1)
#: Name of the event that tells a client the history lost events it missed.
GAP_EVENT = "gap"
#: Events the listener hands out before it lets the streams write: a stream
#: then writes them in one chunk, one system call rather than one per event.
_BATCH = 32
#: Largest chunk a stream hands to the server in one write.
_CHUNK = 64 * 1024

Key = tuple[int, int]


def _checked(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise StreamFormatError(f"An SSE {field} must be a string, got {type(value).__name__}.")
    found = CONTROL_CHARACTERS.search(value)
    if found is not None:
        raise StreamFormatError(
            f"The SSE {field} {value[:64]!r} holds the control character U+{ord(found.group()):04X}; "
            f"an event {field} may not contain control characters such as CR, LF or NUL."
        )
    return value


def encode_event(
    data: str | None,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """Encode one server-sent events frame, as UTF-8.

    ::

        encode_event('{"a": 1}', event="user", id="1700000000000-0")
        # b'id: 1700000000000-0\\nevent: user\\ndata: {"a": 1}\\n\\n'

    :param data: the data; ``None`` writes a frame without data, which a
        browser does not dispatch but whose ``id`` and ``retry`` it applies.
        A CR LF or CR in the data arrives as LF: a frame joins its data lines
        with LF. (Event JSON escapes both, so it arrives byte for byte.)
    :param event: the event name; ``None`` lets the browser use ``message``.
    :param id: the event id, which the browser sends back as ``Last-Event-ID``.
    :param retry: the reconnection delay, in milliseconds.
    :raises StreamFormatError: the name or id holds a control character, the
        retry is not a non-negative integer, or a value is not valid Unicode.
    """
    lines: list[str] = []
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise StreamFormatError(f"An SSE retry must be a non-negative integer of milliseconds, got {retry!r}.")
        lines.append(f"retry: {retry}\n")
    if id is not None:
        lines.append(f"id: {_checked('id', id)}\n")
    if event is not None:
        lines.append(f"event: {_checked('name', event)}\n")
    if data is not None:
        if not isinstance(data, str):
            raise StreamFormatError(f"SSE data must be a string, got {type(data).__name__}.")
        lines.extend(f"data: {line}\n" for line in _LINE_END.split(data))
    lines.append("\n")
    try:
        return "".join(lines).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise StreamFormatError(f"An SSE frame must be valid Unicode text: {exc}.") from exc


def encode_comment(text: str = "") -> bytes:
    """Encode a comment line, which a browser ignores; lines are split as
    for data, each becoming a comment of its own."""
    return "".join(f": {line}\n" for line in _LINE_END.split(text)).encode("utf-8") + b"\n"


def parse_last_event_id(value: str | None) -> str | None:
    """Validate a ``Last-Event-ID`` a client sent.

    :return: the id, or ``None`` when ``value`` is ``None`` or empty.
    :raises StreamFormatError: it is not a message id (``"<digits>-<digits>"``,
        at most 41 characters), which no stream of this extension sends.
    """
    if value is None or value == "":
        return None
    if len(value) > 41 or not _MESSAGE_ID.fullmatch(value) or not _storable(parse_id(value)):
        raise StreamFormatError(
            f"Last-Event-ID {value[:48]!r} is not an event id of this stream; ids look like "
            "'1700000000000-0'. Send the id of the last event received, or nothing to start afresh."
        )
    return value


def _storable(key: Key) -> bool:
    # Stream ids are two unsigned 64-bit parts, and nothing can come after the
    # largest one: Redis refuses such an id as a range start.
    return key[0] <= _ID_PART_MAX and key[1] <= _ID_PART_MAX and key != (_ID_PART_MAX, _ID_PART_MAX)


def event_frame(message: Message, event: Mapping[str, Any] | None, *, named: bool = True) -> bytes:
    """The frame of a published event: its id, its ``event_type`` as the
    event name, and its JSON as the data.

    An ``event_type`` that cannot be an event name (it holds a control
    character) is left out, so the event still arrives, as a ``message``.

    :param named: name the event after its type; ``False`` sends every event
        unnamed, as 0.1 did, for pages that listen with ``source.onmessage``
        (``NOTIFICATIONS_SSE_EVENT_NAMES``).
    :raises StreamFormatError: the message id cannot be written.
    """
    name = event.get("event_type") if event is not None and named else None
    if isinstance(name, str) and name:
        try:
            return encode_event(message.data, event=name, id=message.id)
        except StreamFormatError:
            logger.warning(
                "Event %s of hub %r has an event_type that cannot be an SSE event name; "
                "it is streamed as a 'message' event.",
                message.id,
                message.channel,
            )
    return encode_event(message.data, id=message.id)


def _format_key(key: Key) -> str:
    return f"{key[0]}-{key[1]}"


def _parse_event(message: Message) -> Event | None:
    try:
        return Event.from_json(message.data)
    except InvalidEventError as exc:
        logger.warning("Message %s of hub %r is not a valid event: %s", message.id, message.channel, exc)
        return None


def under_gevent() -> bool:
    """Whether gevent has monkey-patched this process's sockets, so that
    blocking calls (Redis reads, queue waits) yield to other greenlets."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return bool(monkey.is_module_patched("socket"))


def _cooperate() -> None:
    # Under gevent, let the connections drain their queues between events of
    # one large batch, so that a burst does not look like slow clients.
    if under_gevent():
        time.sleep(0)


class _GreenletCondition:
    """What :class:`Connection` needs of a ``threading.Condition``, for a
    process monkey-patched by gevent.

    A patched ``Condition`` yields to the hub on every ``notify()``: its
    ownership check try-acquires the lock, and gevent's lock sleeps when a
    non-blocking acquire fails. The listener then let every stream write
    after each single event, one system call per event and stream. Greenlets
    switch only where they block, so the queue needs no lock here, and a
    ``gevent.event.Event`` wakes the stream without yielding."""

    def __init__(self) -> None:
        from gevent.event import Event as GeventEvent

        self._event = GeventEvent()

    def __enter__(self) -> bool:
        return True

    def __exit__(self, *exc_info: object) -> None:
        return None

    def notify(self) -> None:
        self._event.set()

    notify_all = notify

    def wait(self, timeout: float | None = None) -> bool:
        woken = bool(self._event.wait(timeout))
        self._event.clear()
        return woken


class _Hub:
    """What the fan-out knows of one hub: its connections and the newest id
    it has handed out (or found in the history when the hub joined)."""

    def __init__(self) -> None:
        self.connections: set[Connection] = set()
        self.cursor: Key = (0, 0)
        self.ready = threading.Event()
        self.error: BaseException | None = None


class Connection:
    """One client's stream: a bounded queue filled by the fan-out and drained
    by :meth:`frames`, which the WSGI server iterates.

    Built by :meth:`Fanout.open`; :meth:`close` unregisters it and is called
    when the server closes the response (the client left) or the stream ends.
    """

    def __init__(
        self,
        fanout: Fanout,
        hub_id: str,
        event_filter: EventFilter | None,
        client: str,
        queue_size: int,
        sock: socket.socket | None = None,
    ) -> None:
        self.hub_id = hub_id
        self.event_filter = event_filter
        self.client = client
        self._fanout = fanout
        self._queue: deque[tuple[Key, bytes]] = deque()
        self._queue_size = max(1, queue_size)
        self._ready: Any = _GreenletCondition() if under_gevent() else threading.Condition(threading.Lock())
        self._socket = sock
        #: Live events at or below this id were replayed or came before the stream.
        self.floor: Key = (0, 0)
        self.start_id = "0-0"
        self.replay: list[Message] = []
        self.gap: dict[str, str | None] | None = None
        self.closed = False
        self.evicted = False
        self._released = False
        self._watcher: Any = None

    def accepts(self, event: Mapping[str, Any] | None) -> bool:
        """Whether this connection's filter lets ``event`` through. An event
        that could not be parsed passes only an unfiltered connection."""
        if self.event_filter is None:
            return True
        if event is None:
            return False
        try:
            return self.event_filter(event)
        except Exception:
            logger.exception("The stream filter %r failed; the event is withheld from this stream.", self.event_filter)
            return False

    def offer(self, key: Key, frame: bytes) -> bool:
        """Queue a frame; evict the connection if its queue is full.

        :return: ``False`` when the connection was evicted by this call.
        """
        with self._ready:
            if self.closed:
                return True
            if len(self._queue) >= self._queue_size:
                self.closed = self.evicted = True
                self._queue.clear()
                self._ready.notify_all()
                evicted = True
            else:
                self._queue.append((key, frame))
                self._ready.notify()
                evicted = False
        if evicted:
            self._shutdown_socket()
        return not evicted

    def announce_gap(self, frame: bytes) -> None:
        """Queue a ``gap`` event ahead of what comes next: the backend lost
        events this stream should have carried, so the client must refetch."""
        with self._ready:
            if self.closed:
                return
            self._queue.append((_ANNOUNCEMENT, frame))
            self._ready.notify()

    def take(self, timeout: float) -> list[tuple[Key, bytes]] | None:
        """Wait up to ``timeout`` seconds for queued frames.

        :return: the frames (empty when none came), or ``None`` once the
            connection is closed.
        """
        with self._ready:
            if not self._queue and not self.closed:
                self._ready.wait(timeout)
            if self.closed:
                return None
            items = list(self._queue)
            self._queue.clear()
            return items

    def _shutdown_socket(self) -> None:
        # Servers that expose the client socket (werkzeug, gunicorn) let an
        # evicted stream end now, even while a write to it is blocked; under
        # gevent.pywsgi the stream ends once its write goes through.
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def watch_hangup(self, fd: int) -> None:
        """Under gevent, close the connection as soon as the client hangs up.

        A server only learns that a client left when it next writes to it
        (an event or a heartbeat); an event-loop watcher on the client's
        socket (``fd``) lets the stream free its queue and its place at once
        instead. A client that only half-closes its socket counts as gone;
        browsers never do that. Without gevent, nothing is watched: a thread
        per stream would cost more than the wait.

        The watcher is a callback, not a greenlet blocked in ``recv``: an
        idle greenlet keeps a copy of its C stack, several kilobytes for
        every open stream (the benchmark's idle cost, issue 6).
        """
        if not under_gevent() or self.closed:
            return
        from gevent import get_hub

        try:
            watcher = get_hub().loop.io(fd, 1)  # 1: readable
        except (OSError, ValueError):
            return
        self._watcher = watcher
        watcher.start(self._readable, fd)

    def _readable(self, fd: int) -> None:
        # Runs in the event loop, which must not block: peek through the
        # unpatched socket type, and close from a greenlet, since closing
        # takes locks.
        try:
            peer = _socket.socket(fileno=os.dup(fd))
            try:
                data = peer.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            finally:
                peer.close()
        except BlockingIOError:
            return  # not readable after all: keep watching
        except OSError:
            data = b""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close()
        if data:
            return  # the client sent something: not a hang-up
        import gevent

        gevent.spawn(self.close)

    def frames(self, *, retry: int, heartbeat: float) -> Iterator[bytes]:
        """The bytes of the stream: ``retry`` and the start id, the gap event
        if any, the replayed events, then live events and heartbeats until
        the connection is closed."""
        try:
            yield encode_event(None, retry=retry, id=self.start_id)
            if self.gap is not None:
                yield encode_event(json.dumps(self.gap), event=GAP_EVENT, id=self.start_id)
            replay, self.replay = self.replay, []
            for message in replay:
                if self.closed:
                    break
                event = _parse_event(message)
                if self.accepts(event):
                    yield event_frame(message, event, named=self._fanout.named_events)
            del replay
            last_write = time.monotonic()
            while True:
                wait = max(0.0, heartbeat - (time.monotonic() - last_write))
                items = self.take(wait)
                if items is None:
                    if self.evicted:
                        yield _EVICTED
                    return
                if not items:
                    if time.monotonic() - last_write >= heartbeat:
                        yield HEARTBEAT
                        last_write = time.monotonic()
                    continue
                chunk: list[bytes] = []
                size = 0
                for key, frame in items:
                    if key is not _ANNOUNCEMENT:
                        if key <= self.floor:
                            continue
                        self.floor = key
                    chunk.append(frame)
                    size += len(frame)
                    if size >= _CHUNK:
                        yield b"".join(chunk)
                        chunk, size = [], 0
                if chunk:
                    yield b"".join(chunk)
                last_write = time.monotonic()
        finally:
            self.close()

    def close(self) -> None:
        """End the stream and free its queue and its place. Idempotent."""
        with self._ready:
            self.closed = True
            self._queue.clear()
            self._ready.notify_all()
            released, self._released = self._released, True
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            # Before the server closes the socket, whose descriptor may then
            # be reused by another client.
            watcher.close()
        if not released:
            self._fanout._release(self)

    def __repr__(self) -> str:
        return f"<Connection {self.hub_id!r} from {self.client!r}{' evicted' if self.evicted else ''}>"


class Fanout:
    """The one backend subscription of a process, shared by every stream of
    an application.

    :param backend: the application's backend.
    :param poll_interval: longest wait of one :meth:`Subscription.get`.
    :param idle_linger: seconds the listener keeps the subscription once the
        last stream closed.
    :param history_concurrency: history reads (by resuming streams) that may
        run at once, so a reconnect storm does not open a backend connection
        per client.
    :param named_events: name each event after its type; see :func:`event_frame`.
    """

    #: Delay bounds, in seconds, between attempts to read a failing backend.
    backoff_base = 0.1
    backoff_max = 5.0

    def __init__(
        self,
        backend: Backend,
        *,
        poll_interval: float = 1.0,
        idle_linger: float = 30.0,
        history_concurrency: int = 4,
        named_events: bool = True,
    ) -> None:
        self.backend = backend
        self.named_events = named_events
        self.poll_interval = poll_interval
        self.idle_linger = idle_linger
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._hubs: dict[str, _Hub] = {}
        self._clients: Counter[str] = Counter()
        self._open = 0
        self._subscription: Subscription | None = None
        self._listener: Any = None
        self._history_slots = threading.BoundedSemaphore(max(1, history_concurrency))
        self._stats: Counter[str] = Counter()

    # -- connections ------------------------------------------------------------

    def open(
        self,
        hub_id: str,
        *,
        event_filter: EventFilter | None = None,
        last_event_id: str | None = None,
        client: str = "",
        max_per_client: int | None = None,
        queue_size: int = 512,
        sock: socket.socket | None = None,
    ) -> Connection:
        """Register a stream of ``hub_id`` and prepare what it sends first.

        The connection receives live events from the moment this returns; with
        ``last_event_id`` it also replays what the history holds after that id
        (and a gap event if some of it was trimmed).

        :param last_event_id: a validated id (see :func:`parse_last_event_id`).
        :raises TooManyStreamsError: ``client`` holds ``max_per_client`` streams.
        :raises BackendError: the backend could not be read; nothing is left
            registered.
        """
        connection = Connection(self, hub_id, event_filter, client, queue_size, sock)
        with self._lock:
            if max_per_client is not None and self._clients[client] >= max_per_client:
                self._stats["refused"] += 1
                raise TooManyStreamsError(client, max_per_client)
            self._clients[client] += 1
            self._open += 1
            hub = self._hubs.get(hub_id)
            leader = hub is None
            if hub is None:
                hub = self._hubs[hub_id] = _Hub()
            hub.connections.add(connection)
        try:
            if leader:
                self._join(hub_id, hub)
            elif not hub.ready.wait(60.0) or hub.error is not None:
                raise BackendError(f"Could not subscribe to hub {hub_id!r}: {hub.error or 'timed out'}.")
            if last_event_id is None:
                with self._lock:
                    connection.floor = hub.cursor
                connection.start_id = _format_key(connection.floor)
            else:
                self._prepare_replay(connection, last_event_id)
        except BaseException:
            connection.close()
            raise
        with self._lock:
            self._stats["opened"] += 1
        return connection

    def _join(self, hub_id: str, hub: _Hub) -> None:
        try:
            self._subscribe().add(hub_id)
            with self._history_slots:
                kept = self.backend.history(hub_id, None).messages
            if kept:
                with self._lock:
                    hub.cursor = max(hub.cursor, kept[-1].sort_key)
        except BaseException as exc:
            with self._lock:
                hub.error = exc
                if self._hubs.get(hub_id) is hub:
                    del self._hubs[hub_id]
            hub.ready.set()
            raise
        hub.ready.set()

    def _prepare_replay(self, connection: Connection, last_event_id: str) -> None:
        with self._history_slots:
            history = self.backend.history(connection.hub_id, last_event_id)
        connection.replay = history.messages
        connection.start_id = last_event_id
        floor = parse_id(last_event_id)
        if history.messages:
            floor = max(floor, history.messages[-1].sort_key)
        connection.floor = floor
        if history.gap:
            with self._lock:
                self._stats["gaps"] += 1
            connection.gap = {
                "last_event_id": last_event_id,
                "oldest_id": history.messages[0].id if history.messages else None,
            }

    def _release(self, connection: Connection) -> None:
        with self._lock:
            hub = self._hubs.get(connection.hub_id)
            if hub is not None:
                hub.connections.discard(connection)
            self._clients[connection.client] -= 1
            if self._clients[connection.client] <= 0:
                del self._clients[connection.client]
            self._open -= 1

    def _drop_evicted(self, connection: Connection) -> None:
        with self._lock:
            self._stats["evicted"] += 1
            hub = self._hubs.get(connection.hub_id)
            if hub is not None:
                hub.connections.discard(connection)

    # -- the listener -------------------------------------------------------------

    def _subscribe(self) -> Subscription:
        with self._lock:
            if self._subscription is None:
                subscription = self._subscription = self.backend.subscribe()
                self._listener = self._spawn(subscription)
            return self._subscription

    def _spawn(self, subscription: Subscription) -> Any:
        if under_gevent():
            import gevent

            return gevent.spawn(self._run, subscription)
        thread = threading.Thread(target=self._run, args=(subscription,), name="flask-notifications-sse", daemon=True)
        thread.start()
        return thread

    def _run(self, subscription: Subscription) -> None:
        failures = 0
        idle_since: float | None = None
        try:
            while True:
                with self._lock:
                    if self._subscription is not subscription:
                        return
                    if self._open:
                        idle_since = None
                    elif idle_since is None:
                        idle_since = time.monotonic()
                    elif time.monotonic() - idle_since >= self.idle_linger:
                        self._reset()
                        return
                try:
                    messages = subscription.get(self.poll_interval)
                except Exception as exc:
                    delay = self.backoff_base + backoff(failures, self.backoff_base, self.backoff_max, True)
                    failures += 1
                    if failures == 1 or failures % 20 == 0:
                        level = logging.WARNING if isinstance(exc, BackendError) else logging.ERROR
                        logger.log(
                            level,
                            "Reading the notifications backend failed (%d in a row), retrying in %.1fs: %r",
                            failures,
                            delay,
                            exc,
                            exc_info=not isinstance(exc, BackendError),
                        )
                    time.sleep(delay)
                    continue
                if failures:
                    logger.info("Reading the notifications backend works again after %d failures.", failures)
                    failures = 0
                    self._announce_lost()
                try:
                    self._dispatch(messages)
                except Exception:
                    # The listener serves every stream of the process: it
                    # must outlive whatever one batch does to it.
                    logger.exception("Fanning out %d events failed.", len(messages))
        finally:
            subscription.close()

    def _announce_lost(self) -> None:
        """After the subscription failed, ask the backend whether it can still
        deliver what followed the newest id handed out for each hub. Where it
        cannot (RabbitMQ keeps no history; a Redis that restarted empty),
        every stream of the hub gets a ``gap`` event, so its client refetches
        instead of missing those events silently. A backend that resumes its
        subscription (Redis) reports no gap, and its streams just carry on."""
        with self._lock:
            hubs = [(hub_id, hub.cursor, list(hub.connections)) for hub_id, hub in self._hubs.items()]
        for hub_id, cursor, connections in hubs:
            last_id = _format_key(cursor)
            try:
                lost = self.backend.history(hub_id, last_id).gap
            except BackendError:
                lost = True
            if not lost:
                continue
            logger.warning(
                "The backend lost events of hub %r after %s; telling %d streams.", hub_id, last_id, len(connections)
            )
            frame = encode_event(json.dumps({"last_event_id": last_id, "oldest_id": None}), event=GAP_EVENT, id=last_id)
            with self._lock:
                self._stats["gaps"] += len(connections)
            for connection in connections:
                connection.announce_gap(frame)

    def _dispatch(self, messages: list[Message]) -> None:
        for index, message in enumerate(messages, 1):
            event = _parse_event(message)
            try:
                frame = event_frame(message, event, named=self.named_events)
                key = message.sort_key
            except (StreamFormatError, ValueError) as exc:
                logger.error("Message %r of hub %r cannot be streamed: %s", message.id, message.channel, exc)
                continue
            with self._lock:
                hub = self._hubs.get(message.channel)
                if hub is None or key <= hub.cursor:
                    continue
                hub.cursor = key
                targets = list(hub.connections)
                self._stats["events"] += 1
            for connection in targets:
                if connection.accepts(event) and not connection.offer(key, frame):
                    logger.info("Evicted %r: more than its queue of events behind.", connection)
                    self._drop_evicted(connection)
            if index % _BATCH == 0:
                _cooperate()

    def _reset(self) -> None:
        # Called with the lock held, by the listener, once idle.
        self._subscription = None
        self._listener = None
        self._hubs.clear()

    def close(self) -> None:
        """End every stream and release the subscription. A later
        :meth:`open` starts afresh."""
        with self._lock:
            subscription, self._subscription = self._subscription, None
            listener, self._listener = self._listener, None
            connections = [c for hub in self._hubs.values() for c in hub.connections]
            self._hubs.clear()
        for connection in connections:
            connection.close()
        if subscription is not None:
            subscription.close()
        if listener is not None and listener is not threading.current_thread():
            listener.join(timeout=10)

    # -- introspection --------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters of this process: ``connections`` open now (an evicted
        one until its server notices), ``subscribers`` receiving live
        events, ``hubs`` subscribed, ``listening`` (1 while the subscription
        is held), and since start ``opened``, ``refused`` (over the
        per-client limit), ``events`` fanned out, ``evicted`` slow
        connections and ``gaps`` reported."""
        with self._lock:
            return {
                "connections": self._open,
                "subscribers": sum(len(hub.connections) for hub in self._hubs.values()),
                "hubs": len(self._hubs),
                "listening": int(self._subscription is not None),
                **{key: self._stats[key] for key in ("opened", "refused", "events", "evicted", "gaps")},
            }

    def __repr__(self) -> str:
        return f"<Fanout of {type(self.backend).__name__} pid={self.pid}>"
