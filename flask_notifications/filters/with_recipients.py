"""Events for exactly a set of recipients."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..event_filter import EventFilter
from ._membership import _as_recipient


class WithRecipients(EventFilter):
    """Passes events whose recipients are exactly ``recipients``, as sets.

    Order and repetition do not matter. To match one recipient among others,
    use :class:`~flask_notifications.filters.with_recipient.WithRecipient`.
    An integer id is compared as its decimal string, as events carry it.
    """

    def __init__(self, recipients: Iterable[str | int]) -> None:
        if isinstance(recipients, str):
            raise TypeError("WithRecipients takes a list of recipients, not a string.")
        self.recipients = frozenset(_as_recipient(recipient) for recipient in recipients)

    def filter(self, event: Mapping[str, Any]) -> bool:
        return frozenset(event.get("recipients") or ()) == self.recipients

    def __repr__(self) -> str:
        return f"WithRecipients({sorted(self.recipients, key=str)!r})"
