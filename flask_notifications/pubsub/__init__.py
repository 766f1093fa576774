"""The pub/sub backends and their interface.

Import them from the package::

    from flask_notifications.pubsub import Backend, RedisPubSub
"""

from __future__ import annotations

from .amqp_pubsub import AmqpPubSub
from .backend import Backend, Claim, History, Message, Subscription, build_backend, resolve_backend
from .memory_pubsub import MemoryPubSub
from .redis_pubsub import RedisPubSub

__all__ = [
    "AmqpPubSub",
    "Backend",
    "Claim",
    "History",
    "MemoryPubSub",
    "Message",
    "RedisPubSub",
    "Subscription",
    "build_backend",
    "resolve_backend",
]
