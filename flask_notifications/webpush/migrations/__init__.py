"""The Alembic migration of the push subscriptions table, for applications
that manage their schema with Alembic or Flask-Migrate.

``flask notifications webpush migration`` copies it into the application's
``migrations/versions``, after the current head, with the configured table
name; ``flask db upgrade`` then creates the table. Autogenerate does not know
the table: give ``env.py`` the :func:`include_object` hook (with the
inbox's), so that ``flask db migrate`` does not propose to drop it.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from ...database.migrations import configured_table, includes
from ..subscriptions import DEFAULT_TABLE

__all__ = ["DEFAULT_TABLE", "TEMPLATE", "include_object"]

#: The migration script that ``flask notifications webpush migration`` copies.
TEMPLATE = str(
    files("flask_notifications.webpush")
    / "migrations"
    / "versions"
    / "c7d2e5a9f1b3_create_notifications_push_subscriptions.py"
)


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """An ``include_object`` hook for Alembic's autogenerate that leaves the
    push subscriptions table (and its indexes) to its own migration. With
    the inbox's hook too::

        # migrations/env.py
        from flask_notifications.inbox import include_object as inbox_object
        from flask_notifications.webpush.migrations import include_object as push_object

        def include_object(*args):
            return inbox_object(*args) and push_object(*args)

        context.configure(..., include_object=include_object)
    """
    return includes((configured_table("NOTIFICATIONS_WEBPUSH_TABLE", DEFAULT_TABLE),), obj, name, type_)
