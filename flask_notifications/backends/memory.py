"""An in-process backend: the embedded default for development and tests.

It has the semantics of the Redis backend (history, replay, gaps) within
one process, and its ledger (:class:`~flask_notifications.ledger.memory.MemoryLedger`)
keeps claims and dead letters in that process too, so an application runs with
no server at all. Events do not cross processes: use it with tasks run in the
process (``CELERY_TASK_ALWAYS_EAGER``) or a single worker thread.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any

from ..ledger.memory import MemoryLedger
from .base import Backend, History, Message, MessageIds, Subscription, parse_id


class _MemorySubscription(Subscription):
    # Every message published after add() is queued here: none is ever lost.
    tracks_losses = True

    def __init__(self, backend: MemoryPubSub) -> None:
        self._backend = backend
        self._channels: set[str] = set()
        self._pending: deque[Message] = deque()
        self._ready = threading.Condition(backend._lock)
        self._closed = False

    def add(self, channel: str) -> None:
        with self._ready:
            self._channels.add(channel)
            self._backend._subscriptions.add(self)

    def remove(self, channel: str) -> None:
        with self._ready:
            self._channels.discard(channel)
            self._pending = deque(m for m in self._pending if m.channel != channel)

    def _deliver(self, message: Message) -> None:
        # Called with the backend lock held.
        if message.channel in self._channels:
            self._pending.append(message)
            self._ready.notify_all()

    def get(self, timeout: float) -> list[Message]:
        with self._ready:
            if not self._pending and not self._closed:
                self._ready.wait(timeout)
            messages = list(self._pending)
            self._pending.clear()
            return messages

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._backend._subscriptions.discard(self)
            self._ready.notify_all()


class MemoryPubSub(Backend):
    """Pub/sub and history in the memory of one process.

    :param history_size: messages kept per channel for replay.
    :param history_ttl: seconds a message is kept for replay; ``None`` keeps it
        until the size bound drops it.
    """

    alias = "memory"
    dedupes = True

    def __init__(
        self,
        *,
        history_size: int = 1000,
        history_ttl: float | None = None,
    ) -> None:
        self.history_size = history_size
        self.history_ttl = history_ttl
        self._lock = threading.RLock()
        # (channel, dedupe key) -> (when, message), oldest first.
        self._published: OrderedDict[tuple[str, str], tuple[float, Message]] = OrderedDict()
        self._history: dict[str, deque[tuple[float, Message]]] = {}
        # Whether a channel ever dropped a message, and the newest one dropped.
        self._dropped: dict[str, tuple[int, int]] = {}
        self._ids = MessageIds()
        self._subscriptions: set[_MemorySubscription] = set()

    @classmethod
    def from_config(cls, config: Mapping[str, Any], broker: Any = None) -> MemoryPubSub:
        return cls(
            history_size=config["NOTIFICATIONS_HISTORY_SIZE"],
            history_ttl=config["NOTIFICATIONS_HISTORY_TTL"],
        )

    def own_ledger(self, config: Mapping[str, Any]) -> MemoryLedger:
        """A :class:`MemoryLedger`: the events and the claims stay in this process."""
        return MemoryLedger.from_mapping(config)

    def _trim(self, channel: str, entries: deque[tuple[float, Message]]) -> None:
        cutoff = None if self.history_ttl is None else time.monotonic() - self.history_ttl
        while entries and (len(entries) > self.history_size or (cutoff is not None and entries[0][0] < cutoff)):
            _, dropped = entries.popleft()
            self._dropped[channel] = dropped.sort_key

    def publish(self, channel: str, data: str, *, dedupe_key: str | None = None) -> Message:
        """See :meth:`Backend.publish`; ``dedupe_key`` is remembered for
        ``history_ttl`` seconds (or as long as the message is in the
        history, without one), in this process."""
        with self._lock:
            if dedupe_key is not None:
                found = self._published.get((channel, dedupe_key))
                if found is not None and (self.history_ttl is None or found[0] > time.monotonic() - self.history_ttl):
                    return found[1]
            message = Message(channel, self._ids.next(channel), data)
            if dedupe_key is not None:
                self._remember(channel, dedupe_key, message)
            entries = self._history.setdefault(channel, deque())
            entries.append((time.monotonic(), message))
            self._trim(channel, entries)
            for subscription in list(self._subscriptions):
                subscription._deliver(message)
            return message

    def _remember(self, channel: str, dedupe_key: str, message: Message) -> None:
        # Called with the lock held: keeps at most history_size keys per
        # channel on average, and none older than history_ttl.
        now = time.monotonic()
        self._published[(channel, dedupe_key)] = (now, message)
        bound = max(1, self.history_size) * max(1, len(self._history))
        while self._published:
            oldest = next(iter(self._published.values()))[0]
            expired = self.history_ttl is not None and oldest <= now - self.history_ttl
            if not expired and len(self._published) <= bound:
                break
            self._published.popitem(last=False)

    def subscribe(self) -> Subscription:
        return _MemorySubscription(self)

    def history(self, channel: str, after_id: str | None, limit: int | None = None) -> History:
        with self._lock:
            entries = self._history.get(channel, deque())
            self._trim(channel, entries)
            after = (-1, -1) if after_id is None else parse_id(after_id)
            found = (message for _, message in entries if message.sort_key > after)
            messages = list(found if limit is None else itertools.islice(found, limit))
            dropped = self._dropped.get(channel)
            return History(messages, gap=after_id is not None and dropped is not None and dropped > after)

    def last_id(self, channel: str) -> str | None:
        with self._lock:
            entries = self._history.get(channel)
            return entries[-1][1].id if entries else None
