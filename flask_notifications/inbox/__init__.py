"""The notification inbox: every user's notifications kept in SQL, with
their read state and a live unread count. Needs the ``inbox`` extra
(SQLAlchemy 2). Each name is imported on first use, so that the
package, and the ``flask notifications`` commands, import without it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .badges import BADGE_EVENT_TYPE, badge_event
    from .migrations import include_object
    from .model import DEFAULT_TABLE, InboxItem, InboxPage, define_table, define_versions_table
    from .store import Inbox
    from .views import inbox_blueprint

__all__ = [
    "BADGE_EVENT_TYPE",
    "DEFAULT_TABLE",
    "Inbox",
    "InboxItem",
    "InboxPage",
    "badge_event",
    "define_table",
    "define_versions_table",
    "inbox_blueprint",
    "include_object",
]

_HOMES = {
    "BADGE_EVENT_TYPE": "badges",
    "badge_event": "badges",
    "include_object": "migrations",
    "DEFAULT_TABLE": "model",
    "InboxItem": "model",
    "InboxPage": "model",
    "define_table": "model",
    "define_versions_table": "model",
    "Inbox": "store",
    "inbox_blueprint": "views",
}

__getattr__ = lazy_exports(__name__, _HOMES)
