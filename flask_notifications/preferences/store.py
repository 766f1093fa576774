"""The preferences API: ``notifications.preferences``."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..database import create_tables
from ..errors import (
    InvalidInboxRequestError,
    InvalidPreferenceError,
    PreferencesUnavailableError,
    RequiredPreferenceError,
)
from ..event import Event
from ..event_hub import EventHub
from ..inbox.model import recipient_id
from .cache import Choices, PreferenceCache
from .model import DEFAULT_TABLE, HubRule, checked_name, define_preferences_table, make_rule

if TYPE_CHECKING:
    from ..ext import Notifications

logger = logging.getLogger(__name__)

#: Recipients per query when reading many users' choices.
CHUNK = 500
#: Seconds a table found too large to copy whole counts as such.
LARGE_RECHECK = 60.0
_NO_RULE = HubRule()
_NONE: Choices = {}


@dataclass
class _Store:
    notifications: Notifications
    table: sa.Table
    cache: PreferenceCache

    @property
    def engine(self) -> sa.Engine:
        # The inbox's, looked up each time: closing the inbox replaces it.
        return self.notifications.inbox.engine


@contextmanager
def _database_errors(table: str) -> Iterator[None]:
    try:
        yield
    except sa.exc.DBAPIError as exc:
        text = str(exc.orig).strip()
        hint = ""
        if "no such table" in text or "does not exist" in text:
            hint = f" Create the table {table!r} with 'flask notifications preferences init-db' or its migration."
        raise PreferencesUnavailableError(f"The preferences database failed: {text}.{hint}") from exc
    except sa.exc.SQLAlchemyError as exc:
        # A pool that is exhausted, a connection lost while checked out.
        raise PreferencesUnavailableError(f"The preferences database failed: {exc}") from exc


def _user(user: object) -> str:
    try:
        return recipient_id(user)
    except InvalidInboxRequestError as exc:
        raise InvalidPreferenceError(str(exc)) from None


def _label(hub: EventHub | str) -> str:
    return hub.label if isinstance(hub, EventHub) else checked_name("hub", hub)


class Preferences:
    """What each user wants: per hub (a category of notifications) and per
    channel (``inbox``, ``email``, ``stream``, ``webpush``, or whatever a
    consumer's :attr:`~flask_notifications.consumers.consumer.Consumer.channel`
    names), on or off. What a user did not choose is the hub's default; a
    hub :meth:`define`\\ d as required cannot be turned off.

    Reach it as ``notifications.preferences``. Hubs are defined at import
    time, as hubs are created; the choices are kept in SQL beside the inbox
    (``NOTIFICATIONS_INBOX_URL``, table ``NOTIFICATIONS_PREFERENCES_TABLE``),
    so the methods that read or write them need an application context.

    :param notifications: the extension it belongs to.
    """

    def __init__(self, notifications: Notifications) -> None:
        self.notifications = notifications
        self._rules: dict[str, HubRule] = {}
        self._stores: weakref.WeakKeyDictionary[Flask, _Store] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    # -- the hubs' rules --------------------------------------------------------

    def define(
        self,
        hub: EventHub | str,
        *,
        defaults: Mapping[str, bool] | None = None,
        required: bool | Iterable[str] = False,
    ) -> HubRule:
        """Set ``hub``'s defaults and the channels nobody can opt out of::

            notifications.preferences.define(marketing, defaults={"email": False})
            notifications.preferences.define(security, required=True)
            notifications.preferences.define(billing, required=["email"])

        Define hubs at import time, in every process (the workers apply
        the rules). Defining a hub again replaces its rule.

        :param hub: the hub, or its label.
        :param defaults: ``{channel: enabled}`` for users who chose nothing;
            a channel not named is on.
        :param required: ``True`` for every channel, or the channels that
            are always delivered, whatever the user chose.
        :return: the rule.
        :raises InvalidPreferenceError: a name or a default is invalid.
        """
        rule = make_rule(defaults, required)
        self._rules[_label(hub)] = rule
        return rule

    def rule(self, hub: EventHub | str) -> HubRule:
        """``hub``'s rule; a hub never defined has every channel on, none required."""
        return self._rules.get(hub.label if isinstance(hub, EventHub) else hub, _NO_RULE)

    def channels(self) -> dict[str, list[str]]:
        """Every hub a user can choose for, with its channels: those its
        consumers deliver on, and those its rule names."""
        found: dict[str, list[str]] = {}
        for hub in self.notifications.hubs.values():
            named = [c.channel for c in hub.consumers if isinstance(c.channel, str)]
            found[hub.label] = named
        for label, rule in self._rules.items():
            found.setdefault(label, []).extend([*rule.defaults, *sorted(rule.required)])
        return {label: list(dict.fromkeys(names)) for label, names in found.items() if names}

    # -- storage ----------------------------------------------------------------

    def _store(self) -> _Store:
        if not has_app_context():
            raise RuntimeError(
                "The preferences need an application context. Use them inside a request or 'with app.app_context():'."
            )
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        store = self._stores.get(app)
        if store is None:
            with self._lock:
                store = self._stores.get(app)
                if store is None:
                    name = app.config.get("NOTIFICATIONS_PREFERENCES_TABLE") or DEFAULT_TABLE
                    table = define_preferences_table(sa.MetaData(), name)
                    store = self._stores[app] = _Store(self.notifications, table, PreferenceCache())
        return store

    @property
    def table(self) -> sa.Table:
        """The current application's preferences table."""
        return self._store().table

    def create_all(self) -> None:
        """Create the table if it does not exist; safe when several processes
        do it at once (``flask notifications preferences init-db``)."""
        store = self._store()
        with _database_errors(store.table.name):
            create_tables(store.engine, (store.table,))

    def drop_all(self) -> None:
        """Drop the table, and every choice in it."""
        store = self._store()
        with _database_errors(store.table.name):
            store.table.drop(store.engine, checkfirst=True)

    # -- reading ----------------------------------------------------------------

    def get(self, user: str | int) -> dict[str, dict[str, bool]]:
        """What ``user`` gets: ``{hub: {channel: enabled}}`` for every hub of
        :meth:`channels`, read from the database now.

        :raises PreferencesUnavailableError: the database failed.
        """
        wanted = _user(user)
        chosen = self._read([wanted]).get(wanted, {})
        return {
            hub: {channel: self._decide(hub, channel, chosen) for channel in names}
            for hub, names in self.channels().items()
        }

    def wants(self, user: str | int, hub: EventHub | str, channel: str) -> bool:
        """Whether ``user`` gets ``hub``'s events on ``channel``, as a worker
        decides it (from its copy, at most ``NOTIFICATIONS_PREFERENCES_MAX_AGE``
        seconds old)."""
        return bool(self.recipients_for([_user(user)], hub, channel))

    def recipients_for(self, users: Iterable[str], hub: EventHub | str, channel: str) -> list[str]:
        """Those of ``users`` who get ``hub``'s events on ``channel``, in
        their order. Each user's choices are read at most once per
        ``NOTIFICATIONS_PREFERENCES_MAX_AGE`` seconds in this process.

        :raises PreferencesUnavailableError: the database failed.
        """
        label = hub.label if isinstance(hub, EventHub) else hub
        users = list(users)
        rule = self._rules.get(label, _NO_RULE)
        if rule.is_required(channel) or not users:
            return users
        found = self._cached(users)
        default = rule.defaults.get(channel, True)
        key = (label, channel)
        return [user for user in users if found.get(user, _NONE).get(key, default)]

    def _cached(self, users: list[str]) -> Mapping[str, Choices]:
        """The choices of ``users`` from this process's copy, read again
        where it is older than ``NOTIFICATIONS_PREFERENCES_MAX_AGE``."""
        store = self._store()
        cache = store.cache
        config = current_app.config
        max_age = float(config.get("NOTIFICATIONS_PREFERENCES_MAX_AGE") or 0)
        now = time.monotonic()
        if max_age > 0 and now >= cache.large_until:
            whole = cache.fresh_whole(now, max_age)
            if whole is None:
                whole = self._read_all(int(config.get("NOTIFICATIONS_PREFERENCES_SNAPSHOT_ROWS") or 0))
                if whole is None:
                    cache.large_until = now + LARGE_RECHECK
                else:
                    cache.whole = (now, whole)
            if whole is not None:
                return whole
        found, missing = cache.get(users, now, max_age)
        if missing:
            read = self._read(list(dict.fromkeys(missing)))
            cache.put(now, read)
            found.update(read)
        return found

    def narrow(self, event: Event, hub: EventHub | str, channel: str) -> Event | None:
        """``event`` as ``hub``'s consumer on ``channel`` gets it: with only
        the recipients who want that channel; ``event`` itself when all do
        (or it names none: a broadcast), ``None`` when none does.

        :raises PreferencesUnavailableError: the database failed.
        """
        recipients = event["recipients"]
        if not recipients:
            return event
        wanted = self.recipients_for(recipients, hub, channel)
        if len(wanted) == len(recipients):
            return event
        if not wanted:
            return None
        return Event.from_dict({**event, "recipients": wanted})

    def _decide(self, hub: str, channel: str, chosen: Choices) -> bool:
        rule = self._rules.get(hub, _NO_RULE)
        if rule.is_required(channel):
            return True
        return chosen.get((hub, channel), rule.default(channel))

    def _read_all(self, limit: int) -> dict[str, Choices] | None:
        """Every stored choice, or ``None`` if there are more than ``limit``."""
        if limit <= 0:
            return None
        store = self._store()
        t = store.table
        found: dict[str, dict[tuple[str, str], bool]] = {}
        query = sa.select(t.c.recipient, t.c.hub, t.c.channel, t.c.enabled).limit(limit + 1)
        with _database_errors(t.name), store.engine.connect() as conn:
            rows = conn.execute(query).all()
        if len(rows) > limit:
            return None
        for row in rows:
            found.setdefault(row.recipient, {})[(row.hub, row.channel)] = bool(row.enabled)
        return dict(found)

    def _read(self, users: list[str]) -> dict[str, Choices]:
        """Every choice of ``users``; a user who chose nothing has ``{}``."""
        store = self._store()
        t = store.table
        found: dict[str, dict[tuple[str, str], bool]] = {user: {} for user in users}
        with _database_errors(t.name), store.engine.connect() as conn:
            for start in range(0, len(users), CHUNK):
                query = sa.select(t.c.recipient, t.c.hub, t.c.channel, t.c.enabled).where(
                    t.c.recipient.in_(users[start : start + CHUNK])
                )
                for row in conn.execute(query):
                    found.setdefault(row.recipient, {})[(row.hub, row.channel)] = bool(row.enabled)
        return dict(found)

    # -- writing ----------------------------------------------------------------

    def set(self, user: str | int, hub: EventHub | str, channel: str, enabled: bool) -> None:
        """Turn ``hub``'s ``channel`` on or off for ``user``.

        :raises RequiredPreferenceError: it is off for a required channel.
        :raises InvalidPreferenceError: the hub or the channel is unknown.
        :raises PreferencesUnavailableError: the database failed.
        """
        self.update(user, {_label(hub): {channel: enabled}})

    def update(self, user: str | int, choices: Mapping[str, Mapping[str, bool]]) -> dict[str, dict[str, bool]]:
        """Store several of ``user``'s choices, ``{hub: {channel: enabled}}``,
        all or none of them.

        :return: what ``user`` gets now, as :meth:`get` gives it.
        :raises RequiredPreferenceError: one turns off a required channel.
        :raises InvalidPreferenceError: one names an unknown hub or channel,
            or its value is not a boolean.
        :raises PreferencesUnavailableError: the database failed.
        """
        wanted = _user(user)
        rows = self._checked(choices)
        store = self._store()
        t = store.table
        now = datetime.now(UTC)
        with _database_errors(t.name), store.engine.begin() as conn:
            for hub, channel, enabled in rows:
                values = {"recipient": wanted, "hub": hub, "channel": channel, "enabled": enabled, "updated_at": now}
                conn.execute(self._upsert(conn, t, values))
        store.cache.forget(wanted)
        return self.get(wanted)

    def reset(self, user: str | int, hub: EventHub | str | None = None) -> int:
        """Forget ``user``'s choices (of ``hub`` only, if given): the hubs'
        defaults apply again.

        :return: how many choices were forgotten.
        """
        wanted = _user(user)
        store = self._store()
        t = store.table
        where = [t.c.recipient == wanted]
        if hub is not None:
            where.append(t.c.hub == _label(hub))
        with _database_errors(t.name), store.engine.begin() as conn:
            deleted = conn.execute(sa.delete(t).where(*where)).rowcount
        store.cache.forget(wanted)
        return int(deleted or 0)

    def _checked(self, choices: Mapping[str, Mapping[str, bool]]) -> list[tuple[str, str, bool]]:
        if not isinstance(choices, Mapping):
            raise InvalidPreferenceError("Give the choices as {hub: {channel: true or false}}.")
        known = self.channels()
        rows: list[tuple[str, str, bool]] = []
        for hub, channels in choices.items():
            checked_name("hub", hub)
            if hub not in known:
                raise InvalidPreferenceError(
                    f"There is no hub {hub!r} to choose for; known: {', '.join(sorted(known)) or 'none'}."
                )
            if not isinstance(channels, Mapping):
                raise InvalidPreferenceError(f"Give hub {hub!r}'s choices as {{channel: true or false}}.")
            for channel, enabled in channels.items():
                checked_name("channel", channel)
                if channel not in known[hub]:
                    raise InvalidPreferenceError(
                        f"Hub {hub!r} has no channel {channel!r}; its channels: {', '.join(known[hub])}."
                    )
                if not isinstance(enabled, bool):
                    raise InvalidPreferenceError(f"{hub}/{channel} is true or false, not {_shown(enabled)}.")
                if not enabled and self.rule(hub).is_required(channel):
                    raise RequiredPreferenceError(
                        f"Hub {hub!r} is required on channel {channel!r}: its notifications cannot be turned off."
                    )
                rows.append((hub, channel, enabled))
        return rows

    @staticmethod
    def _upsert(conn: sa.Connection, t: sa.Table, values: dict[str, Any]) -> Any:
        dialect = conn.dialect.name
        if dialect in ("postgresql", "sqlite"):
            insert = (pg_insert if dialect == "postgresql" else sqlite_insert)(t).values(values)
            return insert.on_conflict_do_update(
                index_elements=[t.c.recipient, t.c.hub, t.c.channel],
                set_={"enabled": insert.excluded.enabled, "updated_at": insert.excluded.updated_at},
            )
        # Another database: replace the row within the transaction.
        conn.execute(
            sa.delete(t).where(
                t.c.recipient == values["recipient"], t.c.hub == values["hub"], t.c.channel == values["channel"]
            )
        )
        return t.insert().values(values)


def _shown(value: object) -> str:
    return f"{value!r:.40}" if isinstance(value, (str, int, float)) or value is None else f"a {type(value).__name__}"
