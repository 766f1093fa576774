"""Moved to :mod:`flask_notifications.ops.gunicorn`; this import path keeps working."""

from __future__ import annotations

from .ops.gunicorn import (
    GeventWorker,
    child_exit,
    post_worker_init,
)

__all__ = [
    "GeventWorker",
    "child_exit",
    "post_worker_init",
]
