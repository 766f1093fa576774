"""The shipped Alembic migration, as a Flask-Migrate application runs it:
``flask db init``, ``flask notifications inbox migration``, ``flask db
upgrade``. The table it creates is the one the inbox defines, and ``flask db
migrate`` then proposes nothing about it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.inbox import DEFAULT_TABLE, define_table, define_versions_table, include_object
from tests.helpers import make_config


@pytest.fixture
def database(inbox_url: str) -> Iterator[str]:
    """A database of the test's own: a SQLite file, or a PostgreSQL schema."""
    if inbox_url.startswith("sqlite"):
        yield inbox_url
        return
    schema = f"mig_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(inbox_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{inbox_url}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


# Flask-Migrate's own env.py template tries Flask-SQLAlchemy 2's get_engine() first.
@pytest.mark.redis
@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_flask_migrate_upgrade_creates_the_inbox_table(
    database: str, tmp_path: Path, redis_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_migrate import Migrate
    from flask_sqlalchemy import SQLAlchemy

    app = Flask("migrated", instance_path=str(tmp_path))
    app.config.update(make_config(redis_url, unique, SQLALCHEMY_DATABASE_URI=database))
    db = SQLAlchemy(app)

    class Note(db.Model):  # type: ignore[name-defined,misc]
        id = sa.Column(sa.Integer, primary_key=True)

    directory = tmp_path / "migrations"
    Migrate(app, db, directory=str(directory))
    ext = Notifications(app)
    runner = app.test_cli_runner()
    monkeypatch.chdir(tmp_path)

    def flask_db(*args: str) -> Any:
        result = runner.invoke(args=["db", *args])
        assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
        return result

    flask_db("init", "--directory", str(directory))
    result = runner.invoke(args=["notifications", "inbox", "migration", "-d", str(directory)])
    assert result.exit_code == 0 and "flask db upgrade" in result.output, result.output
    (copied,) = (directory / "versions").glob("*_create_notifications_inbox.py")
    env = directory / "env.py"
    hook = "context.configure(\n        include_object=include_object,\n"
    # fileConfig() would disable every logger of the test process, which
    # later tests read with caplog.
    env.write_text(
        "from flask_notifications.inbox import include_object\n"
        + env.read_text().replace("context.configure(\n", hook).replace("fileConfig(config.config_file_name)", "pass")
    )
    flask_db("upgrade")
    try:
        with app.app_context():
            with db.engine.connect() as conn:
                context = MigrationContext.configure(conn)
                assert context.get_current_heads() == (copied.name.split("_", 1)[0],)
                # The migrated table is exactly the one the inbox defines.
                expected = sa.MetaData()
                define_table(expected)
                define_versions_table(expected)
                assert compare_metadata(context, expected) == []
            # The app's own migration sees its model, and leaves the inbox alone.
            flask_db("migrate", "-m", "notes")
            (script,) = (directory / "versions").glob("*notes.py")
            text = script.read_text()
            assert "create_table('note'" in text and DEFAULT_TABLE not in text
            assert f"down_revision = '{copied.name.split('_', 1)[0]}'" in text
            flask_db("upgrade")
            # And the inbox works on it, through Flask-SQLAlchemy's engine.
            event = Event(None, "t", "x", "", recipients=["alice"])
            ext.inbox.add(event, ["alice"], delivery_id="d")
            assert ext.inbox.unread_count("alice") == 1
            flask_db("downgrade", "base")
            assert not sa.inspect(db.engine).has_table(DEFAULT_TABLE)
            assert not sa.inspect(db.engine).has_table(f"{DEFAULT_TABLE}_versions")
    finally:
        with app.app_context():
            db.engine.dispose()
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
