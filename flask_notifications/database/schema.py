"""Schema creation that is safe when several processes run it at once, and
the table names a key prefix gives."""

from __future__ import annotations

import re

import sqlalchemy as sa

#: Times :func:`create_tables` looks again after another process's
#: ``CREATE`` beat its own.
CREATE_ATTEMPTS = 5


def table_prefix(key_prefix: str) -> str:
    """The start of the names of the tables of ``key_prefix``: each
    character that may not stand in an unquoted SQL name becomes ``_``."""
    return re.sub(r"\W", "_", key_prefix)


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
