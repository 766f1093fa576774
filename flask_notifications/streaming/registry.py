"""The streams of one hub, as the fan-out finds them for each event, and the
hand-out of a batch of events to them.

A stream that follows one user (see :mod:`~flask_notifications.streaming.routing`)
is kept under that user: an event is looked up by its recipients, so it
costs what they cost, whatever the number of open streams. Every other
stream gets every event, as before.

A stream whose filter the fan-out may judge (:attr:`Route.inline
<flask_notifications.streaming.routing.Route.inline>`) gets only the events
that pass it, written straight to its socket when it is live (one write per
stream and batch), and its greenlet does not wake. Any other filtered stream
gets the events queued, and judges them in its own greenlet or thread.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

from .stream import NOT_PUSHED, Item, Stream
from .wire import Key

#: How many of a hub's latest events a failover may bring again.
RECENT = 256


class HubStreams:
    """What the fan-out knows of one hub: its streams, by user where they
    follow one, and the newest id it has handed out (or found in the
    history when the hub joined)."""

    __slots__ = ("streams", "plain", "users", "cursor", "ready", "error", "recent")

    def __init__(self) -> None:
        #: Every stream receiving the hub's live events.
        self.streams: set[Stream] = set()
        #: Of those, the ones that get every event (not indexed by a user).
        self.plain: set[Stream] = set()
        #: The others, by the user they follow.
        self.users: dict[str, set[Stream]] = {}
        self.cursor: Key = (0, 0)
        self.ready = threading.Event()
        self.error: BaseException | None = None
        #: The ids and event ids of the hub's latest events (see
        #: :meth:`Stream.expect_repeats <flask_notifications.streaming.stream.Stream.expect_repeats>`).
        self.recent: deque[tuple[Key, str]] = deque(maxlen=RECENT)

    def add(self, stream: Stream) -> None:
        self.streams.add(stream)
        user = stream.route.recipient
        if user is None:
            self.plain.add(stream)
        else:
            self.users.setdefault(user, set()).add(stream)

    def discard(self, stream: Stream) -> None:
        self.streams.discard(stream)
        user = stream.route.recipient
        if user is None:
            self.plain.discard(stream)
            return
        streams = self.users.get(user)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self.users[user]

    def index(self, item: Item, indexed: dict[Stream, list[Item]]) -> int:
        """Add ``item`` to the items of each stream of its recipients.

        :return: how many streams it went to.
        """
        event = item[2]
        if event is None or not self.users:
            return 0
        count = 0
        # A set: a recipient named twice gets the event once.
        for user in set(event.get("recipients") or ()):
            for stream in self.users.get(user, ()):
                indexed.setdefault(stream, []).append(item)
                count += 1
        return count


class Handout:
    """One batch of one hub's events, handed to its streams.

    :param items: the batch, in the hub's order.
    """

    __slots__ = ("items", "now", "done", "evicted", "_shared")

    def __init__(self, items: list[Item]) -> None:
        self.items = items
        self.now = time.monotonic()
        #: How many streams :meth:`Stream.push <flask_notifications.streaming.stream.Stream.push>`
        #: answered each way.
        self.done = Counter[int]()
        #: The streams whose queue was full.
        self.evicted: list[Stream] = []
        self._shared: tuple[Key, Key, bytes, bytes] | None = None

    def run(self, plain: list[Stream], indexed: dict[Stream, list[Item]]) -> Handout:
        """Give every stream of ``plain`` the batch, and every stream of
        ``indexed`` its items, each through its filter."""
        for stream in plain:
            if stream.event_filter is None:
                if self._shared is None:
                    self._shared = _encoded(self.items)
                self._give(stream, self.items, self._shared)
            else:
                self._judge(stream, self.items)
        for stream, items in indexed.items():
            self._judge(stream, items)
        return self

    def _judge(self, stream: Stream, items: list[Item]) -> None:
        if stream.route.inline:
            items = [item for item in items if stream.judge(item[2])]
            if items:
                self._give(stream, items, _encoded(items))
        else:
            # Its own greenlet or thread judges them (Stream.select): a
            # filter that waits delays only its own stream.
            self._offer(stream, items)

    def _give(self, stream: Stream, items: list[Item], encoded: tuple[Key, Key, bytes, bytes]) -> None:
        pushed = stream.push(*encoded, self.now)
        self.done[pushed] += 1
        if pushed == NOT_PUSHED:
            self._offer(stream, items)

    def _offer(self, stream: Stream, items: list[Item]) -> None:
        for key, frame, event in items:
            if not stream.offer(key, frame, event):
                self.evicted.append(stream)
                return


def _encoded(items: list[Item]) -> tuple[Key, Key, bytes, bytes]:
    """The first and last keys of ``items``, their frames, and those as one
    HTTP/1.1 chunk."""
    data = b"".join(frame for _, frame, _ in items)
    return items[0][0], items[-1][0], data, b"%x\r\n%b\r\n" % (len(data), data)
