"""Hostile review of issue 16 (the notification inbox: InboxConsumer,
``notifications.inbox``, the JSON blueprint and the live badge).

Each test reproduces one way to store a notification twice or lose one,
reach another user's rows, get a wrong unread count or badge, break keyset
pagination or break a promise of docs/inbox.rst, against the real
PostgreSQL (``test`` database, a table of the test's own), SQLite and Redis
(a key prefix of the test's own). A test marked ``xfail(strict=True)``
describes what should happen and fails today; it turns into an XPASS (and so
a failure of the suite) once the library is fixed, and the mark must go.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.errors import InvalidCursorError
from flask_notifications.filters.with_recipient import WithRecipient
from flask_notifications.inbox import BADGE_EVENT_TYPE, Inbox, badge_event, inbox_blueprint
from flask_notifications.inbox.consumer import InboxConsumer
from tests.helpers import wait_for
from tests.inbox.conftest import table_name


def make_event(recipients: tuple[str, ...] = ("alice",), body: str = "On your post", **extra: Any) -> Event:
    return Event(None, "comment", "New comment", body, sender="carol", recipients=recipients, **extra)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_inbox(request: pytest.FixtureRequest) -> Inbox:
    inbox: Inbox = request.getfixturevalue(f"{'pg' if request.param == 'postgresql' else 'sqlite'}_inbox")
    return inbox


def last_badge(notifications: Notifications, channel: str, user: str) -> int | None:
    """The unread count ``user``'s page ends up showing after a replay of
    ``channel``: that of the badge of the highest version (docs/inbox.rst;
    two stores publish in any order, each its own count and version)."""
    found: tuple[int, int] | None = None
    for message in notifications.backend.history(channel, None).messages:
        data = json.loads(message.data)
        if data["event_type"] == BADGE_EVENT_TYPE and data["recipients"] == [user]:
            if found is None or data["version"] > found[0]:
                found = (data["version"], data["unread_count"])
    return None if found is None else found[1]


def _threads_hold_at(engine: sa.Engine, event_name: str, holders: dict[int, threading.Event]) -> None:
    """Make the threads in ``holders`` wait for their event whenever their
    connection reaches ``event_name`` (a SQLAlchemy hook, no mock)."""

    def hold(*args: Any) -> None:
        gate = holders.get(threading.get_ident())
        if gate is not None:
            assert gate.wait(20), "the other thread never arrived"

    target = engine.pool if event_name == "checkin" else engine
    sa.event.listen(target, event_name, hold)


# -- wrong count / badge -------------------------------------------------------


@pytest.mark.redis
@pytest.mark.postgres
def test_concurrent_stores_publish_a_stale_unread_count(
    app: Flask, notifications: Notifications, pg_inbox: Inbox
) -> None:
    hub = notifications.create_hub("Bell")
    hub.register_consumer(InboxConsumer())
    barrier = threading.Barrier(2, timeout=20)

    def both_stored(conn: sa.Connection, cursor: object, statement: str, *args: object) -> None:
        # Both transactions hold their uncommitted row before either bumps
        # its badge's version (which then waits for the other's commit).
        if threading.current_thread().name.startswith("store-") and "(recipient, version)" in statement:
            barrier.wait()

    sa.event.listen(pg_inbox.engine, "before_cursor_execute", both_stored)
    errors: list[BaseException] = []

    def store(delivery: str) -> None:
        try:
            with app.app_context():
                pg_inbox.add(make_event(), ["alice"], delivery_id=delivery)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=store, args=(f"d{n}",), name=f"store-{n}") for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert pg_inbox.unread_count("alice") == 2
    assert last_badge(notifications, hub.hub_id, "alice") == 2


@pytest.mark.redis
def test_badge_published_out_of_order_shows_an_old_count(
    app: Flask, notifications: Notifications, any_inbox: Inbox
) -> None:
    inbox = any_inbox
    hub = notifications.create_hub("Bell")
    hub.register_consumer(InboxConsumer())
    inbox.add(make_event(), ["alice"], delivery_id="first")
    (item,) = inbox.list("alice").items
    # The reading tab commits its change, then is slow to publish (its
    # connection goes back to the pool between the two).
    gate = threading.Event()
    holders: dict[int, threading.Event] = {}
    _threads_hold_at(inbox.engine, "checkin", holders)

    def read() -> None:
        holders[threading.get_ident()] = gate
        with app.app_context():
            inbox.mark_read("alice", [item.id])

    reader = threading.Thread(target=read)
    reader.start()
    # Meanwhile the worker stores a new notification and publishes count 1.

    wait_for(lambda: inbox.unread_count("alice") == 0, timeout=20, interval=0.01)
    inbox.add(make_event(), ["alice"], delivery_id="second")
    gate.set()
    reader.join(20)
    assert inbox.unread_count("alice") == 1
    assert last_badge(notifications, hub.hub_id, "alice") == 1


def test_documented_stream_filter_with_an_integer_user_id_gets_the_badge() -> None:
    # docs/inbox.rst: "an integer is taken as its decimal string", and the
    # stream example filters with WithRecipient(current_user.id).
    assert WithRecipient(1)(badge_event("1", 3))  # type: ignore[arg-type]


# -- loses / stores for the wrong users ----------------------------------------


@pytest.mark.redis
@pytest.mark.postgres
def test_event_with_a_nul_character_is_stored_on_postgresql(pg_inbox: Inbox) -> None:
    event = make_event(body="before\x00after")
    pg_inbox.add(event, ["alice"], delivery_id="nul")
    (item,) = pg_inbox.list("alice").items
    assert item.event["body"] == "before\x00after"


@pytest.mark.redis
def test_recipients_function_returning_a_string_is_refused(app: Flask, sqlite_inbox: Inbox) -> None:
    consumer = InboxConsumer(recipients=lambda event: event["sender"], badge=False)
    refused: Exception | None = None
    try:
        consumer.consume(make_event(()))
    except (TypeError, ValueError) as exc:
        refused = exc
    for user in ("c", "a", "r", "o", "l"):
        assert sqlite_inbox.unread_count(user) == 0, f"user {user!r} got carol's notification"
    assert refused is not None


@pytest.mark.redis
def test_one_overlong_recipient_does_not_cost_the_others_their_notification(sqlite_inbox: Inbox) -> None:
    event = make_event(("alice", "x" * 300))
    try:
        InboxConsumer(badge=False).consume(event)
    except Exception:
        pass
    assert sqlite_inbox.unread_count("alice") == 1


# -- keyset pagination and cursors --------------------------------------------


@pytest.mark.redis
def test_tampered_cursor_is_refused(any_inbox: Inbox) -> None:
    for n in range(3):
        any_inbox.add(make_event(), ["alice"], delivery_id=f"d{n}")
    page = any_inbox.list("alice", limit=1)
    assert page.next_cursor is not None
    tampered = page.next_cursor[:1] + "." + page.next_cursor[1:] + "!!"
    with pytest.raises(InvalidCursorError):
        any_inbox.list("alice", before=tampered)


@pytest.mark.redis
def test_sqlite_never_reuses_the_id_of_a_deleted_notification(sqlite_inbox: Inbox) -> None:
    sqlite_inbox.add(make_event(), ["alice"], delivery_id="old")
    (old,) = sqlite_inbox.list("alice").items
    sqlite_inbox.delete("alice", [old.id])
    sqlite_inbox.add(make_event(), ["alice"], delivery_id="new")
    (new,) = sqlite_inbox.list("alice").items
    assert new.id != old.id
    # What a tab that still shows the deleted notification does:
    with pytest.raises(LookupError):
        sqlite_inbox.mark_read("alice", [old.id])


# -- the blueprint -------------------------------------------------------------


@pytest.fixture
def inbox_client(app: Flask, notifications: Notifications, sqlite_inbox: Inbox) -> Any:
    app.register_blueprint(inbox_blueprint, url_prefix="/inbox")
    notifications.inbox.user_loader(lambda: "alice")
    sqlite_inbox.add(make_event(), ["alice"], delivery_id="d1")
    return app.test_client()


@pytest.mark.redis
def test_superscript_limit_is_answered_400(inbox_client: Any) -> None:
    response = inbox_client.get("/inbox/?limit=²")
    assert response.status_code == 400


@pytest.mark.redis
def test_tampered_cursor_is_answered_400(inbox_client: Any, sqlite_inbox: Inbox) -> None:
    sqlite_inbox.add(make_event(), ["alice"], delivery_id="d2")
    cursor = inbox_client.get("/inbox/?limit=1").get_json()["next_cursor"]
    response = inbox_client.get(f"/inbox/?before={cursor}%21%21")
    assert response.status_code == 400


# -- what held up (pass today) -------------------------------------------------


@pytest.mark.redis
@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "multipart/form-data; boundary=x"},
        {"Content-Type": "application/json", "Origin": "null"},
        {"Content-Type": "application/json", "Origin": "https://evil.example"},
        {"Content-Type": "application/json", "Origin": "http://localhost.evil.example"},
        {"Content-Type": "application/json", "Origin": "http://localhost@evil.example"},
        {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
        {"Content-Type": "application/json", "Sec-Fetch-Site": "same-site"},
        {"Content-Type": "application/json", "X-HTTP-Method-Override": "GET", "Origin": "https://evil.example"},
    ],
)
def test_cross_site_posts_are_refused(inbox_client: Any, sqlite_inbox: Inbox, headers: dict[str, str]) -> None:
    response = inbox_client.post("/inbox/read-all", data=json.dumps({}), headers=headers)
    assert response.status_code in (403, 415)
    assert sqlite_inbox.unread_count("alice") == 1


@pytest.mark.redis
def test_another_users_ids_are_refused_and_unchanged(inbox_client: Any, sqlite_inbox: Inbox) -> None:
    sqlite_inbox.add(make_event(("bob",)), ["bob"], delivery_id="b1")
    (bobs,) = sqlite_inbox.list("bob").items
    for route in ("read", "archive", "delete", "seen"):
        response = inbox_client.post(f"/inbox/{route}", json={"ids": [bobs.id, str(bobs.id)]})
        assert response.status_code == 404
    (still,) = sqlite_inbox.list("bob").items
    assert (still.read_at, still.archived_at, still.seen_at) == (None, None, None)


@pytest.mark.redis
def test_pages_never_repeat_or_skip_with_inserts_between_pages(any_inbox: Inbox) -> None:
    for n in range(7):
        any_inbox.add(make_event(), ["alice"], delivery_id=f"d{n}")
    seen: list[int] = []
    cursor = None
    n = 100
    while True:
        page = any_inbox.list("alice", before=cursor, limit=2)
        seen.extend(item.id for item in page.items)
        any_inbox.add(make_event(), ["alice"], delivery_id=f"d{n}")
        n += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) == 7
    assert seen == sorted(seen, reverse=True)


@pytest.mark.redis
def test_event_that_expires_while_the_database_is_down_is_still_stored(
    app: Flask, notifications: Notifications, unique: str, tmp_path: Path, celery_worker: Any
) -> None:
    from datetime import UTC, datetime, timedelta

    from celery import signals as celery_signals

    from flask_notifications import signals
    from tests.helpers import wait_for

    app.config.update(
        NOTIFICATIONS_INBOX_URL=f"sqlite:///{tmp_path / 'inbox.sqlite3'}",
        NOTIFICATIONS_INBOX_TABLE=table_name(unique),
        NOTIFICATIONS_RETRY_BACKOFF=2.0,
        NOTIFICATIONS_RETRY_BACKOFF_MAX=2.0,
        NOTIFICATIONS_RETRY_JITTER=False,
    )
    hub = notifications.create_hub("Expiring")
    hub.register_consumer(InboxConsumer(badge=False))
    failures: list[bool] = []
    outcomes: list[Any] = []

    def failed(sender: Any, **kwargs: Any) -> None:
        failures.append(kwargs["will_retry"])

    def ran(sender: Any = None, retval: Any = None, **kwargs: Any) -> None:
        if getattr(sender, "name", "") != "flask_notifications.dispatch":
            outcomes.append(retval)

    def revoked(sender: Any = None, request: Any = None, expired: bool = False, **kwargs: Any) -> None:
        outcomes.append("revoked (expired)" if expired else "revoked")

    signals.consumer_failed.connect(failed)
    celery_signals.task_postrun.connect(ran, weak=False)
    celery_signals.task_revoked.connect(revoked, weak=False)
    try:
        with celery_worker():
            # The table is not there yet: the database "does not answer".
            event = make_event(expiration_datetime=datetime.now(UTC) + timedelta(seconds=1))
            notifications.send(event)
            wait_for(lambda: failures)
            notifications.inbox.create_all()  # the database answers again
            wait_for(lambda: [o for o in outcomes if isinstance(o, str)])
    finally:
        signals.consumer_failed.disconnect(failed)
        celery_signals.task_postrun.disconnect(ran)
        celery_signals.task_revoked.disconnect(revoked)
        with app.app_context():
            unread = notifications.inbox.unread_count("alice")
            notifications.inbox.drop_all()
            notifications.inbox.close()
    assert unread == 1, f"the retry ended {outcomes!r} and stored nothing"
