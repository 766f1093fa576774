"""Events of one type."""

from __future__ import annotations

from ._field import _FieldEquals


class WithEventType(_FieldEquals):
    """Passes events whose ``event_type`` equals ``value``."""

    field = "event_type"
