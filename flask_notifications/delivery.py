"""Moved to :mod:`flask_notifications.worker.delivery`; this import path keeps working."""

from __future__ import annotations

from .worker.delivery import (
    Delivery,
    current_delivery,
    delivering,
)

__all__ = [
    "Delivery",
    "current_delivery",
    "delivering",
]
