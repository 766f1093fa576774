"""The delivery a consumer is running for.

Every :meth:`Notifications.send` is one *delivery*: it gets a ``delivery_id``
of its own, carried with the event through the dispatch task to each
consumer's task, and kept unchanged when the broker redelivers a task or a
consumer is retried. A consumer that stores something can key it on
``(delivery_id, ...)`` so that a redelivered task stores nothing twice::

    from flask_notifications.worker.delivery import current_delivery

    def consume(self, event):
        delivery = current_delivery()
        db.insert(key=(delivery.delivery_id, recipient), ...)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class Delivery:
    """One consumer's run on one sent event.

    :param delivery_id: the id of the :meth:`Notifications.send` call; the
        same on every redelivery and retry of this event's tasks.
    :param hub_id: the hub whose consumer runs.
    :param consumer: the consumer's Celery task name.
    :param attempt: 1 on the first run, 2 on the first retry, ...
    """

    delivery_id: str
    hub_id: str
    consumer: str
    attempt: int = 1


_current: ContextVar[Delivery | None] = ContextVar("flask_notifications_delivery", default=None)


def current_delivery() -> Delivery | None:
    """The delivery the running consumer works on, or ``None`` outside one
    (a consumer called directly, as a test or 0.1 code does)."""
    return _current.get()


@contextmanager
def delivering(delivery: Delivery) -> Iterator[Delivery]:
    """Make ``delivery`` the :func:`current_delivery` while the block runs."""
    token = _current.set(delivery)
    try:
        yield delivery
    finally:
        _current.reset(token)
