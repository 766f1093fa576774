"""Moved to :mod:`flask_notifications.ops.health`; this import path keeps working."""

from __future__ import annotations

from .ops.health import (
    blueprint,
    live,
    ready,
    unready_reason,
)

__all__ = [
    "blueprint",
    "live",
    "ready",
    "unready_reason",
]
