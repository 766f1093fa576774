"""The consumer interface, and the adapter for plain functions.

A consumer receives the event's JSON string, as in Flask-Notifications 0.1,
unless it asks for the :class:`~flask_notifications.event.Event`:

===============================================  ===================================
Consumer                                         ``consume`` and the hooks receive
===============================================  ===================================
a subclass of :class:`Consumer`                  the JSON string (0.1's contract)
a subclass of :class:`EventConsumer`             an :class:`Event`
``@hub.register_consumer``                       the JSON string (0.1's contract)
``@hub.register_consumer(pass_event=True)``      an :class:`Event`
===============================================  ===================================

``str(event)`` is the event's JSON too, so code that writes ``str(event)``
works with either. The predefined consumers are :class:`EventConsumer`\\ s.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from ..event import Event, as_event


class Consumer(ABC):
    """Something that acts on the events of a hub, in a Celery worker.

    Subclasses implement :meth:`consume`, which receives the event's JSON
    string, as in 0.1::

        class ArchiveConsumer(Consumer):
            def consume(self, event_json):
                db.insert(json.loads(event_json))

    To receive an :class:`Event` instead, subclass :class:`EventConsumer`.

    Two hooks surround :meth:`consume`: :meth:`before_consume` may veto the
    event by returning ``False``, and :meth:`after_consume` runs once
    ``consume`` returned, for example to record that the event was stored.
    Both receive what ``consume`` receives.

    A consumer's :attr:`name` is the name of its Celery task. It must be the
    same in the web process and in the worker, so it is derived from the hub
    label and the class unless given; see :meth:`EventHub.register_consumer`.

    :param name: the Celery task name; ``None`` lets the hub derive it.
    """

    #: Whether a delivery that was already completed for an event is skipped
    #: when Celery delivers the same task again (exactly-once effect).
    idempotent: bool = True

    #: Whether the event's ``expiration_datetime`` ends its delivery to this
    #: consumer: an expired event is not consumed, and a message waiting to
    #: be retried expires with it. A consumer that keeps a record of events
    #: (the inbox) sets it ``False``, so an event that expires while its
    #: database is down is still stored once it answers.
    honours_expiry: bool = True

    #: Whether :meth:`consume` and the hooks receive an :class:`Event`
    #: (``True``) or the event's JSON string (``False``, 0.1's contract).
    pass_event: bool = False

    #: The channel the consumer delivers on (``"email"``, ``"sms"``...), which
    #: users opt in to or out of per hub (:doc:`preferences`). With
    #: ``NOTIFICATIONS_PREFERENCES`` on, the task gives the consumer the event
    #: with only the recipients who want this channel, and skips it when none
    #: does. ``None``: not subject to preferences.
    channel: str | None = None

    def __init__(self, name: str | None = None) -> None:
        self.name = name

    def before_consume(self, event: Any) -> bool | None:
        """Called before :meth:`consume`; return ``False`` to skip the event."""
        return True

    @abstractmethod
    def consume(self, event: Any) -> None:
        """Act on the event. Raise to have the delivery retried.

        :param event: the event's JSON string, or an :class:`Event` when
            :attr:`pass_event` is set.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement consume().")

    def after_consume(self, event: Any) -> None:
        """Called after :meth:`consume` returned without raising."""
        return None

    def __call__(self, event: Event | str | bytes) -> bool:
        """Run the hooks and :meth:`consume` on ``event`` (an :class:`Event`
        or its JSON), handing them the form :attr:`pass_event` asks for.

        :return: whether it consumed the event (the hook did not veto it).
        :raises InvalidEventError: ``event`` is not an event.
        """
        parsed = as_event(event)
        given: Event | str = parsed if self.pass_event else parsed.to_json()
        if self.before_consume(given) is False:
            return False
        self.consume(given)
        self.after_consume(given)
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class EventConsumer(Consumer):
    """A consumer whose :meth:`consume` and hooks receive an :class:`Event`.

    ::

        class ArchiveConsumer(EventConsumer):
            def consume(self, event):
                db.insert(event.to_dict())

            def after_consume(self, event):
                db.mark_stored(event["event_id"])
    """

    pass_event = True

    @abstractmethod
    def consume(self, event: Event) -> None:
        """Act on ``event``. Raise to have the delivery retried."""
        raise NotImplementedError(f"{type(self).__name__} must implement consume().")


class FunctionConsumer(Consumer):
    """A plain function registered with ``@hub.register_consumer``.

    :param func: called with the event's JSON string, or with the
        :class:`Event` when ``pass_event`` is set (and nothing else).
    :param name: the Celery task name.
    :param pass_event: call ``func`` with an :class:`Event`.
    """

    def __init__(self, func: Callable[..., Any], name: str | None = None, *, pass_event: bool = False) -> None:
        super().__init__(name)
        self.func = func
        self.pass_event = pass_event

    def consume(self, event: Any) -> None:
        self.func(event)

    def __repr__(self) -> str:
        return f"<FunctionConsumer {self.name!r} of {self.func.__qualname__}>"
