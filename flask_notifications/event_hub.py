"""Event hubs: a filter plus the consumers of the events that pass it."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .consumers.consumer import Consumer, FunctionConsumer
from .errors import ConsumerError, HubError
from .event_filter import EventFilter
from .filters.always import Always
from .state import current_notifications as current_notifications  # 0.1 imported it from here

if TYPE_CHECKING:
    from .ext import Notifications

F = TypeVar("F", bound=Callable[..., Any])

_LABEL = re.compile(r"[\w.\-]{1,100}")
#: Prefix of every hub id; the original's ids were ``event-hub-<label>``.
HUB_ID_PREFIX = "event-hub-"
#: Celery task options that :meth:`EventHub.register_consumer` refuses: the
#: consumer tasks depend on them.
RESERVED_TASK_OPTIONS = frozenset(
    {"bind", "serializer", "shared", "base", "acks_late", "reject_on_worker_lost", "max_retries"}
)


def hub_id_for(label: str) -> str:
    """The id of the hub labelled ``label``.

    :raises HubError: the label is not 1 to 100 letters, digits, ``_``, ``.``
        or ``-``. Labels end up in URLs and Redis keys, so nothing else is
        accepted.
    """
    if not isinstance(label, str) or not _LABEL.fullmatch(label):
        raise HubError(f"Invalid hub label {label!r}: use 1 to 100 letters, digits, '_', '.' or '-'.")
    return HUB_ID_PREFIX + label


class EventHub:
    """A named set of consumers behind one filter.

    Create hubs with :meth:`Notifications.create_hub`, at import time, so a
    Celery worker that imports the application has the same hubs.

    :param label: the hub's name; its :attr:`hub_id` is derived from it.
    :param notifications: the extension that owns the hub.
    """

    def __init__(self, label: str, notifications: Notifications | None = None) -> None:
        if notifications is not None and not callable(getattr(notifications, "create_hub", None)):
            raise HubError(
                f"EventHub(label, {type(notifications).__name__}) was 0.1's constructor. Create hubs with "
                "notifications.create_hub(label), which registers their consumers on every application's Celery."
            )
        self.hub_id = hub_id_for(label)
        self.label = label
        self.event_filter: EventFilter = Always()
        self._consumers: dict[str, Consumer] = {}
        self._task_options: dict[str, dict[str, Any]] = {}
        self._notifications = notifications

    def filter_by(self, event_filter: EventFilter) -> EventHub:
        """Deliver only the events that pass ``event_filter``; returns the hub.

        :raises TypeError: ``event_filter`` is not an :class:`EventFilter`.
        """
        if not isinstance(event_filter, EventFilter):
            raise TypeError(f"filter_by() takes an EventFilter, not {type(event_filter).__name__}.")
        self.event_filter = event_filter
        return self

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether ``event`` passes the hub's filter."""
        return self.event_filter(event)

    @property
    def consumers(self) -> list[Consumer]:
        """The registered consumers, in registration order."""
        return list(self._consumers.values())

    @property
    def consumer_names(self) -> list[str]:
        """The Celery task names of the registered consumers."""
        return list(self._consumers)

    def get_consumer(self, name: str) -> Consumer | None:
        """The consumer registered under the task name ``name``, if any."""
        return self._consumers.get(name)

    @overload
    def register_consumer(self, consumer: F) -> F: ...

    @overload
    def register_consumer(
        self,
        consumer: None = None,
        *,
        celery_task_name: str | None = None,
        name: str | None = None,
        pass_event: bool = False,
        **task_options: Any,
    ) -> Callable[[F], F]: ...

    @overload
    def register_consumer(self, consumer: Consumer, **task_options: Any) -> Consumer: ...

    def register_consumer(
        self,
        consumer: Any = None,
        *,
        celery_task_name: str | None = None,
        name: str | None = None,
        pass_event: bool = False,
        **task_options: Any,
    ) -> Any:
        """Register a consumer, as a decorator or with an instance::

            @hub.register_consumer
            def audit(event_json): ...

            @hub.register_consumer(celery_task_name="app.write_to_file")
            def write_to_file(event_json):
                ...

            @hub.register_consumer(pass_event=True, queue="mail", rate_limit="10/m")
            def notify(event):
                send_mail(event["recipients"], event["title"])

            hub.register_consumer(PushConsumer(redis, hub.hub_id))

        A function receives the event's JSON string, as in 0.1, or the
        :class:`~flask_notifications.event.Event` with ``pass_event=True``;
        a :class:`Consumer` receives what its :attr:`~Consumer.pass_event`
        says (see :mod:`flask_notifications.consumers.consumer`).

        Every consumer runs as its own Celery task. The task name must be the
        same in every process: it is ``celery_task_name`` (or ``name``) when
        given, the function's ``module.qualname`` for a function, the
        consumer's :attr:`Consumer.name` when set, and otherwise
        ``flask_notifications.<hub_id>.<ClassName>``, numbered ``-2``, ``-3``
        for further instances of one class on one hub.

        :param pass_event: call the function with the :class:`Event` rather
            than its JSON; for a :class:`Consumer`, subclass
            :class:`~flask_notifications.consumers.consumer.EventConsumer`.
        :param task_options: options of the consumer's Celery task, as
            ``celery.task(**options)`` takes them and as 0.1 passed them on:
            ``queue``, ``rate_limit``, ``time_limit``, ``priority``...
        :return: the function or the consumer, unchanged.
        :raises ConsumerError: the name is taken by another consumer of this
            hub, the argument is not a consumer or a function, or a task
            option is one the extension must set itself.
        """
        if celery_task_name is not None and name is not None and celery_task_name != name:
            raise ConsumerError("Give either celery_task_name or name, not both.")
        reserved = sorted(set(task_options) & RESERVED_TASK_OPTIONS)
        if reserved:
            raise ConsumerError(
                f"register_consumer() cannot set the task option(s) {', '.join(reserved)}: the extension's "
                "consumer tasks are bound, JSON-only and acknowledged late whatever the consumer."
            )
        task_name = celery_task_name or name
        if consumer is None:

            def decorator(func: F) -> F:
                self._register_function(func, task_name, pass_event, task_options)
                return func

            return decorator
        if isinstance(consumer, Consumer):
            if pass_event:
                raise ConsumerError(
                    "pass_event is for functions; a Consumer that wants an Event subclasses EventConsumer."
                )
            self._add(task_name or consumer.name or self._default_name(consumer), consumer, task_options)
            return consumer
        if callable(consumer):
            self._register_function(consumer, task_name, pass_event, task_options)
            return consumer
        raise ConsumerError(f"register_consumer() takes a Consumer or a function, not {type(consumer).__name__}.")

    def _register_function(
        self, func: Callable[..., Any], task_name: str | None, pass_event: bool, task_options: dict[str, Any]
    ) -> None:
        name = task_name or f"{func.__module__}.{func.__qualname__}"
        self._add(name, FunctionConsumer(func, name, pass_event=pass_event), task_options)

    def task_options(self, name: str) -> dict[str, Any]:
        """The Celery task options given when the consumer named ``name``
        was registered."""
        return dict(self._task_options.get(name, {}))

    def _default_name(self, consumer: Consumer) -> str:
        base = f"flask_notifications.{self.hub_id}.{type(consumer).__name__}"
        candidate, number = base, 1
        while candidate in self._consumers:
            number += 1
            candidate = f"{base}-{number}"
        return candidate

    def _add(self, task_name: str, consumer: Consumer, task_options: dict[str, Any]) -> None:
        if not isinstance(task_name, str) or not task_name:
            raise ConsumerError(f"Invalid consumer task name {task_name!r}.")
        if self.is_registered(consumer):
            raise ConsumerError(f"{consumer!r} is already registered on hub {self.hub_id!r}.")
        if task_name in self._consumers:
            raise ConsumerError(
                f"Hub {self.hub_id!r} already has a consumer named {task_name!r}; "
                "give this one another celery_task_name."
            )
        self._consumers[task_name] = consumer
        self._task_options[task_name] = dict(task_options)
        if self._notifications is not None:
            self._notifications._consumer_added(task_name, task_options)

    def _find(self, consumer: object) -> str | None:
        for task_name, registered in self._consumers.items():
            if registered is consumer or (isinstance(registered, FunctionConsumer) and registered.func is consumer):
                return task_name
        return None

    def is_registered(self, consumer: object) -> bool:
        """Whether ``consumer`` (a consumer or a decorated function) is registered."""
        return self._find(consumer) is not None

    def deregister_consumer(self, consumer: object) -> None:
        """Stop delivering to ``consumer``, a consumer or a decorated function.

        Events sent afterwards are not delivered to it; tasks already queued
        for it are dropped by the worker if the worker's hub no longer has it.

        :raises ConsumerError: it is not registered on this hub.
        """
        task_name = self._find(consumer)
        if task_name is None:
            raise ConsumerError(f"{consumer!r} is not registered on hub {self.hub_id!r}.")
        del self._consumers[task_name]
        self._task_options.pop(task_name, None)

    def __repr__(self) -> str:
        return f"<EventHub {self.hub_id!r} filter={self.event_filter!r} consumers={len(self._consumers)}>"
