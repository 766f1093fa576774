"""The Alembic migration of the inbox table, for applications that manage
their schema with Alembic or Flask-Migrate.

``flask notifications inbox migration`` copies it into the application's
``migrations/versions``, after the current head, with the configured table
name; ``flask db upgrade`` then creates the table. Autogenerate does not know
the inbox table: give ``env.py`` the :func:`include_object` hook, so that
``flask db migrate`` does not propose to drop it.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from ...database.migrations import configured_table, includes
from ..model import DEFAULT_TABLE

#: The migration script that ``flask notifications inbox migration`` copies.
TEMPLATE = str(
    files("flask_notifications.inbox") / "migrations" / "versions" / "a3f1c9e2b7d4_create_notifications_inbox.py"
)


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """An ``include_object`` hook for Alembic's autogenerate that leaves the
    inbox tables (and their indexes) to the inbox's own migration, so that
    ``flask db migrate`` does not propose to drop it::

        # migrations/env.py
        from flask_notifications.inbox import include_object
        context.configure(..., include_object=include_object)
    """
    inbox = configured_table("NOTIFICATIONS_INBOX_TABLE", DEFAULT_TABLE)
    return includes((inbox, f"{inbox}_versions"), obj, name, type_)
