"""Events whose field, extra fields included, has a value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..event_filter import EventFilter
from ._field import _MISSING


class WithField(EventFilter):
    """Passes events whose field ``name`` equals ``value``.

    ``value`` may be a callable instead, taking the field's value and
    returning whether the event passes; a missing field never passes::

        WithField("priority", "high")
        WithField("priority", lambda value: value in {"high", "urgent"})

    :param name: any field, extra fields included.
    :param value: the value to match, or a predicate.
    """

    def __init__(self, name: str, value: Any) -> None:
        self.name = name
        self.value = value

    def filter(self, event: Mapping[str, Any]) -> bool:
        found = event.get(self.name, _MISSING)
        if found is _MISSING:
            return False
        if callable(self.value):
            return bool(self.value(found))
        return bool(found == self.value)
