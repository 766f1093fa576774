"""The consumer that keeps each event in its recipients' inboxes."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..delivery import current_delivery
from ..errors import ConsumerError
from ..event import Event, as_event
from ..event_hub import current_notifications
from .consumer import EventConsumer

#: What ``recipients=`` takes: the users an event is stored for.
RecipientsFunction = Callable[[Event], Iterable[str]]


class InboxConsumer(EventConsumer):
    """Store each event once in the inbox of each of its recipients, in SQL
    (see :doc:`inbox`), and send them their new unread count::

        hub.register_consumer(InboxConsumer())

    A redelivered task stores nothing twice: rows are unique per delivery
    (:func:`~flask_notifications.delivery.current_delivery`) and recipient.
    Called outside a delivery (directly, as a test does), the event's id
    stands for the delivery id, so storing one event twice stores it once.

    If the database cannot be reached, :meth:`consume` raises
    :class:`~flask_notifications.errors.InboxUnavailableError` and the task
    is retried with backoff, as every consumer is; after the last retry the
    delivery becomes a dead letter, which ``flask notifications retry``
    sends again.

    :param recipients: a function of the event returning the users to store
        it for; by default the event's ``recipients``.
    :param badge: publish each recipient's unread count on
        ``badge_channel`` after storing (the live badge); the inbox's own
        changes (read, archived, ...) publish there too.
    :param badge_channel: the channel of the live badge; by default the id
        of the hub this consumer is registered on, the channel its
        :class:`PushConsumer` streams.
    :param name: the Celery task name; see :meth:`EventHub.register_consumer`.
    """

    def __init__(
        self,
        *,
        recipients: RecipientsFunction | None = None,
        badge: bool = True,
        badge_channel: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        if recipients is not None and not callable(recipients):
            raise ConsumerError(f"InboxConsumer's recipients= takes a function, not {type(recipients).__name__}.")
        if badge_channel is not None and (not isinstance(badge_channel, str) or not badge_channel):
            raise ConsumerError(f"InboxConsumer's badge_channel is a channel name, not {badge_channel!r}.")
        self.recipients = recipients
        self.badge = badge
        self.badge_channel = badge_channel

    def recipients_of(self, event: Event) -> list[str]:
        """The users ``event`` is stored for."""
        if self.recipients is None:
            return list(event["recipients"])
        return list(self.recipients(event))

    def consume(self, event: Event | str) -> None:
        """Store ``event`` (an :class:`Event`, or its JSON) for each recipient.

        :raises InboxUnavailableError: the database failed; the task is retried.
        :raises BackendError: the unread counts could not be published; the
            task is retried, and stores nothing twice.
        """
        event = as_event(event)
        delivery = current_delivery()
        delivery_id = delivery.delivery_id if delivery is not None else event["event_id"]
        current_notifications.inbox.add(event, self.recipients_of(event), delivery_id=delivery_id)

    def __repr__(self) -> str:
        return f"<InboxConsumer {self.name!r}>"
