"""Web Push: VAPID keys, every user's push subscriptions, the payload rule
and the subscribe blueprint. Needs the ``webpush`` and ``inbox`` extras, so
each name is imported on first use::

    from flask_notifications.webpush import push_subscriptions, webpush_blueprint
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .payload import MAX_PAYLOAD, PushOptions, default_payload, fit
    from .subscriptions import PushSubscription, PushSubscriptions, push_subscriptions
    from .vapid import VapidKeys
    from .views import webpush_blueprint

__all__ = [
    "MAX_PAYLOAD",
    "PushOptions",
    "PushSubscription",
    "PushSubscriptions",
    "VapidKeys",
    "default_payload",
    "fit",
    "push_subscriptions",
    "webpush_blueprint",
]

_HOMES = {
    "MAX_PAYLOAD": "payload",
    "PushOptions": "payload",
    "default_payload": "payload",
    "fit": "payload",
    "PushSubscription": "subscriptions",
    "PushSubscriptions": "subscriptions",
    "push_subscriptions": "subscriptions",
    "VapidKeys": "vapid",
    "webpush_blueprint": "views",
}

__getattr__ = lazy_exports(__name__, _HOMES)
