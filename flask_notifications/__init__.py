"""Flask-Notifications: a generic, real-time notification framework for Flask.

The names in ``__all__`` are what an application imports: the extension,
events, hubs, the predefined filters and consumers, the proxies and the
signals. (``FlaskMailConsumer`` and ``InboxConsumer`` need extras, so they
are imported from :mod:`flask_notifications.consumers`.) Each also keeps the import path the original documentation
printed (``flask_notifications.consumers.push_consumer.PushConsumer``,
``flask_notifications.filters.with_event_type.WithEventType``, ...).
"""

from __future__ import annotations

from . import signals
from .consumers import Consumer, EventConsumer, FlaskEmailConsumer, LogConsumer, PushConsumer
from .errors import (
    BackendError,
    BrokerUnavailableError,
    ConfigurationError,
    ConfigurationWarning,
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
from .event_hub import EventHub
from .ext import Notifications
from .filters import (
    AfterDate,
    Always,
    BeforeDate,
    Expired,
    WithEventType,
    WithField,
    WithId,
    WithRecipient,
    WithRecipients,
    WithSender,
    WithTag,
)
from .sending import Dispatch
from .state import current_notifications
from .worker.delivery import current_delivery

__version__ = "1.0.0.dev0"

__all__ = [
    "AfterDate",
    "Always",
    "BackendError",
    "BeforeDate",
    "BrokerUnavailableError",
    "ConfigurationError",
    "ConfigurationWarning",
    "Consumer",
    "ConsumerError",
    "Dispatch",
    "Event",
    "EventConsumer",
    "EventFilter",
    "EventHub",
    "Expired",
    "FlaskEmailConsumer",
    "HubError",
    "InvalidEventError",
    "LogConsumer",
    "Not",
    "Notifications",
    "NotificationsError",
    "PermanentConsumerError",
    "PushConsumer",
    "SendInProgressError",
    "StreamFormatError",
    "TooManyStreamsError",
    "WithEventType",
    "WithField",
    "WithId",
    "WithRecipient",
    "WithRecipients",
    "WithSender",
    "WithTag",
    "current_delivery",
    "current_notifications",
    "signals",
]
