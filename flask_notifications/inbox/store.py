"""The inbox API: ``notifications.inbox``."""

from __future__ import annotations

import builtins
import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context

from ..database import UNBOUNDED, Timeouts, create_tables, engine_for
from ..errors import (
    BackendError,
    ConfigurationError,
    InvalidInboxRequestError,
    NotificationNotFoundError,
)
from ..event import Event
from .badges import badge_frames, badges_of, bump_all, count_unread, counted
from .checks import checked_limit, database_errors, parse_ids
from .consumer import InboxConsumer
from .model import (
    DEFAULT_TABLE,
    ID_LENGTH,
    InboxItem,
    InboxPage,
    decode_cursor,
    define_table,
    define_versions_table,
    encode_cursor,
    recipient_id,
)
from .writes import insert_rows

if TYPE_CHECKING:
    from ..ext import Notifications

logger = logging.getLogger(__name__)


#: What :meth:`Inbox.user_loader` registers: it returns the current user's
#: recipient id, or ``None`` when nobody is logged in.
UserLoader = Callable[[], "str | int | None"]


@dataclass
class _Store:
    engine: sa.Engine
    table: sa.Table
    versions: sa.Table
    owns_engine: bool


def _engine_for(app: Flask) -> tuple[sa.Engine, bool]:
    """The engine of ``app``'s inbox and whether the inbox created it."""
    return engine_for(
        app, app.config.get("NOTIFICATIONS_INBOX_URL"), "notifications_inbox.sqlite3", Timeouts.from_config(app.config)
    )


def _cursor_keys(app: Flask) -> builtins.list[str | bytes]:
    """The keys that sign page cursors: ``SECRET_KEY``, last, after its
    ``SECRET_KEY_FALLBACKS``, as Flask signs its session.

    :raises ConfigurationError: ``SECRET_KEY`` is not set.
    """
    key = app.config.get("SECRET_KEY")
    if not key:
        raise ConfigurationError(
            "The inbox signs its page cursors with SECRET_KEY, which is not set. Set SECRET_KEY, "
            "the same in every process that serves the inbox."
        )
    return [*(app.config.get("SECRET_KEY_FALLBACKS") or ()), key]


class Inbox:
    """Every user's notifications, kept in SQL, with their read state.

    Reach it as ``notifications.inbox``; an :class:`InboxConsumer` fills
    it. Its methods work on the current application's database (see
    ``NOTIFICATIONS_INBOX_URL``), so they need an application context, as
    a request or a Celery task has.

    A *user* is the recipient id an event names in ``recipients``, a string
    (an integer is taken as its decimal string). Every method that changes
    an inbox tells that user's streams the new unread count (the live badge).

    :param notifications: the extension it belongs to.
    """

    def __init__(self, notifications: Notifications) -> None:
        self.notifications = notifications
        self._stores: weakref.WeakKeyDictionary[Flask, _Store] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._user_loader: UserLoader | None = None

    # -- set-up ---------------------------------------------------------------

    def _app(self) -> Flask:
        if not has_app_context():
            raise RuntimeError(
                "The inbox needs an application context. Use it inside a request or 'with app.app_context():'."
            )
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        return app

    def _store(self) -> _Store:
        app = self._app()
        store = self._stores.get(app)
        if store is None:
            with self._lock:
                store = self._stores.get(app)
                if store is None:
                    engine, owned = _engine_for(app)
                    name = app.config.get("NOTIFICATIONS_INBOX_TABLE") or DEFAULT_TABLE
                    metadata = sa.MetaData()
                    table = define_table(metadata, name)
                    versions = define_versions_table(metadata, name)
                    store = self._stores[app] = _Store(engine, table, versions, owned)
        return store

    @property
    def engine(self) -> sa.Engine:
        """The current application's inbox engine."""
        return self._store().engine

    @property
    def table(self) -> sa.Table:
        """The current application's inbox table."""
        return self._store().table

    def create_all(self) -> None:
        """Create the inbox table, its indexes and its badge versions table
        if they do not exist (what ``flask notifications inbox init-db``
        does)."""
        store = self._store()
        with database_errors(store.table.name):
            create_tables(store.engine, (store.table, store.versions))

    def drop_all(self) -> None:
        """Drop the inbox tables, and every notification in them."""
        store = self._store()
        with database_errors(store.table.name):
            store.versions.drop(store.engine, checkfirst=True)
            store.table.drop(store.engine, checkfirst=True)

    def close(self) -> None:
        """Close the current application's database connections, if the
        inbox opened them (a Flask-SQLAlchemy engine is left alone)."""
        app = self._app()
        with self._lock:
            store = self._stores.pop(app, None)
        if store is not None and store.owns_engine:
            store.engine.dispose()

    def user_loader(self, func: UserLoader) -> UserLoader:
        """Register the function that tells the inbox blueprint who the
        current user is; use it as a decorator::

            @notifications.inbox.user_loader
            def inbox_user():
                return session.get("user_id")

        It returns the user's recipient id, or ``None`` when nobody is
        logged in (the blueprint answers ``401``). Without one, Flask-Login's
        ``current_user.get_id()`` is used.

        :return: ``func``, unchanged.
        """
        if not callable(func):
            raise TypeError(f"user_loader() takes a function, not {type(func).__name__}.")
        self._user_loader = func
        return func

    def current_user_id(self) -> str | None:
        """The recipient id of the request's user, from the
        :meth:`user_loader` or Flask-Login, or ``None``."""
        if self._user_loader is not None:
            user = self._user_loader()
        else:
            user = _flask_login_user()
        return None if user is None else recipient_id(user)

    # -- storing --------------------------------------------------------------

    def add(self, event: Event, recipients: Iterable[str], *, delivery_id: str) -> builtins.list[str]:
        """Store ``event`` once in the inbox of each recipient, and send each
        of them the new unread count.

        A row that already exists for ``(delivery_id, recipient)`` is kept as
        it is, so storing one delivery twice stores it once.

        :param delivery_id: the delivery (:func:`~flask_notifications.worker.delivery.current_delivery`).
        :return: the recipients it was stored for now, not before.
        :raises TypeError: ``recipients`` is a string, not a list of them.
        :raises InvalidInboxRequestError: a recipient or the delivery id is
            empty or longer than 255 characters; nothing was stored.
        :raises InboxUnavailableError: the database failed; nothing was stored.
        :raises BackendError: the unread counts could not be published.
        """
        if isinstance(recipients, (str, bytes)):
            raise TypeError(f"Give the recipients as a list of ids, not a {type(recipients).__name__}.")
        users = list(dict.fromkeys(recipient_id(user) for user in recipients))
        if not isinstance(delivery_id, str) or not 0 < len(delivery_id) <= ID_LENGTH:
            raise InvalidInboxRequestError(f"A delivery id is 1 to {ID_LENGTH} characters, not {delivery_id!r:.40}.")
        if not users:
            return []
        store = self._store()
        table = store.table
        channels = self.badge_channels()
        badges: dict[str, tuple[int, int]] = {}
        with database_errors(table.name), store.engine.connect() as conn:
            # The badges' versions are bumped in the rows' transaction (one
            # commit, not two), and counted once it committed, on the same
            # connection: the count sees the rows and every change committed
            # before the bump, as badges_of's would.
            with conn.begin():
                stored = insert_rows(conn, table, event.to_dict(), users, delivery_id, datetime.now(UTC))
                versions = bump_all(conn, store.versions, users) if channels else {}
            if versions:
                badges = counted(conn.execution_options(isolation_level="AUTOCOMMIT"), table, versions)
        if badges:
            self._publish(channels, badges, strict=True)
        return stored

    # -- reading --------------------------------------------------------------

    def list(
        self,
        user: str | int,
        *,
        unread_only: bool = False,
        archived: bool = False,
        before: str | None = None,
        limit: int = 20,
    ) -> InboxPage:
        """A page of ``user``'s notifications, newest first.

        Pages are keyset-paginated: pass the page's ``next_cursor`` as
        ``before`` for the next one. A notification stored meanwhile never
        shifts a page.

        :param unread_only: only the unread ones.
        :param archived: the archived ones instead of the others.
        :param before: a cursor from a previous page, or ``None`` for the newest.
        :param limit: at most this many, 1 to 100.
        :raises InvalidCursorError: ``before`` is not a cursor from this inbox.
        :raises InvalidInboxRequestError: ``limit`` is out of range.
        :raises ConfigurationError: a cursor is to be read or made, and the
            application has no ``SECRET_KEY`` to sign it with.
        """
        recipient = recipient_id(user)
        limit = checked_limit(limit)
        store = self._store()
        t = store.table
        query = sa.select(t).where(t.c.recipient == recipient)
        query = query.where(t.c.archived_at.is_not(None) if archived else t.c.archived_at.is_(None))
        if unread_only:
            query = query.where(t.c.read_at.is_(None))
        if before is not None:
            query = query.where(t.c.id < decode_cursor(before, _cursor_keys(self._app())))
        query = query.order_by(t.c.id.desc()).limit(limit + 1)
        with database_errors(t.name), _reading(store) as conn:
            items = [InboxItem.from_row(row) for row in conn.execute(query)]
        next_cursor = encode_cursor(items[limit - 1].id, _cursor_keys(self._app())) if len(items) > limit else None
        return InboxPage(items[:limit], next_cursor)

    def get(self, user: str | int, item_id: int) -> InboxItem:
        """One notification of ``user``.

        :raises NotificationNotFoundError: ``user`` has no such notification.
        """
        recipient = recipient_id(user)
        (wanted,) = parse_ids([item_id])
        store = self._store()
        t = store.table
        with database_errors(t.name), _reading(store) as conn:
            row = conn.execute(sa.select(t).where(t.c.id == wanted, t.c.recipient == recipient)).first()
        if row is None:
            raise NotificationNotFoundError([wanted])
        return InboxItem.from_row(row)

    def unread_count(self, user: str | int) -> int:
        """How many of ``user``'s notifications are unread (archived ones
        do not count)."""
        return self.unread_counts([recipient_id(user)])[recipient_id(user)]

    def unread_counts(self, users: Iterable[str | int]) -> dict[str, int]:
        """:meth:`unread_count` of several users, in one query per 500."""
        wanted = builtins.list(dict.fromkeys(recipient_id(user) for user in users))
        store = self._store()
        with database_errors(store.table.name), _reading(store) as conn:
            return count_unread(conn, store.table, wanted)

    def unseen_count(self, user: str | int) -> int:
        """How many of ``user``'s unarchived notifications were never seen."""
        recipient = recipient_id(user)
        store = self._store()
        t = store.table
        query = sa.select(sa.func.count()).where(
            t.c.recipient == recipient, t.c.seen_at.is_(None), t.c.archived_at.is_(None)
        )
        with database_errors(t.name), _reading(store) as conn:
            return int(conn.execute(query).scalar_one())

    # -- changing -------------------------------------------------------------

    def _change(self, user: str | int, ids: Iterable[int | str] | None, values: dict[str, Any], *extra: Any) -> int:
        """Set ``values`` on ``user``'s notifications ``ids`` (all of them
        when ``None``) that match ``extra``; refuse ids not theirs."""
        recipient = recipient_id(user)
        wanted = None if ids is None else parse_ids(ids)
        if wanted == []:
            return 0
        store = self._store()
        t = store.table
        channels = self.badge_channels()
        with database_errors(t.name), store.engine.begin() as conn:
            where = [t.c.recipient == recipient]
            if wanted is not None:
                self._check_owned(conn, t, recipient, wanted)
                where.append(t.c.id.in_(wanted))
            changed = conn.execute(sa.update(t).where(*where, *extra).values(values)).rowcount
        if changed and channels:
            self._publish(channels, _badges_of(store, [recipient]))
        return int(changed)

    @staticmethod
    def _check_owned(conn: sa.Connection, t: sa.Table, recipient: str, ids: builtins.list[int]) -> None:
        found = set(conn.execute(sa.select(t.c.id).where(t.c.recipient == recipient, t.c.id.in_(ids))).scalars())
        missing = [item_id for item_id in ids if item_id not in found]
        if missing:
            raise NotificationNotFoundError(missing)

    def mark_read(self, user: str | int, ids: Iterable[int | str]) -> int:
        """Mark ``user``'s notifications ``ids`` read.

        :return: how many were unread before.
        :raises NotificationNotFoundError: some ids are not ``user``'s
            notifications (unknown or another user's); nothing was changed.
        :raises InvalidInboxRequestError: an id is not a positive integer, or
            more than 1,000 ids were given.
        """
        t = self.table
        return self._change(user, ids, {"read_at": datetime.now(UTC)}, t.c.read_at.is_(None))

    def mark_unread(self, user: str | int, ids: Iterable[int | str]) -> int:
        """Mark ``user``'s notifications ``ids`` unread again; as :meth:`mark_read`."""
        t = self.table
        return self._change(user, ids, {"read_at": None}, t.c.read_at.is_not(None))

    def mark_all_read(self, user: str | int) -> int:
        """Mark every unread notification of ``user`` read.

        :return: how many there were.
        """
        t = self.table
        return self._change(user, None, {"read_at": datetime.now(UTC)}, t.c.read_at.is_(None))

    def mark_seen(self, user: str | int, ids: Iterable[int | str] | None = None) -> int:
        """Mark ``user``'s notifications ``ids`` (or all of them) seen: shown
        in a list, though not necessarily read. As :meth:`mark_read`."""
        t = self.table
        return self._change(user, ids, {"seen_at": datetime.now(UTC)}, t.c.seen_at.is_(None))

    def archive(self, user: str | int, ids: Iterable[int | str]) -> int:
        """Archive ``user``'s notifications ``ids``: they leave the list and
        the unread count, and are listed with ``archived=True``. As
        :meth:`mark_read`."""
        t = self.table
        return self._change(user, ids, {"archived_at": datetime.now(UTC)}, t.c.archived_at.is_(None))

    def unarchive(self, user: str | int, ids: Iterable[int | str]) -> int:
        """Bring archived notifications back to the list. As :meth:`mark_read`."""
        t = self.table
        return self._change(user, ids, {"archived_at": None}, t.c.archived_at.is_not(None))

    def delete(self, user: str | int, ids: Iterable[int | str]) -> int:
        """Delete ``user``'s notifications ``ids`` for good.

        :return: how many were deleted.
        :raises NotificationNotFoundError: some ids are not ``user``'s
            notifications; nothing was deleted.
        """
        recipient = recipient_id(user)
        wanted = parse_ids(ids)
        if not wanted:
            return 0
        store = self._store()
        t = store.table
        channels = self.badge_channels()
        with database_errors(t.name), store.engine.begin() as conn:
            self._check_owned(conn, t, recipient, wanted)
            deleted = conn.execute(sa.delete(t).where(t.c.recipient == recipient, t.c.id.in_(wanted))).rowcount
        if channels:
            self._publish(channels, _badges_of(store, [recipient]))
        return int(deleted)

    def purge(self, older_than: timedelta | float | None = None) -> int:
        """Delete every notification stored longer ago than ``older_than``
        (a :class:`~datetime.timedelta` or seconds), by default
        ``NOTIFICATIONS_INBOX_RETENTION``; read or not.

        It is not bound by ``NOTIFICATIONS_INBOX_STATEMENT_TIMEOUT``.

        :return: how many were deleted.
        :raises InvalidInboxRequestError: no age was given and no retention
            is configured, or the age is negative.
        """
        if older_than is None:
            older_than = self._app().config.get("NOTIFICATIONS_INBOX_RETENTION")
            if older_than is None:
                raise InvalidInboxRequestError(
                    "Give the age to purge, or set NOTIFICATIONS_INBOX_RETENTION (seconds or a timedelta)."
                )
        age = older_than if isinstance(older_than, timedelta) else timedelta(seconds=float(older_than))
        if age < timedelta(0):
            raise InvalidInboxRequestError(f"The age to purge must not be negative, not {age}.")
        store = self._store()
        t = store.table
        with database_errors(t.name), store.engine.begin() as conn:
            # Not bound by NOTIFICATIONS_INBOX_STATEMENT_TIMEOUT: a purge runs
            # from cron, and may delete millions of rows at once.
            conn.execution_options(**{UNBOUNDED: True})
            if store.owns_engine and conn.dialect.name == "postgresql":
                conn.execute(sa.text("SET LOCAL statement_timeout = 0"))
            deleted = conn.execute(sa.delete(t).where(t.c.created_at < datetime.now(UTC) - age)).rowcount
        return int(deleted)

    # -- the live badge -------------------------------------------------------

    def badge_channels(self) -> builtins.list[str]:
        """The channels the unread counts are published to: those of the
        hubs that have an :class:`InboxConsumer` with ``badge`` on."""
        channels: dict[str, None] = {}
        for hub in self.notifications.hubs.values():
            for consumer in hub.consumers:
                if isinstance(consumer, InboxConsumer) and consumer.badge:
                    channels[consumer.badge_channel or hub.hub_id] = None
        return list(channels)

    def publish_badges(self, users: Iterable[str], *, strict: bool = False) -> None:
        """Send each user's streams an ``inbox.badge`` event with their
        unread count, on every :meth:`badge_channels` channel.

        :param strict: raise if the backend cannot be reached; otherwise it
            is logged, and the next change or page load sends the count.
        :raises BackendError: the backend failed, and ``strict`` is set.
        """
        channels = self.badge_channels()
        if channels:
            wanted = builtins.list(dict.fromkeys(recipient_id(user) for user in users))
            self._publish(channels, _badges_of(self._store(), wanted), strict=strict)

    def _publish(
        self, channels: builtins.list[str], badges: dict[str, tuple[int, int]], *, strict: bool = False
    ) -> None:
        if not channels or not badges:
            return
        backend = self.notifications.get_backend(self._app())
        frames = badge_frames(badges)
        try:
            for channel in channels:
                backend.publish_many(channel, frames)
        except BackendError:
            if strict:
                raise
            logger.warning("Could not publish the unread counts of %d users.", len(badges), exc_info=True)


def _reading(store: _Store) -> sa.Connection:
    """A connection for one read: in autocommit, each query of one statement
    is its own snapshot as it would be in a transaction, and it saves the
    round trips of ``BEGIN`` and of the ``ROLLBACK`` when the connection goes
    back to the pool (on PostgreSQL; half of an ``unread_count``'s)."""
    return store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")


def _badges_of(store: _Store, users: builtins.list[str]) -> dict[str, tuple[int, int]]:
    return badges_of(store.engine, store.table, store.versions, users)


def _flask_login_user() -> str | None:
    try:
        from flask_login import current_user
    except ImportError:
        raise RuntimeError(
            "The inbox does not know who the current user is: register a function with "
            "@notifications.inbox.user_loader, or use Flask-Login."
        ) from None
    if not current_user or not current_user.is_authenticated:
        return None
    user_id: str | None = current_user.get_id()
    return user_id
