"""Moved to :mod:`flask_notifications.ops.gunicorn`; this import path keeps working."""

from __future__ import annotations

from .ops.gunicorn import (
    child_exit,
    post_worker_init,
)

__all__ = [
    "child_exit",
    "post_worker_init",
]
