"""Every user's push subscriptions (one per browser or phone), kept in SQL
beside the inbox, on the inbox's engine (``NOTIFICATIONS_INBOX_URL``)."""

from __future__ import annotations

import fnmatch
import hashlib
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask, current_app

from ..database import create_tables
from ..errors import InboxUnavailableError, InvalidPushSubscriptionError
from ..inbox.model import ID_LENGTH, recipient_id
from ..state import current_notifications
from .vapid import b64url_decode

#: The table's name unless ``NOTIFICATIONS_WEBPUSH_TABLE`` says otherwise.
DEFAULT_TABLE = "notifications_push_subscriptions"
#: Longest endpoint URL accepted.
MAX_ENDPOINT = 2048

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def define_subscriptions_table(metadata: sa.MetaData, name: str = DEFAULT_TABLE) -> sa.Table:
    """Define the push subscriptions table on ``metadata``: one row per
    endpoint (a browser profile or an app install), owned by one user.

    :param name: the table's name; indexes and constraints are named after it.
    """
    return sa.Table(
        name,
        metadata,
        sa.Column("id", _BIGINT, primary_key=True, autoincrement=True),
        sa.Column("recipient", sa.String(ID_LENGTH), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        # Endpoints are long; a fixed-size digest is what is unique.
        sa.Column("endpoint_hash", sa.String(64), nullable=False),
        sa.Column("p256dh", sa.String(128), nullable=False),
        sa.Column("auth", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("endpoint_hash", name=f"uq_{name}_endpoint"),
        sa.Index(f"ix_{name}_recipient", "recipient", "id"),
        sqlite_autoincrement=True,
    )


@dataclass(frozen=True)
class PushSubscription:
    """One device's subscription.

    :param id: its row id.
    :param recipient: the user it belongs to.
    :param endpoint: the push service URL messages are posted to.
    :param p256dh: the device's public key (base64url).
    :param auth: the device's authentication secret (base64url).
    """

    id: int
    recipient: str
    endpoint: str
    p256dh: str
    auth: str
    created_at: datetime | None = None

    def info(self) -> dict[str, Any]:
        """The subscription as the browser gave it, as pywebpush takes it."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}

    def to_dict(self) -> dict[str, Any]:
        """What the blueprint answers: no keys."""
        created = self.created_at.isoformat() if self.created_at else None
        return {"id": self.id, "endpoint": self.endpoint, "created_at": created}


def endpoint_allowed(endpoint: str, patterns: Iterable[str] | None) -> bool:
    """Whether ``endpoint``'s origin matches one of ``patterns`` (``fnmatch``
    patterns of ``scheme://host[:port]``); ``None`` allows any ``https`` origin."""
    parts = urlsplit(endpoint)
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    if patterns is None:
        return parts.scheme == "https"
    return any(fnmatch.fnmatchcase(origin, pattern.lower()) for pattern in patterns)


def parse_subscription(data: Any, patterns: Iterable[str] | None) -> tuple[str, str, str]:
    """Check what ``PushManager.subscribe()`` returned (as JSON).

    :return: ``(endpoint, p256dh, auth)``.
    :raises InvalidPushSubscriptionError: it is malformed, or its endpoint is
        not an allowed push service.
    """
    if not isinstance(data, Mapping):
        raise InvalidPushSubscriptionError('A push subscription is a JSON object: {"endpoint": ..., "keys": {...}}.')
    endpoint = data.get("endpoint")
    keys = data.get("keys")
    if not isinstance(endpoint, str) or not 0 < len(endpoint) <= MAX_ENDPOINT:
        raise InvalidPushSubscriptionError(f"The endpoint is a URL of at most {MAX_ENDPOINT} characters.")
    parts = urlsplit(endpoint)
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError:
        raise InvalidPushSubscriptionError("The endpoint's port is not a number.") from None
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.username or parts.password:
        raise InvalidPushSubscriptionError("The endpoint is an https URL of a push service, without credentials.")
    if not endpoint_allowed(endpoint, patterns):
        raise InvalidPushSubscriptionError(
            f"{parts.scheme}://{parts.netloc} is not an allowed push service (NOTIFICATIONS_WEBPUSH_ENDPOINTS)."
        )
    if not isinstance(keys, Mapping):
        raise InvalidPushSubscriptionError('The subscription has no "keys" object with "p256dh" and "auth".')
    p256dh, auth = keys.get("p256dh"), keys.get("auth")
    try:
        point = b64url_decode(p256dh)  # type: ignore[arg-type]
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        secret = b64url_decode(auth)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise InvalidPushSubscriptionError(
            "keys.p256dh is a P-256 public key and keys.auth a secret, both in base64url."
        ) from None
    if len(point) != 65 or len(secret) != 16:
        raise InvalidPushSubscriptionError("keys.p256dh holds 65 bytes and keys.auth 16, in base64url.")
    return endpoint, str(p256dh), str(auth)


@contextmanager
def _database_errors() -> Iterator[None]:
    try:
        yield
    except sa.exc.DBAPIError as exc:
        raise InboxUnavailableError(
            f"The push subscriptions database failed: {str(exc.orig).strip()}. Create the table with "
            "'flask notifications webpush init-db' if it is missing."
        ) from exc


@dataclass
class _Store:
    engine: sa.Engine
    table: sa.Table


class PushSubscriptions:
    """Every user's push subscriptions; reach it as
    :data:`push_subscriptions`. Its methods work on the current
    application's database, so they need an application context."""

    def __init__(self) -> None:
        self._stores: weakref.WeakKeyDictionary[Flask, _Store] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _store(self) -> _Store:
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        with self._lock:
            store = self._stores.get(app)
            if store is None:
                name = app.config.get("NOTIFICATIONS_WEBPUSH_TABLE") or DEFAULT_TABLE
                table = define_subscriptions_table(sa.MetaData(), name)
                store = self._stores[app] = _Store(current_notifications.inbox.engine, table)
        return store

    @property
    def table(self) -> sa.Table:
        """The current application's subscriptions table."""
        return self._store().table

    def create_all(self) -> None:
        """Create the table if it does not exist; safe when several
        processes do it at once (``flask notifications webpush init-db``)."""
        store = self._store()
        with _database_errors():
            create_tables(store.engine, (store.table,))

    def drop_all(self) -> None:
        """Drop the table, and every subscription in it."""
        store = self._store()
        with _database_errors():
            store.table.drop(store.engine, checkfirst=True)

    def subscribe(self, user: str | int, data: Any) -> PushSubscription:
        """Store ``user``'s subscription ``data`` (what the browser's
        ``PushManager.subscribe()`` returned). An endpoint stored already is
        given to ``user`` with its new keys: the browser now belongs to
        whoever subscribed last. Beyond ``NOTIFICATIONS_WEBPUSH_MAX_SUBSCRIPTIONS``
        devices, the user's oldest subscriptions are deleted.

        :raises InvalidPushSubscriptionError: ``data`` is malformed or its
            endpoint not allowed.
        """
        config = current_app.config
        endpoint, p256dh, auth = parse_subscription(data, config.get("NOTIFICATIONS_WEBPUSH_ENDPOINTS"))
        recipient = recipient_id(user)
        digest = hashlib.sha256(endpoint.encode()).hexdigest()
        values = {"recipient": recipient, "endpoint": endpoint, "p256dh": p256dh, "auth": auth}
        store = self._store()
        t = store.table
        limit = int(config.get("NOTIFICATIONS_WEBPUSH_MAX_SUBSCRIPTIONS") or 10)
        found: int | None = None
        for attempt in range(2):
            try:
                with _database_errors(), store.engine.begin() as conn:
                    found = conn.execute(sa.select(t.c.id).where(t.c.endpoint_hash == digest)).scalar()
                    found = None if found is None else int(found)
                    if found is None:
                        row = {**values, "endpoint_hash": digest, "created_at": datetime.now(UTC)}
                        found = conn.execute(t.insert().values(row).returning(t.c.id)).scalar_one()
                    else:
                        conn.execute(sa.update(t).where(t.c.id == found).values(values))
                    mine = sa.select(t.c.id).where(t.c.recipient == recipient).order_by(t.c.id.desc()).offset(limit)
                    conn.execute(sa.delete(t).where(t.c.id.in_(mine)))
                break
            except sa.exc.IntegrityError:
                # Another request stored this endpoint between our look and insert.
                if attempt:
                    raise
        assert found is not None
        return PushSubscription(found, recipient, endpoint, p256dh, auth)

    def unsubscribe(self, user: str | int, endpoint: str) -> bool:
        """Delete ``user``'s subscription of ``endpoint``.

        :return: whether there was one.
        """
        recipient = recipient_id(user)
        if not isinstance(endpoint, str):
            raise InvalidPushSubscriptionError("The endpoint to unsubscribe is a URL.")
        digest = hashlib.sha256(endpoint.encode()).hexdigest()
        store = self._store()
        t = store.table
        with _database_errors(), store.engine.begin() as conn:
            deleted = conn.execute(sa.delete(t).where(t.c.endpoint_hash == digest, t.c.recipient == recipient))
        return bool(deleted.rowcount)

    def of_users(self, users: Iterable[str | int]) -> list[PushSubscription]:
        """The subscriptions of ``users``, oldest first."""
        wanted = list(dict.fromkeys(recipient_id(user) for user in users))
        if not wanted:
            return []
        store = self._store()
        t = store.table
        found: list[PushSubscription] = []
        with _database_errors(), store.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                query = sa.select(t).where(t.c.recipient.in_(wanted[start : start + 500])).order_by(t.c.id)
                found.extend(
                    PushSubscription(row.id, row.recipient, row.endpoint, row.p256dh, row.auth, row.created_at)
                    for row in conn.execute(query)
                )
        return found

    def remove(self, subscription: PushSubscription) -> bool:
        """Delete ``subscription`` (the push service said it is gone), unless
        its endpoint was subscribed again since, with new keys.

        :return: whether it was deleted.
        """
        store = self._store()
        t = store.table
        with _database_errors(), store.engine.begin() as conn:
            deleted = conn.execute(sa.delete(t).where(t.c.id == subscription.id, t.c.auth == subscription.auth))
        return bool(deleted.rowcount)


#: The push subscriptions of the current application.
push_subscriptions = PushSubscriptions()
