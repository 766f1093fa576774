"""The per-process fan-out of a hub's events to the streams that carry them.

A process holds one :class:`Fanout` per application. It has a single backend
subscription (one Redis connection, however many clients) and a single
listener, a greenlet when the process is monkey-patched by gevent and a
thread otherwise. The listener parses and encodes each event once and hands
the same bytes to every stream of the hub (:mod:`~flask_notifications.streaming.stream`). A
stream whose queue is full is evicted: it ends, without slowing the others,
and the browser resumes with ``Last-Event-ID``. A hub joins the subscription
when its first stream arrives; the listener stops, and its connection is
released, once no stream has been open for a while.

A stream that follows one user (an authorizer's ``WithRecipient(user)``) gets
only the events of that user: an event costs what its recipients cost
(:mod:`~flask_notifications.streaming.registry`). The listener judges the
predefined filters itself; any other filter is judged in the greenlet or
thread that writes its stream, not in the listener: a filter that waits (on
a database, say) delays only its own stream, which is evicted if it falls a
queue behind (:mod:`~flask_notifications.streaming.routing`).

A resuming stream is registered before the history is read, and live events
at or below the last replayed id are dropped, so replay and live delivery
neither overlap nor leave a hole. The history is read in pages of
:attr:`Fanout.page_size` messages, so a resume from ``0-0`` costs one page of
memory, not the whole history.

Nothing is dropped silently. The stream gets a ``gap`` event when the history
no longer reaches back to its ``Last-Event-ID`` or that id is newer than any
of the hub's; the listener's losses and outages are announced by
:mod:`~flask_notifications.streaming.announcements`.

The listener writes each batch to a live stream's socket itself, one write
per stream and batch (:meth:`LiveStream.push
<flask_notifications.streaming.live.LiveStream.push>`), and queues it on any
other (:meth:`Stream.offer <flask_notifications.streaming.stream.Stream.offer>`).
To change how frames reach clients, subclass either class and set
:attr:`Fanout.queued_class` or :attr:`Fanout.live_class`.

``Stream`` is importable from here too, as the documentation printed it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..backends.base import Backend, History, Message, Subscription, parse_id
from ..backoff import backoff
from ..errors import BackendError, StreamFormatError, TooManyStreamsError
from ..event import Event
from ..event_filter import EventFilter
from .announcements import Announcements
from .green import Runner, SocketWriter, cooperate, is_current, spawn, under_gevent
from .live import Heartbeats, LiveStream
from .queued import QueuedStream
from .registry import Handout, HubStreams
from .stream import LEFT, WRITTEN, Item, Stream, parse_event
from .wire import Key, backend_frame, event_frame, format_id

logger = logging.getLogger(__name__)

#: Events the listener hands out before it lets the streams write: a stream
#: then writes them in one chunk, one system call rather than one per event.
_BATCH = 32
#: Seconds between the rounds of heartbeats to live streams.
_SWEEP = 1.0


#: The counters of :meth:`Fanout.stats` since start.
_COUNTERS: tuple[str, ...] = ("opened", "refused", "events", "queued", "replayed", "evicted", "gaps")
_COUNTERS += ("backend_failures", "outages", "direct_writes", "direct_fallbacks")

#: Every fan-out of this process, for :func:`end_all_streams`.
_fanouts: weakref.WeakSet[Fanout] = weakref.WeakSet()


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
        last stream closed (``NOTIFICATIONS_SSE_IDLE_LINGER``).
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
    #: The class of the streams :meth:`open` builds when the server offers
    #: no :class:`~flask_notifications.streaming.green.SocketWriter`.
    queued_class: type[QueuedStream] = QueuedStream
    #: ... and when it offers one.
    live_class: type[LiveStream] = LiveStream

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
        self._lock = threading.Lock()
        self._hubs: dict[str, HubStreams] = {}
        self._clients: Counter[str] = Counter()
        self._open = 0
        self._subscription: Subscription | None = None
        self._listener: Runner | None = None
        self._history_slots = threading.BoundedSemaphore(max(1, history_concurrency))
        self._stats: Counter[str] = Counter()
        self._announcements = Announcements(
            backend, self._lock, self._hubs, self._stats, on_outage=on_outage, on_recovery=on_recovery
        )
        self._ending = False
        self._heartbeat_rounds = Heartbeats()
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
            stream is live (see :class:`~flask_notifications.streaming.live.LiveStream`).
        :raises TooManyStreamsError: ``client`` holds ``max_per_client`` streams.
        :raises BackendError: the backend could not be read; nothing is left
            registered.
        """
        stream: Stream
        if writer is None:
            stream = self.queued_class(self, hub_id, event_filter, client, queue_size, sock)
        else:
            stream = self.live_class(self, hub_id, event_filter, client, queue_size, sock, writer=writer)
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
                    stream.start_id = format_id(self.newest(hub_id))
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
                hub = self._hubs[hub_id] = HubStreams()
            hub.add(stream)
        try:
            if leader:
                self._join(hub_id, hub)
            elif not hub.ready.wait(60.0) or hub.error is not None:
                raise BackendError(f"Could not subscribe to hub {hub_id!r}: {hub.error or 'timed out'}.")
            with self._lock:
                cursor = hub.cursor
                if self._announcements.down_since is not None:
                    # Under the lock the listener takes to say the backend
                    # is back, so that backend-up cannot come first.
                    stream.announce(backend_frame(False))
            if last_event_id is None:
                stream.floor = stream.seen_from = cursor
                stream.start_id = format_id(cursor)
            else:
                stream.prepare_replay(last_event_id, max(cursor, self.newest(hub_id)))
        except BaseException:
            stream.close()
            raise
        with self._lock:
            self._stats["opened"] += 1
            if isinstance(stream, LiveStream):
                self._heartbeat_rounds.add(stream, time.monotonic())
        return stream

    def newest(self, hub_id: str) -> Key:
        """The newest id of hub ``hub_id`` in the backend.

        :raises BackendError: the backend cannot be read.
        """
        newest = self.backend.last_id(hub_id)
        return (0, 0) if newest is None else parse_id(newest)

    def _join(self, hub_id: str, hub: HubStreams) -> None:
        try:
            self._subscribe().add(hub_id)
            newest = self.newest(hub_id)
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

    def release(self, stream: Stream) -> None:
        """Forget a closed stream; :meth:`Stream.close
        <flask_notifications.streaming.stream.Stream.close>` calls it."""
        with self._lock:
            hub = self._hubs.get(stream.hub_id)
            if hub is not None:
                hub.discard(stream)
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
                hub.discard(stream)

    def count(self, name: str, amount: int = 1) -> None:
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
                if under_gevent():
                    # Only gevent serves live streams (see LiveStream).
                    spawn(self._beat, subscription, name="flask-notifications-heartbeats")
            return self._subscription

    def _beat(self, subscription: Subscription) -> None:
        """Heartbeats for the live streams, on a timer of their own while
        ``subscription`` is the fan-out's: a backend read that blocks (a
        stalled Redis, a partition without a reset) must not hold them up."""
        while True:
            time.sleep(_SWEEP)
            with self._lock:
                if self._subscription is not subscription:
                    return
            self._heartbeats(time.monotonic())

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
                    self.count("backend_failures")
                    if self._announcements.down_since is None:
                        self._announcements.outage_began(exc)
                    time.sleep(self.backoff_base + backoff(failures, self.backoff_base, self.backoff_max, True))
                    failures += 1
                    continue
                if self._announcements.down_since is not None and subscription.connected:
                    self._announcements.outage_ended(subscription, failures)
                    failures = 0
                try:
                    # A subscription that does not track every loss still
                    # reports those it finds (a reset stream, on AMQP).
                    self._announcements.losses(subscription.lost())
                    self._dispatch(messages)
                except Exception:
                    # The listener serves every stream of the process: it
                    # must outlive whatever one batch does to it.
                    logger.exception("Fanning out %d events failed.", len(messages))
        finally:
            subscription.close()

    def _dispatch(self, messages: list[Message]) -> None:
        for start in range(0, len(messages), _BATCH):
            if start:
                # Let the streams drain between batches of a large read, so
                # a burst does not look like slow clients.
                cooperate()
            self._dispatch_batch(messages[start : start + _BATCH])

    def _dispatch_batch(self, messages: list[Message]) -> None:
        """Encode each event once, then hand each stream of its hub the
        whole batch, or its recipients' part of it: one write to a live
        stream's socket, else one queue entry per event."""
        parsed: list[tuple[str, Key, bytes, Event | None]] = []
        for message in messages:
            event = parse_event(message)
            try:
                frame = event_frame(message, event, named=self.named_events)
                key = message.sort_key
            except (StreamFormatError, ValueError) as exc:
                logger.error("Message %r of hub %r cannot be streamed: %s", message.id, message.channel, exc)
                continue
            parsed.append((message.channel, key, frame, event))
        batches: dict[str, tuple[list[Item], list[Stream], dict[Stream, list[Item]]]] = {}
        with self._lock:
            for hub_id, key, frame, event in parsed:
                hub = self._hubs.get(hub_id)
                if hub is None or key <= hub.cursor:
                    continue
                hub.cursor = key
                if event is not None:
                    hub.recent.append((key, event["event_id"]))
                self._stats["events"] += 1
                if hub_id not in batches:
                    batches[hub_id] = ([], list(hub.plain), {})
                items, plain, indexed = batches[hub_id]
                items.append((key, frame, event))
                self._stats["queued"] += len(plain) + hub.index(items[-1], indexed)
        for items, plain, indexed in batches.values():
            handout = Handout(items).run(plain, indexed)
            for stream in handout.evicted:
                self._evicted(stream)
            done = handout.done
            if done[WRITTEN] or done[LEFT]:
                with self._lock:
                    self._stats["direct_writes"] += done[WRITTEN] + done[LEFT]
                    self._stats["direct_fallbacks"] += done[LEFT]

    def _heartbeats(self, now: float) -> None:
        """Heartbeats for the live streams due (see :meth:`LiveStream.tick
        <flask_notifications.streaming.live.LiveStream.tick>`)."""
        try:
            self._heartbeat_rounds.sweep(now)
        except Exception:
            logger.exception("Writing heartbeats failed.")

    def _reset(self) -> None:
        # Called with the lock held, by the listener, once idle.
        self._subscription = None
        self._listener = None
        self._hubs.clear()
        self._heartbeat_rounds.clear()
        self._announcements.down_since = None

    def end_streams(self) -> int:
        """End every stream with a frame that sends its client elsewhere
        (:meth:`Stream.end <flask_notifications.streaming.stream.Stream.end>`),
        and end every stream opened later the same way: call it when this process stops serving, as on a graceful
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
            self._heartbeat_rounds.clear()
            self._announcements.down_since = None
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
                "backend_down": int(self._announcements.down_since is not None),
                **{key: self._stats[key] for key in _COUNTERS},
            }

    def hub_streams(self) -> dict[str, int]:
        """The streams receiving live events now, by hub id."""
        with self._lock:
            return {hub_id: len(hub.streams) for hub_id, hub in self._hubs.items() if hub.streams}

    def __repr__(self) -> str:
        return f"<Fanout of {type(self.backend).__name__} pid={self.pid}>"
