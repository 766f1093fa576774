"""The preferences API (``notifications.preferences``) on SQLite and
PostgreSQL: hub rules, choices, the recipients a channel keeps, and the
per-process copy whose staleness is bounded by
``NOTIFICATIONS_PREFERENCES_MAX_AGE``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.errors import (
    BackendError,
    InvalidPreferenceError,
    PreferencesUnavailableError,
    RequiredPreferenceError,
)
from flask_notifications.preferences import Preferences
from tests.helpers import free_port
from tests.preferences.conftest import Recording, use_database

pytestmark = [pytest.mark.redis]


@pytest.fixture
def hubs(notifications: Notifications, preferences: Preferences) -> None:
    news = notifications.create_hub("news")
    news.register_consumer(Recording("email"))
    news.register_consumer(Recording("inbox"))
    news.register_consumer(Recording(None))  # not subject to preferences
    security = notifications.create_hub("security")
    security.register_consumer(Recording("email"))
    preferences.define("news", defaults={"email": False})
    preferences.define(security, required=True)


def event(*recipients: str) -> Event:
    return Event(None, "post", "Title", "Body", recipients=recipients)


@pytest.mark.usefixtures("hubs")
def test_defaults_choices_and_reset(preferences: Preferences) -> None:
    assert preferences.channels() == {"news": ["email", "inbox"], "security": ["email"]}
    assert preferences.get("alice") == {"news": {"email": False, "inbox": True}, "security": {"email": True}}

    preferences.set("alice", "news", "email", True)
    after = preferences.update("alice", {"news": {"inbox": False}})
    assert after == {"news": {"email": True, "inbox": False}, "security": {"email": True}}
    # Another user keeps the defaults.
    assert preferences.get(42) == {"news": {"email": False, "inbox": True}, "security": {"email": True}}

    assert preferences.reset("alice", "news") == 2
    assert preferences.get("alice")["news"] == {"email": False, "inbox": True}


@pytest.mark.usefixtures("hubs")
def test_a_required_hub_cannot_be_opted_out_of(preferences: Preferences) -> None:
    with pytest.raises(RequiredPreferenceError, match="'security' is required on channel 'email'"):
        preferences.set("alice", "security", "email", False)
    # All or nothing: the valid choice beside the refused one is not stored.
    with pytest.raises(RequiredPreferenceError):
        preferences.update("alice", {"news": {"inbox": False}, "security": {"email": False}})
    assert preferences.get("alice")["news"]["inbox"] is True
    # Turning it on is harmless, and a required channel keeps every recipient.
    preferences.set("alice", "security", "email", True)
    assert preferences.recipients_for(["alice", "bob"], "security", "email") == ["alice", "bob"]


def test_required_channels_only(notifications: Notifications, preferences: Preferences) -> None:
    billing = notifications.create_hub("billing")
    billing.register_consumer(Recording("email"))
    billing.register_consumer(Recording("stream"))
    preferences.define(billing, required=["email"])
    preferences.set("alice", billing, "stream", False)
    with pytest.raises(RequiredPreferenceError):
        preferences.set("alice", billing, "email", False)
    assert preferences.get("alice") == {"billing": {"email": True, "stream": False}}


@pytest.mark.usefixtures("hubs")
@pytest.mark.parametrize(
    ("choices", "message"),
    [
        ({"nope": {"email": False}}, "There is no hub 'nope'"),
        ({"news": {"sms": False}}, "Hub 'news' has no channel 'sms'; its channels: email, inbox"),
        ({"news": {"email": "no"}}, "news/email is true or false, not 'no'"),
        ({"news": {"email": 0}}, "news/email is true or false, not 0"),
        ({"news": ["email"]}, "Give hub 'news'"),
        ({"bad hub!": {"email": False}}, "A hub is 1 to 100 letters"),
        (["news"], "Give the choices as"),
    ],
)
def test_invalid_choices_are_refused(preferences: Preferences, choices: object, message: str) -> None:
    with pytest.raises(InvalidPreferenceError, match=message):
        preferences.update("alice", choices)  # type: ignore[arg-type]
    assert preferences.reset("alice") == 0


def test_invalid_rules_are_refused(preferences: Preferences) -> None:
    with pytest.raises(InvalidPreferenceError, match="default of channel 'email' is True or False"):
        preferences.define("news", defaults={"email": "off"})  # type: ignore[dict-item]
    with pytest.raises(InvalidPreferenceError, match="A channel is 1 to 100"):
        preferences.define("news", required=["e mail"])


@pytest.mark.usefixtures("hubs")
def test_narrow_keeps_the_recipients_who_want_the_channel(preferences: Preferences) -> None:
    preferences.set("bob", "news", "email", True)
    broadcast = event()
    assert preferences.narrow(broadcast, "news", "email") is broadcast
    everyone = event("bob")
    assert preferences.narrow(everyone, "news", "email") is everyone
    some = event("alice", "bob", "carol")
    narrowed = preferences.narrow(some, "news", "email")
    assert narrowed is not None and narrowed["recipients"] == ["bob"]
    assert narrowed["event_id"] == some["event_id"] and some["recipients"] == ["alice", "bob", "carol"]
    assert preferences.narrow(event("alice", "carol"), "news", "email") is None
    # A hub never defined delivers on every channel.
    assert preferences.recipients_for(["alice"], "other", "email") == ["alice"]


@pytest.mark.usefixtures("hubs")
@pytest.mark.parametrize(("snapshot_rows", "queries"), [(50_000, 1), (12, 3), (0, 3)])
def test_many_recipients_cost_few_queries(
    app: Flask, preferences: Preferences, snapshot_rows: int, queries: int
) -> None:
    """A small table is read whole in one query; a larger one (or with the
    snapshot off) per user, 500 users a query; then from the copy."""
    app.config["NOTIFICATIONS_PREFERENCES_SNAPSHOT_ROWS"] = snapshot_rows
    app.config["NOTIFICATIONS_PREFERENCES_MAX_AGE"] = 3600
    users = [f"user-{n}" for n in range(1203)]
    for user in users[::100]:
        preferences.set(user, "news", "email", True)
    statements: list[str] = []
    engine = preferences.notifications.inbox.engine

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if preferences.table.name in statement:
            statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        assert preferences.recipients_for(users, "news", "email") == users[::100]
        # The table was too large to copy whole: no second try for a while.
        assert len(statements) == queries + (snapshot_rows == 12)
        assert preferences.recipients_for(users[:700], "news", "email") == users[:700:100]
        assert len(statements) == queries + (snapshot_rows == 12)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


@pytest.mark.usefixtures("hubs")
def test_a_change_applies_within_max_age(app: Flask, preferences: Preferences) -> None:
    """A worker reads a user's choices at most once per max age: a change
    made elsewhere (another process) is seen once that age has passed since
    the read, never later; this process's own changes at once."""
    app.config["NOTIFICATIONS_PREFERENCES_MAX_AGE"] = 0.5
    assert preferences.recipients_for(["alice"], "news", "inbox") == ["alice"]
    read_before = time.monotonic()
    t = preferences.table
    with preferences.notifications.inbox.engine.begin() as conn:
        row = {"recipient": "alice", "hub": "news", "channel": "inbox", "enabled": False}
        conn.execute(t.insert().values(**row, updated_at=datetime.now(UTC)))
    changed = time.monotonic()
    if changed - read_before < 0.5:
        # Within the bound the copy may still be used.
        assert preferences.recipients_for(["alice"], "news", "inbox") == ["alice"]
    while time.monotonic() < changed + 0.5:
        time.sleep(0.05)
    assert preferences.recipients_for(["alice"], "news", "inbox") == []
    # This process's own change applies at once, whatever the max age.
    app.config["NOTIFICATIONS_PREFERENCES_MAX_AGE"] = 3600
    preferences.set("alice", "news", "inbox", True)
    assert preferences.wants("alice", "news", "inbox")


def test_a_missing_table_says_how_to_create_it(
    app: Flask, notifications: Notifications, unique: str, tmp_path: Path
) -> None:
    use_database(app, f"sqlite:///{tmp_path / 'prefs.sqlite3'}", unique)
    notifications.create_hub("news").register_consumer(Recording("email"))
    with pytest.raises(PreferencesUnavailableError, match="flask notifications preferences init-db") as info:
        notifications.preferences.recipients_for(["alice"], "news", "email")
    # The worker retries a task whose preferences cannot be read, as it does
    # when the ledger is unreachable.
    assert isinstance(info.value, BackendError)
    notifications.inbox.close()


def test_an_unreachable_database_raises_unavailable(app: Flask, notifications: Notifications, unique: str) -> None:
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    use_database(app, url, unique)
    notifications.create_hub("news").register_consumer(Recording("email"))
    with pytest.raises(PreferencesUnavailableError, match="The preferences database failed"):
        notifications.preferences.get("alice")
    with pytest.raises(PreferencesUnavailableError):
        notifications.preferences.set("alice", "news", "email", False)
    notifications.inbox.close()
