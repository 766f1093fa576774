"""Shared base of the filters that compare one field with a value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..event_filter import EventFilter

_MISSING = object()


class _FieldEquals(EventFilter):
    field = ""

    def __init__(self, value: Any) -> None:
        self.value = value

    def filter(self, event: Mapping[str, Any]) -> bool:
        return bool(event.get(self.field, _MISSING) == self.value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r})"
