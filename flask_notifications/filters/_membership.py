"""Shared base of the filters that look for one value in a list field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..event_filter import EventFilter


def _as_recipient(value: object) -> object:
    """A recipient id as events carry it: an integer user id (Flask-Login's
    usual ``current_user.id``) as its decimal string."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


class _Contains(EventFilter):
    field = ""

    def __init__(self, value: str) -> None:
        self.value = value

    def filter(self, event: Mapping[str, Any]) -> bool:
        return self.value in (event.get(self.field) or ())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r})"
