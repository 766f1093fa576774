"""The pub/sub backends and their interface.

Import them from the package::

    from flask_notifications.pubsub import Backend, RedisPubSub
"""

from __future__ import annotations

from ..backends.amqp import AmqpPubSub
from ..backends.base import Backend, Claim, History, Message, Subscription, build_backend, resolve_backend
from ..backends.memory import MemoryPubSub
from ..backends.redis import RedisPubSub

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
