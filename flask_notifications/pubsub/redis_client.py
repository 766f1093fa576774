"""Moved to :mod:`flask_notifications.backends.redis_client`; this import path keeps working."""

from __future__ import annotations

from ..backends.redis_client import (
    CLUSTER_SCHEME,
    SENTINEL_SCHEME,
    client_from_url,
    is_cluster,
)

__all__ = [
    "CLUSTER_SCHEME",
    "SENTINEL_SCHEME",
    "client_from_url",
    "is_cluster",
]
