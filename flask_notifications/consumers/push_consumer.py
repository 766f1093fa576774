"""The consumer that pushes events to the SSE streams of a hub."""

from __future__ import annotations

from typing import Any

import redis
from flask import current_app

from ..event import Event
from ..event_hub import current_notifications
from ..pubsub.backend import Backend
from ..pubsub.redis_pubsub import RedisPubSub
from .consumer import Consumer


class PushConsumer(Consumer):
    """Publish each event to a hub's channel, from which the SSE endpoint
    streams it to browsers.

    ::

        hub.register_consumer(PushConsumer(redis, hub.hub_id))

    :param backend: a :class:`Backend`, a ``redis.Redis`` client (wrapped in a
        :class:`RedisPubSub`, as the original documentation passes one), or
        ``None`` for the application's configured backend.
    :param hub_id: the channel to publish to, normally the hub's id.
    :param name: the Celery task name; see :meth:`EventHub.register_consumer`.
    """

    def __init__(self, backend: Backend | redis.Redis[Any] | None, hub_id: str, name: str | None = None) -> None:
        super().__init__(name)
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

    def consume(self, event: Event) -> None:
        self.backend.publish(self.hub_id, event.to_json())
