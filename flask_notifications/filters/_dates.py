"""Shared base of the filters that compare a datetime field."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..event import _aware
from ..event_filter import EventFilter


class _DateFilter(EventFilter):
    field = "timestamp"
    #: Whether events after the moment pass; otherwise events before it do.
    later = False

    def __init__(self, moment: datetime) -> None:
        if not isinstance(moment, datetime):
            raise TypeError(f"{type(self).__name__} takes a datetime, not {type(moment).__name__}.")
        self.moment = _aware(moment)

    def filter(self, event: Mapping[str, Any]) -> bool:
        value = event.get(self.field)
        if not isinstance(value, datetime):
            return False
        value = _aware(value)
        return value > self.moment if self.later else value < self.moment

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.moment.isoformat()!r})"
