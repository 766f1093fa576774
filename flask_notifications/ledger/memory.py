"""The ledger in the memory of one process: the memory backend's, and the
fallback of a transport that has none when no shared ledger is configured.

It has the semantics of the Redis ledger within one process. Its records of
completed consumer runs are bounded by ``NOTIFICATIONS_LEDGER_SIZE``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .base import SEND_KEY_PREFIX, Claim, DigestAdd, DueTimer, Ledger

if TYPE_CHECKING:
    from flask import Flask

    from ..backends.base import Backend

_MIN_PURGE = 1024
_DONE = "done"


class MemoryLedger(Ledger):
    """Claims, dead letters and the outbox in the memory of one process.

    :param dead_letter_limit: dead letters kept.
    :param ledger_size: records of completed consumer runs kept, and
        outbox entries kept (the oldest written go first); beyond it
        the least recently written are dropped, so the ledger's memory is
        bounded whatever the rate of deliveries (a redelivery whose record
        was dropped runs again). Claims still held by a running consumer
        and the records of ``send(idempotency_key=...)`` are never dropped
        before they expire: the first are bounded by the runs in progress,
        the second by the keyed sends of one idempotency window.
    """

    alias = "memory"

    def __init__(self, *, dead_letter_limit: int = 10000, ledger_size: int = 10000) -> None:
        self._lock = threading.RLock()
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
        # entry id -> (record, when it is due in ms)
        self._outbox: dict[str, tuple[str, int]] = {}
        # timer id -> the timer; digest group -> its open items and its sealed windows
        self._timers: dict[str, DueTimer] = {}
        self._open: dict[str, dict[str, str]] = {}
        self._sealed: dict[str, dict[str, list[tuple[str, str]]]] = {}

    @classmethod
    def from_config(cls, app: Flask, *, backend: Backend | None = None, broker: Any = None) -> MemoryLedger:
        return cls.from_mapping(app.config)

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> MemoryLedger:
        """Build it from a config mapping, defaults applied."""
        return cls(
            dead_letter_limit=config.get("NOTIFICATIONS_DEAD_LETTER_LIMIT", 10000),
            ledger_size=config.get("NOTIFICATIONS_LEDGER_SIZE", 10000),
        )

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

    def dead_letter_count(self) -> int:
        with self._lock:
            return len(self._dead)

    # -- outbox ---------------------------------------------------------------

    def outbox_add(self, entries: Mapping[str, str], due_ms: int, *, remove: str | None = None) -> None:
        with self._lock:
            if remove is not None:
                self._outbox.pop(remove, None)
            for entry_id, record in entries.items():
                self._outbox[entry_id] = (record, due_ms)
            # No other process sweeps this outbox: without a worker in the
            # process its entries would pile up, so the oldest written go.
            while len(self._outbox) > self.ledger_size:
                del self._outbox[next(iter(self._outbox))]

    def outbox_take(self, now_ms: int, until_ms: int, limit: int = 100) -> list[tuple[str, str]]:
        with self._lock:
            due = sorted((item[1], entry_id) for entry_id, item in self._outbox.items() if item[1] <= now_ms)
            taken = []
            for _, entry_id in due[:limit]:
                record = self._outbox[entry_id][0]
                self._outbox[entry_id] = (record, until_ms)
                taken.append((entry_id, record))
            return taken

    def outbox_postpone(self, entry_id: str, due_ms: int) -> bool:
        with self._lock:
            found = self._outbox.get(entry_id)
            if found is None:
                return False
            self._outbox[entry_id] = (found[0], due_ms)
            return True

    def outbox_remove(self, entry_id: str) -> bool:
        with self._lock:
            return self._outbox.pop(entry_id, None) is not None

    def outbox_remove_many(self, entry_ids: Sequence[str]) -> int:
        with self._lock:
            return sum(1 for entry_id in entry_ids if self._outbox.pop(entry_id, None) is not None)

    def outbox_size(self) -> int:
        with self._lock:
            return len(self._outbox)

    # -- timers and digests -------------------------------------------------

    def timer_set(self, timer_id: str, record: str, due_ms: int, version: str, *, replace: bool = True) -> bool:
        with self._lock:
            if not replace and timer_id in self._timers:
                return False
            self._timers[timer_id] = DueTimer(timer_id, record, version, int(due_ms))
            return True

    def timer_claim(self, now_ms: int, until_ms: int, limit: int = 100) -> list[DueTimer]:
        with self._lock:
            due = sorted((t.due_ms, t.id) for t in self._timers.values() if t.due_ms <= now_ms)[:limit]
            claimed = []
            for _, timer_id in due:
                timer = self._timers[timer_id]
                claimed.append(replace(timer, attempts=timer.attempts + 1))
                self._timers[timer_id] = replace(timer, due_ms=int(until_ms), attempts=timer.attempts + 1)
            return claimed

    def _has(self, timer_id: str, version: str) -> bool:
        found = self._timers.get(timer_id)
        return found is not None and found.version == version

    def timer_retry(self, timer_id: str, version: str, due_ms: int) -> bool:
        with self._lock:
            if not self._has(timer_id, version):
                return False
            self._timers[timer_id] = replace(self._timers[timer_id], due_ms=int(due_ms))
            return True

    def timer_finish(self, timer_id: str, version: str) -> bool:
        with self._lock:
            if not self._has(timer_id, version):
                return False
            del self._timers[timer_id]
            return True

    def timer_cancel(self, timer_id: str) -> bool:
        with self._lock:
            self._open.pop(timer_id, None)
            self._sealed.pop(timer_id, None)
            return self._timers.pop(timer_id, None) is not None

    def timer_get(self, timer_id: str) -> DueTimer | None:
        with self._lock:
            return self._timers.get(timer_id)

    def timer_count(self) -> int:
        with self._lock:
            return len(self._timers)

    def digest_add(self, timer: DueTimer, item_id: str, item: str, *, first_at_once: bool = False) -> DigestAdd:
        group = timer.id
        with self._lock:
            opened = group not in self._timers
            if opened:
                self._timers[group] = replace(timer, attempts=0)
                if first_at_once:
                    return DigestAdd.FIRST
            items = self._open.setdefault(group, {})
            if item_id in items:
                return DigestAdd.DUPLICATE
            items[item_id] = item
            return DigestAdd.OPENED if opened else DigestAdd.ADDED

    def digest_seal(self, group: str, version: str) -> list[tuple[str, str]] | None:
        with self._lock:
            if not self._has(group, version):
                return None
            windows = self._sealed.setdefault(group, {})
            if version not in windows:
                windows[version] = list(self._open.pop(group, {}).items())
            return list(windows[version])

    def digest_finish(self, group: str, version: str, next_due_ms: int, next_version: str, *, keep_open: bool) -> bool:
        with self._lock:
            if not self._has(group, version):
                return False
            windows = self._sealed.get(group, {})
            windows.pop(version, None)
            if not windows:
                self._sealed.pop(group, None)
            if self._open.get(group) or keep_open:
                self._timers[group] = replace(
                    self._timers[group], version=next_version, due_ms=int(next_due_ms), attempts=0
                )
            else:
                del self._timers[group]
                self._open.pop(group, None)
            return True

    def digest_size(self, group: str) -> int:
        with self._lock:
            sealed = sum(len(window) for window in self._sealed.get(group, {}).values())
            return len(self._open.get(group, {})) + sealed
