"""The per-process fan-out of a hub's events to the streams that carry them.

A process holds one :class:`Fanout` per application. It has a single backend
subscription (one Redis connection, however many clients) and a single
listener, a greenlet when the process is monkey-patched by gevent and a
thread otherwise. The listener parses and encodes each event once and hands
the same bytes to the bounded queue of every :class:`Stream` of the hub. A
stream whose queue is full is evicted: it ends, without slowing the others,
and the browser resumes with ``Last-Event-ID``. A hub joins the subscription
when its first stream arrives; the listener stops, and its connection is
released, once no stream has been open for a while.

Each stream applies its own filter (the authorizer's and the view's) in the
greenlet or thread that writes it, not in the listener: a filter that waits
(on a database, say) delays only its own stream, which is evicted if it
falls a queue behind.

A resuming stream is registered before the history is read, and live events
at or below the last replayed id are dropped, so replay and live delivery
neither overlap nor leave a hole. The history is read in pages of
:attr:`Fanout.page_size` messages, so a resume from ``0-0`` costs one page of
memory, not the whole history.

Nothing is dropped silently. The stream gets a ``gap`` event when the history
no longer reaches back to its ``Last-Event-ID`` or that id is newer than any
of the hub's, when the listener fell behind the history (an overrun) or the
backend's ids went backwards (a reset), both found by the subscription on
every read. While the backend cannot be read, every stream gets one
``backend-down`` event, then one ``backend-up`` once a read succeeds again.

To change how frames reach clients, subclass :class:`Stream` (its
:meth:`~Stream.offer` and :meth:`~Stream.announce` are what the listener
calls) and set :attr:`Fanout.stream_class`.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any

from ..backends.base import Backend, History, Lost, Message, Subscription, parse_id
from ..backoff import backoff
from ..errors import BackendError, InvalidEventError, StreamFormatError, TooManyStreamsError
from ..event import Event
from ..event_filter import EventFilter
from .green import HangupWatcher, Runner, SocketWriter, cooperate, is_current, make_wakeup, spawn
from .wire import (
    EVICTED,
    HEARTBEAT,
    Key,
    backend_frame,
    encode_event,
    event_frame,
    format_id,
    gap_frame,
    reconnect_frame,
)

logger = logging.getLogger(__name__)

#: The queue key of a frame written as it is (a gap or backend announcement).
_ANNOUNCEMENT: Key = (-1, -1)
#: The queue key of a gap after which the hub's ids start again from zero.
_RESET: Key = (-2, -2)
#: Events the listener hands out before it lets the streams write: a stream
#: then writes them in one chunk, one system call rather than one per event.
_BATCH = 32
#: Largest chunk a stream hands to the server in one write.
_CHUNK = 64 * 1024
#: Seconds between the listener's rounds of heartbeats to live streams.
_SWEEP = 1.0

#: What :meth:`Stream.push` did with a batch: nothing (offer its events one
#: by one), wrote it all to the socket, or left the rest to the greenlet.
NOT_PUSHED, WRITTEN, LEFT = 0, 1, 2

#: What a stream's queue holds: the message's key, its frame, and its event
#: (``None`` for an announcement or a message that is not a valid event).
Item = tuple[Key, bytes, "Event | None"]


def _parse_event(message: Message) -> Event | None:
    try:
        return Event.from_json(message.data)
    except InvalidEventError as exc:
        logger.warning("Message %s of hub %r is not a valid event: %s", message.id, message.channel, exc)
        return None


class _Hub:
    """What the fan-out knows of one hub: its streams and the newest id it
    has handed out (or found in the history when the hub joined)."""

    def __init__(self) -> None:
        self.streams: set[Stream] = set()
        self.cursor: Key = (0, 0)
        self.ready = threading.Event()
        self.error: BaseException | None = None


class Stream:
    """One client's stream: a bounded queue filled by the fan-out and drained
    by :meth:`frames`, which the WSGI server iterates.

    Built by :meth:`Fanout.open`; :meth:`close` unregisters it and is called
    when the server closes the response (the client left) or the stream ends.

    With a :class:`~flask_notifications.streaming.green.SocketWriter` (under
    ``gunicorn -k gevent``), the stream goes *live* once its first frames
    and its replay went out through the server: it takes the connection
    over and the server's greenlet ends. From then on the fan-out writes
    each batch straight to the socket (:meth:`push`), and a greenlet runs
    only while there is something the fan-out cannot write at once: the
    rest of a batch a full socket buffer did not take, the events its
    filter must judge, and announcements, always in order.
    """

    __slots__ = (
        "fanout",
        "hub_id",
        "event_filter",
        "client",
        "_queue",
        "_queue_size",
        "_ready",
        "_socket",
        "writer",
        "live",
        "_busy",
        "_raw",
        "heartbeat",
        "last_write",
        "floor",
        "start_id",
        "replay",
        "replay_more",
        "gap",
        "replaying",
        "_overflowed",
        "_reset_queued",
        "_unsure",
        "closed",
        "evicted",
        "_released",
        "_watcher",
        "ended",
        "retry",
    )

    def __init__(
        self,
        fanout: Fanout,
        hub_id: str,
        event_filter: EventFilter | None,
        client: str,
        queue_size: int,
        sock: Any = None,
        writer: SocketWriter | None = None,
    ) -> None:
        self.fanout = fanout
        self.hub_id = hub_id
        self.event_filter = event_filter
        self.client = client
        self._queue: list[Item] = []
        self._queue_size = max(1, queue_size)
        self._ready = make_wakeup()
        self._socket = sock
        self.writer = writer
        #: The stream took the connection over from the server; the
        #: fan-out may write to it (see :meth:`push`).
        self.live = False
        #: A greenlet is writing what the fan-out left (see :meth:`_drain`).
        self._busy = False
        #: Bytes the fan-out could not write, already framed, to go first.
        self._raw: bytes = b""
        self.heartbeat = 0.0
        #: The reconnection delay the stream was opened with, in milliseconds.
        self.retry = 0
        self.last_write = 0.0
        #: Live events at or below this id were replayed or came before the stream.
        self.floor: Key = (0, 0)
        self.start_id = "0-0"
        #: The first page of the replay, and whether more may follow it.
        self.replay: list[Message] = []
        self.replay_more = False
        self.gap: bytes | None = None
        #: While replaying, a full queue is emptied rather than evicted: the
        #: history holds what it dropped, and the replay reads on.
        self.replaying = False
        self._overflowed = False
        #: A reset of the hub is queued and not written yet: the history the
        #: replay would read on is another stream's, which comes live.
        self._reset_queued = False
        #: The newest id written from a history page that reported a gap
        #: since the last reset written: such a page may already hold the
        #: events of a stream that replaced the hub's (a reset the listener
        #: had not noticed yet), which then come again live after the reset.
        self._unsure: Key = (0, 0)
        self.closed = False
        self.evicted = False
        #: Ended by :meth:`end` (the server is stopping): the client is told
        #: to reconnect, elsewhere, with ``Last-Event-ID``.
        self.ended = False
        self._released = False
        self._watcher: HangupWatcher | None = None

    def accepts(self, event: Mapping[str, Any] | None) -> bool:
        """Whether this stream's filter lets ``event`` through. An event that
        could not be parsed passes only an unfiltered stream."""
        if self.event_filter is None:
            return True
        if event is None:
            return False
        try:
            return self.event_filter(event)
        except Exception:
            logger.exception("The stream filter %r failed; the event is withheld from this stream.", self.event_filter)
            return False

    def offer(self, key: Key, frame: bytes, event: Event | None) -> bool:
        """Queue an event; evict the stream if its queue is full.

        :return: ``False`` when the stream was evicted by this call.
        """
        with self._ready:
            if self.closed:
                return True
            if len(self._queue) < self._queue_size:
                self._queue.append((key, frame, event))
                self._ready.notify()
                if self.live:
                    self._kick()
                return True
            if self.replaying and not self._reset_queued:
                # The history holds the events dropped here, not the
                # announcements, which stay queued.
                kept = [item for item in self._queue if item[0] is _ANNOUNCEMENT or item[0] is _RESET]
                self._queue.clear()
                self._queue.extend(kept)
                self._overflowed = True
                return True
            self.evicted = True
        if self.live:
            # Its buffer is full: what still fits goes, then the end.
            self.close()
        else:
            with self._ready:
                self.closed = True
                self._queue.clear()
                self._ready.notify_all()
            self._shutdown_socket()
        return False

    def announce(self, frame: bytes, *, reset: bool = False) -> None:
        """Queue a frame that is not an event (a ``gap``, ``backend-down``
        or ``backend-up``) behind what is queued.

        :param reset: the hub's ids start again from zero after it.
        """
        with self._ready:
            if self.closed:
                return
            self._queue.append((_RESET if reset else _ANNOUNCEMENT, frame, None))
            if reset:
                self._reset_queued = True
            self._ready.notify()
            if self.live:
                self._kick()

    def take(self, timeout: float) -> list[Item] | None:
        """Wait up to ``timeout`` seconds for queued items.

        :return: the items (empty when none came), or ``None`` once the
            stream is closed.
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
                self._socket.shutdown(2)  # SHUT_RDWR
            except OSError:
                pass

    def end(self) -> None:
        """End the stream because this process stops serving: it writes
        :func:`~flask_notifications.streaming.wire.reconnect_frame` and returns, so the
        client resumes at once, on another process, from its last id. What
        was queued and not written is replayed there from the history.

        The client's socket stops reading, so that a server holding the
        connection open for another request (keep-alive) lets it go as soon
        as the stream's last bytes are written."""
        with self._ready:
            if self.closed:
                return
            self.ended = True
            self._queue.clear()
            self._ready.notify_all()
        if self._socket is not None:
            try:
                self._socket.shutdown(0)  # SHUT_RD
            except OSError:
                pass
        self.close()

    def watch_hangup(self, fd: int) -> None:
        """Under gevent, close the stream as soon as the client at the other
        end of socket ``fd`` hangs up; see :class:`~flask_notifications.streaming.green.HangupWatcher`."""
        if not self.closed:
            self._watcher = HangupWatcher.start(fd, self.close)

    def _replayed(self, messages: list[Message], *, unsure: bool) -> Iterator[bytes]:
        replayed = 0
        try:
            for message in messages:
                if self.closed or self._reset_queued:
                    return
                key = message.sort_key
                if key <= self.floor:
                    continue
                self.floor = key
                if unsure:
                    self._unsure = key
                event = _parse_event(message)
                if self.accepts(event):
                    replayed += 1
                    yield event_frame(message, event, named=self.fanout.named_events)
        finally:
            self.fanout._count("replayed", replayed)

    def _replay(self) -> Iterator[bytes]:
        page, self.replay = self.replay, []
        more = self.replay_more
        unsure = self.gap is not None
        after = self.start_id
        while True:
            yield from self._replayed(page, unsure=unsure)
            if page:
                after = page[-1].id
            with self._ready:
                if self._reset_queued:
                    # The hub's stream was replaced: what follows comes
                    # live, after the reset's gap event.
                    more = self._overflowed = self.replaying = False
                    return
                if not more:
                    # Live events were dropped while the queue was full:
                    # read on from the history, which holds them.
                    more, self._overflowed = self._overflowed, False
                    if not more:
                        self.replaying = False
                        return
            if self.closed:
                return
            history = self.fanout.read_history(self.hub_id, after)
            unsure = history.gap
            if history.gap:
                oldest = history.messages[0].id if history.messages else None
                yield gap_frame(after, oldest_id=oldest, reason="trimmed")
            page, more = history.messages, len(history.messages) >= self.fanout.page_size

    def push(self, first: Key, last: Key, data: bytes, chunk: bytes, now: float) -> int:
        """Write the frames of a batch of events straight to the socket of a
        live stream, without waking its greenlet. What the socket's buffer
        does not take now goes to the greenlet, which writes it before
        anything else.

        :param first: the key of the batch's first event.
        :param last: the key of its last event.
        :param data: the frames of its events.
        :param chunk: ``data`` as one HTTP/1.1 chunk.
        :param now: ``time.monotonic()``.
        :return: :data:`NOT_PUSHED` when the stream cannot take the batch
            this way (it is not live, has a filter, has something left to
            write, or the batch starts at or below its floor): offer the
            events one by one. Else :data:`WRITTEN`, or :data:`LEFT` when
            the socket's buffer was full and the greenlet writes the rest.
        """
        # Only a stream with a writer goes live, and only under gevent,
        # where nothing else runs between these checks and the write.
        if (
            not self.live
            or self._busy
            or self._queue
            or self.closed
            or self.event_filter is not None
            or first <= self.floor
        ):
            return NOT_PUSHED
        self.floor = last
        return self._write_now(chunk if self.writer is not None and self.writer.chunked else data, now)

    def tick(self, now: float) -> None:
        """Write a heartbeat to a live stream idle for its heartbeat
        interval. (A stream that is not live writes its own.)"""
        if (
            self.live
            and not self._busy
            and not self._queue
            and not self.closed
            and now - self.last_write >= self.heartbeat
        ):
            self._write_now(self._heartbeat_wire, now)

    def _write_now(self, wire: bytes, now: float) -> int:
        writer = self.writer
        assert writer is not None
        try:
            sent = writer.write_nowait(wire)
        except OSError:
            self.close()  # the client is gone
            return WRITTEN
        self.last_write = now
        if sent < len(wire):
            self._raw = wire[sent:]
            self._kick()
            return LEFT
        return WRITTEN

    @property
    def _heartbeat_wire(self) -> bytes:
        writer = self.writer
        assert writer is not None
        return writer.frame(HEARTBEAT)

    def _select(self, items: list[Item]) -> Iterator[bytes]:
        """The frames of ``items`` this stream carries: above its floor and
        through its filter."""
        for key, frame, event in items:
            if key is _RESET:
                # The hub's ids start again: from zero, unless this stream
                # wrote some of the new stream's events already (see
                # _unsure), which come again now.
                self.floor, self._unsure = self._unsure, (0, 0)
                yield frame
                # Where the client resumes; never back past what it has.
                frame = encode_event(None, id=format_id(self.floor))
            elif key is not _ANNOUNCEMENT:
                if key <= self.floor:
                    continue
                self.floor = key
                if not self.accepts(event):
                    continue
            yield frame

    def _go_live(self, writer: SocketWriter, heartbeat: float, retry: int) -> None:
        """Take the connection over from the server: a descriptor of our
        own, a hang-up watcher on it, and the fan-out's writes from now on."""
        writer.detach()
        if self._watcher is not None:
            self._watcher.close()
        self._watcher = HangupWatcher.start(writer.fd, self.close)
        self._socket = None
        self.heartbeat = heartbeat
        self.retry = retry
        self.last_write = time.monotonic()
        self.live = True
        if self._queue:
            # Queued during the replay.
            self._kick()

    def _kick(self) -> None:
        """Make sure a greenlet writes what the fan-out left."""
        if not self._busy and not self.closed:
            self._busy = True
            spawn(self._drain, name="flask-notifications-stream")

    def _drain(self) -> None:
        """Write, in order, the bytes a full socket buffer did not take and
        the queued items, until nothing is left; then end, so that a live
        stream holds no greenlet while its client keeps up."""
        writer = self.writer
        assert writer is not None
        try:
            while not self.closed:
                raw, self._raw = self._raw, b""
                items, self._queue = self._queue, []
                if not raw and not items:
                    return
                selected = b"".join(self._select(items))
                writer.write(raw + writer.frame(selected) if selected else raw)
                self.last_write = time.monotonic()
        except OSError:
            self.close()  # the client is gone, or the stream was closed
        finally:
            self._busy = False

    def frames(self, *, retry: int, heartbeat: float) -> Generator[bytes, None, None]:
        """The bytes of the stream: ``retry`` and the start id, the gap event
        if any, the replayed events, then live events, announcements and
        heartbeats until the stream is closed.

        With a writer, the stream then takes the connection over (see
        :meth:`push`) and ends the server's part of the response with
        :class:`BrokenPipeError`, which gunicorn takes for a client that
        left: it closes its socket without writing more, and its greenlet
        ends."""
        live = False
        try:
            if self.ended:
                # Ended before its first byte: a resuming client keeps the
                # id it sent; a new one comes back from where it started.
                yield (b"" if self.replaying else encode_event(None, id=self.start_id)) + reconnect_frame(retry)
                return
            yield encode_event(None, retry=retry, id=self.start_id)
            if self.gap is not None:
                yield self.gap
            try:
                yield from self._replay()
                if self.ended:
                    yield reconnect_frame(retry)
                    return
            except BackendError as exc:
                # The client resumes from its last id once the backend is back.
                logger.warning("Ending a stream of hub %r: its replay failed: %s", self.hub_id, exc)
                return
            if self.writer is not None and not self.closed:
                # The server wrote everything yielded so far before asking
                # for more: from here on, writes to the socket come in order.
                self._go_live(self.writer, heartbeat, retry)
                live = True
                raise BrokenPipeError(errno.EPIPE, "The stream went on outside the WSGI server.")
            last_write = time.monotonic()
            while True:
                wait = max(0.0, heartbeat - (time.monotonic() - last_write))
                items = self.take(wait)
                if items is None:
                    if self.ended:
                        yield reconnect_frame(retry)
                    elif self.evicted:
                        yield EVICTED
                    return
                if not items:
                    if time.monotonic() - last_write >= heartbeat:
                        yield HEARTBEAT
                        last_write = time.monotonic()
                    continue
                chunk: list[bytes] = []
                size = 0
                for frame in self._select(items):
                    chunk.append(frame)
                    size += len(frame)
                    if size >= _CHUNK:
                        yield b"".join(chunk)
                        chunk, size = [], 0
                if chunk:
                    yield b"".join(chunk)
                    last_write = time.monotonic()
        finally:
            if not live:
                self.close()

    def response_closed(self) -> None:
        """The server is done with the response: close the stream, unless
        it went live and carries on outside the server."""
        if not self.live:
            self.close()

    def close(self) -> None:
        """End the stream and free its queue and its place. Idempotent.

        A live stream ends its response itself (the ``reconnect`` event if
        it was ended, the ``too far behind`` comment if it was evicted, and
        the last chunk) and closes its
        descriptor; a greenlet still writing to it gets an :class:`OSError`."""
        with self._ready:
            self.closed = True
            self._queue.clear()
            self._ready.notify_all()
            released, self._released = self._released, True
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            # Before the socket is closed, whose descriptor may then be
            # reused by another client.
            watcher.close()
        if self.live and self.writer is not None:
            self._raw = b""
            # While a greenlet writes, a frame may be half on the wire:
            # nothing more may follow it.
            last: bytes | None = None
            if not self._busy:
                ending = reconnect_frame(self.retry) if self.ended else EVICTED if self.evicted else b""
                last = self.writer.frame(ending) if ending else b""
            self.writer.close(last)
        if not released:
            self.fanout.release(self)

    def __repr__(self) -> str:
        return f"<Stream {self.hub_id!r} from {self.client!r}{' evicted' if self.evicted else ''}>"


#: Every fan-out of this process, for :func:`end_all_streams`.
_fanouts: weakref.WeakSet[Fanout] = weakref.WeakSet()


@atexit.register
def _end_live_streams() -> None:
    # A live stream (see Stream.push) is no request of the server's, which
    # therefore does not wait for it when the process stops: end it as
    # end_streams() would, so that its client reconnects at once.
    pid = os.getpid()
    for fanout in list(_fanouts):
        if fanout.pid == pid:
            fanout.end_live_streams()


def end_all_streams() -> int:
    """:meth:`Fanout.end_streams` on every fan-out of this process (every
    application's): what a server calls when it starts a graceful stop.

    :return: the streams ended.
    """
    pid = os.getpid()
    return sum(fanout.end_streams() for fanout in list(_fanouts) if fanout.pid == pid)


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
    :param on_outage: called with the exception when the backend stops
        answering, once per outage, in the listener.
    :param on_recovery: called with the number of failed reads when it
        answers again.
    :param named_events: name each event after its type; see
        :func:`~flask_notifications.streaming.wire.event_frame`.
    """

    #: Delay bounds, in seconds, between attempts to read a failing backend.
    backoff_base = 0.1
    backoff_max = 5.0
    #: Messages read from the history at a time by a resuming stream.
    page_size = 100
    #: The class of the streams :meth:`open` builds.
    stream_class: type[Stream] = Stream

    def __init__(
        self,
        backend: Backend,
        *,
        poll_interval: float = 1.0,
        idle_linger: float = 30.0,
        history_concurrency: int = 4,
        on_outage: Callable[[BaseException], None] | None = None,
        on_recovery: Callable[[int], None] | None = None,
        named_events: bool = True,
    ) -> None:
        self.backend = backend
        self.named_events = named_events
        self.poll_interval = poll_interval
        self.idle_linger = idle_linger
        self.pid = os.getpid()
        self.on_outage = on_outage
        self.on_recovery = on_recovery
        self._lock = threading.Lock()
        self._hubs: dict[str, _Hub] = {}
        self._clients: Counter[str] = Counter()
        self._open = 0
        self._subscription: Subscription | None = None
        self._listener: Runner | None = None
        self._history_slots = threading.BoundedSemaphore(max(1, history_concurrency))
        self._stats: Counter[str] = Counter()
        #: Since when the backend cannot be read, or ``None``.
        self._down_since: float | None = None
        self._ending = False
        _fanouts.add(self)

    # -- streams ------------------------------------------------------------------

    def open(
        self,
        hub_id: str,
        *,
        event_filter: EventFilter | None = None,
        last_event_id: str | None = None,
        client: str = "",
        max_per_client: int | None = None,
        queue_size: int = 512,
        sock: Any = None,
        writer: SocketWriter | None = None,
    ) -> Stream:
        """Register a stream of ``hub_id`` and prepare what it sends first.

        The stream receives live events from the moment this returns; with
        ``last_event_id`` it also replays what the history holds after that id
        (and a gap event if some of it was trimmed, or the id is newer than
        any of the hub's).

        :param last_event_id: a validated id (see
            :func:`~flask_notifications.streaming.wire.parse_last_event_id`).
        :param sock: the client's socket, shut down when the stream is evicted.
        :param writer: writes to the client's socket directly once the
            stream is live (see :meth:`Stream.push`).
        :raises TooManyStreamsError: ``client`` holds ``max_per_client`` streams.
        :raises BackendError: the backend could not be read; nothing is left
            registered.
        """
        stream = self.stream_class(self, hub_id, event_filter, client, queue_size, sock)
        stream.writer = writer
        stream.replaying = last_event_id is not None
        with self._lock:
            if self._ending:
                # The process is stopping: the client is sent on at once,
                # and this process subscribes to nothing more.
                self._clients[client] += 1
                self._open += 1
                ending = True
            else:
                ending = False
        if ending:
            if last_event_id is None:
                try:
                    # A new client comes back with the hub's newest id, so
                    # the events published before it reaches another
                    # process are replayed there.
                    stream.start_id = format_id(self._newest(hub_id))
                except BaseException:
                    stream.close()
                    raise
            stream.end()
            return stream
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
            hub.streams.add(stream)
        try:
            if leader:
                self._join(hub_id, hub)
            elif not hub.ready.wait(60.0) or hub.error is not None:
                raise BackendError(f"Could not subscribe to hub {hub_id!r}: {hub.error or 'timed out'}.")
            with self._lock:
                cursor = hub.cursor
                if self._down_since is not None:
                    # Under the lock the listener takes to say the backend
                    # is back, so that backend-up cannot come first.
                    stream.announce(backend_frame(False))
            if last_event_id is None:
                stream.floor = cursor
                stream.start_id = format_id(cursor)
            else:
                self._prepare_replay(stream, last_event_id, cursor)
        except BaseException:
            stream.close()
            raise
        with self._lock:
            self._stats["opened"] += 1
        return stream

    def _newest(self, hub_id: str) -> Key:
        newest = self.backend.last_id(hub_id)
        return (0, 0) if newest is None else parse_id(newest)

    def _join(self, hub_id: str, hub: _Hub) -> None:
        try:
            self._subscribe().add(hub_id)
            newest = self._newest(hub_id)
            with self._lock:
                hub.cursor = max(hub.cursor, newest)
        except BaseException as exc:
            with self._lock:
                hub.error = exc
                if self._hubs.get(hub_id) is hub:
                    del self._hubs[hub_id]
            hub.ready.set()
            raise
        hub.ready.set()

    def read_history(self, hub_id: str, after_id: str) -> History:
        """One page of the history of ``hub_id`` after ``after_id``, read
        within the bound on concurrent history reads.

        :raises BackendError: the backend cannot be read.
        """
        with self._history_slots:
            return self.backend.history(hub_id, after_id, limit=self.page_size)

    def _prepare_replay(self, stream: Stream, last_event_id: str, cursor: Key) -> None:
        floor = parse_id(last_event_id)
        newest = max(cursor, self._newest(stream.hub_id))
        if floor > newest:
            # Not an id of this hub (a client's clock, a forged header, or a
            # backend that restarted empty): start from the newest, and say so.
            stream.start_id = format_id(newest)
            stream.floor = newest
            stream.replaying = False
            stream.gap = gap_frame(last_event_id, oldest_id=None, reason="ahead", id=stream.start_id)
            self._count("gaps")
            return
        history = self.read_history(stream.hub_id, last_event_id)
        stream.replay = history.messages
        stream.replay_more = len(history.messages) >= self.page_size
        stream.start_id = last_event_id
        stream.floor = floor
        if history.gap:
            self._count("gaps")
            oldest = history.messages[0].id if history.messages else None
            stream.gap = gap_frame(last_event_id, oldest_id=oldest, reason="trimmed", id=stream.start_id)

    def release(self, stream: Stream) -> None:
        """Forget a closed stream; :meth:`Stream.close` calls it."""
        with self._lock:
            hub = self._hubs.get(stream.hub_id)
            if hub is not None:
                hub.streams.discard(stream)
            self._clients[stream.client] -= 1
            if self._clients[stream.client] <= 0:
                del self._clients[stream.client]
            self._open -= 1

    def _evicted(self, stream: Stream) -> None:
        logger.info("Evicted %r: more than its queue of events behind.", stream)
        with self._lock:
            self._stats["evicted"] += 1
            hub = self._hubs.get(stream.hub_id)
            if hub is not None:
                hub.streams.discard(stream)

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._stats[name] += amount

    def _streams(self) -> list[Stream]:
        with self._lock:
            return [stream for hub in self._hubs.values() for stream in hub.streams]

    # -- the listener -------------------------------------------------------------

    def _subscribe(self) -> Subscription:
        with self._lock:
            if self._subscription is None:
                subscription = self._subscription = self.backend.subscribe()
                self._listener = spawn(self._run, subscription, name="flask-notifications-sse")
            return self._subscription

    def _run(self, subscription: Subscription) -> None:
        failures = 0
        idle_since: float | None = None
        swept = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if now - swept >= _SWEEP:
                    swept = now
                    self._heartbeats(now)
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
                    self._count("backend_failures")
                    if self._down_since is None:
                        self._outage_began(exc)
                    time.sleep(self.backoff_base + backoff(failures, self.backoff_base, self.backoff_max, True))
                    failures += 1
                    continue
                if self._down_since is not None and subscription.connected:
                    self._outage_ended(subscription, failures)
                    failures = 0
                try:
                    # A subscription that does not track every loss still
                    # reports those it finds (a reset stream, on AMQP).
                    self._announce_losses(subscription.lost())
                    self._dispatch(messages)
                except Exception:
                    # The listener serves every stream of the process: it
                    # must outlive whatever one batch does to it.
                    logger.exception("Fanning out %d events failed.", len(messages))
        finally:
            subscription.close()

    def _outage_began(self, exc: BaseException) -> None:
        with self._lock:
            self._down_since = time.monotonic()
            self._stats["outages"] += 1
        streams = self._streams()
        logger.warning(
            "The notifications backend cannot be read (%s); telling %d streams, and retrying with backoff.",
            exc,
            len(streams),
            exc_info=not isinstance(exc, BackendError),
        )
        frame = backend_frame(False)
        for stream in streams:
            stream.announce(frame)
        self._callback(self.on_outage, exc)

    def _outage_ended(self, subscription: Subscription, failures: int) -> None:
        with self._lock:
            since, self._down_since = self._down_since, None
        streams = self._streams()
        logger.warning(
            "The notifications backend answers again after %.1fs and %d failed reads; telling %d streams.",
            time.monotonic() - (since or time.monotonic()),
            failures,
            len(streams),
        )
        if not subscription.tracks_losses:
            self._announce_unverifiable()
        frame = backend_frame(True)
        for stream in streams:
            stream.announce(frame)
        self._callback(self.on_recovery, failures)

    def _callback(self, func: Callable[..., None] | None, *args: Any) -> None:
        if func is None:
            return
        try:
            func(*args)
        except Exception:
            logger.exception("The stream outage handler %r failed.", func)

    def _announce_losses(self, losses: list[Lost]) -> None:
        for lost in losses:
            reset = lost.reason == "reset"
            with self._lock:
                hub = self._hubs.get(lost.channel)
                if hub is None:
                    continue
                if reset:
                    hub.cursor = (0, 0)
                streams = list(hub.streams)
                self._stats["gaps"] += len(streams)
            logger.warning(
                "Events of hub %r after %s were lost (%s); telling %d streams.",
                lost.channel,
                lost.after_id,
                lost.reason,
                len(streams),
            )
            # A reset's gap carries no id: each stream follows it with the
            # id its client resumes from (Stream.frames).
            frame = gap_frame(lost.after_id, oldest_id=None, reason=lost.reason, with_id=not reset)
            for stream in streams:
                stream.announce(frame, reset=reset)

    def _announce_unverifiable(self) -> None:
        """After an outage of a backend whose subscription does not report
        its losses (RabbitMQ keeps no history), ask the history whether it
        can still deliver what followed the newest id handed out for each
        hub; where it cannot, every stream of the hub gets a ``gap`` event."""
        with self._lock:
            hubs = [(hub_id, hub.cursor) for hub_id, hub in self._hubs.items() if hub.streams]
        losses = []
        for hub_id, cursor in hubs:
            try:
                lost = self.backend.history(hub_id, format_id(cursor), limit=1).gap
            except BackendError:
                lost = True
            if lost:
                losses.append(Lost(hub_id, format_id(cursor), "outage"))
        self._announce_losses(losses)

    def _dispatch(self, messages: list[Message]) -> None:
        for start in range(0, len(messages), _BATCH):
            if start:
                # Let the streams drain between batches of a large read, so
                # a burst does not look like slow clients.
                cooperate()
            self._dispatch_batch(messages[start : start + _BATCH])

    def _dispatch_batch(self, messages: list[Message]) -> None:
        """Encode each event once, then hand each stream of its hub the
        whole batch: one write to a live stream's socket, else one queue
        entry per event."""
        parsed: list[tuple[str, Key, bytes, Event | None]] = []
        for message in messages:
            event = _parse_event(message)
            try:
                frame = event_frame(message, event, named=self.named_events)
                key = message.sort_key
            except (StreamFormatError, ValueError) as exc:
                logger.error("Message %r of hub %r cannot be streamed: %s", message.id, message.channel, exc)
                continue
            parsed.append((message.channel, key, frame, event))
        batches: dict[str, tuple[list[Item], list[Stream]]] = {}
        with self._lock:
            for hub_id, key, frame, event in parsed:
                hub = self._hubs.get(hub_id)
                if hub is None or key <= hub.cursor:
                    continue
                hub.cursor = key
                self._stats["events"] += 1
                self._stats["queued"] += len(hub.streams)
                if hub_id not in batches:
                    batches[hub_id] = ([], list(hub.streams))
                batches[hub_id][0].append((key, frame, event))
        for items, targets in batches.values():
            self._hand_out(items, targets)

    def _hand_out(self, items: list[Item], targets: list[Stream]) -> None:
        data = b"".join(frame for _, frame, _ in items)
        chunk = b"%x\r\n%b\r\n" % (len(data), data)
        first, last = items[0][0], items[-1][0]
        now = time.monotonic()
        done = Counter[int]()
        for stream in targets:
            pushed = stream.push(first, last, data, chunk, now)
            done[pushed] += 1
            if pushed != NOT_PUSHED:
                continue
            for key, frame, event in items:
                if not stream.offer(key, frame, event):
                    self._evicted(stream)
                    break
        if done[WRITTEN] or done[LEFT]:
            with self._lock:
                self._stats["direct_writes"] += done[WRITTEN] + done[LEFT]
                self._stats["direct_fallbacks"] += done[LEFT]

    def end_live_streams(self) -> None:
        """End every live stream (see :meth:`Stream.push`) with
        :meth:`Stream.end`: the ``reconnect`` event, then the end of its
        response. Called when the process exits."""
        for stream in self._streams():
            if stream.live:
                stream.end()

    def _heartbeats(self, now: float) -> None:
        """Heartbeats for the live streams (see :meth:`Stream.tick`)."""
        try:
            for stream in self._streams():
                stream.tick(now)
        except Exception:
            logger.exception("Writing heartbeats failed.")

    def _reset(self) -> None:
        # Called with the lock held, by the listener, once idle.
        self._subscription = None
        self._listener = None
        self._hubs.clear()
        self._down_since = None

    def end_streams(self) -> int:
        """End every stream with a frame that sends its client elsewhere
        (:meth:`Stream.end`), and end every stream opened later the same
        way: call it when this process stops serving, as on a graceful
        restart, so the server need not wait for the streams to end.

        :return: the streams ended.
        """
        with self._lock:
            self._ending = True
        streams = self._streams()
        for stream in streams:
            stream.end()
        return len(streams)

    @property
    def ending(self) -> bool:
        """Whether :meth:`end_streams` was called."""
        return self._ending

    def close(self) -> None:
        """End every stream and release the subscription. A later
        :meth:`open` starts afresh."""
        with self._lock:
            subscription, self._subscription = self._subscription, None
            listener, self._listener = self._listener, None
            streams = [s for hub in self._hubs.values() for s in hub.streams]
            self._hubs.clear()
            self._down_since = None
        for stream in streams:
            stream.close()
        if subscription is not None:
            subscription.close()
        if listener is not None and not is_current(listener):
            listener.join(timeout=10)

    # -- introspection --------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters of this process: ``connections`` open now (an evicted
        one until its server notices), ``subscribers`` receiving live
        events, ``hubs`` subscribed, ``listening`` (1 while the subscription
        is held), ``backend_down`` (1 while the backend cannot be read), and
        since start ``opened``, ``refused`` (over the per-client limit),
        ``events`` fanned out, ``queued`` (event frames handed to streams,
        one per event and stream), ``replayed`` (events sent from the
        history to resuming streams), ``evicted`` slow streams, ``gaps``
        reported, ``backend_failures`` (failed reads), ``outages``,
        ``direct_writes`` (batches the listener wrote straight to a socket)
        and ``direct_fallbacks`` (of those, the ones a full socket buffer
        left to a greenlet to finish)."""
        with self._lock:
            return {
                "connections": self._open,
                "subscribers": sum(len(hub.streams) for hub in self._hubs.values()),
                "hubs": len(self._hubs),
                "listening": int(self._subscription is not None),
                "backend_down": int(self._down_since is not None),
                **{
                    key: self._stats[key]
                    for key in (
                        "opened",
                        "refused",
                        "events",
                        "queued",
                        "replayed",
                        "evicted",
                        "gaps",
                        "backend_failures",
                        "outages",
                        "direct_writes",
                        "direct_fallbacks",
                    )
                },
            }

    def hub_streams(self) -> dict[str, int]:
        """The streams receiving live events now, by hub id."""
        with self._lock:
            return {hub_id: len(hub.streams) for hub_id, hub in self._hubs.items() if hub.streams}

    def __repr__(self) -> str:
        return f"<Fanout of {type(self.backend).__name__} pid={self.pid}>"
