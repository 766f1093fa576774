"""The shipped Alembic migration, as a Flask-Migrate application runs it:
``flask db init``, ``flask notifications inbox migration``, ``flask db
upgrade``. The table it creates is the one the inbox defines, and ``flask db
migrate`` then proposes nothing about it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.inbox import DEFAULT_TABLE, define_table, define_versions_table, include_object
from tests.helpers import make_config
from tests.helpers.migrations import MigratedApp, own_database


@pytest.fixture
def database(inbox_url: str) -> Iterator[str]:
    """A database of the test's own: a SQLite file, or a PostgreSQL schema."""
    with own_database(inbox_url, "mig") as url:
        yield url


# Flask-Migrate's own env.py template tries Flask-SQLAlchemy 2's get_engine() first.
@pytest.mark.redis
@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_flask_migrate_upgrade_creates_the_inbox_table(
    database: str, tmp_path: Path, redis_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Flask("migrated", instance_path=str(tmp_path))
    app.config.update(make_config(redis_url, unique, SQLALCHEMY_DATABASE_URI=database))
    migrated = MigratedApp(app, tmp_path, monkeypatch)
    ext = Notifications(app)
    migrated.init()
    revision = migrated.add("inbox", DEFAULT_TABLE)
    migrated.hook("from flask_notifications.inbox import include_object\n")
    migrated.flask("db", "upgrade")
    try:
        assert migrated.heads() == (revision,)
        # The migrated table is exactly the one the inbox defines.
        expected = sa.MetaData()
        define_table(expected)
        define_versions_table(expected)
        assert migrated.differences(expected) == []
        # The app's own migration sees its model, and leaves the inbox alone.
        migrated.own_migration(DEFAULT_TABLE, revision)
        with app.app_context():
            # And the inbox works on it, through Flask-SQLAlchemy's engine.
            event = Event(None, "t", "x", "", recipients=["alice"])
            ext.inbox.add(event, ["alice"], delivery_id="d")
            assert ext.inbox.unread_count("alice") == 1
        migrated.flask("db", "downgrade", "base")
        assert not migrated.has_table(DEFAULT_TABLE)
        assert not migrated.has_table(f"{DEFAULT_TABLE}_versions")
    finally:
        migrated.dispose()
        ext.get_backend(app).close()


def test_include_object_leaves_only_the_inbox_out() -> None:
    metadata = sa.MetaData()
    inbox = define_table(metadata)
    other = sa.Table("other", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Index("ix_o", "id"))
    assert not include_object(inbox, DEFAULT_TABLE, "table", True, None)
    assert not include_object(next(iter(inbox.indexes)), "ix", "index", True, None)
    versions = define_versions_table(metadata)
    assert not include_object(versions, versions.name, "table", True, None)
    assert include_object(other, "other", "table", False, None)
    assert include_object(next(iter(other.indexes)), "ix_o", "index", False, None)


@pytest.mark.redis
def test_migration_needs_a_migrations_folder(app: Flask, notifications: Notifications, tmp_path: Path) -> None:
    result = app.test_cli_runner().invoke(args=["notifications", "inbox", "migration", "-d", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "is not an Alembic migrations folder ('flask db init')" in result.output
