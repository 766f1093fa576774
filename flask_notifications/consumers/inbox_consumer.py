"""Moved to :mod:`flask_notifications.inbox.consumer`; this import path keeps working."""

from __future__ import annotations

from ..inbox.consumer import InboxConsumer

__all__ = ["InboxConsumer"]
