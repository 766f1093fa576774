"""The consumer that keeps each event in its recipients' inboxes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from ..consumers.consumer import EventConsumer
from ..errors import ConsumerError, InvalidInboxRequestError, PermanentConsumerError
from ..event import Event, as_event
from ..state import current_notifications
from ..worker.delivery import current_delivery
from .model import recipient_id

logger = logging.getLogger(__name__)

#: What ``recipients=`` takes: the users an event is stored for.
RecipientsFunction = Callable[[Event], Iterable[str]]


class InboxConsumer(EventConsumer):
    """Store each event once in the inbox of each of its recipients, in SQL
    (see :doc:`inbox`), and send them their new unread count::

        hub.register_consumer(InboxConsumer())

    A redelivered task stores nothing twice: rows are unique per delivery
    (:func:`~flask_notifications.worker.delivery.current_delivery`) and recipient.
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

    #: Subject to the users' preferences for the ``inbox`` channel.
    channel: str | None = "inbox"

    #: An event that expires while the database is down is still stored
    #: once it answers: a notification kept in an inbox outlives the event's
    #: expiry, which is about live delivery.
    honours_expiry = False

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
        """The users ``event`` is stored for.

        :raises TypeError: the ``recipients`` function returned a string
            rather than a list of recipient ids.
        """
        if self.recipients is None:
            return list(event["recipients"])
        found = self.recipients(event)
        if isinstance(found, (str, bytes)):
            raise TypeError(
                f"The recipients function of {self!r} returned a {type(found).__name__}; "
                "return a list of recipient ids, such as [event['sender']]."
            )
        return list(found)

    def consume(self, event: Event | str) -> None:
        """Store ``event`` (an :class:`Event`, or its JSON) for each recipient.

        A recipient id the inbox cannot hold (not a string or integer, or
        longer than 255 characters) costs the other recipients nothing: the
        event is stored for them, then :class:`PermanentConsumerError` names
        the refused ids, and the delivery becomes a dead letter at once.

        :raises InboxUnavailableError: the database failed; the task is retried.
        :raises BackendError: the unread counts could not be published; the
            task is retried, and stores nothing twice.
        :raises PermanentConsumerError: some recipient ids were refused.
        :raises TypeError: the ``recipients`` function returned a string.
        """
        event = as_event(event)
        delivery = current_delivery()
        delivery_id = delivery.delivery_id if delivery is not None else event["event_id"]
        valid: list[str] = []
        refused: list[str] = []
        for user in self.recipients_of(event):
            try:
                valid.append(recipient_id(user))
            except InvalidInboxRequestError as exc:
                refused.append(f"{user!r:.60}: {exc}")
        current_notifications.inbox.add(event, valid, delivery_id=delivery_id)
        if refused:
            raise PermanentConsumerError(
                f"{len(refused)} recipient id(s) of event {event['event_id']!r} cannot be stored, and were skipped "
                f"(the {len(valid)} others were stored): {'; '.join(refused[:5])}"
            )

    def __repr__(self) -> str:
        return f"<InboxConsumer {self.name!r}>"
