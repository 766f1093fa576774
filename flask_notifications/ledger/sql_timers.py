"""The due-table of the SQL ledger: timers and digest windows.

``<prefix>_timers`` holds one row per timer: its id, record, version,
attempts and when it is due (milliseconds, by the writer's clock).
``<prefix>_digest_items`` holds the items of digest groups: one row per item,
in the order added (``seq``), in the open window (``sealed = ''``) or sealed
under the version of the fire that sealed it; once that window is flushed,
its rows stay as marks (``sealed = '~seen'``, no payload) for
``digest_seen_ttl``, so that a retried delivery does not add an item of a
flushed window again.

Claiming is one statement on PostgreSQL, an ``UPDATE`` of the rows a
``SELECT ... FOR UPDATE SKIP LOCKED`` picked, so concurrent tickers claim
disjoint rows without waiting for each other. SQLite has no row locks: the
due rows are read, then each is claimed by an ``UPDATE`` conditional on the
due time and version read (compare and set), in one write transaction.

Every digest step first locks its group's timer row (``SELECT ... FOR
UPDATE`` on PostgreSQL; on SQLite a write as the transaction's first
statement, which takes the database's write lock), so adding, sealing and
finishing a window never interleave.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from ..database import table_prefix
from .base import DigestAdd, DueTimer

_OPEN = ""
#: The ``sealed`` of an item's mark once its window was flushed; its ``item``
#: then holds when the mark is forgotten (:func:`_ms_text`).
_SEEN = "~seen"
#: Digest finishes between two deletions of the marks due to be forgotten.
FORGET_EVERY = 1000


def _now_ms() -> int:
    return int(time.time() * 1000)


def _ms_text(ms: int) -> str:
    """``ms`` as text that sorts as the number does."""
    return f"{int(ms):015d}"


def define_timer_tables(metadata: sa.MetaData, prefix: str = "notifications") -> tuple[sa.Table, sa.Table]:
    """The timers and digest items tables, named after ``prefix``."""
    prefix = table_prefix(prefix)
    timers = sa.Table(
        f"{prefix}_timers",
        metadata,
        sa.Column("id", sa.String(1024), primary_key=True),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("version", sa.String(255), nullable=False),
        sa.Column("due_ms", sa.BigInteger, nullable=False, index=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    )
    items = sa.Table(
        f"{prefix}_digest_items",
        metadata,
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("grp", sa.String(1024), nullable=False),
        sa.Column("sealed", sa.String(255), nullable=False),
        sa.Column("item_id", sa.String(1024), nullable=False),
        sa.Column("item", sa.Text, nullable=False),
        sa.UniqueConstraint("grp", "sealed", "item_id", name=f"uq_{prefix}_digest_items"),
    )
    return timers, items


class SqlDueTable:
    """The due-table methods of :class:`~flask_notifications.ledger.sql.SqlLedger`."""

    timers: sa.Table
    digest_items: sa.Table
    engine: sa.Engine
    _insert: Any
    #: Seconds a digest group remembers an item after flushing it, so a
    #: retried delivery does not add it again (the longest a delivery is
    #: retried or redelivered after its first run added it).
    digest_seen_ttl: float = 6 * 3600.0

    if TYPE_CHECKING:

        def _begin(self) -> AbstractContextManager[sa.Connection]: ...

    @property
    def _postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def timer_set(self, timer_id: str, record: str, due_ms: int, version: str, *, replace: bool = True) -> bool:
        t = self.timers
        insert = self._insert(t).values(id=timer_id, record=record, version=version, due_ms=int(due_ms), attempts=0)
        if replace:
            statement = insert.on_conflict_do_update(
                index_elements=[t.c.id],
                set_={"record": record, "version": version, "due_ms": int(due_ms), "attempts": 0},
            )
        else:
            statement = insert.on_conflict_do_nothing(index_elements=[t.c.id])
        with self._begin() as conn:
            return bool(conn.execute(statement.returning(t.c.id)).first() is not None)

    def timer_claim(self, now_ms: int, until_ms: int, limit: int = 100) -> list[DueTimer]:
        t = self.timers
        if self._postgres:
            due = (
                sa.select(t.c.id, t.c.due_ms)
                .where(t.c.due_ms <= int(now_ms))
                .order_by(t.c.due_ms)
                .limit(limit)
                .with_for_update(skip_locked=True)
                .cte("due")
            )
            statement = (
                sa.update(t)
                .where(t.c.id == due.c.id)
                .values(due_ms=int(until_ms), attempts=t.c.attempts + 1)
                .returning(t.c.id, t.c.record, t.c.version, due.c.due_ms, t.c.attempts)
            )
            with self._begin() as conn:
                rows = conn.execute(statement).all()
            return sorted((DueTimer(r[0], r[1], r[2], int(r[3]), int(r[4])) for r in rows), key=lambda d: d.due_ms)
        with self._begin() as conn:
            rows = conn.execute(
                sa.select(t.c.id, t.c.record, t.c.version, t.c.due_ms, t.c.attempts)
                .where(t.c.due_ms <= int(now_ms))
                .order_by(t.c.due_ms)
                .limit(limit)
            ).all()
        claimed = []
        with self._begin() as conn:
            for row in rows:
                # Claimed only if no other ticker claimed or set it since it was read.
                changed = conn.execute(
                    sa.update(t)
                    .where(t.c.id == row.id, t.c.due_ms == row.due_ms, t.c.version == row.version)
                    .values(due_ms=int(until_ms), attempts=t.c.attempts + 1)
                ).rowcount
                if changed == 1:
                    claimed.append(DueTimer(row.id, row.record, row.version, int(row.due_ms), int(row.attempts) + 1))
        return claimed

    def timer_retry(self, timer_id: str, version: str, due_ms: int) -> bool:
        t = self.timers
        statement = sa.update(t).where(t.c.id == timer_id, t.c.version == version).values(due_ms=int(due_ms))
        with self._begin() as conn:
            return bool(conn.execute(statement).rowcount == 1)

    def timer_finish(self, timer_id: str, version: str) -> bool:
        t = self.timers
        with self._begin() as conn:
            return bool(conn.execute(sa.delete(t).where(t.c.id == timer_id, t.c.version == version)).rowcount == 1)

    def timer_cancel(self, timer_id: str) -> bool:
        t, items = self.timers, self.digest_items
        with self._begin() as conn:
            found = conn.execute(sa.delete(t).where(t.c.id == timer_id)).rowcount == 1
            conn.execute(sa.delete(items).where(items.c.grp == timer_id))
        return bool(found)

    def timer_get(self, timer_id: str) -> DueTimer | None:
        t = self.timers
        with self._begin() as conn:
            row = conn.execute(
                sa.select(t.c.id, t.c.record, t.c.version, t.c.due_ms, t.c.attempts).where(t.c.id == timer_id)
            ).first()
        return None if row is None else DueTimer(row[0], row[1], row[2], int(row[3]), int(row[4]))

    def timer_count(self) -> int:
        with self._begin() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.timers)).scalar_one())

    def _lock_group(self, conn: sa.Connection, group: str) -> str | None:
        """Lock the group's timer row for the rest of the transaction; its version, or ``None``."""
        t = self.timers
        if not self._postgres:
            # The first write of the transaction takes SQLite's write lock.
            conn.execute(sa.update(t).where(t.c.id == group).values(attempts=t.c.attempts))
        query = sa.select(t.c.version).where(t.c.id == group)
        if self._postgres:
            query = query.with_for_update()
        found = conn.execute(query).scalar()
        return None if found is None else str(found)

    def _seen(self, conn: sa.Connection, group: str, item_id: str) -> bool:
        """Whether ``group`` holds ``item_id`` in a window, open or sealed,
        or flushed it less than :attr:`digest_seen_ttl` ago. A mark that is
        due to be forgotten is deleted here, so that the item's next flush
        can mark it again."""
        items = self.digest_items
        query = sa.select(items.c.seq, items.c.sealed, items.c.item).where(
            items.c.grp == group, items.c.item_id == item_id
        )
        now = _ms_text(_now_ms())
        for seq, sealed, item in conn.execute(query).all():
            if sealed != _SEEN or item > now:
                return True
            conn.execute(sa.delete(items).where(items.c.seq == seq))
        return False

    def digest_add(self, timer: DueTimer, item_id: str, item: str, *, first_at_once: bool = False) -> DigestAdd:
        t, items = self.timers, self.digest_items
        with self._begin() as conn:
            locked = self._lock_group(conn, timer.id) is not None
            if self._seen(conn, timer.id, item_id):
                return DigestAdd.DUPLICATE
            opened = False
            for _ in range(3):
                if locked:
                    break
                values = {"id": timer.id, "record": timer.record, "version": timer.version, "due_ms": timer.due_ms}
                inserted = conn.execute(
                    self._insert(t)
                    .values(**values, attempts=0)
                    .on_conflict_do_nothing(index_elements=[t.c.id])
                    .returning(t.c.id)
                ).first()
                if inserted is not None:
                    opened = True
                    break
                locked = self._lock_group(conn, timer.id) is not None
            if opened and first_at_once:
                return DigestAdd.FIRST
            added = conn.execute(
                self._insert(items)
                .values(grp=timer.id, sealed=_OPEN, item_id=item_id, item=item)
                .on_conflict_do_nothing(index_elements=[items.c.grp, items.c.sealed, items.c.item_id])
                .returning(items.c.seq)
            ).first()
        if added is None:
            return DigestAdd.DUPLICATE
        return DigestAdd.OPENED if opened else DigestAdd.ADDED

    def digest_seal(self, group: str, version: str) -> list[tuple[str, str]] | None:
        items = self.digest_items
        columns = (items.c.seq, items.c.item_id, items.c.item)
        with self._begin() as conn:
            if self._lock_group(conn, group) != version:
                return None
            # Sealed by an earlier run of this fire; else sealed now.
            rows = conn.execute(sa.select(*columns).where(items.c.grp == group, items.c.sealed == version)).all()
            if not rows:
                rows = conn.execute(
                    sa.update(items)
                    .where(items.c.grp == group, items.c.sealed == _OPEN)
                    .values(sealed=version)
                    .returning(*columns)
                ).all()
        return [(str(row[1]), str(row[2])) for row in sorted(rows, key=lambda row: int(row[0]))]

    def digest_finish(self, group: str, version: str, next_due_ms: int, next_version: str, *, keep_open: bool) -> bool:
        t, items = self.timers, self.digest_items
        now = _now_ms()
        with self._begin() as conn:
            if self._lock_group(conn, group) != version:
                return False
            # The window's items become marks (no payload) until they are
            # forgotten: a delivery retried after this flush (a run that
            # added its item and died before it was recorded) finds its item
            # seen and does not list it in the next window too.
            forget_at = _ms_text(now + int(self.digest_seen_ttl * 1000))
            conn.execute(
                sa.update(items)
                .where(items.c.grp == group, items.c.sealed == version)
                .values(sealed=_SEEN, item=forget_at)
            )
            waiting = conn.execute(
                sa.select(items.c.seq).where(items.c.grp == group, items.c.sealed == _OPEN).limit(1)
            ).first()
            if waiting is not None or keep_open:
                conn.execute(
                    sa.update(t)
                    .where(t.c.id == group)
                    .values(version=next_version, due_ms=int(next_due_ms), attempts=0)
                )
            else:
                conn.execute(sa.delete(t).where(t.c.id == group))
        self._forget_now_and_then(now)
        return True

    def _forget_now_and_then(self, now: int) -> None:
        """Delete the marks of every group that are due to be forgotten, once
        in :data:`FORGET_EVERY` finishes (a group that gets no more items
        keeps its marks otherwise)."""
        self._digest_finishes = getattr(self, "_digest_finishes", 0) + 1
        if self._digest_finishes % FORGET_EVERY:
            return
        items = self.digest_items
        with self._begin() as conn:
            conn.execute(sa.delete(items).where(items.c.sealed == _SEEN, items.c.item <= _ms_text(now)))

    def digest_size(self, group: str) -> int:
        items = self.digest_items
        with self._begin() as conn:
            query = sa.select(sa.func.count()).select_from(items).where(items.c.grp == group, items.c.sealed != _SEEN)
            return int(conn.execute(query).scalar_one())
