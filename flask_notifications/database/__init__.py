"""SQLAlchemy helpers shared by the inbox, the preferences, the push
subscriptions and the SQL ledger: the engine an application's setting names,
with bounded waits, schema creation that is safe when several processes run it
at once, and what their Alembic migrations share.

Each name is imported on first use, so that the ``migration`` commands, which
:mod:`flask_notifications.database.migrations` builds, load without
SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import UNBOUNDED, Timeouts, create_engine, engine_for
    from .schema import CREATE_ATTEMPTS, create_tables, table_prefix

__all__ = ["CREATE_ATTEMPTS", "UNBOUNDED", "Timeouts", "create_engine", "create_tables", "engine_for", "table_prefix"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import engine, schema

    return getattr(engine if hasattr(engine, name) else schema, name)
