"""Negation of a filter."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..event_filter import EventFilter, _check


class Not(EventFilter):
    """Passes when the wrapped filter does not (``Not(f)`` or ``~f``).

    :param event_filter: the filter to negate.
    """

    def __init__(self, event_filter: EventFilter) -> None:
        self.event_filter = _check(event_filter)

    def filter(self, event: Mapping[str, Any]) -> bool:
        return not self.event_filter(event)

    def __repr__(self) -> str:
        return f"~{self.event_filter!r}"
