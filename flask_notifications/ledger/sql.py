"""The SQL ledger, on SQLAlchemy: claims and dead letters in two tables of
the application's database, for a deployment with no Redis.

``<prefix>_claims`` holds one row per claim: its key, its holder (the
owner's token, or ``done``) and when it expires, in milliseconds of the
database's clock, so workers on hosts whose clocks differ agree. Every step
is one statement, atomic in the database: ``claim`` and ``complete`` are an
``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` that takes over only an
expired row (or, for ``complete``, the caller's own), and ``extend`` and
``release`` are an ``UPDATE`` or ``DELETE`` conditional on the holder.
Expired rows are deleted now and then.

``<prefix>_dead_letters`` holds the dead letters as JSON, with their retry
state, trimmed to ``NOTIFICATIONS_DEAD_LETTER_LIMIT``.

``<prefix>_outbox`` holds the outbox: one row per entry, its record and when
it is due (milliseconds, by the writer's clock). An entry is taken by an
``UPDATE`` conditional on the due time read, so one sweeper takes it.

``<prefix>_timers`` and ``<prefix>_digest_items`` hold the due-table; see
:mod:`~flask_notifications.ledger.sql_timers`.

PostgreSQL and SQLite are supported. The tables are created on first use
(safely when several processes start at once); ``create_all()`` does it at
once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..database import Timeouts, create_tables, engine_for, table_prefix
from ..errors import BackendError, ConfigurationError, LedgerUnavailableError
from .base import Claim, Ledger
from .choice import is_redis_url
from .sql_timers import SqlDueTable, define_timer_tables

if TYPE_CHECKING:
    from flask import Flask

    from ..backends.base import Backend

_DONE = "done"
#: Claim operations between two deletions of expired claims.
PURGE_EVERY = 1000

# The database's clock in milliseconds since the epoch.
_NOW = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    "sqlite": "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
}


def define_tables(metadata: sa.MetaData, prefix: str = "notifications") -> tuple[sa.Table, sa.Table]:
    """The claims and dead letters tables, named after ``prefix``."""
    prefix = table_prefix(prefix)
    claims = sa.Table(
        f"{prefix}_claims",
        metadata,
        sa.Column("key", sa.String(1024), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False, index=True),
    )
    letters = sa.Table(
        f"{prefix}_dead_letters",
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("retry", sa.String(255), nullable=False, server_default=""),
    )
    return claims, letters


def define_outbox_table(metadata: sa.MetaData, prefix: str = "notifications") -> sa.Table:
    """The outbox table, named after ``prefix``."""
    prefix = table_prefix(prefix)
    return sa.Table(
        f"{prefix}_outbox",
        metadata,
        sa.Column("id", sa.String(1024), primary_key=True),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("due_ms", sa.BigInteger, nullable=False, index=True),
    )


class SqlLedger(SqlDueTable, Ledger):
    """Claims and dead letters in a SQL database (PostgreSQL or SQLite).

    :param engine: the database.
    :param key_prefix: prefix of the tables' names.
    :param dead_letter_limit: dead letters kept.
    :param owns_engine: dispose of the engine in :meth:`close`.
    """

    alias = "sql"

    def __init__(
        self,
        engine: sa.Engine,
        *,
        key_prefix: str = "notifications",
        dead_letter_limit: int = 10000,
        owns_engine: bool = False,
    ) -> None:
        dialect = engine.dialect.name
        if dialect not in _NOW:
            raise ConfigurationError(
                f"The SQL ledger supports PostgreSQL and SQLite, not {dialect!r}; set NOTIFICATIONS_LEDGER_URL "
                "to one of them, or NOTIFICATIONS_LEDGER to 'redis'."
            )
        self.engine = engine
        self.dead_letter_limit = dead_letter_limit
        self.owns_engine = owns_engine
        metadata = sa.MetaData()
        self.claims, self.letters = define_tables(metadata, key_prefix)
        self.outbox = define_outbox_table(metadata, key_prefix)
        self.timers, self.digest_items = define_timer_tables(metadata, key_prefix)
        self._now = sa.literal_column(_NOW[dialect], sa.BigInteger)
        self._insert = pg_insert if dialect == "postgresql" else sqlite_insert
        self._created = False
        self._lock = threading.Lock()
        self._operations = 0

    @classmethod
    def from_config(cls, app: Flask, *, backend: Backend | None = None, broker: Any = None) -> SqlLedger:
        """The database of ``NOTIFICATIONS_LEDGER_URL`` (a URL or an
        Engine); else the inbox's ``NOTIFICATIONS_INBOX_URL``; else the
        application's Flask-SQLAlchemy engine; else SQLite in the instance
        folder (``notifications_ledger.sqlite3``)."""
        config = app.config
        configured = config.get("NOTIFICATIONS_LEDGER_URL")
        if not configured or is_redis_url(configured):
            configured = config.get("NOTIFICATIONS_INBOX_URL")
        engine, owned = engine_for(app, configured, "notifications_ledger.sqlite3", Timeouts.from_config(app.config))
        return cls(
            engine,
            key_prefix=config["NOTIFICATIONS_KEY_PREFIX"],
            dead_letter_limit=config["NOTIFICATIONS_DEAD_LETTER_LIMIT"],
            owns_engine=owned,
        )

    def create_all(self) -> None:
        """Create the ledger's tables if they do not exist.

        :raises BackendError: the database cannot be reached.
        """
        with self._errors():
            create_tables(self.engine, (self.claims, self.letters, self.outbox, self.timers, self.digest_items))
        self._created = True

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sa.exc.SQLAlchemyError as exc:
            raise BackendError(f"The SQL ledger failed: {exc}") from exc

    @contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        if not self._created:
            with self._lock:
                if not self._created:
                    self.create_all()
        with self._errors(), self.engine.connect() as conn:
            # A transaction even on an engine set to autocommit (an app's
            # own engine may be): a write of several statements is atomic,
            # and one that failed before its COMMIT wrote nothing.
            level = conn.default_isolation_level
            if level and level != "AUTOCOMMIT":
                conn.execution_options(isolation_level=level)
            with conn.begin():
                yield conn

    # -- claims ---------------------------------------------------------------

    def _upsert(self, key: str, holder: str, ms: int, takes_over: sa.ColumnElement[bool]) -> bool:
        """Insert the claim, or overwrite the row where ``takes_over``
        holds; whether it was written."""
        table = self.claims
        insert = self._insert(table).values(key=key, holder=holder, expires_ms=self._now + ms)
        statement = insert.on_conflict_do_update(
            index_elements=[table.c.key],
            set_={"holder": insert.excluded.holder, "expires_ms": insert.excluded.expires_ms},
            where=takes_over,
        ).returning(table.c.key)
        with self._begin() as conn:
            written = conn.execute(statement).first() is not None
        self._purge_now_and_then()
        return written

    def _purge_now_and_then(self) -> None:
        self._operations += 1
        if self._operations % PURGE_EVERY == 0:
            with self._begin() as conn:
                conn.execute(sa.delete(self.claims).where(self.claims.c.expires_ms <= self._now))

    def claim(self, key: str, token: str, timeout: float) -> Claim:
        table = self.claims
        if self._upsert(key, token, max(1, int(timeout * 1000)), table.c.expires_ms <= self._now):
            return Claim.ACQUIRED
        with self._begin() as conn:
            row = conn.execute(
                sa.select(table.c.holder, table.c.expires_ms > self._now).where(table.c.key == key)
            ).first()
        # A row that expired since the INSERT is free now: BUSY makes the
        # caller ask again.
        return Claim.DONE if row is not None and row[0] == _DONE and row[1] else Claim.BUSY

    def _held(self, key: str, token: str) -> sa.ColumnElement[bool]:
        table = self.claims
        return sa.and_(table.c.key == key, table.c.holder == token, table.c.expires_ms > self._now)

    def extend(self, key: str, token: str, timeout: float) -> bool:
        statement = (
            sa.update(self.claims)
            .where(self._held(key, token))
            .values(expires_ms=self._now + max(1, int(timeout * 1000)))
        )
        with self._begin() as conn:
            return conn.execute(statement).rowcount == 1

    def complete(self, key: str, token: str, ttl: float) -> bool:
        table = self.claims
        free = sa.or_(table.c.holder == token, table.c.holder == _DONE, table.c.expires_ms <= self._now)
        return self._upsert(key, _DONE, max(1, int(ttl * 1000)), free)

    def release(self, key: str, token: str) -> bool:
        with self._begin() as conn:
            return conn.execute(sa.delete(self.claims).where(self._held(key, token))).rowcount == 1

    # -- dead letters ---------------------------------------------------------

    @staticmethod
    def _row_id(letter_id: str) -> int | None:
        if not letter_id.isascii() or not letter_id.isdigit() or len(letter_id) > 18:
            return None
        return int(letter_id)

    @staticmethod
    def _letter(row: Any) -> dict[str, Any]:
        letter: dict[str, Any] = {**json.loads(row.record), "id": str(row.id)}
        if row.retry:
            letter["retry"] = row.retry
        return letter

    def add_dead_letter(self, record: Mapping[str, Any]) -> str:
        table = self.letters
        with self._begin() as conn:
            row_id = conn.execute(
                sa.insert(table).values(record=json.dumps(dict(record)), retry="").returning(table.c.id)
            ).scalar_one()
            oldest_kept = conn.execute(
                sa.select(table.c.id).order_by(table.c.id.desc()).offset(self.dead_letter_limit - 1).limit(1)
            ).scalar()
            if oldest_kept is not None:
                conn.execute(sa.delete(table).where(table.c.id < oldest_kept))
        return str(row_id)

    def dead_letters(self) -> list[dict[str, Any]]:
        with self._begin() as conn:
            rows = conn.execute(sa.select(self.letters).order_by(self.letters.c.id)).all()
        return [self._letter(row) for row in rows]

    def get_dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        row_id = self._row_id(letter_id)
        if row_id is None:
            return None
        with self._begin() as conn:
            row = conn.execute(sa.select(self.letters).where(self.letters.c.id == row_id)).first()
        return None if row is None else self._letter(row)

    def remove_dead_letter(self, letter_id: str) -> dict[str, Any] | None:
        row_id = self._row_id(letter_id)
        if row_id is None:
            return None
        table = self.letters
        with self._begin() as conn:
            row = conn.execute(sa.select(table).where(table.c.id == row_id)).first()
            if row is None or conn.execute(sa.delete(table).where(table.c.id == row_id)).rowcount != 1:
                return None
        return self._letter(row)

    def mark_dead_letter(self, letter_id: str, expected: str, state: str) -> str | None:
        row_id = self._row_id(letter_id)
        if row_id is None:
            return None
        table = self.letters
        with self._begin() as conn:
            changed = conn.execute(
                sa.update(table).where(table.c.id == row_id, table.c.retry == expected).values(retry=state)
            ).rowcount
            if changed == 1:
                return state
            current = conn.execute(sa.select(table.c.retry).where(table.c.id == row_id)).first()
        return None if current is None else str(current[0])

    def dead_letter_count(self) -> int:
        with self._begin() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.letters)).scalar_one())

    # -- outbox ---------------------------------------------------------------

    def outbox_add(self, entries: Mapping[str, str], due_ms: int, *, remove: str | None = None) -> None:
        table = self.outbox
        committing = False
        try:
            with self._begin() as conn:
                if remove is not None:
                    conn.execute(sa.delete(table).where(table.c.id == remove))
                if entries:
                    insert = self._insert(table).values(
                        [{"id": key, "record": record, "due_ms": int(due_ms)} for key, record in entries.items()]
                    )
                    conn.execute(
                        insert.on_conflict_do_update(
                            index_elements=[table.c.id],
                            set_={"record": insert.excluded.record, "due_ms": insert.excluded.due_ms},
                        )
                    )
                committing = True
        except BackendError as exc:
            if committing:
                raise  # the COMMIT failed on its way: it may have been made
            # Nothing was committed: the transaction ends with its connection.
            raise LedgerUnavailableError(str(exc)) from exc.__cause__

    def outbox_take(self, now_ms: int, until_ms: int, limit: int = 100) -> list[tuple[str, str]]:
        table = self.outbox
        with self._begin() as conn:
            rows = conn.execute(
                sa.select(table.c.id, table.c.record, table.c.due_ms)
                .where(table.c.due_ms <= int(now_ms))
                .order_by(table.c.due_ms)
                .limit(limit)
            ).all()
        taken = []
        for row in rows:
            # Taken only if no other sweeper took it since it was read.
            with self._begin() as conn:
                changed = conn.execute(
                    sa.update(table)
                    .where(table.c.id == row.id, table.c.due_ms == row.due_ms)
                    .values(due_ms=int(until_ms))
                ).rowcount
            if changed == 1:
                taken.append((str(row.id), str(row.record)))
        return taken

    def outbox_postpone(self, entry_id: str, due_ms: int) -> bool:
        table = self.outbox
        with self._begin() as conn:
            return conn.execute(sa.update(table).where(table.c.id == entry_id).values(due_ms=int(due_ms))).rowcount == 1

    def outbox_remove(self, entry_id: str) -> bool:
        table = self.outbox
        with self._begin() as conn:
            return conn.execute(sa.delete(table).where(table.c.id == entry_id)).rowcount == 1

    def outbox_remove_many(self, entry_ids: Sequence[str]) -> int:
        table = self.outbox
        removed = 0
        with self._begin() as conn:
            # One transaction; statements of 500 ids (SQLite's bound
            # parameters are limited).
            for start in range(0, len(entry_ids), 500):
                chunk = list(entry_ids[start : start + 500])
                removed += conn.execute(sa.delete(table).where(table.c.id.in_(chunk))).rowcount
        return removed

    def outbox_size(self) -> int:
        with self._begin() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.outbox)).scalar_one())

    # -- lifecycle ------------------------------------------------------------

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def close(self) -> None:
        if self.owns_engine:
            self.engine.dispose()
