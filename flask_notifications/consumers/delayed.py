"""``Delayed``: run a consumer later, unless a condition holds by then."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..errors import ConsumerError
from ..event import Event, as_event
from ..state import runtime
from ..timers.fire import once
from ..timers.owner import TimedConsumer, now_ms, record, where
from ..worker.claims import idempotency_ttl
from ..worker.delivery import Delivery, delivering
from .consumer import Consumer

if TYPE_CHECKING:
    from flask import Flask

    from ..ledger.base import DueTimer, Ledger
    from ..timers.conditions import Condition


def seconds(value: timedelta | float, what: str) -> float:
    """``value`` (a timedelta or seconds) in seconds.

    :raises ConsumerError: it is not a positive duration.
    """
    found = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(found, bool) or not isinstance(found, int | float) or not found > 0:
        raise ConsumerError(f"{what} is a positive timedelta or number of seconds, not {value!r}.")
    return float(found)


def delayed_timer_id(hub_id: str, task_name: str, delivery_id: str) -> str:
    """The id of the timer a :class:`Delayed` sets for one delivery."""
    return f"delayed:{hub_id}:{task_name}:{delivery_id}"


#: The version of a cancellation: the entry a cancel leaves under a
#: delivery's timer id, so that a timer set later for that delivery is not
#: set (``timer_set(replace=False)`` keeps the entry there), until it is due
#: and removed.
CANCELLED = "cancelled"


class Delayed(TimedConsumer):
    """Run ``consumer`` ``after`` a delay, unless ``unless`` holds by then::

        from flask_notifications.consumers import Delayed
        from flask_notifications.timers import read_in_inbox

        hub.register_consumer(InboxConsumer())
        hub.register_consumer(Delayed(mail, after=timedelta(minutes=10), unless=read_in_inbox))

    The delay is a timer in the ledger's due-table, so it survives restarts
    of every process, and it fires within ``NOTIFICATIONS_TIMER_TICK`` plus
    a second of its time (see :doc:`timers`). When it fires, ``unless`` is
    asked for each of the event's recipients; ``consumer`` then receives the
    event with the recipients for whom it did not hold, or nothing if it held
    for all of them. ``consumer`` runs once per send, even if a worker dies
    as it fires (unless it dies after the effect and before the record of
    it, as with any consumer).

    :param consumer: the consumer to run later.
    :param after: the delay, a :class:`~datetime.timedelta` or seconds.
    :param unless: ``(event, recipient) -> bool``; a recipient for whom it
        returns true is skipped. ``None`` skips nobody.
    :param name: the Celery task name; see :meth:`EventHub.register_consumer`.
    :raises ConsumerError: ``after`` is not positive, or ``consumer`` is not a consumer.
    """

    kind = "delayed"

    def __init__(
        self,
        consumer: Consumer,
        *,
        after: timedelta | float,
        unless: Condition | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(consumer, name=name)
        self.after = seconds(after, "after")
        if unless is not None and not callable(unless):
            raise ConsumerError(f"unless is a function (event, recipient) -> bool, not {type(unless).__name__}.")
        self.unless = unless

    def consume(self, event: Event) -> None:
        """Set the timer of this delivery; a redelivery keeps the first one,
        and a cancellation recorded before it keeps it from being set."""
        hub_id, task_name, delivery_id = where(self)
        fields = record(self.kind, hub_id, task_name, d=delivery_id, e=as_event(event).to_json())
        due = now_ms() + int(self.after * 1000)
        timer_id = delayed_timer_id(hub_id, task_name, delivery_id)
        runtime().ledger.timer_set(timer_id, fields, due, uuid.uuid4().hex, replace=False)

    def fire(self, app: Flask, ledger: Ledger, timer: DueTimer, fields: dict[str, Any]) -> None:
        if timer.version == CANCELLED:
            ledger.timer_finish(timer.id, timer.version)  # the cancellation is kept no longer
            return
        event = Event.from_json(fields["e"])
        delivery = Delivery(str(fields["d"]), str(fields["h"]), str(fields["c"]), timer.attempts)
        with delivering(delivery):
            wanted = self._still_wanted(event)
            if wanted is not None:
                # A recipient who opted out during the delay is not sent to.
                wanted = self.wanted_now(app, str(fields["h"]), wanted)
            if wanted is not None:
                once(app, ledger, timer, lambda: self.consumer(wanted))
        ledger.timer_finish(timer.id, timer.version)

    def _still_wanted(self, event: Event) -> Event | None:
        """The event for the recipients ``unless`` does not skip, or ``None``."""
        if self.unless is None:
            return event
        recipients: list[str] = event["recipients"]
        if not recipients:
            return None if self.unless(event, None) else event
        kept = [recipient for recipient in recipients if not self.unless(event, recipient)]
        if not kept:
            return None
        return event if kept == recipients else Event.from_dict({**event.to_dict(), "recipients": kept})

    def cancel_delivery(self, ledger: Ledger, hub_id: str, task_name: str, delivery_id: str, *, keep: float) -> int:
        """Replace the timer of ``delivery_id`` with a cancellation (an entry
        of version :data:`CANCELLED`, which fires nothing), kept for
        ``keep`` seconds or the delay, whichever is longer: a consumer task
        that runs later (it waited in a queue) finds it and sets no timer.

        :return: 1 if a timer was set and is cancelled now, else 0.
        """
        timer_id = delayed_timer_id(hub_id, task_name, delivery_id)
        found = ledger.timer_get(timer_id)
        kept_ms = int(max(keep, self.after) * 1000)
        fields = record(self.kind, hub_id, task_name, d=delivery_id)
        ledger.timer_set(timer_id, fields, now_ms() + kept_ms, CANCELLED, replace=True)
        return int(found is not None and found.version != CANCELLED)

    def cancel(self, delivery_id: str, *, app: Flask | None = None) -> bool:
        """Cancel this consumer's timer for the send ``delivery_id``
        (:attr:`Dispatch.delivery_id <flask_notifications.sending.Dispatch.delivery_id>`),
        set or not yet set; see :meth:`Timers.cancel <flask_notifications.timers.api.Timers.cancel>`.

        :return: whether a timer was set and is cancelled now.
        :raises ConsumerError: this consumer is not registered on a hub.
        """
        state = runtime(app)
        keep = idempotency_ttl(state.app, state.celery)
        for hub in state.extension.hubs.values():
            for task_name in hub.consumer_names:
                if hub.get_consumer(task_name) is self:
                    return bool(self.cancel_delivery(state.ledger, hub.hub_id, task_name, delivery_id, keep=keep))
        raise ConsumerError(f"{self!r} is not registered on any hub.")
