"""Events of one id."""

from __future__ import annotations

from ._field import _FieldEquals


class WithId(_FieldEquals):
    """Passes events whose ``event_id`` equals ``value``."""

    field = "event_id"
