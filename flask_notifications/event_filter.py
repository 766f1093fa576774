"""Event filters and their composition.

A filter decides whether an event belongs to a hub (or to one SSE
connection). Filters compose with ``&``, ``|``, ``^`` and ``~``::

    WithEventType("test") & Not(BeforeDate(now))

The combinators :class:`And`, :class:`Or`, :class:`Xor` and :class:`Not` live
here; the predefined filters are in :mod:`flask_notifications.filters`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any


class EventFilter(ABC):
    """Base class of every filter.

    Subclasses implement :meth:`filter`. Calling a filter on an event returns
    a real :class:`bool`.
    """

    @abstractmethod
    def filter(self, event: Mapping[str, Any]) -> bool:
        """Whether ``event`` passes this filter."""
        raise NotImplementedError(f"{type(self).__name__} must implement filter().")

    def __call__(self, event: Mapping[str, Any]) -> bool:
        return bool(self.filter(event))

    def __and__(self, other: EventFilter) -> EventFilter:
        return And(self, _check(other))

    def __or__(self, other: EventFilter) -> EventFilter:
        return Or(self, _check(other))

    def __xor__(self, other: EventFilter) -> EventFilter:
        return Xor(self, _check(other))

    def __invert__(self) -> EventFilter:
        return Not(self)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self), repr(self)))

    def __repr__(self) -> str:
        args = ", ".join(repr(value) for value in vars(self).values())
        return f"{type(self).__name__}({args})"


def _check(other: object) -> EventFilter:
    if not isinstance(other, EventFilter):
        raise TypeError(f"Filters compose only with other filters, not {type(other).__name__}.")
    return other


class _Binary(EventFilter):
    symbol = ""

    def __init__(self, left: EventFilter, right: EventFilter) -> None:
        self.left = _check(left)
        self.right = _check(right)

    def __repr__(self) -> str:
        return f"({self.left!r} {self.symbol} {self.right!r})"


class And(_Binary):
    """Passes when both filters pass (``a & b``)."""

    symbol = "&"

    def filter(self, event: Mapping[str, Any]) -> bool:
        return self.left(event) and self.right(event)


class Or(_Binary):
    """Passes when either filter passes (``a | b``)."""

    symbol = "|"

    def filter(self, event: Mapping[str, Any]) -> bool:
        return self.left(event) or self.right(event)


class Xor(_Binary):
    """Passes when exactly one of the filters passes (``a ^ b``)."""

    symbol = "^"

    def filter(self, event: Mapping[str, Any]) -> bool:
        return self.left(event) != self.right(event)


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


__all__ = ["And", "EventFilter", "Not", "Or", "Xor"]
