"""The ledger: claims, idempotency keys, dead letters, the outbox and the
due-table of timers, shared by the processes of a deployment (:mod:`~flask_notifications.ledger.base`), on
Redis, SQL or in one process's memory."""

from __future__ import annotations

from .base import Claim, DigestAdd, DueTimer, Ledger
from .choice import build_ledger, resolve_ledger

__all__ = ["Claim", "DigestAdd", "DueTimer", "Ledger", "build_ledger", "resolve_ledger"]
