"""The filter that lets every event through."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..event_filter import EventFilter


class Always(EventFilter):
    """Passes every event; the filter of a hub that was never filtered."""

    def filter(self, event: Mapping[str, Any]) -> bool:
        return True
