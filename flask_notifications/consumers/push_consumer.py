"""The consumer that pushes events to the SSE streams of a hub."""

from __future__ import annotations

import time
from typing import Any

import redis
from flask import current_app, has_app_context

from .. import signals
from ..backends.base import Backend, takes_dedupe_key
from ..backends.redis import RedisPubSub
from ..errors import ConsumerError
from ..event import Event, as_event
from ..state import current_notifications
from ..worker.delivery import current_delivery
from .consumer import EventConsumer


class PushConsumer(EventConsumer):
    """Publish each event to a hub's channel, from which the SSE endpoint
    streams it to browsers.

    ::

        hub.register_consumer(PushConsumer(redis, hub.hub_id))

    :param backend: a :class:`Backend`, a ``redis.Redis`` client (wrapped in a
        :class:`RedisPubSub`, as the original documentation passes one), or
        ``None`` for the application's configured backend.
    :param hub_id: the channel to publish to, normally the hub's id.
    :param name: the Celery task name; see :meth:`EventHub.register_consumer`.
    :raises ConsumerError: ``backend`` is none of these, or ``hub_id`` is empty.
    """

    #: Subject to the users' preferences for the ``stream`` channel.
    channel: str | None = "stream"

    def __init__(self, backend: Backend | redis.Redis[Any] | None, hub_id: str, name: str | None = None) -> None:
        super().__init__(name)
        if backend is not None and not isinstance(backend, (Backend, redis.Redis)):
            raise ConsumerError(
                f"PushConsumer takes a Backend, a redis.Redis client or None, not {type(backend).__name__}."
            )
        if not isinstance(hub_id, str) or not hub_id:
            raise ConsumerError(f"PushConsumer needs the id of the hub to push to, not {hub_id!r}.")
        self._backend = backend
        self.hub_id = hub_id

    @property
    def backend(self) -> Backend:
        """The backend it publishes to. A Redis client is wrapped in a
        :class:`RedisPubSub` configured like the application's backend (key
        prefix, history bounds), so the SSE endpoint reads what it writes."""
        if isinstance(self._backend, Backend):
            return self._backend
        if self._backend is None:
            return current_notifications.backend
        return RedisPubSub.from_config(current_app.config, broker=self._backend)

    def consume(self, event: Event | str) -> None:
        """Publish ``event``, an :class:`Event` or its JSON, to the hub's
        channel and its replay history. Within a delivery
        (:func:`~flask_notifications.worker.delivery.current_delivery`), the
        publish carries the delivery id and this consumer's name as its
        ``dedupe_key``, so a repeat of the delivery is not published again.

        :raises BackendError: the backend cannot be reached; the task is retried.
        """
        backend = self.backend
        started = time.perf_counter()
        data = as_event(event).to_json()
        delivery = current_delivery()
        if delivery is not None and takes_dedupe_key(backend):
            # A redelivered task (a failover may lose its claim) publishes
            # nothing twice within the history window.
            key = f"{delivery.delivery_id}:{delivery.consumer}"
            message = backend.publish(self.hub_id, data, dedupe_key=key)
        else:
            message = backend.publish(self.hub_id, data)
        seconds = time.perf_counter() - started
        if has_app_context():
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            signals.event_published.send(app, hub_id=self.hub_id, message=message, seconds=seconds)

    def __repr__(self) -> str:
        return f"<PushConsumer {self.name!r} to {self.hub_id!r}>"
