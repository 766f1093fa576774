"""``notifications.timers``: the timers of an application, seen from the
application (cancelling, counting, ticking by hand)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..worker.claims import idempotency_ttl
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
        A timer not set yet (its consumer task waits in the queue) is not
        set when the task runs: the cancellation stays in the due-table
        under the timer's id for the idempotency TTL (see
        :func:`~flask_notifications.worker.claims.idempotency_ttl`) or the
        consumer's delay, whichever is longer, and counts in
        :meth:`pending` until then.

        :param delivery: the :class:`~flask_notifications.sending.Dispatch`
            that ``send()`` returned (only its hubs are looked at), or its
            ``delivery_id`` (every hub is).
        :return: how many timers were set and are cancelled now.
        :raises BackendError: the ledger cannot be reached.
        """
        if isinstance(delivery, str):
            delivery_id, hub_ids = delivery, None
        else:
            delivery_id, hub_ids = str(delivery.delivery_id or ""), set(delivery.hub_ids)
        state = self.notifications.runtime(app)
        keep = idempotency_ttl(state.app, state.celery)
        cancelled = 0
        for hub in self.notifications.hubs.values():
            if hub_ids is not None and hub.hub_id not in hub_ids:
                continue
            for task_name in hub.consumer_names:
                consumer = hub.get_consumer(task_name)
                if isinstance(consumer, TimedConsumer):
                    cancelled += consumer.cancel_delivery(state.ledger, hub.hub_id, task_name, delivery_id, keep=keep)
        return cancelled

    def pending(self, *, app: Flask | None = None) -> int:
        """How many timers the ledger keeps (delays, open digest windows and
        the cancellations kept; see :meth:`cancel`)."""
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
