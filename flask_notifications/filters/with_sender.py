"""Events of one sender."""

from __future__ import annotations

from ._field import _FieldEquals


class WithSender(_FieldEquals):
    """Passes events whose ``sender`` equals ``value``."""

    field = "sender"
