"""How a ledger is chosen: ``NOTIFICATIONS_LEDGER``, else
``NOTIFICATIONS_LEDGER_URL``, else what the transport or the application
offers (:func:`build_ledger`); and :class:`BackendLedger`, the ledger of a
backend written before the ledger was split off, which keeps its own claims.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..config.urls import REDIS_SCHEMES
from ..errors import ConfigurationError
from ..resolve import resolve
from .base import Claim, Ledger

if TYPE_CHECKING:
    from flask import Flask

    from ..backends.base import Backend

log = logging.getLogger(__name__)

#: Aliases accepted in ``NOTIFICATIONS_LEDGER``.
ALIASES: dict[str, str] = {
    "redis": "flask_notifications.ledger.redis.RedisLedger",
    "sql": "flask_notifications.ledger.sql.SqlLedger",
    "memory": "flask_notifications.ledger.memory.MemoryLedger",
}


#: What is logged when claims fall back to each process's memory.
IN_PROCESS_WARNING = (
    "No shared ledger is configured, so idempotency claims and dead letters are kept in the in-process memory "
    "ledger of each process: a task redelivered to another worker may repeat its effect, and each process lists "
    "only its own dead letters. Set NOTIFICATIONS_LEDGER_URL to a database or Redis URL to share them."
)


#: The methods a 0.2 backend implemented that now belong to the ledger.
LEDGER_METHODS = (
    "claim",
    "extend",
    "complete",
    "release",
    "add_dead_letter",
    "dead_letters",
    "get_dead_letter",
    "remove_dead_letter",
    "mark_dead_letter",
    "dead_letter_count",
)


_REQUIRED = ("claim", "extend", "complete", "release", "add_dead_letter", "dead_letters", "remove_dead_letter")


def keeps_claims(backend: object) -> bool:
    """Whether ``backend`` is a transport written before the ledger was split
    off, which still implements the claims and dead letters itself."""
    return all(callable(getattr(backend, name, None)) for name in _REQUIRED)


class BackendLedger(Ledger):
    """The ledger of a backend subclass written before the split, which
    implements :data:`LEDGER_METHODS` itself: each call goes to it.

    :param backend: that backend.
    """

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    @classmethod
    def from_config(cls, app: Flask, *, backend: Backend | None = None, broker: Any = None) -> BackendLedger:
        if not keeps_claims(backend):
            raise ConfigurationError(
                f"{type(backend).__name__} keeps no claims; set NOTIFICATIONS_LEDGER to 'redis', 'sql' or 'memory'."
            )
        return cls(backend)

    def claim(self, key: str, token: str, timeout: float) -> Claim:
        found = self.backend.claim(key, token, timeout)
        return found if isinstance(found, Claim) else Claim(getattr(found, "value", found))

    def extend(self, key: str, token: str, timeout: float) -> bool:
        return bool(self.backend.extend(key, token, timeout))

    def complete(self, key: str, token: str, ttl: float) -> bool:
        return bool(self.backend.complete(key, token, ttl))

    def release(self, key: str, token: str) -> bool:
        return bool(self.backend.release(key, token))

    def add_dead_letter(self, record: Mapping[str, Any]) -> str:
        return str(self.backend.add_dead_letter(record))

    def dead_letters(self) -> list[dict[str, Any]]:
        return list(self.backend.dead_letters())

    def get_dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        getter = getattr(self.backend, "get_dead_letter", None)
        return getter(letter_id) if callable(getter) else super().get_dead_letter(letter_id)

    def remove_dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.backend.remove_dead_letter(letter_id)
        return found

    def mark_dead_letter(self, letter_id: str, expected: str, state: str) -> str | None:
        marker = getattr(self.backend, "mark_dead_letter", None)
        if not callable(marker):
            return super().mark_dead_letter(letter_id, expected, state)
        found: str | None = marker(letter_id, expected, state)
        return found

    def dead_letter_count(self) -> int:
        counter = getattr(self.backend, "dead_letter_count", None)
        return int(counter()) if callable(counter) else super().dead_letter_count()

    def outbox_add(self, entries: Mapping[str, str], due_ms: int, *, remove: str | None = None) -> None:
        self._outbox("outbox_add")(entries, due_ms, remove=remove)

    def outbox_take(self, now_ms: int, until_ms: int, limit: int = 100) -> list[tuple[str, str]]:
        return list(self._outbox("outbox_take")(now_ms, until_ms, limit))

    def outbox_postpone(self, entry_id: str, due_ms: int) -> bool:
        return bool(self._outbox("outbox_postpone")(entry_id, due_ms))

    def outbox_remove(self, entry_id: str) -> bool:
        return bool(self._outbox("outbox_remove")(entry_id))

    def outbox_size(self) -> int:
        return int(self._outbox("outbox_size")())

    def _outbox(self, name: str) -> Any:
        method = getattr(self.backend, name, None)
        if not callable(method):
            raise NotImplementedError(
                f"{type(self.backend).__name__} keeps no outbox; set NOTIFICATIONS_OUTBOX_TIMEOUT to None, or "
                "NOTIFICATIONS_LEDGER to 'redis', 'sql' or 'memory'."
            )
        return method

    def ping(self) -> bool:
        return bool(self.backend.ping())


def resolve_ledger(spec: object) -> type[Ledger] | Ledger:
    """Turn a ``NOTIFICATIONS_LEDGER`` setting into a class or an instance:
    a :class:`Ledger` subclass, an instance, an alias from :data:`ALIASES`,
    or a dotted path (``"a.b.C"`` or ``"a.b:C"``).

    :raises ConfigurationError: nothing importable is named, or it is not a
        ledger. The message lists the valid choices.
    """
    return resolve(spec, Ledger, ALIASES, "ledger")  # type: ignore[type-abstract]


def is_redis_url(url: object) -> bool:
    """Whether ``url`` names a Redis server rather than a database."""
    return isinstance(url, str) and url.partition("://")[0].lower() in REDIS_SCHEMES


def _database_configured(app: Flask) -> bool:
    return bool(app.config.get("NOTIFICATIONS_INBOX_URL")) or "sqlalchemy" in app.extensions


def build_ledger(app: Flask, backend: Backend, broker: Any = None) -> Ledger:
    """The ledger of ``app``, which uses ``backend`` as its transport.

    ``NOTIFICATIONS_LEDGER`` names it when set. Otherwise
    ``NOTIFICATIONS_LEDGER_URL`` does (a Redis URL for the Redis ledger, any
    other for the SQL ledger); else a backend subclass that still keeps
    claims itself is its own ledger; else the transport's own
    (:meth:`Backend.own_ledger`: the Redis backend's server, the memory
    backend's process); else the SQL ledger when the application has a
    database (``NOTIFICATIONS_INBOX_URL``, or Flask-SQLAlchemy set up
    first); else the memory of each process, with a warning.

    :raises ConfigurationError: the configured ledger does not exist.
    """
    config = app.config
    spec = config.get("NOTIFICATIONS_LEDGER")
    if spec is None:
        url = config.get("NOTIFICATIONS_LEDGER_URL") or config.get("NOTIFICATIONS_AMQP_LEDGER_URL")
        if url:
            spec = "redis" if is_redis_url(url) else "sql"
        elif keeps_claims(backend):
            return BackendLedger(backend)
        else:
            own = backend.own_ledger(config)
            if own is not None:
                return own
            if _database_configured(app):
                spec = "sql"
            else:
                log.warning(IN_PROCESS_WARNING)
                spec = "memory"
    found = resolve_ledger(spec)
    if isinstance(found, Ledger):
        return found
    return found.from_config(app, backend=backend, broker=broker)
