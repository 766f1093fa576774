"""Flask-Notifications: a generic, real-time notification framework for Flask.

The names in ``__all__`` are the public API; the filters, consumers and
backends are re-exported by :mod:`flask_notifications.filters`,
:mod:`flask_notifications.consumers` and :mod:`flask_notifications.pubsub`.
"""

from __future__ import annotations

from .consumers.consumer import Consumer, EventConsumer
from .errors import (
    BackendError,
    BrokerUnavailableError,
    ConfigurationError,
    ConsumerError,
    HubError,
    InvalidEventError,
    NotificationsError,
    PermanentConsumerError,
    SendInProgressError,
    StreamFormatError,
    TooManyStreamsError,
)
from .event import Event
from .event_filter import EventFilter, Not
from .event_hub import EventHub, current_notifications
from .ext import Dispatch, Notifications

__version__ = "1.0.0.dev0"

__all__ = [
    "BackendError",
    "BrokerUnavailableError",
    "ConfigurationError",
    "Consumer",
    "ConsumerError",
    "Dispatch",
    "Event",
    "EventConsumer",
    "EventFilter",
    "EventHub",
    "HubError",
    "InvalidEventError",
    "Not",
    "Notifications",
    "NotificationsError",
    "PermanentConsumerError",
    "SendInProgressError",
    "StreamFormatError",
    "TooManyStreamsError",
    "current_notifications",
]
