"""Conditions for :class:`~flask_notifications.consumers.delayed.Delayed`:
asked when its timer fires, once per recipient, whether to skip it.

A condition is any callable ``(event, recipient) -> bool``; ``recipient`` is
one of the event's recipients, or ``None`` for an event that names none. It
runs in the worker, in the application's context, with
:func:`~flask_notifications.worker.delivery.current_delivery` set to the
delivery that set the timer.
"""

from __future__ import annotations

from collections.abc import Callable

from ..event import Event
from ..state import current_notifications
from ..worker.delivery import current_delivery

#: What ``Delayed(unless=...)`` takes.
Condition = Callable[[Event, "str | None"], bool]


def read_in_inbox(event: Event, recipient: str | None) -> bool:
    """Whether ``recipient`` has read this delivery of ``event`` in the inbox
    (:doc:`inbox`): its inbox row, stored by an
    :class:`~flask_notifications.inbox.consumer.InboxConsumer` of any hub for
    the same send, has a ``read_at``. An item never stored, or deleted, is
    not read. For an event with no recipient, whether anyone read it.

    :raises InboxUnavailableError: the inbox's database failed; the fire is
        tried again.
    """
    # SQLAlchemy comes with the inbox extra: imported here, so that the
    # package imports without it.
    import sqlalchemy as sa

    from ..inbox.checks import database_errors

    inbox = current_notifications.inbox
    table = inbox.table
    delivery = current_delivery()
    if delivery is not None:
        which = table.c.delivery_id == delivery.delivery_id
    else:
        which = table.c.event_id == str(event["event_id"])
    query = sa.select(table.c.id).where(which, table.c.read_at.is_not(None))
    if recipient is not None:
        query = query.where(table.c.recipient == recipient)
    with database_errors(table.name), inbox.engine.connect() as conn:
        return conn.execute(query.limit(1)).first() is not None
