"""One client's stream: its bounded queue, its filter, its ``Last-Event-ID``
replay and its ending, shared by both delivery modes.

The modes are subclasses: :class:`~flask_notifications.streaming.queued.QueuedStream`,
whose frames the WSGI server iterates, and
:class:`~flask_notifications.streaming.live.LiveStream`, to whose socket the
fan-out writes itself. The
:class:`~flask_notifications.streaming.fanout.Fanout` builds one or the
other in :meth:`~flask_notifications.streaming.fanout.Fanout.open`.
"""

from __future__ import annotations

import abc
import logging
import ssl
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..backends.base import parse_id
from ..errors import BackendError, InvalidEventError
from ..event import Event
from ..event_filter import EventFilter
from .green import HangupWatcher, Parking, Wakeup, make_wakeup, under_gevent
from .routing import Route, route
from .wire import EVICTED, Key, encode_event, event_frame, format_id, gap_frame, reconnect_frame

if TYPE_CHECKING:
    from ..backends.base import Message
    from .fanout import Fanout

logger = logging.getLogger(__name__)

#: The queue key of a frame written as it is (a gap or backend announcement).
ANNOUNCEMENT: Key = (-1, -1)
#: The queue key of a gap after which the hub's ids start again from zero.
RESET: Key = (-2, -2)
#: What a stream's queue holds: the message's key, its frame, and its event
#: (``None`` for an announcement or a message that is not a valid event).
Item = tuple[Key, bytes, "Event | None"]

#: What :meth:`Stream.push` did with a batch: nothing (offer its events one
#: by one), wrote it all to the socket, or left the rest to the stream.
NOT_PUSHED, WRITTEN, LEFT = 0, 1, 2


def parse_event(message: Message) -> Event | None:
    """The event ``message`` carries, or ``None`` (logged) when it carries none."""
    try:
        return Event.from_json(message.data)
    except InvalidEventError as exc:
        logger.warning("Message %s of hub %r is not a valid event: %s", message.id, message.channel, exc)
        return None


class Stream(abc.ABC):
    """One client's stream: a bounded queue filled by the fan-out, its
    filter, its ``Last-Event-ID`` replay, and :meth:`frames`, which the WSGI
    server iterates. Each delivery mode is a subclass; the fan-out builds
    them in :meth:`Fanout.open <flask_notifications.streaming.fanout.Fanout.open>`.

    :meth:`close` unregisters the stream; the server's closing of the
    response (the client left) and the end of :meth:`frames` call it.
    """

    __slots__ = (
        "fanout",
        "hub_id",
        "event_filter",
        "route",
        "client",
        "_queue",
        "_queue_size",
        "_ready",
        "_socket",
        "floor",
        "seen_from",
        "repeats",
        "start_id",
        "replay",
        "replay_more",
        "gap",
        "replaying",
        "overflowed",
        "reset_queued",
        "unsure",
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
    ) -> None:
        self.fanout = fanout
        self.hub_id = hub_id
        self.event_filter = event_filter
        #: How the fan-out hands it events (see :mod:`~flask_notifications.streaming.routing`).
        self.route: Route = route(event_filter)
        self.client = client
        self._queue: list[Item] = []
        self._queue_size = max(1, queue_size)
        self._ready: Wakeup = Parking() if under_gevent() else make_wakeup()
        self._socket = sock
        #: The reconnection delay the stream was opened with, in milliseconds.
        self.retry = 0
        #: Live events at or below this id were replayed or came before the stream.
        self.floor: Key = (0, 0)
        self.start_id = "0-0"
        #: The first page of the replay, and whether more may follow it.
        self.replay: Sequence[Message] = ()
        self.replay_more = False
        self.gap: bytes | None = None
        #: While replaying, a full queue is emptied rather than evicted: the
        #: history holds what it dropped, and the replay reads on.
        self.replaying = False
        self.overflowed = False
        #: A reset of the hub is queued and not written yet: the history the
        #: replay would read on is another stream's, which comes live.
        self.reset_queued = False
        #: The newest id written from a history page that reported a gap
        #: since the last reset written: such a page may already hold the
        #: events of a stream that replaced the hub's (a reset the listener
        #: had not noticed yet), which then come again live after the reset.
        self.unsure: Key = (0, 0)
        #: Live events above this id and at or below :attr:`floor` were
        #: written to the client, or before the stream (``(0, 0)`` for a
        #: client that resumed: it had what came before its id).
        self.seen_from: Key = (0, 0)
        #: Event ids written already that a failover may bring again
        #: (``None`` until a failover names some: most streams never hold one).
        self.repeats: set[str] | None = None
        self.closed = False
        self.evicted = False
        #: Ended by :meth:`end` (the server is stopping): the client is told
        #: to reconnect, elsewhere, with ``Last-Event-ID``.
        self.ended = False
        self._released = False
        self._watcher: HangupWatcher | None = None

    @property
    def live(self) -> bool:
        """Whether the fan-out writes to this stream's socket itself (see
        :meth:`push`)."""
        return False

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

    def judge(self, event: Event | None) -> bool:
        """Whether ``event``, handed out by the fan-out after its
        :attr:`route`, passes what of the filter the route leaves to judge:
        :meth:`accepts` for an event the route already picked."""
        rest = self.route.rest
        if rest is None:
            return True
        if event is None:
            return False
        try:
            return rest(event)
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
                return True
            if self.replaying and not self.reset_queued:
                # The history holds the events dropped here, not the
                # announcements, which stay queued.
                kept = [item for item in self._queue if item[0] is ANNOUNCEMENT or item[0] is RESET]
                self._queue.clear()
                self._queue.extend(kept)
                self.overflowed = True
                return True
            self.evicted = True
        self._evict()
        return False

    def _evict(self) -> None:
        with self._ready:
            self.closed = True
            self._queue.clear()
            self._ready.notify_all()
        self._shutdown_socket()

    def announce(self, frame: bytes, *, reset: bool = False) -> None:
        """Queue a frame that is not an event (a ``gap``, ``backend-down``
        or ``backend-up``) behind what is queued.

        :param reset: the hub's ids start again from zero after it.
        """
        with self._ready:
            if self.closed:
                return
            self._queue.append((RESET if reset else ANNOUNCEMENT, frame, None))
            if reset:
                self.reset_queued = True
            self._ready.notify()

    def push(self, first: Key, last: Key, data: bytes, chunk: bytes, now: float) -> int:
        """Write a batch of events straight to the client, if this mode
        can; see :meth:`LiveStream.push <flask_notifications.streaming.live.LiveStream.push>`.

        :return: :data:`NOT_PUSHED`: offer the events one by one.
        """
        return NOT_PUSHED

    def tick(self, now: float) -> None:
        """Write a heartbeat if the fan-out writes this stream's heartbeats
        and one is due. A stream the server iterates writes its own."""
        return None

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

    def _shutdown_socket(self, how: int = 2) -> None:
        # Servers that expose the client socket (werkzeug, gunicorn) let an
        # evicted stream end now, even while a write to it is blocked; under
        # gevent.pywsgi the stream ends once its write goes through.
        sock = self._socket
        if sock is None:
            return
        try:
            if isinstance(sock, ssl.SSLSocket):
                # SSLSocket.shutdown() drops the TLS layer, and what the
                # server writes after it (the reconnect frame) would go out
                # in the clear: shut the connection down under it instead.
                super(ssl.SSLSocket, sock).shutdown(how)
            else:
                sock.shutdown(how)  # 2: SHUT_RDWR, 0: SHUT_RD
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
        self._shutdown_socket(0)
        self.close()

    def watch_hangup(self, fd: int) -> None:
        """Under gevent, close the stream as soon as the client at the other
        end of socket ``fd`` hangs up; see :class:`~flask_notifications.streaming.green.HangupWatcher`."""
        if not self.closed:
            self._watcher = HangupWatcher.start(fd, self.close)

    def select(self, items: list[Item]) -> Iterator[bytes]:
        """The frames of ``items`` this stream carries: above its floor and
        through its filter."""
        for key, frame, event in items:
            if key is RESET:
                # The hub's ids start again: from zero, unless this stream
                # wrote some of the new stream's events already (see
                # unsure), which come again now.
                self.floor, self.unsure = self.unsure, (0, 0)
                yield frame
                # Where the client resumes; never back past what it has.
                frame = encode_event(None, id=format_id(self.floor))
            elif key is not ANNOUNCEMENT:
                if key <= self.floor:
                    continue
                self.floor = key
                if self.repeats and event is not None and event["event_id"] in self.repeats:
                    self.repeats.discard(event["event_id"])
                    continue
                if not self.accepts(event):
                    continue
            yield frame

    def expect_repeats(self, recent: list[tuple[Key, str]]) -> None:
        """Skip the events of ``recent`` (ids and event ids) that this
        stream wrote, should they be published again: a failover took them
        with the old master, and the tasks that published them run again."""
        found = {event_id for key, event_id in recent if self.seen_from < key <= self.floor}
        if found:
            self.repeats = found if self.repeats is None else self.repeats | found

    def prepare_replay(self, last_event_id: str, newest: Key) -> None:
        """Read the first page of the replay after ``last_event_id``, and
        the gap event to send first, if any.

        :param newest: the hub's newest id.
        :raises BackendError: the backend cannot be read.
        """
        floor = parse_id(last_event_id)
        history = self.fanout.read_history(self.hub_id, last_event_id)
        if floor > newest:
            # Not an id of this hub (a client's clock, a forged header, or a
            # backend that restarted empty), unless a failover took the
            # writes it followed: start from the newest, and say so.
            reason = history.reason if history.gap and history.reason == "failover" else "ahead"
            self.start_id = format_id(newest)
            self.floor = newest
            self.replaying = False
            self.gap = gap_frame(last_event_id, oldest_id=None, reason=reason, id=self.start_id)
            self.fanout.count("gaps")
            return
        self.replay = history.messages
        self.replay_more = len(history.messages) >= self.fanout.page_size
        self.start_id = last_event_id
        self.floor = floor
        if history.gap:
            self.fanout.count("gaps")
            oldest = history.messages[0].id if history.messages else None
            self.gap = gap_frame(last_event_id, oldest_id=oldest, reason=history.reason, id=self.start_id)

    def _replayed(self, messages: Sequence[Message], *, unsure: bool) -> Iterator[bytes]:
        replayed = 0
        try:
            for message in messages:
                if self.closed or self.reset_queued:
                    return
                key = message.sort_key
                if key <= self.floor:
                    continue
                self.floor = key
                if unsure:
                    self.unsure = key
                event = parse_event(message)
                if self.accepts(event):
                    replayed += 1
                    yield event_frame(message, event, named=self.fanout.named_events)
        finally:
            self.fanout.count("replayed", replayed)

    def _replay(self) -> Iterator[bytes]:
        page, self.replay = self.replay, ()
        more = self.replay_more
        unsure = self.gap is not None
        after = self.start_id
        while True:
            yield from self._replayed(page, unsure=unsure)
            if page:
                after = page[-1].id
            with self._ready:
                if self.reset_queued:
                    # The hub's stream was replaced: what follows comes
                    # live, after the reset's gap event.
                    more = self.overflowed = self.replaying = False
                    return
                if not more:
                    # Live events were dropped while the queue was full:
                    # read on from the history, which holds them.
                    more, self.overflowed = self.overflowed, False
                    if not more:
                        self.replaying = False
                        return
            if self.closed:
                return
            history = self.fanout.read_history(self.hub_id, after)
            unsure = history.gap
            if history.gap:
                oldest = history.messages[0].id if history.messages else None
                yield gap_frame(after, oldest_id=oldest, reason=history.reason)
            page, more = history.messages, len(history.messages) >= self.fanout.page_size

    def frames(self, *, retry: int, heartbeat: float) -> Generator[bytes, None, None]:
        """The bytes of the stream: ``retry`` and the start id, the gap event
        if any, the replayed events, then what the mode delivers
        (:meth:`follow`) until the stream is closed, and the frame that says
        why it ended, if any."""
        self.retry = retry
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
            except BackendError as exc:
                # The client resumes from its last id once the backend is back.
                logger.warning("Ending a stream of hub %r: its replay failed: %s", self.hub_id, exc)
                return
            if not self.ended:
                yield from self.follow(heartbeat)
            if self.handed_over:
                return
            ending = self.ending()
            if ending:
                yield ending
        finally:
            if not self.handed_over:
                self.close()

    @abc.abstractmethod
    def follow(self, heartbeat: float) -> Iterator[bytes]:
        """Deliver the live events until the stream is closed, or until it
        is :attr:`handed_over`; what it yields, the server writes.

        :param heartbeat: seconds of silence after which a heartbeat is due.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement follow().")

    def ending(self) -> bytes:
        """The last frame of a closed stream: ``reconnect`` if it was ended,
        the ``too far behind`` comment if it was evicted, else nothing."""
        if self.ended:
            return reconnect_frame(self.retry)
        if self.evicted:
            return EVICTED
        return b""

    @property
    def handed_over(self) -> bool:
        """Whether the server's connection serves the rest of the stream
        once the response ends (see :meth:`LiveStream.serve
        <flask_notifications.streaming.live.LiveStream.serve>`): the end of
        :meth:`frames` and of the response then leave it open."""
        return False

    def response_closed(self) -> None:
        """The server is done with the response: close the stream, unless
        it was :attr:`handed_over`."""
        if not self.handed_over:
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
            # Before the server closes the socket, whose descriptor may
            # then be reused by another client.
            watcher.close()
        if not released:
            self.fanout.release(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.hub_id!r} from {self.client!r}{' evicted' if self.evicted else ''}>"
