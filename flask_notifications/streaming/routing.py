"""How the fan-out reaches a stream, read off its filter once, when it opens.

A stream that follows one user is *indexed* by that user: the fan-out hands
it only the events whose ``recipients`` include the user, so an event costs
what its recipients cost, not what the open streams do. The shapes that
qualify are a :class:`~flask_notifications.filters.with_recipient.WithRecipient`
(not a subclass, which may filter otherwise) alone or as a conjunct of ``&``
(:class:`~flask_notifications.event_filter.And`, at any depth)::

    WithRecipient(user)                       # indexed by user
    WithTag("billing") & WithRecipient(user)  # indexed by user, WithTag still judged
    WithRecipient(user) | WithTag("all")      # not indexed: evaluated on every event

What remains of the filter once the recipient is taken out is still judged,
on the events of that user only. An event without recipients reaches no
indexed stream, as ``WithRecipient`` lets none through.

A filter whose every part is a predefined filter that looks only at the
event (and their ``&``, ``|``, ``^``, ``~``) is judged *inline*, by the
fan-out, and the events that pass are written straight to a live stream. Any
other filter (a class of the application's, ``WithField`` with a predicate)
may wait, on a database say: the fan-out queues the events, and the stream's
own greenlet or thread judges them, so that a filter that waits delays only
its own stream.
"""

from __future__ import annotations

from typing import NamedTuple

from ..event_filter import And, EventFilter, Not, Or, Xor
from ..filters.after_date import AfterDate
from ..filters.always import Always
from ..filters.before_date import BeforeDate
from ..filters.expired import Expired
from ..filters.with_event_type import WithEventType
from ..filters.with_field import WithField
from ..filters.with_id import WithId
from ..filters.with_recipient import WithRecipient
from ..filters.with_recipients import WithRecipients
from ..filters.with_sender import WithSender
from ..filters.with_tag import WithTag

#: Filters that look only at the event and never wait, by exact class.
_INLINE = frozenset(
    {AfterDate, Always, BeforeDate, Expired, WithEventType, WithId, WithRecipient, WithRecipients, WithSender, WithTag}
)


class Route(NamedTuple):
    """How the fan-out hands events to one stream."""

    #: The user whose events alone the stream gets, or ``None`` (every event).
    recipient: str | None
    #: What of the filter is left to judge on those events (``None``: nothing).
    rest: EventFilter | None
    #: Whether ``rest`` may be judged by the fan-out itself (it never waits).
    inline: bool


#: The route of a stream without a filter, shared by all of them.
_EVERY = Route(None, None, True)


def route(event_filter: EventFilter | None) -> Route:
    """The :class:`Route` of a stream whose filter is ``event_filter``."""
    if event_filter is None:
        return _EVERY
    conjuncts = _conjuncts(event_filter)
    for index, part in enumerate(conjuncts):
        if type(part) is WithRecipient:
            # The filter's own normalisation: an integer id as its decimal
            # string. Any other value matches no recipient: left to the filter.
            value = part.value
            recipient = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
            if isinstance(recipient, str):
                rest = _conjunction(conjuncts[:index] + conjuncts[index + 1 :])
                return Route(recipient, rest, rest is None or inline(rest))
    return Route(None, event_filter, inline(event_filter))


def inline(event_filter: EventFilter) -> bool:
    """Whether ``event_filter`` only looks at the event: predefined filters
    and their combinations, not an application's classes (which may wait)."""
    kind = type(event_filter)
    if kind in (And, Or, Xor):
        assert isinstance(event_filter, (And, Or, Xor))
        return inline(event_filter.left) and inline(event_filter.right)
    if kind is Not:
        assert isinstance(event_filter, Not)
        return inline(event_filter.event_filter)
    if kind is WithField:
        assert isinstance(event_filter, WithField)
        return not callable(event_filter.value)
    return kind in _INLINE


def _conjuncts(event_filter: EventFilter) -> list[EventFilter]:
    if type(event_filter) is And:
        assert isinstance(event_filter, And)
        return _conjuncts(event_filter.left) + _conjuncts(event_filter.right)
    return [event_filter]


def _conjunction(parts: list[EventFilter]) -> EventFilter | None:
    if not parts:
        return None
    result = parts[0]
    for part in parts[1:]:
        result = And(result, part)
    return result
