"""Fixtures of the inbox tests: each runs on SQLite and on the real
PostgreSQL (``INBOX_POSTGRES_URL``, by default the local server's ``test``
database), in a table of its own, so parallel runs never collide. Without a
PostgreSQL server the PostgreSQL half skips, saying why."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_notifications import Notifications
from flask_notifications.inbox import Inbox

POSTGRES_URL = os.environ.get("INBOX_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of a PostgreSQL that answers, or a skip saying why not."""
    engine = sa.create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        pytest.skip(f"No PostgreSQL answers at {POSTGRES_URL} ({str(exc.orig).strip()[:120]}); set INBOX_POSTGRES_URL.")
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def inbox_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database for the inbox: a SQLite file, or the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'inbox.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def table_name(unique: str) -> str:
    return "inbox_" + unique.replace("-", "_")


@pytest.fixture
def inbox(app: Flask, notifications: Notifications, inbox_url: str, unique: str) -> Iterator[Inbox]:
    """The inbox of the test app, its table created, dropped at the end."""
    app.config["NOTIFICATIONS_INBOX_URL"] = inbox_url
    app.config["NOTIFICATIONS_INBOX_TABLE"] = table_name(unique)
    app.config["SECRET_KEY"] = app.config.get("SECRET_KEY") or "inbox-tests"  # signs the page cursors
    inbox = notifications.inbox
    inbox.create_all()
    yield inbox
    with app.app_context():
        inbox.drop_all()
        inbox.close()
