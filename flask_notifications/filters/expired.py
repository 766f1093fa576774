"""Events past their expiration."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..event import aware
from ..event_filter import EventFilter


class Expired(EventFilter):
    """Passes events whose ``expiration_datetime`` has passed.

    An event with no expiration never expires.
    """

    def filter(self, event: Mapping[str, Any]) -> bool:
        expiration = event.get("expiration_datetime")
        if not isinstance(expiration, datetime):
            return False
        return aware(expiration) <= datetime.now(UTC)

    def __repr__(self) -> str:
        return "Expired()"
