"""Events addressed to one recipient, among any others."""

from __future__ import annotations

from ._membership import _Contains


class WithRecipient(_Contains):
    """Passes events whose ``recipients`` include ``value``.

    This is the filter of a per-user stream: ``WithRecipient(user_id)``.
    """

    field = "recipients"
