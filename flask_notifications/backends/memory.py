"""An in-process backend: the embedded default for development and tests.

It has the semantics of the Redis backend (history, replay, gaps,
idempotency, dead letters) within one process, so an application runs with
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

from .base import SEND_KEY_PREFIX, Backend, Claim, History, Message, MessageIds, Subscription, parse_id

_MIN_PURGE = 1024
_DONE = "done"


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
    """Pub/sub, history and bookkeeping in the memory of one process.

    :param history_size: messages kept per channel for replay.
    :param history_ttl: seconds a message is kept for replay; ``None`` keeps it
        until the size bound drops it.
    :param dead_letter_limit: dead letters kept.
    :param ledger_size: records of completed consumer runs kept; beyond it
        the least recently written are dropped, so the ledger's memory is
        bounded whatever the rate of deliveries (a redelivery whose record
        was dropped runs again). Claims still held by a running consumer
        and the records of ``send(idempotency_key=...)`` are never dropped
        before they expire: the first are bounded by the runs in progress,
        the second by the keyed sends of one idempotency window.
    """

    alias = "memory"

    def __init__(
        self,
        *,
        history_size: int = 1000,
        history_ttl: float | None = None,
        dead_letter_limit: int = 10000,
        ledger_size: int = 10000,
    ) -> None:
        self.history_size = history_size
        self.history_ttl = history_ttl
        self._lock = threading.RLock()
        self._history: dict[str, deque[tuple[float, Message]]] = {}
        # Whether a channel ever dropped a message, and the newest one dropped.
        self._dropped: dict[str, tuple[int, int]] = {}
        self._ids = MessageIds()
        self._subscriptions: set[_MemorySubscription] = set()
        # key -> (token, or _DONE, and when it expires).
        self._claims: dict[str, tuple[str, float]] = {}
        # The completed consumer records, the only ones evicted by size,
        # least recently written first.
        self._evictable: OrderedDict[str, None] = OrderedDict()
        # Expired claims are purged when the ledger reaches this size, which
        # then doubles the live size: amortised O(1).
        self._purge_at = _MIN_PURGE
        self.ledger_size = ledger_size
        self._dead: dict[str, dict[str, Any]] = {}
        self._dead_ids = itertools.count(1)
        self.dead_letter_limit = dead_letter_limit

    @classmethod
    def from_config(cls, config: Mapping[str, Any], broker: Any = None) -> MemoryPubSub:
        return cls(
            history_size=config["NOTIFICATIONS_HISTORY_SIZE"],
            history_ttl=config["NOTIFICATIONS_HISTORY_TTL"],
            dead_letter_limit=config["NOTIFICATIONS_DEAD_LETTER_LIMIT"],
            ledger_size=config.get("NOTIFICATIONS_LEDGER_SIZE", 10000),
        )

    def _trim(self, channel: str, entries: deque[tuple[float, Message]]) -> None:
        cutoff = None if self.history_ttl is None else time.monotonic() - self.history_ttl
        while entries and (len(entries) > self.history_size or (cutoff is not None and entries[0][0] < cutoff)):
            _, dropped = entries.popleft()
            self._dropped[channel] = dropped.sort_key

    def publish(self, channel: str, data: str) -> Message:
        with self._lock:
            message = Message(channel, self._ids.next(channel), data)
            entries = self._history.setdefault(channel, deque())
            entries.append((time.monotonic(), message))
            self._trim(channel, entries)
            for subscription in list(self._subscriptions):
                subscription._deliver(message)
            return message

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

    def _set_claim(self, key: str, state: str, until: float, now: float) -> None:
        # Called with the lock held.
        self._claims[key] = (state, until)
        if state == _DONE and not key.startswith(SEND_KEY_PREFIX):
            self._evictable[key] = None
            self._evictable.move_to_end(key)
        else:
            self._evictable.pop(key, None)
        if len(self._claims) >= self._purge_at:
            self._claims = {k: v for k, v in self._claims.items() if v[1] > now}
            self._evictable = OrderedDict((k, None) for k in self._evictable if k in self._claims)
            self._purge_at = max(_MIN_PURGE, 2 * len(self._claims))
        while len(self._evictable) > self.ledger_size:
            evicted, _ = self._evictable.popitem(last=False)
            del self._claims[evicted]

    def _holder(self, key: str, now: float) -> str:
        # Called with the lock held: the token holding key, _DONE, or "".
        state, until = self._claims.get(key, ("", 0.0))
        return state if until > now else ""

    def claim(self, key: str, token: str, timeout: float) -> Claim:
        now = time.monotonic()
        with self._lock:
            holder = self._holder(key, now)
            if holder:
                return Claim.DONE if holder == _DONE else Claim.BUSY
            self._set_claim(key, token, now + timeout, now)
            return Claim.ACQUIRED

    def extend(self, key: str, token: str, timeout: float) -> bool:
        now = time.monotonic()
        with self._lock:
            if self._holder(key, now) != token:
                return False
            self._set_claim(key, token, now + timeout, now)
            return True

    def complete(self, key: str, token: str, ttl: float) -> bool:
        now = time.monotonic()
        with self._lock:
            if self._holder(key, now) not in (token, "", _DONE):
                return False
            self._set_claim(key, _DONE, now + ttl, now)
            return True

    def release(self, key: str, token: str) -> bool:
        with self._lock:
            if self._holder(key, time.monotonic()) != token:
                return False
            del self._claims[key]
            self._evictable.pop(key, None)
            return True

    def ledger_stats(self) -> dict[str, int]:
        """How many idempotency records this process keeps right now."""
        with self._lock:
            return {"entries": len(self._claims)}

    def add_dead_letter(self, record: Mapping[str, Any]) -> str:
        with self._lock:
            letter_id = f"{int(time.time() * 1000)}-{next(self._dead_ids)}"
            self._dead[letter_id] = {**record, "id": letter_id}
            while len(self._dead) > self.dead_letter_limit:
                del self._dead[next(iter(self._dead))]
            return letter_id

    def dead_letters(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(letter) for letter in self._dead.values()]

    def get_dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        with self._lock:
            letter = self._dead.get(letter_id)
            return dict(letter) if letter is not None else None

    def remove_dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._dead.pop(letter_id, None)

    def mark_dead_letter(self, letter_id: str, expected: str, state: str) -> str | None:
        with self._lock:
            letter = self._dead.get(letter_id)
            if letter is None:
                return None
            if letter.get("retry", "") == expected:
                letter["retry"] = state
                if not state:
                    del letter["retry"]
            return str(letter.get("retry", ""))
