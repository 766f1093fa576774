"""The Alembic migration of the inbox table, for applications that manage
their schema with Alembic or Flask-Migrate.

Add its folder to ``version_locations`` in ``migrations/alembic.ini``::

    [alembic]
    version_locations = %(here)s/versions flask_notifications.inbox:migrations/versions

then ``flask db upgrade heads`` creates the table. It is a branch of its own,
labelled ``flask_notifications_inbox``, and creates the table under its
default name (``notifications_inbox``).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from ..model import DEFAULT_TABLE

#: The ``version_locations`` entry of the inbox's migrations.
MIGRATIONS = "flask_notifications.inbox:migrations/versions"
#: The branch label of the inbox's migrations.
BRANCH = "flask_notifications_inbox"


def versions_path() -> str:
    """The folder of the migration scripts, as a file system path."""
    return str(files("flask_notifications.inbox") / "migrations" / "versions")


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """An ``include_object`` hook for Alembic's autogenerate that leaves the
    inbox table (and its indexes) to the inbox's own migration, so that
    ``flask db migrate`` does not propose to drop it::

        # migrations/env.py
        from flask_notifications.inbox import include_object
        context.configure(..., include_object=include_object)
    """
    if type_ == "table":
        return name != DEFAULT_TABLE
    table = getattr(obj, "table", None)
    return getattr(table, "name", None) != DEFAULT_TABLE
