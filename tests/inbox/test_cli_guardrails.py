"""``flask notifications inbox purge --days 0`` asks first and its refusal
names ``--days``; ``inbox migration`` says to add the include_object hook
(issue 23)."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.inbox import Inbox

pytestmark = pytest.mark.redis


def fill(inbox: Inbox, count: int) -> None:
    for n in range(count):
        event = Event(None, "t", f"n{n}", "", recipients=["alice"])
        inbox.add(event, ["alice"], delivery_id=event["event_id"])


def test_purge_without_an_age_names_days(app: Flask, inbox: Inbox) -> None:
    result = app.test_cli_runner().invoke(args=["notifications", "inbox", "purge"])
    assert result.exit_code == 1
    assert "--days N" in result.output and "NOTIFICATIONS_INBOX_RETENTION" in result.output


def test_purge_days_zero_asks_first(app: Flask, inbox: Inbox) -> None:
    fill(inbox, 2)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["notifications", "inbox", "purge", "--days", "0"], input="n\n")
    assert result.exit_code == 1 and "deletes every notification" in result.output, result.output
    assert len(inbox.list("alice").items) == 2
    result = runner.invoke(args=["notifications", "inbox", "purge", "--days", "0"], input="y\n")
    assert result.exit_code == 0 and "Deleted 2 notifications." in result.output, result.output
    fill(inbox, 1)
    result = runner.invoke(args=["notifications", "inbox", "purge", "--days", "0", "--yes"])
    assert (result.exit_code, result.output) == (0, "Deleted 1 notification.\n")


@pytest.mark.parametrize("inbox_url", ["sqlite"], indirect=True)
def test_migration_mentions_the_include_object_hook(
    app: Flask, notifications: Notifications, tmp_path: Path, inbox_url: str
) -> None:
    from alembic import command
    from alembic.config import Config

    directory = tmp_path / "migrations"
    command.init(Config(str(tmp_path / "alembic.ini")), str(directory))
    result = app.test_cli_runner().invoke(args=["notifications", "inbox", "migration", "-d", str(directory)])
    assert result.exit_code == 0, result.output
    assert "from flask_notifications.inbox import include_object" in result.output
    assert "include_object=include_object" in result.output
