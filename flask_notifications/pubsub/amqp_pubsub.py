"""Moved to :mod:`flask_notifications.backends.amqp`; this import path keeps working."""

from __future__ import annotations

from ..backends.amqp import (
    DEFAULT_URL,
    AmqpPubSub,
)

__all__ = [
    "AmqpPubSub",
    "DEFAULT_URL",
]
