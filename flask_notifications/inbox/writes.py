"""Storing one delivery's rows: one statement per few thousand recipients on
PostgreSQL, whatever their number."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..errors import InvalidInboxRequestError
from .checks import CHUNK, chunks
from .model import ID_LENGTH, recipient_id, storable_event

#: Recipients per statement on PostgreSQL, where they travel as two arrays:
#: a statement stays well inside the default statement timeout (2 s) on a
#: loaded machine.
PG_CHUNK = 5000


def named_recipients(recipients: Iterable[object]) -> dict[str, list[object]]:
    """The ``recipients`` each recipient id's row keeps of an event's: the
    first entry that names it, as the event names it."""
    named: dict[str, list[object]] = {}
    for entry in recipients:
        try:
            named.setdefault(recipient_id(entry), [entry])
        except InvalidInboxRequestError:
            continue
    return named


def insert_rows(
    conn: sa.Connection, table: sa.Table, data: dict[str, Any], users: list[str], delivery_id: str, now: datetime
) -> list[str]:
    """Store the event ``data`` (its JSON object) once for each of ``users``
    under ``delivery_id``, skipping the users it is already stored for.

    Each row keeps the event as its user may see it: its ``recipients``
    narrowed to that user. A copy of the whole list in every row would tell
    each user who else received it, and would cost the square of the
    recipients: a broadcast to 10,000 users would store 10,000 copies of a
    10,000-id list.

    :return: the users it was stored for now, in the order given.
    """
    dialect = conn.dialect.name
    named = named_recipients(data.get("recipients") or ())
    event_id = str(data["event_id"])[:ID_LENGTH]
    event_type = str(data["event_type"])[:ID_LENGTH]
    if dialect == "postgresql" and all(entry == [user] for user, entry in named.items()):
        shared = storable_event({**data, "recipients": []}, dialect)
        if shared.get("recipients") == []:  # not stored as JSON text (U+0000)
            return _insert_pg(conn, table, shared, named, users, delivery_id, event_id, event_type, now)
    rows = [
        {
            "recipient": user,
            "delivery_id": delivery_id,
            "event_id": event_id,
            "event_type": event_type,
            "event": storable_event({**data, "recipients": named.get(user, [])}, dialect),
            "created_at": now,
        }
        for user in users
    ]
    if dialect in ("postgresql", "sqlite"):
        insert = pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)
        stmt = insert.on_conflict_do_nothing(index_elements=["delivery_id", "recipient"]).returning(table.c.recipient)
        stored: set[str] = set()
        for start in range(0, len(rows), CHUNK):
            stored.update(conn.execute(stmt, rows[start : start + CHUNK]).scalars())
        return [user for user in users if user in stored]
    # Elsewhere: skip the recipients this delivery already reached.
    existing: set[str] = set()
    for chunk in chunks(users):
        existing.update(
            conn.execute(
                sa.select(table.c.recipient).where(table.c.delivery_id == delivery_id, table.c.recipient.in_(chunk))
            ).scalars()
        )
    fresh = [row for row in rows if row["recipient"] not in existing]
    if fresh:
        conn.execute(table.insert(), fresh)
    return [user for user in users if user not in existing]


def _insert_pg(
    conn: sa.Connection,
    table: sa.Table,
    shared: dict[str, Any],
    named: dict[str, list[object]],
    users: list[str],
    delivery_id: str,
    event_id: str,
    event_type: str,
    now: datetime,
) -> list[str]:
    # The event travels once, and the server sets each row's recipients:
    # the user if the event names them (as a string: an event's recipients
    # are), else none. The users travel as one JSON array, and those the
    # event names as the keys of one JSON object, which psycopg sends as
    # text where a Python list would be dumped element by element.
    name = conn.dialect.identifier_preparer.format_table(table)
    stmt = sa.text(
        f"INSERT INTO {name} (recipient, delivery_id, event_id, event_type, event, created_at) "
        "SELECT r.recipient, :delivery_id, :event_id, :event_type, "
        "jsonb_set(CAST(:event AS jsonb), '{recipients}', "
        "CASE WHEN jsonb_exists(CAST(:named AS jsonb), r.recipient) THEN jsonb_build_array(r.recipient) "
        "ELSE '[]'::jsonb END), :now "
        "FROM jsonb_array_elements_text(CAST(:users AS jsonb)) AS r(recipient) "
        "ON CONFLICT (delivery_id, recipient) DO NOTHING RETURNING recipient"
    )
    event = json.dumps(shared, ensure_ascii=False, separators=(",", ":"))
    stored: set[str] = set()
    for start in range(0, len(users), PG_CHUNK):
        chunk = users[start : start + PG_CHUNK]
        params = {
            "delivery_id": delivery_id,
            "event_id": event_id,
            "event_type": event_type,
            "event": event,
            "now": now,
            "users": json.dumps(chunk, ensure_ascii=False),
            "named": json.dumps(dict.fromkeys((user for user in chunk if named.get(user) == [user]), 1)),
        }
        stored.update(conn.execute(stmt, params).scalars())
    return [user for user in users if user in stored]
