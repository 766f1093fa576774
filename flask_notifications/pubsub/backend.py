"""Moved to :mod:`flask_notifications.backends.base`; this import path keeps working."""

from __future__ import annotations

from ..backends.base import (
    ALIASES,
    SEND_KEY_PREFIX,
    Backend,
    Claim,
    History,
    Lost,
    Message,
    MessageIds,
    Subscription,
    build_backend,
    parse_id,
    resolve_backend,
)

__all__ = [
    "ALIASES",
    "Backend",
    "Claim",
    "History",
    "Lost",
    "Message",
    "MessageIds",
    "SEND_KEY_PREFIX",
    "Subscription",
    "build_backend",
    "parse_id",
    "resolve_backend",
]
