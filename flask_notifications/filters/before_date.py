"""Events that happened before a moment."""

from __future__ import annotations

from ._dates import _DateFilter


class BeforeDate(_DateFilter):
    """Passes events whose ``timestamp`` is strictly before ``moment``.

    :param moment: a datetime; a naive one is taken as local time.
    """

    later = False
