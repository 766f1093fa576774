"""Moved to :mod:`flask_notifications.ops.metrics`; this import path keeps working."""

from __future__ import annotations

from .ops.metrics import (
    instrument,
    make_wsgi_app,
    mark_process_dead,
    multiprocess_mode,
    registry,
    render,
    sync,
)

__all__ = [
    "instrument",
    "make_wsgi_app",
    "mark_process_dead",
    "multiprocess_mode",
    "registry",
    "render",
    "sync",
]
