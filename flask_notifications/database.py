"""SQLAlchemy helpers shared by the inbox and the SQL ledger: the engine an
application's setting names, and schema creation that is safe when several
processes run it at once."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from flask import Flask

#: Times :func:`create_tables` looks again after another process's
#: ``CREATE`` beat its own.
CREATE_ATTEMPTS = 5


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    # WAL lets the web process read while a worker writes; the busy timeout
    # makes a writer wait for the lock instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def engine_for(app: Flask, configured: object, sqlite_file: str) -> tuple[sa.Engine, bool]:
    """The engine a setting names, and whether it was created here (so the
    caller disposes of it).

    :param configured: a SQLAlchemy URL or :class:`~sqlalchemy.Engine`;
        ``None`` uses the app's Flask-SQLAlchemy engine if it has one, else
        SQLite in the instance folder.
    :param sqlite_file: the name of that SQLite file.
    """
    if isinstance(configured, sa.Engine):
        return configured, False
    if not configured and "sqlalchemy" in app.extensions:
        with app.app_context():
            engine: sa.Engine = app.extensions["sqlalchemy"].engine
        return engine, False
    if not configured:
        os.makedirs(app.instance_path, exist_ok=True)
        configured = "sqlite:///" + os.path.join(app.instance_path, sqlite_file)
    return create_engine(str(configured)), True


def create_engine(url: str) -> sa.Engine:
    """An engine on ``url``; SQLite gets WAL and a busy timeout, so that
    several processes share the file."""
    engine = sa.create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def create_tables(engine: sa.Engine, tables: tuple[sa.Table, ...]) -> None:
    """Create ``tables`` (and their indexes) that do not exist, safely when
    several processes do it at once, as the workers of ``gunicorn -w 4``
    booting together do.

    On PostgreSQL a transaction-scoped advisory lock makes the processes take
    turns, and the DDL is transactional. Elsewhere (SQLite, whose DDL takes
    the database's write lock) a ``CREATE`` that loses the race to another
    process fails with "already exists": the tables are then looked up again,
    and the creation repeated for whatever is still missing.
    """
    for attempt in range(CREATE_ATTEMPTS):
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    key = sum(ord(c) for c in tables[0].name) + 0x6E6F7469  # "noti"
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
                for table in tables:
                    table.create(conn, checkfirst=True)
            return
        except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError):
            # Another process created a table between our check and our
            # CREATE; a real failure (no database, no rights) repeats.
            if attempt == CREATE_ATTEMPTS - 1:
                raise
            if all(sa.inspect(engine).has_table(t.name, schema=t.schema) for t in tables):
                return
