"""Shared base of the filters that compare a datetime field."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..errors import InvalidEventError
from ..event import aware
from ..event_filter import EventFilter


class _DateFilter(EventFilter):
    field = "timestamp"
    #: Whether events after the moment pass; otherwise events before it do.
    later = False

    def __init__(self, moment: datetime) -> None:
        if not isinstance(moment, datetime):
            raise TypeError(f"{type(self).__name__} takes a datetime, not {type(moment).__name__}.")
        self.moment = aware(moment)

    def filter(self, event: Mapping[str, Any]) -> bool:
        value = event.get(self.field)
        # A number is seconds since the epoch, as 0.1 stored timestamps.
        if isinstance(value, bool) or not isinstance(value, (datetime, int, float)):
            return False
        try:
            value = aware(value)
        except InvalidEventError:
            return False
        return value > self.moment if self.later else value < self.moment

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.moment.isoformat()!r})"
