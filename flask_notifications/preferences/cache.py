"""Each process's copy of the preferences it read, kept for a bounded time
(``NOTIFICATIONS_PREFERENCES_MAX_AGE``), so that a delivery costs a
dictionary look-up, not a query, while a change still applies within that
bound.

While the table holds few choices (``NOTIFICATIONS_PREFERENCES_SNAPSHOT_ROWS``)
the copy is the whole table, read in one query once per max age, so no
delivery waits for the database but the one that reads it again; beyond, it
is the choices of each user delivered to lately, read when a delivery needs
them."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping

#: A user's choices: ``(hub, channel) -> enabled``, only what they chose.
Choices = Mapping[tuple[str, str], bool]

#: Users whose choices one process keeps; the least recently used go first.
MAX_USERS = 10_000


class PreferenceCache:
    """The choices of the users a process delivered to lately, each with the
    moment its read *began*, so that its age bounds how stale it can be."""

    def __init__(self, max_users: int = MAX_USERS) -> None:
        self.max_users = max_users
        self._entries: OrderedDict[str, tuple[float, Choices]] = OrderedDict()
        self._lock = threading.Lock()
        #: Every stored choice, by user, and when its read began; ``None``
        #: until read, after a change here, or while the table is too large.
        self.whole: tuple[float, Mapping[str, Choices]] | None = None
        #: Until when the table counts as too large for :attr:`whole`.
        self.large_until = float("-inf")

    def fresh_whole(self, now: float, max_age: float) -> Mapping[str, Choices] | None:
        """The whole table's choices if they were read less than ``max_age`` ago."""
        whole = self.whole
        if whole is not None and now - whole[0] < max_age:
            return whole[1]
        return None

    def get(self, users: Iterable[str], now: float, max_age: float) -> tuple[dict[str, Choices], list[str]]:
        """The choices of ``users`` read less than ``max_age`` seconds before
        ``now``, and the users that must be read again."""
        found: dict[str, Choices] = {}
        missing: list[str] = []
        with self._lock:
            for user in users:
                entry = self._entries.get(user)
                if entry is not None and now - entry[0] < max_age:
                    found[user] = entry[1]
                    self._entries.move_to_end(user)
                else:
                    missing.append(user)
        return found, missing

    def put(self, read_at: float, choices: Mapping[str, Choices]) -> None:
        """Keep ``choices``, read from a query that began at ``read_at``."""
        with self._lock:
            for user, chosen in choices.items():
                self._entries[user] = (read_at, chosen)
                self._entries.move_to_end(user)
            while len(self._entries) > self.max_users:
                self._entries.popitem(last=False)

    def forget(self, user: str) -> None:
        """Drop ``user``'s entry (this process changed their choices)."""
        with self._lock:
            self._entries.pop(user, None)
            self.whole = None

    def __len__(self) -> int:
        return len(self._entries)
