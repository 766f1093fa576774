"""Moved to :mod:`flask_notifications.backends.redis`; this import path keeps working."""

from __future__ import annotations

from ..backends.redis import (
    RedisPubSub,
)

__all__ = [
    "RedisPubSub",
]
