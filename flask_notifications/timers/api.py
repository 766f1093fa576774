"""``notifications.timers``: the timers of an application, seen from the
application (cancelling, counting, ticking by hand)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .owner import TimedConsumer
from .tick import tick
from .worker import beat_schedule

if TYPE_CHECKING:
    from typing import Any

    from flask import Flask

    from ..ext import Notifications
    from ..sending import Dispatch


class Timers:
    """The due-table of the current application (or the one given), through
    its ledger.

    :param notifications: the extension it belongs to.
    """

    def __init__(self, notifications: Notifications) -> None:
        self.notifications = notifications

    def cancel(self, delivery: str | Dispatch, *, app: Flask | None = None) -> int:
        """Cancel every timer that a :class:`~flask_notifications.consumers.Delayed`
        of any hub set for one send, when the application resolved the cause
        itself::

            dispatch = notifications.send(event)
            ...
            notifications.timers.cancel(dispatch)

        A timer that fired already, or fires while this runs, is not undone.

        :param delivery: the :class:`~flask_notifications.sending.Dispatch`
            that ``send()`` returned, or its ``delivery_id``.
        :return: how many timers were cancelled.
        :raises BackendError: the ledger cannot be reached.
        """
        delivery_id = delivery if isinstance(delivery, str) else str(delivery.delivery_id or "")
        state = self.notifications.runtime(app)
        cancelled = 0
        for hub in self.notifications.hubs.values():
            for task_name in hub.consumer_names:
                consumer = hub.get_consumer(task_name)
                if isinstance(consumer, TimedConsumer):
                    cancelled += consumer.cancel_delivery(state.ledger, hub.hub_id, task_name, delivery_id)
        return cancelled

    def pending(self, *, app: Flask | None = None) -> int:
        """How many timers the ledger keeps (delays and open digest windows)."""
        return self.notifications.runtime(app).ledger.timer_count()

    def tick(self, *, app: Flask | None = None) -> int:
        """Fire the timers that are due now, in this process; return how many
        were claimed. Workers tick by themselves; this is for tests and for
        a deployment that ticks from a cron job."""
        return tick(self.notifications.runtime(app).app)

    def beat_schedule(self, every: float = 1.0, *, app: Flask | None = None) -> dict[str, Any]:
        """Add the tick to the ``beat_schedule`` of the application's Celery
        app; see :func:`~flask_notifications.timers.worker.beat_schedule`."""
        return beat_schedule(self.notifications.runtime(app).celery, every)
