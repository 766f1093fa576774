"""The live badge: each user's unread count, with a version that orders the
counts a page receives."""

from __future__ import annotations

import builtins
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..event import Event
from .checks import chunks, database_errors

#: The ``event_type`` of the events that carry a user's new unread count to
#: their streams (the live badge).
BADGE_EVENT_TYPE = "inbox.badge"


def count_unread(conn: sa.Connection, t: sa.Table, users: builtins.list[str]) -> dict[str, int]:
    """The unread counts of ``users``, in one query per 500 of them."""
    counts = dict.fromkeys(users, 0)
    unread = [t.c.read_at.is_(None), t.c.archived_at.is_(None)]
    for chunk in chunks(users):
        who = t.c.recipient == chunk[0] if len(chunk) == 1 else t.c.recipient.in_(chunk)
        query = sa.select(t.c.recipient, sa.func.count()).where(who, *unread).group_by(t.c.recipient)
        for recipient, count in conn.execute(query):
            counts[recipient] = int(count)
    return counts


def badges_of(engine: sa.Engine, table: sa.Table, v: sa.Table, users: builtins.list[str]) -> dict[str, tuple[int, int]]:
    """The unread count of each of ``users``, with the new version of their
    badge: ``{user: (count, version)}``.

    It runs after the change has committed, in a read of its own, so that
    it counts every change committed before it (a count taken inside the
    change's transaction misses a concurrent change under READ COMMITTED).
    Each user's version is bumped, and committed (autocommit), before the
    count is taken: so the badge of the highest version, the one a page
    keeps, counted after every other badge's change had committed.
    """
    if not users:
        return {}
    with (
        database_errors(table.name),
        engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
    ):
        versions: dict[str, int] = {}
        for chunk in chunks(users):
            versions.update(bump_versions(conn, v, chunk))
        counts = count_unread(conn, table, users)
    return {user: (counts[user], versions[user]) for user in users}


def bump_versions(conn: sa.Connection, v: sa.Table, users: builtins.list[str]) -> dict[str, int]:
    name = conn.dialect.name
    if name in ("postgresql", "sqlite"):
        insert = pg_insert(v) if name == "postgresql" else sqlite_insert(v)
        stmt = insert.on_conflict_do_update(
            index_elements=[v.c.recipient], set_={"version": v.c.version + 1}
        ).returning(v.c.recipient, v.c.version)
        result = conn.execute(stmt, [{"recipient": user, "version": 1} for user in users])
        return {recipient: int(version) for recipient, version in result}
    # Elsewhere: bump the existing rows, create the others.
    conn.execute(sa.update(v).where(v.c.recipient.in_(users)).values(version=v.c.version + 1))
    existing = set(conn.execute(sa.select(v.c.recipient).where(v.c.recipient.in_(users))).scalars())
    fresh = [{"recipient": user, "version": 1} for user in users if user not in existing]
    if fresh:
        conn.execute(sa.insert(v), fresh)
    query = sa.select(v.c.recipient, v.c.version).where(v.c.recipient.in_(users))
    return {recipient: int(version) for recipient, version in conn.execute(query)}


def badge_event(user: str, unread_count: int, version: int | None = None) -> Event:
    """The event that tells ``user``'s streams their unread count.

    :param version: the badge's version: a page shows the badge of the
        highest version it has received, and drops any older one that
        arrives later. ``None`` leaves it out.
    """
    extra: dict[str, Any] = {"unread_count": unread_count}
    if version is not None:
        extra["version"] = version
    return Event(None, BADGE_EVENT_TYPE, "", "", sender="", recipients=[user], **extra)
