"""Events carrying a tag."""

from __future__ import annotations

from ._membership import _Contains


class WithTag(_Contains):
    """Passes events whose ``tags`` include ``value``."""

    field = "tags"
