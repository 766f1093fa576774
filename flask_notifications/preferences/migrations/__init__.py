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

from flask import current_app, has_app_context

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
    table = _table_name()
    if type_ == "table":
        return name != table
    return getattr(getattr(obj, "table", None), "name", None) != table


def _table_name() -> str:
    if has_app_context():
        return str(current_app.config.get("NOTIFICATIONS_PREFERENCES_TABLE") or DEFAULT_TABLE)
    return DEFAULT_TABLE
