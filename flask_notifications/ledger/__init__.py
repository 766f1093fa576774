"""The ledger: claims, idempotency keys and dead letters, shared by the
processes of a deployment (:mod:`~flask_notifications.ledger.base`), on
Redis, SQL or in one process's memory."""

from __future__ import annotations

from .base import Claim, Ledger, build_ledger, resolve_ledger

__all__ = ["Claim", "Ledger", "build_ledger", "resolve_ledger"]
