"""What a consumer with timers implements, and how its timers are named.

A :class:`TimedConsumer` wraps another consumer (``Delayed``, ``Digest``).
Its :meth:`~TimedConsumer.consume` runs in the consumer task, as any
consumer's does, and sets timers in the ledger's due-table; a tick
(:mod:`flask_notifications.timers.tick`) claims them when they are due and
calls :meth:`~TimedConsumer.fire`. A timer's record names the hub and the
task of the consumer that set it, so the tick finds it in the worker's hubs.
"""

from __future__ import annotations

import json
import time
from abc import abstractmethod
from typing import TYPE_CHECKING, Any

from ..consumers.consumer import Consumer, EventConsumer
from ..errors import ConsumerError
from ..state import runtime
from ..worker.delivery import current_delivery

if TYPE_CHECKING:
    from flask import Flask

    from ..event import Event
    from ..ledger.base import DueTimer, Ledger


def now_ms() -> int:
    """The time in milliseconds since the epoch, by this host's clock."""
    return int(time.time() * 1000)


def record(kind: str, hub_id: str, task_name: str, **fields: Any) -> str:
    """The JSON record of a timer of ``kind`` set by the consumer ``task_name`` of ``hub_id``."""
    return json.dumps({"kind": kind, "h": hub_id, "c": task_name, **fields}, separators=(",", ":"))


def where(consumer: Consumer) -> tuple[str, str, str]:
    """The hub, the task name and the delivery id of the run ``consumer``
    is in (:func:`~flask_notifications.worker.delivery.current_delivery`).

    :raises ConsumerError: it is not running in a consumer task.
    """
    delivery = current_delivery()
    if delivery is None:
        raise ConsumerError(
            f"{type(consumer).__name__} keeps its timers in the ledger, so it runs in a consumer task: register "
            "it on a hub and send events, rather than calling it directly."
        )
    return delivery.hub_id, delivery.consumer, delivery.delivery_id


class TimedConsumer(EventConsumer):
    """A consumer that wraps ``consumer`` and acts on it later, through
    timers in the ledger.

    :param consumer: the consumer that runs when a timer fires.
    :param name: the Celery task name; see :meth:`EventHub.register_consumer`.
    """

    #: The ``kind`` of the records of this consumer's timers.
    kind = ""

    def __init__(self, consumer: Consumer, *, name: str | None = None) -> None:
        if not isinstance(consumer, Consumer):
            raise ConsumerError(f"{type(self).__name__} wraps a Consumer, not {type(consumer).__name__}.")
        super().__init__(name)
        self.consumer = consumer
        # The inner consumer's effect is guarded by a claim of the fire's own.
        self.honours_expiry = consumer.honours_expiry
        # The users' preferences for the inner consumer's channel apply when
        # the event reaches the wrapper: an opted-out recipient sets no timer.
        self.channel = consumer.channel

    @abstractmethod
    def fire(self, app: Flask, ledger: Ledger, timer: DueTimer, fields: dict[str, Any]) -> None:
        """Act on ``timer``, which is due and claimed: run the inner
        consumer (at most once per timer version; see
        :func:`~flask_notifications.timers.fire.once`) and finish the timer.

        :param fields: the timer's decoded record.
        :raises Exception: the fire failed; the timer is tried again later.
        """

    def wanted_now(self, app: Flask, hub_id: str, event: Event) -> Event | None:
        """``event`` with only the recipients who want the inner consumer's
        channel as the fire starts (the users' preferences, when
        ``NOTIFICATIONS_PREFERENCES`` is on, as a consumer task applies
        them); ``None`` when none does.

        :raises PreferencesUnavailableError: the database failed (the fire
            is tried again).
        """
        if self.channel is None or not event["recipients"] or not app.config["NOTIFICATIONS_PREFERENCES"]:
            return event
        extension = runtime(app).extension
        hub = extension.hubs.get(hub_id)
        if hub is None:
            return event
        narrowed: Event | None = extension.preferences.narrow(event, hub, self.channel)
        return narrowed

    def cancel_delivery(self, ledger: Ledger, hub_id: str, task_name: str, delivery_id: str, *, keep: float) -> int:
        """Cancel the timers this consumer (registered as ``task_name`` on
        ``hub_id``) set for the delivery ``delivery_id``, and keep those it
        has not set yet from being set for ``keep`` seconds; return how many
        that were set it cancelled."""
        return 0

    def drop(self, ledger: Ledger, timer: DueTimer) -> None:
        """Give ``timer`` up after a permanent failure."""
        ledger.timer_cancel(timer.id)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} of {self.consumer!r}>"
