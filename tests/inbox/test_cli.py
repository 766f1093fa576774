"""``flask notifications inbox init-db|purge`` on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_notifications import Event, Notifications
from tests.helpers import free_port
from tests.inbox.conftest import table_name

pytestmark = [pytest.mark.redis]


def test_init_db_creates_the_table_once(app: Flask, notifications: Notifications, inbox_url: str, unique: str) -> None:
    app.config["NOTIFICATIONS_INBOX_URL"] = inbox_url
    app.config["NOTIFICATIONS_INBOX_TABLE"] = table_name(unique)
    runner = app.test_cli_runner()
    engine = sa.create_engine(inbox_url)
    try:
        for _ in range(2):
            result = runner.invoke(args=["notifications", "inbox", "init-db"])
            assert result.exit_code == 0, result.output
            assert f"The inbox table '{table_name(unique)}' is ready" in result.output
        inspector = sa.inspect(engine)
        assert inspector.has_table(table_name(unique))
        indexes = {index["name"] for index in inspector.get_indexes(table_name(unique))}
        assert f"ix_{table_name(unique)}_unread" in indexes
    finally:
        notifications.inbox.drop_all()
        notifications.inbox.close()
        engine.dispose()


def test_purge(app: Flask, notifications: Notifications, inbox: object) -> None:
    store = notifications.inbox
    for n in range(3):
        event = Event(None, "t", f"n{n}", "", recipients=["alice"])
        store.add(event, ["alice"], delivery_id=event["event_id"])
    t = store.table
    with store.engine.begin() as conn:
        oldest = conn.execute(sa.select(sa.func.min(t.c.id))).scalar_one()
        conn.execute(sa.update(t).where(t.c.id == oldest).values(created_at=datetime.now(UTC) - timedelta(days=100)))
    runner = app.test_cli_runner()
    result = runner.invoke(args=["notifications", "inbox", "purge"])
    assert result.exit_code == 1 and "NOTIFICATIONS_INBOX_RETENTION" in result.output
    result = runner.invoke(args=["notifications", "inbox", "purge", "--days", "-1"])
    assert result.exit_code == 2
    result = runner.invoke(args=["notifications", "inbox", "purge", "--days", "120"])
    assert (result.exit_code, result.output) == (0, "Deleted 0 notifications.\n")
    app.config["NOTIFICATIONS_INBOX_RETENTION"] = timedelta(days=90)
    result = runner.invoke(args=["notifications", "inbox", "purge"])
    assert (result.exit_code, result.output) == (0, "Deleted 1 notification.\n")
    assert len(store.list("alice").items) == 2


def test_database_down_is_a_message(app: Flask, notifications: Notifications) -> None:
    app.config["NOTIFICATIONS_INBOX_URL"] = f"postgresql+psycopg://postgres:secret@127.0.0.1:{free_port()}/test"
    runner = app.test_cli_runner()
    for args in (["init-db"], ["purge", "--days", "1"]):
        result = runner.invoke(args=["notifications", "inbox", *args])
        assert result.exit_code == 1
        assert "Error: The inbox database failed" in result.output and "Connection refused" in result.output
        assert "Traceback" not in result.output and "secret" not in result.output
