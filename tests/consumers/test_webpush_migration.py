"""The shipped Alembic migration of the push subscriptions table, as a
Flask-Migrate application runs it (``flask db init``, ``flask notifications
webpush migration``, ``flask db upgrade``), on SQLite and PostgreSQL: the
table it creates is the one :func:`define_subscriptions_table` defines, and
``flask db migrate`` then proposes nothing about it."""

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

from flask_notifications import Notifications
from flask_notifications.webpush import push_subscriptions
from flask_notifications.webpush.migrations import DEFAULT_TABLE, include_object
from flask_notifications.webpush.subscriptions import define_subscriptions_table
from tests.consumers.push_service import Device


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of the test's own: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.sqlite3'}"
        return
    url: str = request.getfixturevalue("postgres_url")
    schema = f"pushmig_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


# Flask-Migrate's own env.py template tries Flask-SQLAlchemy 2's get_engine() first.
@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_flask_migrate_upgrade_creates_the_push_subscriptions_table(
    database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_migrate import Migrate
    from flask_sqlalchemy import SQLAlchemy

    app = Flask("migrated", instance_path=str(tmp_path))
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database,
        NOTIFICATIONS_BACKEND="memory",
        CELERY_BROKER_URL="memory://localhost/",
        CELERY_TASK_ALWAYS_EAGER=True,
        NOTIFICATIONS_WEBPUSH_ENDPOINTS=["https://push.example"],
    )
    db = SQLAlchemy(app)

    class Note(db.Model):  # type: ignore[name-defined,misc]
        id = sa.Column(sa.Integer, primary_key=True)

    directory = tmp_path / "migrations"
    Migrate(app, db, directory=str(directory))
    Notifications(app)
    runner = app.test_cli_runner()
    monkeypatch.chdir(tmp_path)

    def flask_db(*args: str) -> Any:
        result = runner.invoke(args=["db", *args])
        assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
        return result

    flask_db("init", "--directory", str(directory))
    result = runner.invoke(args=["notifications", "webpush", "migration", "-d", str(directory)])
    assert result.exit_code == 0 and "flask db upgrade" in result.output, result.output
    (copied,) = (directory / "versions").glob(f"*_create_{DEFAULT_TABLE}.py")
    revision = copied.name.split("_", 1)[0]
    env = directory / "env.py"
    hook = "context.configure(\n        include_object=include_object,\n"
    # fileConfig() would disable every logger of the test process, which
    # later tests read with caplog.
    # The hook as docs/channels.rst shows it, with the inbox's.
    hooks = (
        "from flask_notifications.inbox import include_object as inbox_object\n"
        "from flask_notifications.webpush.migrations import include_object as push_object\n"
        "def include_object(*args):\n"
        "    return inbox_object(*args) and push_object(*args)\n"
    )
    env.write_text(
        hooks
        + env.read_text().replace("context.configure(\n", hook).replace("fileConfig(config.config_file_name)", "pass")
    )
    flask_db("upgrade")
    try:
        with app.app_context():
            with db.engine.connect() as conn:
                context = MigrationContext.configure(conn)
                assert context.get_current_heads() == (revision,)
                # The migrated table is exactly the one the store defines.
                expected = sa.MetaData()
                define_subscriptions_table(expected)
                assert compare_metadata(context, expected) == []
            # The app's own migration sees its model, and leaves the table alone.
            flask_db("migrate", "-m", "notes")
            (script,) = (directory / "versions").glob("*notes.py")
            text = script.read_text()
            assert "create_table('note'" in text and DEFAULT_TABLE not in text
            assert f"down_revision = '{revision}'" in text
            flask_db("upgrade")
            # And the store works on it, through Flask-SQLAlchemy's engine.
            device = Device("laptop").subscription("https://push.example")
            push_subscriptions.subscribe("alice", device)
            assert [s.endpoint for s in push_subscriptions.of_users(["alice"])] == [device["endpoint"]]
            flask_db("downgrade", "base")
            assert not sa.inspect(db.engine).has_table(DEFAULT_TABLE)
    finally:
        with app.app_context():
            db.engine.dispose()


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
