"""SQLAlchemy helpers shared by the inbox and the SQL ledger: the engine an
application's setting names, with bounded waits, and schema creation that is
safe when several processes run it at once."""

from __future__ import annotations

from .engine import UNBOUNDED, Timeouts, create_engine, engine_for
from .schema import CREATE_ATTEMPTS, create_tables

__all__ = ["CREATE_ATTEMPTS", "UNBOUNDED", "Timeouts", "create_engine", "create_tables", "engine_for"]
