"""Fixtures of the inbox tests: each runs on SQLite and on the real
PostgreSQL (``INBOX_POSTGRES_URL``, by default the local server's ``test``
database, the ``postgres_url`` fixture of tests/conftest.py), in a table of
its own, so parallel runs never collide. Without a PostgreSQL server the
PostgreSQL half skips, saying why."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from flask_notifications import Notifications
from flask_notifications.inbox import Inbox


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def inbox_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database for the inbox: a SQLite file, or the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'inbox.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def table_name(unique: str) -> str:
    return "inbox_" + unique.replace("-", "_")


def _inbox(app: Flask, notifications: Notifications, url: str, unique: str) -> Iterator[Inbox]:
    """The inbox of the test app on ``url``, its table created, dropped at the end."""
    app.config["NOTIFICATIONS_INBOX_URL"] = url
    app.config["NOTIFICATIONS_INBOX_TABLE"] = table_name(unique)
    app.config["SECRET_KEY"] = app.config.get("SECRET_KEY") or "inbox-tests"  # signs the page cursors
    inbox = notifications.inbox
    inbox.create_all()
    yield inbox
    with app.app_context():
        inbox.drop_all()
        inbox.close()


@pytest.fixture
def inbox(app: Flask, notifications: Notifications, inbox_url: str, unique: str) -> Iterator[Inbox]:
    """The inbox of the test app, on SQLite and on PostgreSQL."""
    yield from _inbox(app, notifications, inbox_url, unique)


@pytest.fixture
def pg_inbox(app: Flask, notifications: Notifications, postgres_url: str, unique: str) -> Iterator[Inbox]:
    """The test app's inbox on the real PostgreSQL."""
    yield from _inbox(app, notifications, postgres_url, unique)


@pytest.fixture
def sqlite_inbox(app: Flask, notifications: Notifications, unique: str, tmp_path: Path) -> Iterator[Inbox]:
    """The test app's inbox in a SQLite file."""
    yield from _inbox(app, notifications, f"sqlite:///{tmp_path / 'inbox.sqlite3'}", unique)
