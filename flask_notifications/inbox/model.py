"""The inbox table: one row per (recipient, notification), and what a
query returns of it."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy.dialects.postgresql import JSONB

from ..errors import InvalidCursorError, InvalidInboxRequestError

#: The table's name unless ``NOTIFICATIONS_INBOX_TABLE`` says otherwise; the
#: shipped Alembic migration creates it under this name.
DEFAULT_TABLE = "notifications_inbox"

#: Longest recipient id, event id and delivery id stored.
ID_LENGTH = 255

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(JSONB(), "postgresql")
#: A cursor: a base64 payload and its base64 signature.
_CURSOR = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_CURSOR_MAX = 128
_CURSOR_SALT = "flask-notifications.inbox-cursor"
_MAX_ID = 2**63 - 1


def define_table(metadata: sa.MetaData, name: str = DEFAULT_TABLE) -> sa.Table:
    """Define the inbox table on ``metadata``.

    Two indexes serve the queries a page makes on every load: the newest
    page of a user walks ``(recipient, id)`` backwards, and the unread count
    (and the unread page) reads a partial index holding only the unread,
    unarchived rows. The unique key on ``(delivery_id, recipient)`` is what
    keeps a redelivered task from storing a row twice.

    :param metadata: where to define it.
    :param name: the table's name; indexes and constraints are named after it.
    """
    unread = sa.text("read_at IS NULL AND archived_at IS NULL")
    return sa.Table(
        name,
        metadata,
        sa.Column("id", _BIGINT, primary_key=True, autoincrement=True),
        sa.Column("recipient", sa.String(ID_LENGTH), nullable=False),
        sa.Column("delivery_id", sa.String(ID_LENGTH), nullable=False),
        sa.Column("event_id", sa.String(ID_LENGTH), nullable=False),
        sa.Column("event_type", sa.String(ID_LENGTH), nullable=False),
        sa.Column("event", _JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("delivery_id", "recipient", name=f"uq_{name}_delivery_recipient"),
        sa.Index(f"ix_{name}_recipient_id", "recipient", "id"),
        sa.Index(
            f"ix_{name}_unread",
            "recipient",
            "id",
            postgresql_where=unread,
            sqlite_where=unread,
        ),
        sa.Index(f"ix_{name}_created_at", "created_at"),
        # Without AUTOINCREMENT, SQLite hands the id of a deleted newest row
        # to the next one, and a stale tab's mark_read would hit it.
        sqlite_autoincrement=True,
    )


#: The key of the object that holds, as JSON text, an event that PostgreSQL's
#: JSONB cannot hold: one with U+0000 in a string.
_JSON_TEXT_KEY = "$event_json"


def storable_event(data: dict[str, Any], dialect: str) -> dict[str, Any]:
    """What the ``event`` column stores of the event's JSON object ``data``
    on a database of ``dialect``.

    JSONB refuses U+0000, which an event's title, body and extra fields may
    hold. On PostgreSQL such an event is stored as its JSON text (where
    U+0000 is the escape ``\\u0000``), in an object no event can be, since
    every event has an ``event_type``; :meth:`InboxItem.from_row` reads it
    back.
    """
    if dialect == "postgresql":
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        if "\\u0000" in text:
            return {_JSON_TEXT_KEY: text}
    return data


def _loaded_event(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) == 1 and isinstance(value.get(_JSON_TEXT_KEY), str):
        found: dict[str, Any] = json.loads(value[_JSON_TEXT_KEY])
        return found
    return dict(value)


def define_versions_table(metadata: sa.MetaData, name: str = DEFAULT_TABLE) -> sa.Table:
    """Define the badge versions table of the inbox table ``name`` on
    ``metadata``: ``<name>_versions``, one row per user, counting the
    changes of that user's inbox.

    Each live badge carries the version it counted at, and a page keeps
    only the badge of the highest version; see :doc:`inbox`.
    """
    return sa.Table(
        f"{name}_versions",
        metadata,
        sa.Column("recipient", sa.String(ID_LENGTH), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands timezone-aware columns back naive; they were stored as UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class InboxItem:
    """One notification in one user's inbox.

    :param id: the row's id, what :meth:`Inbox.mark_read` and the others take.
    :param recipient: the user it belongs to.
    :param event: the event, as its JSON object (:meth:`Event.to_dict`).
    :param delivery_id: the :meth:`Notifications.send` call that stored it.
    :param created_at: when it was stored.
    :param seen_at: when the user last saw it in a list, or ``None``.
    :param read_at: when it was marked read, or ``None`` while unread.
    :param archived_at: when it was archived, or ``None``.
    """

    id: int
    recipient: str
    event: dict[str, Any]
    delivery_id: str
    created_at: datetime
    seen_at: datetime | None
    read_at: datetime | None
    archived_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> InboxItem:
        """Build an item from a row of the inbox table."""
        created = _utc(row.created_at)
        assert created is not None
        return cls(
            id=int(row.id),
            recipient=row.recipient,
            event=_loaded_event(row.event),
            delivery_id=row.delivery_id,
            created_at=created,
            seen_at=_utc(row.seen_at),
            read_at=_utc(row.read_at),
            archived_at=_utc(row.archived_at),
        )

    @property
    def is_read(self) -> bool:
        return self.read_at is not None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, as the inbox blueprint answers it."""
        return {
            "id": self.id,
            "event": self.event,
            "created_at": _iso(self.created_at),
            "seen_at": _iso(self.seen_at),
            "read_at": _iso(self.read_at),
            "archived_at": _iso(self.archived_at),
            "read": self.read_at is not None,
        }


@dataclass(frozen=True)
class InboxPage:
    """A page of :meth:`Inbox.list`, newest first.

    :param items: the notifications.
    :param next_cursor: pass it as ``before=`` for the next page; ``None``
        on the last page.
    """

    items: list[InboxItem]
    next_cursor: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"items": [item.to_dict() for item in self.items], "next_cursor": self.next_cursor}


def _serializer(secret_keys: Sequence[str | bytes]) -> URLSafeSerializer:
    if not secret_keys:
        raise ValueError("A cursor needs at least one secret key.")
    keys = [key.encode() if isinstance(key, str) else key for key in secret_keys]
    return URLSafeSerializer(keys, salt=_CURSOR_SALT)


def _canonical(part: str) -> bool:
    # base64 decoding skips characters outside the alphabet and ignores the
    # last character's spare bits: only a part that encodes back to itself
    # is one that was signed, so no altered character is accepted.
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        return False
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") == part


def encode_cursor(item_id: int, secret_keys: Sequence[str | bytes]) -> str:
    """The opaque cursor of the page that follows the item ``item_id``,
    signed with the last of ``secret_keys`` (the application's
    ``SECRET_KEY``); URL-safe."""
    return _serializer(secret_keys).dumps(item_id)


def decode_cursor(cursor: str, secret_keys: Sequence[str | bytes]) -> int:
    """The item id a cursor of :func:`encode_cursor` points after.

    :param secret_keys: the keys it may have been signed with, any of them.
    :raises InvalidCursorError: it is not such a cursor: not signed with one
        of the keys, or altered.
    """
    refused = InvalidCursorError(f"{cursor!r:.48} is not a cursor this inbox returned (next_cursor).")
    if not isinstance(cursor, str) or not 0 < len(cursor) <= _CURSOR_MAX:
        raise refused
    found = _CURSOR.fullmatch(cursor)
    if found is None or not all(_canonical(part) for part in found.groups()):
        raise refused
    try:
        item_id = _serializer(secret_keys).loads(cursor)
    except BadData:
        raise refused from None
    if isinstance(item_id, bool) or not isinstance(item_id, int) or not 0 < item_id <= _MAX_ID:
        raise refused
    return item_id


def recipient_id(user: object) -> str:
    """``user`` as the inbox stores it: a string id, an integer as its
    decimal string.

    :raises InvalidInboxRequestError: it is neither, empty, or longer than
        255 characters.
    """
    if isinstance(user, bool) or not isinstance(user, (str, int)):
        raise InvalidInboxRequestError(f"A recipient is a string or an integer id, not {type(user).__name__}.")
    text = str(user)
    if not text or len(text) > ID_LENGTH:
        raise InvalidInboxRequestError(f"A recipient id is 1 to {ID_LENGTH} characters, not {len(text)}.")
    if "\x00" in text:
        raise InvalidInboxRequestError("A recipient id cannot hold the character U+0000.")
    return text
