"""The consumer interface, and the adapter for plain functions."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from ..event import Event


class Consumer(ABC):
    """Something that acts on the events of a hub, in a Celery worker.

    Subclasses implement :meth:`consume`. Two hooks surround it:
    :meth:`before_consume` may veto the event by returning ``False``, and
    :meth:`after_consume` runs once ``consume`` returned, for example to record
    that the event was stored::

        class ArchiveConsumer(Consumer):
            def consume(self, event):
                db.insert(event.to_dict())

            def after_consume(self, event):
                db.mark_stored(event["event_id"])

    A consumer's :attr:`name` is the name of its Celery task. It must be the
    same in the web process and in the worker, so it is derived from the hub
    label and the class unless given; see :meth:`EventHub.register_consumer`.

    :param name: the Celery task name; ``None`` lets the hub derive it.
    """

    #: Whether a delivery that was already completed for an event is skipped
    #: when Celery delivers the same task again (exactly-once effect).
    idempotent: bool = True

    def __init__(self, name: str | None = None) -> None:
        self.name = name

    def before_consume(self, event: Event) -> bool | None:
        """Called before :meth:`consume`; return ``False`` to skip the event."""
        return True

    @abstractmethod
    def consume(self, event: Event) -> None:
        """Act on ``event``. Raise to have the delivery retried."""
        raise NotImplementedError(f"{type(self).__name__} must implement consume().")

    def after_consume(self, event: Event) -> None:
        """Called after :meth:`consume` returned without raising."""
        return None

    def __call__(self, event: Event) -> bool:
        """Run the hooks and :meth:`consume`; return whether it consumed."""
        if self.before_consume(event) is False:
            return False
        self.consume(event)
        self.after_consume(event)
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class FunctionConsumer(Consumer):
    """A plain function registered with ``@hub.register_consumer``.

    :param func: called with the event (and nothing else).
    :param name: the Celery task name.
    """

    def __init__(self, func: Callable[..., Any], name: str | None = None) -> None:
        super().__init__(name)
        self.func = func

    def consume(self, event: Event) -> None:
        self.func(event)

    def __repr__(self) -> str:
        return f"<FunctionConsumer {self.name!r} of {self.func.__qualname__}>"
