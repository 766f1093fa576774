"""The inbox API (``notifications.inbox``) on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.errors import (
    InboxDataError,
    InboxUnavailableError,
    InvalidCursorError,
    InvalidInboxRequestError,
    NotificationNotFoundError,
    PermanentConsumerError,
)
from flask_notifications.inbox import Inbox, badge_event, writes
from flask_notifications.inbox.badges import badge_frames
from flask_notifications.inbox.consumer import InboxConsumer
from tests.helpers import free_port

pytestmark = [pytest.mark.redis]


def make_event(title: str = "Hello", recipients: tuple[str, ...] = ("alice",), **extra: Any) -> Event:
    return Event(None, "comment", title, "A body ✓", sender="bob", recipients=recipients, **extra)


def fill(inbox: Inbox, user: str, count: int) -> list[int]:
    """Store ``count`` notifications for ``user``; return their ids, newest first."""
    for n in range(count):
        event = make_event(f"n{n}", (user,))
        inbox.add(event, [user], delivery_id=event["event_id"])
    return [item.id for item in inbox.list(user, limit=100).items]


def test_add_then_list_newest_first(inbox: Inbox) -> None:
    first = make_event("first", ("alice", "bob"), priority="high")
    second = make_event("second", ("alice",))
    assert inbox.add(first, first["recipients"], delivery_id="d1") == ["alice", "bob"]
    assert inbox.add(second, second["recipients"], delivery_id="d2") == ["alice"]
    page = inbox.list("alice")
    assert [item.event["title"] for item in page.items] == ["second", "first"]
    assert page.next_cursor is None
    item = page.items[1]
    assert item.event == {**first.to_dict(), "recipients": ["alice"]} and item.event["priority"] == "high"
    assert Event.from_dict(item.event) == Event.from_dict({**first.to_dict(), "recipients": ["alice"]})
    assert Event.from_dict(inbox.list("bob").items[0].event)["recipients"] == ["bob"]
    # An event of one recipient comes back exactly as it was sent.
    assert Event.from_dict(page.items[0].event) == second
    assert item.recipient == "alice" and item.delivery_id == "d1"
    assert item.created_at.tzinfo is not None and item.read_at is None and not item.is_read
    assert [item.event["title"] for item in inbox.list("bob").items] == ["first"]
    assert inbox.list("carol").items == []


def test_one_delivery_is_stored_once_per_recipient(inbox: Inbox) -> None:
    event = make_event(recipients=("alice", "bob", "alice"))
    assert inbox.add(event, event["recipients"], delivery_id="d1") == ["alice", "bob"]
    assert inbox.add(event, ["alice", "bob", "carol"], delivery_id="d1") == ["carol"]
    assert [len(inbox.list(user).items) for user in ("alice", "bob", "carol")] == [1, 1, 1]
    # Another delivery of the same event (sent twice) is another notification.
    assert inbox.add(event, ["alice"], delivery_id="d2") == ["alice"]
    assert inbox.unread_count("alice") == 2


def test_keyset_pages_cover_everything_once(inbox: Inbox) -> None:
    ids = fill(inbox, "alice", 7)
    fill(inbox, "bob", 2)
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        page = inbox.list("alice", before=cursor, limit=3)
        seen.extend(item.id for item in page.items)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids and pages == 3
    # A notification stored meanwhile does not shift the pages already cursored.
    page = inbox.list("alice", limit=3)
    fill(inbox, "alice", 1)
    assert [item.id for item in inbox.list("alice", before=page.next_cursor, limit=3).items] == ids[3:6]


def test_read_state_and_counts(inbox: Inbox) -> None:
    ids = fill(inbox, "alice", 4)
    fill(inbox, "bob", 1)
    assert inbox.unread_count("alice") == 4
    assert inbox.mark_read("alice", [ids[0], str(ids[1])]) == 2
    assert inbox.mark_read("alice", [ids[0]]) == 0  # already read
    assert inbox.unread_count("alice") == 2
    assert [item.id for item in inbox.list("alice", unread_only=True).items] == ids[2:]
    assert inbox.get("alice", ids[0]).read_at is not None
    assert inbox.mark_unread("alice", [ids[0]]) == 1
    assert inbox.unread_count("alice") == 3
    assert inbox.mark_all_read("alice") == 3
    assert inbox.unread_count("alice") == 0 and inbox.mark_all_read("alice") == 0
    assert inbox.unread_count("bob") == 1
    assert inbox.unread_counts(["alice", "bob", "nobody"]) == {"alice": 0, "bob": 1, "nobody": 0}
    assert inbox.mark_read("alice", []) == 0


def test_seen(inbox: Inbox) -> None:
    ids = fill(inbox, "alice", 3)
    assert inbox.unseen_count("alice") == 3
    assert inbox.mark_seen("alice", [ids[0]]) == 1
    assert inbox.unseen_count("alice") == 2
    assert inbox.mark_seen("alice") == 2
    assert inbox.unseen_count("alice") == 0
    assert inbox.unread_count("alice") == 3  # seen is not read
    assert all(item.seen_at is not None for item in inbox.list("alice").items)


def test_archive_and_delete(inbox: Inbox) -> None:
    ids = fill(inbox, "alice", 3)
    assert inbox.archive("alice", [ids[0]]) == 1
    assert [item.id for item in inbox.list("alice").items] == ids[1:]
    assert [item.id for item in inbox.list("alice", archived=True).items] == ids[:1]
    assert inbox.unread_count("alice") == 2
    assert inbox.unarchive("alice", [ids[0]]) == 1
    assert inbox.unread_count("alice") == 3
    assert inbox.delete("alice", [ids[1], ids[2]]) == 2
    assert [item.id for item in inbox.list("alice").items] == ids[:1]
    with pytest.raises(NotificationNotFoundError):
        inbox.get("alice", ids[1])


@pytest.mark.parametrize("method", ["mark_read", "mark_unread", "mark_seen", "archive", "unarchive", "delete"])
def test_unknown_or_foreign_ids_change_nothing(inbox: Inbox, method: str) -> None:
    mine = fill(inbox, "alice", 2)
    theirs = fill(inbox, "bob", 1)
    unknown = max(mine + theirs) + 1000

    def state() -> dict[str, list[Any]]:
        return {u: [(i.id, i.read_at, i.seen_at, i.archived_at) for i in inbox.list(u).items] for u in ("alice", "bob")}

    before = state()
    for wrong in (theirs[0], unknown):
        with pytest.raises(NotificationNotFoundError) as info:
            getattr(inbox, method)("alice", [mine[0], wrong])
        assert info.value.ids == [wrong]
        assert str(wrong) in str(info.value) and "nothing was changed" in str(info.value)
    assert state() == before
    assert inbox.unread_count("bob") == 1 and inbox.unread_count("alice") == 2


@pytest.mark.parametrize(
    "ids",
    [[0], [-1], ["x"], [1.5], [True], [None], ["1e3"], [2**63], "12", 12, list(range(1, 1002))],
    ids=repr,
)
def test_malformed_ids_are_refused(inbox: Inbox, ids: Any) -> None:
    with pytest.raises(InvalidInboxRequestError):
        inbox.mark_read("alice", ids)


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "garbage",
        "!!!",
        "12",
        base64.urlsafe_b64encode(b"i:0").decode(),
        base64.urlsafe_b64encode(b"i:-1").decode(),
        base64.urlsafe_b64encode(b"i:99999999999999999999").decode(),
        base64.urlsafe_b64encode(b"x:12").decode(),
        "a" * 100,
        # What lenient base64 reads as i:12 (aToxMg): padding, stray and
        # non-alphabet characters.
        base64.urlsafe_b64encode(b"i:12").decode(),
        "a.ToxMg",
        "aToxMg!!",
        "aTox Mg",
    ],
)
def test_malformed_cursor_is_refused(inbox: Inbox, cursor: str) -> None:
    with pytest.raises(InvalidCursorError, match="not a cursor"):
        inbox.list("alice", before=cursor)


@pytest.mark.parametrize("limit", [0, 101, -5, True, "10"])
def test_limit_out_of_range_is_refused(inbox: Inbox, limit: Any) -> None:
    with pytest.raises(InvalidInboxRequestError, match="limit"):
        inbox.list("alice", limit=limit)


@pytest.mark.parametrize("user", ["", "x" * 256, None, 1.5, True])
def test_malformed_recipient_is_refused(inbox: Inbox, user: Any) -> None:
    with pytest.raises(InvalidInboxRequestError):
        inbox.unread_count(user)
    with pytest.raises(InvalidInboxRequestError):
        inbox.add(make_event(), [user], delivery_id="d")


def test_integer_user_ids_are_their_strings(inbox: Inbox) -> None:
    event = make_event(recipients=("42",))
    inbox.add(event, [42], delivery_id="d")  # type: ignore[list-item]
    assert inbox.unread_count(42) == 1 and inbox.unread_count("42") == 1


def test_purge_by_age_and_retention(app: Flask, inbox: Inbox) -> None:
    fill(inbox, "alice", 2)
    old = inbox.list("alice").items[1]
    with inbox.engine.begin() as conn:
        t = inbox.table
        conn.execute(sa.update(t).where(t.c.id == old.id).values(created_at=datetime.now(UTC) - timedelta(days=40)))
    with pytest.raises(InvalidInboxRequestError, match="NOTIFICATIONS_INBOX_RETENTION"):
        inbox.purge()
    with pytest.raises(InvalidInboxRequestError, match="negative"):
        inbox.purge(-1)
    assert inbox.purge(timedelta(days=50)) == 0
    app.config["NOTIFICATIONS_INBOX_RETENTION"] = 30 * 24 * 3600
    assert inbox.purge() == 1
    assert [item.id for item in inbox.list("alice").items] != [old.id]
    assert len(inbox.list("alice").items) == 1


def test_database_down_is_reported(app: Flask, notifications: Notifications, unique: str) -> None:
    app.config["NOTIFICATIONS_INBOX_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    inbox = notifications.inbox
    try:
        with pytest.raises(InboxUnavailableError, match="database failed"):
            inbox.unread_count("alice")
        with pytest.raises(InboxUnavailableError):
            inbox.add(make_event(), ["alice"], delivery_id="d")
    finally:
        inbox.close()


def test_missing_table_says_how_to_create_it(
    app: Flask, notifications: Notifications, inbox_url: str, unique: str
) -> None:
    app.config["NOTIFICATIONS_INBOX_URL"] = inbox_url
    app.config["NOTIFICATIONS_INBOX_TABLE"] = "missing_" + unique.replace("-", "_")
    try:
        with pytest.raises(InboxUnavailableError, match="init-db"):
            notifications.inbox.unread_count("alice")
    finally:
        notifications.inbox.close()


def test_default_database_is_sqlite_in_the_instance_folder(tmp_path: Path, redis_url: str, unique: str) -> None:
    from tests.helpers import make_config

    app = Flask("inbox_default", instance_path=str(tmp_path / "instance"))
    app.config.update(make_config(redis_url, unique))
    ext = Notifications(app)
    with app.app_context():
        try:
            ext.inbox.create_all()
            event = make_event()
            ext.inbox.add(event, ["alice"], delivery_id="d")
            assert ext.inbox.engine.dialect.name == "sqlite"
            assert (tmp_path / "instance" / "notifications_inbox.sqlite3").is_file()
            assert ext.inbox.unread_count("alice") == 1
            with ext.inbox.engine.connect() as conn:
                assert conn.execute(sa.text("PRAGMA journal_mode")).scalar_one() == "wal"
        finally:
            ext.inbox.close()
            ext.get_backend(app).close()


def test_flask_sqlalchemy_engine_is_used(tmp_path: Path, redis_url: str, unique: str) -> None:
    from flask_sqlalchemy import SQLAlchemy

    from tests.helpers import make_config

    app = Flask("inbox_fsa", instance_path=str(tmp_path))
    app.config.update(make_config(redis_url, unique, SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}"))
    db = SQLAlchemy(app)
    ext = Notifications(app)
    with app.app_context():
        try:
            assert ext.inbox.engine is db.engine
            ext.inbox.create_all()
            ext.inbox.add(make_event(), ["alice"], delivery_id="d")
            assert sa.inspect(db.engine).has_table("notifications_inbox")
            with db.engine.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM notifications_inbox")).scalar_one() == 1
            ext.inbox.close()
            # Closing the inbox leaves Flask-SQLAlchemy's engine working.
            with db.engine.connect() as conn:
                assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
        finally:
            ext.get_backend(app).close()


def test_inbox_needs_an_app_context(redis_url: str, unique: str) -> None:
    from tests.helpers import make_config

    app = Flask("inbox_no_context")
    app.config.update(make_config(redis_url, unique))
    ext = Notifications(app)
    try:
        assert ext.inbox is ext.inbox
        with pytest.raises(RuntimeError, match="application context"):
            ext.inbox.unread_count("alice")
    finally:
        ext.get_backend(app).close()


def test_nul_characters_round_trip(inbox: Inbox) -> None:
    # PostgreSQL's JSONB refuses U+0000; the inbox stores such an event anyway.
    event = Event(None, "comment", "a\x00b", "c\x00d", sender="carol", recipients=["alice"], extra={"k": "\x00"})
    inbox.add(event, ["alice"], delivery_id="nul")
    (item,) = inbox.list("alice").items
    assert Event.from_dict(item.event) == event
    with pytest.raises(InvalidInboxRequestError, match="U\\+0000"):
        inbox.add(event, ["al\x00ice"], delivery_id="nul2")


def test_data_the_database_refuses_is_a_permanent_error(inbox: Inbox) -> None:
    if inbox.engine.dialect.name != "postgresql":
        pytest.skip("SQLite stores a string of any length in a VARCHAR column")
    with inbox.engine.begin() as conn:
        conn.execute(sa.text(f'ALTER TABLE "{inbox.table.name}" ALTER COLUMN event_type TYPE VARCHAR(3)'))
    with pytest.raises(InboxDataError, match="refused the data") as refused:
        inbox.add(Event(None, "comment", "t", "b", recipients=["alice"]), ["alice"], delivery_id="d1")
    assert isinstance(refused.value, PermanentConsumerError)


def test_cursors_are_signed_with_the_secret_key(app: Flask, inbox: Inbox) -> None:
    from flask_notifications.errors import ConfigurationError

    for n in range(3):
        inbox.add(Event(None, "comment", f"n{n}", "", recipients=["alice"]), ["alice"], delivery_id=f"d{n}")
    cursor = inbox.list("alice", limit=1).next_cursor
    assert cursor is not None
    # Another process with the same key accepts it; one with a rotated key
    # accepts it while the old key is a fallback.
    app.config.update(SECRET_KEY="rotated", SECRET_KEY_FALLBACKS=[app.config["SECRET_KEY"]])
    assert len(inbox.list("alice", before=cursor).items) == 2
    app.config["SECRET_KEY_FALLBACKS"] = []
    with pytest.raises(InvalidCursorError, match="not a cursor"):
        inbox.list("alice", before=cursor)
    app.config["SECRET_KEY"] = None
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        inbox.list("alice", limit=1)
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        inbox.list("alice", before=cursor)


def test_a_delivery_to_many_users_is_stored_in_batches(
    notifications: Notifications, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Statements of 300 rows, so that 1,000 users take several of them.
    monkeypatch.setattr(writes, "PG_CHUNK", 300)
    monkeypatch.setattr(writes, "CHUNK", 300)
    hub = notifications.create_hub("Many")
    hub.register_consumer(InboxConsumer())
    subscription = notifications.backend.subscribe()
    subscription.add(hub.hub_id)
    users = [f"user-{n}" for n in range(1000)]
    event = make_event("broadcast", tuple(users))
    try:
        assert inbox.add(event, [*users[:10], "outsider", *users[10:]], delivery_id="d1")[:12] == [
            *users[:10],
            "outsider",
            users[10],
        ]
        badges: dict[str, tuple[int, int]] = {}
        deadline = time.monotonic() + 30
        while len(badges) < 1001 and time.monotonic() < deadline:
            for message in subscription.get(0.5):
                data = json.loads(message.data)
                (user,) = data["recipients"]
                badges[user] = (data["unread_count"], data["version"])
    finally:
        subscription.close()
    assert badges == {user: (1, 1) for user in [*users, "outsider"]}
    assert inbox.unread_counts([*users, "outsider"]) == dict.fromkeys([*users, "outsider"], 1)
    # Each row names its own user only; one the event does not name, no one.
    for user in ("user-0", "user-299", "user-300", "user-999"):
        (item,) = inbox.list(user).items
        assert item.event == {**event.to_dict(), "recipients": [user]}
    (item,) = inbox.list("outsider").items
    assert item.event == {**event.to_dict(), "recipients": []}
    # Stored again (a redelivery), only the users it had not reached are.
    assert inbox.add(event, ["user-5", "late", "user-700"], delivery_id="d1") == ["late"]


def test_an_event_with_a_nul_character_names_each_row_s_user_only(inbox: Inbox) -> None:
    event = make_event("a\x00b", ("alice", "bob"))
    assert inbox.add(event, ["alice", "bob"], delivery_id="nul") == ["alice", "bob"]
    for user in ("alice", "bob"):
        (item,) = inbox.list(user).items
        assert item.event == {**event.to_dict(), "recipients": [user]}


def test_badge_frames_are_badge_events() -> None:
    frames = [json.loads(frame) for frame in badge_frames({"alice": (3, 7), "bob": (0, 1)})]
    for frame, (user, count, version) in zip(frames, [("alice", 3, 7), ("bob", 0, 1)], strict=True):
        expected = badge_event(user, count, version).to_dict()
        assert Event.from_dict(frame).to_dict() == frame
        assert {**frame, "event_id": "", "timestamp": ""} == {**expected, "event_id": "", "timestamp": ""}
    assert frames[0]["event_id"] != frames[1]["event_id"]
    assert badge_frames({}) == []
