"""Flask-Notifications: a generic, real-time notification framework for Flask."""

from __future__ import annotations

from .consumers.consumer import Consumer
from .errors import (
    BackendError,
    BrokerUnavailableError,
    ConfigurationError,
    ConsumerError,
    HubError,
    InvalidEventError,
    NotificationsError,
    StreamFormatError,
    TooManyStreamsError,
)
from .event import Event
from .event_filter import EventFilter
from .event_hub import EventHub, current_notifications
from .ext import Dispatch, Notifications
from .filters.not_filter import Not

__version__ = "1.0.0.dev0"

__all__ = [
    "BackendError",
    "BrokerUnavailableError",
    "ConfigurationError",
    "Consumer",
    "ConsumerError",
    "Dispatch",
    "Event",
    "EventFilter",
    "EventHub",
    "HubError",
    "InvalidEventError",
    "Not",
    "Notifications",
    "NotificationsError",
    "StreamFormatError",
    "TooManyStreamsError",
    "current_notifications",
]
