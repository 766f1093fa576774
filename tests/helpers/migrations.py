"""A Flask-Migrate application for the tests of the shipped Alembic
migrations (the inbox's, the push subscriptions', the preferences'): a
database of the test's own, ``flask db`` and ``flask notifications ...
migration`` run through Flask's CLI runner, and the ``env.py`` hook the docs
show."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask


@contextmanager
def own_database(url: str, prefix: str) -> Iterator[str]:
    """The URL of a database of the test's own: ``url`` itself for SQLite
    (a file of the test's), else a PostgreSQL schema made for it and dropped
    afterwards."""
    if url.startswith("sqlite"):
        yield url
        return
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


class MigratedApp:
    """``app`` with Flask-SQLAlchemy, one model of its own (``note``) and
    Flask-Migrate's migrations folder in ``tmp_path / "migrations"``, set up
    with ``flask db init``. Construct it before ``Notifications(app)``.

    :param app: configured with ``SQLALCHEMY_DATABASE_URI``.
    """

    def __init__(self, app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from flask_migrate import Migrate
        from flask_sqlalchemy import SQLAlchemy

        self.app = app
        self.db = db = SQLAlchemy(app)

        class Note(db.Model):  # type: ignore[name-defined,misc]
            id = sa.Column(sa.Integer, primary_key=True)

        self.directory = tmp_path / "migrations"
        Migrate(app, db, directory=str(self.directory))
        self.runner = app.test_cli_runner()
        monkeypatch.chdir(tmp_path)

    def flask(self, *args: str) -> Any:
        """Run ``flask ARGS...`` and return its result; it must succeed."""
        result = self.runner.invoke(args=list(args))
        assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
        return result

    def init(self) -> None:
        self.flask("db", "init", "--directory", str(self.directory))

    def add(self, kind: str, table: str) -> str:
        """``flask notifications KIND migration``: copy the shipped migration
        that creates ``table``, and return its revision."""
        result = self.flask("notifications", kind, "migration", "-d", str(self.directory))
        assert "flask db upgrade" in result.output, result.output
        (copied,) = (self.directory / "versions").glob(f"*_create_{table}.py")
        return copied.name.split("_", 1)[0]

    def hook(self, header: str, name: str = "include_object") -> None:
        """Give ``env.py`` the ``include_object`` hook the docs show:
        ``header`` imports (or defines) ``name``."""
        env = self.directory / "env.py"
        text = env.read_text().replace("context.configure(\n", f"context.configure(\n        include_object={name},\n")
        # fileConfig() would disable every logger of the test process, which
        # later tests read with caplog.
        env.write_text(header + text.replace("fileConfig(config.config_file_name)", "pass"))

    def heads(self) -> tuple[str, ...]:
        with self.app.app_context(), self.db.engine.connect() as conn:
            return tuple(MigrationContext.configure(conn).get_current_heads())

    def differences(self, expected: sa.MetaData) -> list[Any]:
        """What Alembic's autogenerate finds between the database and ``expected``."""
        with self.app.app_context(), self.db.engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), expected))

    def own_migration(self, table: str, revision: str) -> None:
        """``flask db migrate`` sees the app's model and leaves ``table``
        alone, after ``revision``; then ``flask db upgrade``."""
        self.flask("db", "migrate", "-m", "notes")
        (script,) = (self.directory / "versions").glob("*notes.py")
        text = script.read_text()
        assert "create_table('note'" in text and table not in text
        assert f"down_revision = '{revision}'" in text
        self.flask("db", "upgrade")

    def has_table(self, table: str) -> bool:
        with self.app.app_context():
            return sa.inspect(self.db.engine).has_table(table)

    def dispose(self) -> None:
        with self.app.app_context():
            self.db.engine.dispose()
