"""Flask-Notifications: a generic, real-time notification framework for Flask.

The names in ``__all__`` are what an application imports: the extension,
events, hubs, the predefined filters and consumers, the proxies and the
signals. (``FlaskMailConsumer`` and ``InboxConsumer`` need extras, so they
are imported from :mod:`flask_notifications.consumers`.) Each also keeps the import path the original documentation
printed (``flask_notifications.consumers.push_consumer.PushConsumer``,
``flask_notifications.filters.with_event_type.WithEventType``, ...).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        OutboxUnavailableError,
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
    "OutboxUnavailableError",
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

_EXPORTS = {
    "Consumer": ".consumers",
    "EventConsumer": ".consumers",
    "FlaskEmailConsumer": ".consumers",
    "LogConsumer": ".consumers",
    "PushConsumer": ".consumers",
    "BackendError": ".errors",
    "BrokerUnavailableError": ".errors",
    "ConfigurationError": ".errors",
    "ConfigurationWarning": ".errors",
    "ConsumerError": ".errors",
    "HubError": ".errors",
    "InvalidEventError": ".errors",
    "NotificationsError": ".errors",
    "OutboxUnavailableError": ".errors",
    "PermanentConsumerError": ".errors",
    "SendInProgressError": ".errors",
    "StreamFormatError": ".errors",
    "TooManyStreamsError": ".errors",
    "Event": ".event",
    "EventFilter": ".event_filter",
    "Not": ".event_filter",
    "EventHub": ".event_hub",
    "Notifications": ".ext",
    "AfterDate": ".filters",
    "Always": ".filters",
    "BeforeDate": ".filters",
    "Expired": ".filters",
    "WithEventType": ".filters",
    "WithField": ".filters",
    "WithId": ".filters",
    "WithRecipient": ".filters",
    "WithRecipients": ".filters",
    "WithSender": ".filters",
    "WithTag": ".filters",
    "Dispatch": ".sending",
    "current_notifications": ".state",
    "current_delivery": ".worker.delivery",
}

# The names resolve on first use (PEP 562), so that importing a submodule, such
# as the gunicorn hooks that gunicorn.conf.py imports in the master process,
# imports neither Celery, nor redis, nor ssl before gevent patches them.


def __getattr__(name: str) -> Any:
    if name == "signals":
        return importlib.import_module(".signals", __name__)
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
