"""Moved to :mod:`flask_notifications.backends.memory`; this import path keeps working."""

from __future__ import annotations

from ..backends.memory import (
    MemoryPubSub,
)

__all__ = [
    "MemoryPubSub",
]
