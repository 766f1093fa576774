"""The Alembic migration of the preferences table, for applications that
manage their schema with Alembic or Flask-Migrate.

``flask notifications preferences migration`` copies it into the
application's ``migrations/versions``, after the current head, with the
configured table name; ``flask db upgrade`` then creates the table. Give
``env.py`` the :func:`include_object` hook, so that ``flask db migrate`` does
not propose to drop it.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from ...database.migrations import configured_table, includes
from ..model import DEFAULT_TABLE

#: The migration script that ``flask notifications preferences migration`` copies.
TEMPLATE = str(
    files("flask_notifications.preferences")
    / "migrations"
    / "versions"
    / "c5e2d8a1f094_create_notifications_preferences.py"
)


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """An ``include_object`` hook for Alembic's autogenerate that leaves the
    preferences table to its own migration::

        # migrations/env.py
        from flask_notifications.preferences import include_object
        context.configure(..., include_object=include_object)
    """
    return includes((configured_table("NOTIFICATIONS_PREFERENCES_TABLE", DEFAULT_TABLE),), obj, name, type_)
