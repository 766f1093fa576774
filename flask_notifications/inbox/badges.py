"""The live badge: each user's unread count, with a version that orders the
counts a page receives."""

from __future__ import annotations

import builtins
import json
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
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
    if conn.dialect.name == "postgresql" and len(users) > 1:
        # One JSON array parameter, one statement, however many users.
        users_json = sa.cast(sa.bindparam("users", json.dumps(users, ensure_ascii=False), type_=sa.Text), JSONB)
        # = ANY(ARRAY(...)) probes the unread index once per user, as IN (a, b, ...)
        # does; IN (SELECT ...) would hash-join them instead, at twice the cost.
        listed = t.c.recipient == sa.func.any(
            sa.func.array(sa.select(sa.func.jsonb_array_elements_text(users_json)).scalar_subquery())
        )
        query = sa.select(t.c.recipient, sa.func.count()).where(listed, *unread).group_by(t.c.recipient)
        for recipient, count in conn.execute(query):
            counts[recipient] = int(count)
        return counts
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
        versions = bump_all(conn, v, users)
        return counted(conn, table, versions)


def counted(conn: sa.Connection, table: sa.Table, versions: dict[str, int]) -> dict[str, tuple[int, int]]:
    """``{user: (count, version)}`` for the bumped ``versions``
    (:func:`bump_all`), counted on ``conn`` once their bump has committed."""
    counts = count_unread(conn, table, builtins.list(versions))
    return {user: (counts[user], version) for user, version in versions.items()}


def bump_all(conn: sa.Connection, v: sa.Table, users: builtins.list[str]) -> dict[str, int]:
    """Bump the badge version of each of ``users``: ``{user: new version}``,
    in the order of ``users``."""
    found: dict[str, int] = {}
    # In one order in every process, so that two bumps of overlapping
    # users wait for each other rather than deadlock.
    ordered = sorted(users)
    if conn.dialect.name == "postgresql":
        found.update(_bump_versions_pg(conn, v, ordered))
    else:
        for chunk in chunks(ordered):
            found.update(bump_versions(conn, v, chunk))
    return {user: found[user] for user in users}


def _bump_versions_pg(conn: sa.Connection, v: sa.Table, users: builtins.list[str]) -> dict[str, int]:
    # The users travel as one JSON array: one statement, however many there are.
    name = conn.dialect.identifier_preparer.format_table(v)
    stmt = sa.text(
        f"INSERT INTO {name} AS v (recipient, version) "
        "SELECT u, 1 FROM jsonb_array_elements_text(CAST(:users AS jsonb)) WITH ORDINALITY AS r(u, n) ORDER BY n "
        "ON CONFLICT (recipient) DO UPDATE SET version = v.version + 1 RETURNING v.recipient, v.version"
    )
    params = {"users": json.dumps(users, ensure_ascii=False)}
    return {recipient: int(version) for recipient, version in conn.execute(stmt, params)}


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


def badge_frames(badges: dict[str, tuple[int, int]]) -> builtins.list[str]:
    """The JSON of :func:`badge_event` for each ``{user: (count, version)}``.

    One event is built and checked; each user's frame is a copy of it with
    its own id, recipient, count and version, so a badge for each of 10,000
    users costs a ``json.dumps`` each, not an event's validation each. The
    users are recipient ids already (:func:`~.model.recipient_id`).
    """
    if not badges:
        return []
    template = badge_event("-", 0, 0).to_dict()
    frames = []
    for user, (count, version) in badges.items():
        frame = {
            **template,
            "event_id": str(uuid.uuid4()),
            "recipients": [user],
            "unread_count": count,
            "version": version,
        }
        frames.append(json.dumps(frame, ensure_ascii=False, separators=(",", ":")))
    return frames
