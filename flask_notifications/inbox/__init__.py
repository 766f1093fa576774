"""The notification inbox: every user's notifications kept in SQL, with
their read state and a live unread count. Needs the ``inbox`` extra
(SQLAlchemy 2)."""

from __future__ import annotations

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
