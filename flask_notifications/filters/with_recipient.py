"""Events addressed to one recipient, among any others."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._membership import _as_recipient, _Contains


class WithRecipient(_Contains):
    """Passes events whose ``recipients`` include ``value``.

    This is the filter of a per-user stream: ``WithRecipient(user_id)``. An
    integer id is compared as its decimal string, the form events (and the
    inbox) carry recipients in, so ``WithRecipient(current_user.id)`` works
    with integer user ids.
    """

    field = "recipients"

    def __init__(self, value: str | int) -> None:
        super().__init__(value)  # type: ignore[arg-type]

    def filter(self, event: Mapping[str, Any]) -> bool:
        return _as_recipient(self.value) in (event.get(self.field) or ())
