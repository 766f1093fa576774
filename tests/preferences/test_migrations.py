"""The shipped Alembic migration of the preferences table, as a
Flask-Migrate application runs it beside the inbox's: ``flask db init``,
``flask notifications inbox migration``, ``flask notifications preferences
migration``, ``flask db upgrade``; and ``init-db`` without Alembic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_notifications import Notifications
from flask_notifications.inbox import DEFAULT_TABLE as INBOX_TABLE
from flask_notifications.inbox import define_table, define_versions_table
from flask_notifications.inbox import include_object as inbox_object
from flask_notifications.preferences import DEFAULT_TABLE, define_preferences_table, include_object
from tests.helpers import make_config
from tests.helpers.migrations import MigratedApp
from tests.inbox.test_migration import database  # noqa: F401 - the fixture
from tests.preferences.conftest import Recording

pytestmark = [pytest.mark.redis]


def both(*args: Any) -> bool:
    """The env.py hook of an application with both tables."""
    return inbox_object(*args) and include_object(*args)


@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_flask_migrate_upgrade_creates_the_preferences_table(
    database: str,  # noqa: F811
    tmp_path: Path,
    redis_url: str,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = Flask("migrated", instance_path=str(tmp_path))
    app.config.update(make_config(redis_url, unique, SQLALCHEMY_DATABASE_URI=database))
    migrated = MigratedApp(app, tmp_path, monkeypatch)
    ext = Notifications(app)
    ext.create_hub("news").register_consumer(Recording("email"))
    migrated.init()
    inbox = migrated.add("inbox", INBOX_TABLE)
    result = migrated.flask("notifications", "preferences", "migration", "-d", str(migrated.directory))
    assert "include_object" in result.output
    (copied,) = (migrated.directory / "versions").glob(f"*_create_{DEFAULT_TABLE}.py")
    migrated.hook("from tests.preferences.test_migrations import both\n", "both")
    migrated.flask("db", "upgrade")
    try:
        # The preferences' migration comes after the inbox's.
        assert migrated.heads() == (copied.name.split("_", 1)[0],)
        expected = sa.MetaData()
        define_table(expected)
        define_versions_table(expected)
        define_preferences_table(expected)
        assert migrated.differences(expected) == []
        with app.app_context():
            # The preferences work on it, through Flask-SQLAlchemy's engine.
            ext.preferences.set("alice", "news", "email", False)
            assert ext.preferences.get("alice") == {"news": {"email": False}}
        migrated.flask("db", "downgrade", inbox)
        assert not migrated.has_table(DEFAULT_TABLE)
    finally:
        migrated.dispose()
        ext.get_backend(app).close()


def test_include_object_leaves_only_the_preferences_out() -> None:
    metadata = sa.MetaData()
    table = define_preferences_table(metadata)
    other = sa.Table("other", metadata, sa.Column("id", sa.Integer, primary_key=True))
    assert not include_object(table, DEFAULT_TABLE, "table", True, None)
    assert include_object(other, "other", "table", False, None)


@pytest.fixture
def sqlite_app(app: Flask, notifications: Notifications, tmp_path: Path) -> Iterator[Flask]:
    app.config["NOTIFICATIONS_INBOX_URL"] = f"sqlite:///{tmp_path / 'prefs.sqlite3'}"
    yield app


def test_init_db_creates_the_table(sqlite_app: Flask, notifications: Notifications) -> None:
    result = sqlite_app.test_cli_runner().invoke(args=["notifications", "preferences", "init-db"])
    assert result.exit_code == 0 and "The preferences table 'notifications_preferences' is ready" in result.output
    assert sa.inspect(notifications.inbox.engine).has_table(DEFAULT_TABLE)
    notifications.inbox.close()


def test_migration_needs_a_migrations_folder(sqlite_app: Flask, tmp_path: Path) -> None:
    args = ["notifications", "preferences", "migration", "-d", str(tmp_path / "nowhere")]
    result = sqlite_app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 1 and "is not an Alembic migrations folder ('flask db init')" in result.output
