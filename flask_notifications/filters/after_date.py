"""Events that happened after a moment."""

from __future__ import annotations

from ._dates import _DateFilter


class AfterDate(_DateFilter):
    """Passes events whose ``timestamp`` is strictly after ``moment``.

    :param moment: a datetime; a naive one is taken as local time.
    """

    later = True
