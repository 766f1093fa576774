"""The shipped Alembic migration of the push subscriptions table, as a
Flask-Migrate application runs it (``flask db init``, ``flask notifications
webpush migration``, ``flask db upgrade``), on SQLite and PostgreSQL: the
table it creates is the one :func:`define_subscriptions_table` defines, and
``flask db migrate`` then proposes nothing about it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_notifications import Notifications
from flask_notifications.webpush import push_subscriptions
from flask_notifications.webpush.migrations import DEFAULT_TABLE, include_object
from flask_notifications.webpush.subscriptions import define_subscriptions_table
from tests.consumers.push_service import Device
from tests.helpers.migrations import MigratedApp, own_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of the test's own: a SQLite file, or a PostgreSQL schema."""
    url = f"sqlite:///{tmp_path / 'app.sqlite3'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    with own_database(url, "pushmig") as own:
        yield own


# The hook as docs/channels.rst shows it, with the inbox's.
HOOKS = (
    "from flask_notifications.inbox import include_object as inbox_object\n"
    "from flask_notifications.webpush.migrations import include_object as push_object\n"
    "def include_object(*args):\n"
    "    return inbox_object(*args) and push_object(*args)\n"
)


# Flask-Migrate's own env.py template tries Flask-SQLAlchemy 2's get_engine() first.
@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_flask_migrate_upgrade_creates_the_push_subscriptions_table(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Flask("migrated", instance_path=str(tmp_path))
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database,
        NOTIFICATIONS_BACKEND="memory",
        CELERY_BROKER_URL="memory://localhost/",
        CELERY_TASK_ALWAYS_EAGER=True,
        NOTIFICATIONS_WEBPUSH_ENDPOINTS=["https://push.example"],
    )
    migrated = MigratedApp(app, tmp_path, monkeypatch)
    Notifications(app)
    migrated.init()
    revision = migrated.add("webpush", DEFAULT_TABLE)
    migrated.hook(HOOKS)
    migrated.flask("db", "upgrade")
    try:
        assert migrated.heads() == (revision,)
        # The migrated table is exactly the one the store defines.
        expected = sa.MetaData()
        define_subscriptions_table(expected)
        assert migrated.differences(expected) == []
        # The app's own migration sees its model, and leaves the table alone.
        migrated.own_migration(DEFAULT_TABLE, revision)
        with app.app_context():
            # And the store works on it, through Flask-SQLAlchemy's engine.
            device = Device("laptop").subscription("https://push.example")
            push_subscriptions.subscribe("alice", device)
            assert [s.endpoint for s in push_subscriptions.of_users(["alice"])] == [device["endpoint"]]
        migrated.flask("db", "downgrade", "base")
        assert not migrated.has_table(DEFAULT_TABLE)
    finally:
        migrated.dispose()


def test_include_object_leaves_only_the_push_subscriptions_table_out() -> None:
    metadata = sa.MetaData()
    table = define_subscriptions_table(metadata)
    other = sa.Table("other", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Index("ix_o", "id"))
    assert not include_object(table, DEFAULT_TABLE, "table", True, None)
    assert not include_object(next(iter(table.indexes)), "ix", "index", True, None)
    assert include_object(other, "other", "table", False, None)
    assert include_object(next(iter(other.indexes)), "ix_o", "index", False, None)


def test_migration_needs_a_migrations_folder(tmp_path: Path) -> None:
    app = Flask("unmigrated")
    app.config.update(NOTIFICATIONS_BACKEND="memory", CELERY_BROKER_URL="memory://localhost/")
    Notifications(app)
    result = app.test_cli_runner().invoke(
        args=["notifications", "webpush", "migration", "-d", str(tmp_path / "nowhere")]
    )
    assert result.exit_code == 1 and "is not an Alembic migrations folder ('flask db init')" in result.output
