"""Web Push (RFC 8030, 8291, 8292): each event as a notification on every
device of each recipient, even with no tab of the application open. Needs
the ``webpush`` extra (pywebpush), and the ``inbox`` extra for the
subscriptions' table; see :doc:`channels`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import current_app
from pywebpush import WebPusher, WebPushException

from ..errors import (
    ConfigurationError,
    ConsumerError,
    PermanentConsumerError,
    PushRejectedError,
    PushServiceUnavailableError,
)
from ..event import Event, as_event
from ..webpush.payload import PushOptions, default_payload, fit, push_options
from ..webpush.subscriptions import PushSubscription, endpoint_allowed, push_subscriptions
from ..webpush.vapid import VapidKeys
from ..worker.delivery import current_delivery
from ..worker.parts import DeliveryParts
from .consumer import EventConsumer

logger = logging.getLogger(__name__)

#: What ``recipients=`` takes: the users an event is pushed to.
RecipientsFunction = Callable[[Event], Iterable[str]]
#: What ``payload=`` takes: the JSON object the service worker receives.
PayloadFunction = Callable[[Event], dict[str, Any]]
#: Statuses of a push service that accepted the message.
_ACCEPTED = frozenset({200, 201, 202})
#: Statuses that say the subscription is gone for good.
_GONE = frozenset({404, 410})


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (a number of seconds or
    an HTTP date), or ``None`` when it is absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _device(subscription: PushSubscription) -> str:
    # Endpoints are capabilities (they carry the device's token): messages
    # and dead letters name a device by its row and push service only.
    parts = urlsplit(subscription.endpoint)
    return f"subscription {subscription.id} ({parts.scheme}://{parts.netloc})"


class WebPushConsumer(EventConsumer):
    """Push each event to every subscribed device of its recipients::

        hub.register_consumer(WebPushConsumer())

    Browsers subscribe through the :func:`~flask_notifications.webpush.webpush_blueprint`,
    and the shipped service worker ``notifications-sw.js`` shows the
    notification and opens its ``url`` on click.

    Each device is pushed to once per delivery: a device is recorded as done
    as soon as its push service accepted the message, so a retry or a
    redelivered task pushes only to the devices still to do. What the push
    service answers decides the rest:

    - ``201``: pushed;
    - ``404`` or ``410``: the subscription is gone, and deleted;
    - ``429`` or ``5xx``, or no answer: retried, not before its
      ``Retry-After`` (:class:`~flask_notifications.errors.PushServiceUnavailableError`);
    - any other status: dead-lettered
      (:class:`~flask_notifications.errors.PushRejectedError`).

    :param recipients: a function of the event returning the users to push
        to; by default the event's ``recipients``.
    :param payload: a function of the event returning the JSON object to
        push; by default :func:`~flask_notifications.webpush.payload.default_payload`.
        It is trimmed to 4 KB by the rule of :mod:`flask_notifications.webpush.payload`.
    :param ttl: seconds a push service keeps a message for an offline device;
        an event's ``push_ttl`` field overrides it. ``None``:
        ``NOTIFICATIONS_WEBPUSH_TTL``.
    :param urgency: ``very-low``, ``low``, ``normal`` or ``high``; an event's
        ``push_urgency`` field overrides it. ``None``:
        ``NOTIFICATIONS_WEBPUSH_URGENCY``.
    :param name: the Celery task name; see :meth:`EventHub.register_consumer`.
    """

    #: Subject to the users' preferences for the ``webpush`` channel.
    channel: str | None = "webpush"

    def __init__(
        self,
        *,
        recipients: RecipientsFunction | None = None,
        payload: PayloadFunction | None = None,
        ttl: int | None = None,
        urgency: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        for option, value in (("recipients", recipients), ("payload", payload)):
            if value is not None and not callable(value):
                raise ConsumerError(f"WebPushConsumer's {option}= takes a function, not {type(value).__name__}.")
        self.recipients = recipients
        self.payload = payload or default_payload
        self.ttl = ttl
        self.urgency = urgency

    def recipients_of(self, event: Event) -> list[str]:
        """The users ``event`` is pushed to."""
        if self.recipients is None:
            return list(event["recipients"])
        found = self.recipients(event)
        if isinstance(found, (str, bytes)):
            raise TypeError(f"The recipients function of {self!r} returned a string; return a list of ids.")
        return list(found)

    def consume(self, event: Event | str) -> None:
        """Push ``event`` to every device of its recipients.

        :raises PushServiceUnavailableError: some devices' push services
            failed for now; the others got the push. Retried.
        :raises PushRejectedError: some push services refused the message
            for good. Dead-lettered.
        :raises PushPayloadTooLargeError: the payload does not fit 4 KB.
        :raises PermanentConsumerError: the VAPID keys are not configured,
            or the event's ``push_ttl`` or ``push_urgency`` is invalid.
        """
        event = as_event(event)
        config = current_app.config
        try:
            keys = VapidKeys.from_config(config)
        except ConfigurationError as exc:
            raise PermanentConsumerError(str(exc)) from None
        devices = push_subscriptions.of_users(self.recipients_of(event))
        patterns = config.get("NOTIFICATIONS_WEBPUSH_ENDPOINTS")
        for device in [device for device in devices if not endpoint_allowed(device.endpoint, patterns)]:
            # Stored while a wider list allowed it: never posted to now.
            logger.warning("Skipped %s: its push service is not allowed now.", _device(device))
            devices.remove(device)
        if not devices:
            return
        data = fit(self.payload(event))
        delivery = current_delivery()
        options = push_options(
            event, delivery.delivery_id if delivery else event["event_id"], self.ttl, self.urgency, config
        )
        timeout = float(config["NOTIFICATIONS_WEBPUSH_TIMEOUT"])
        parts = DeliveryParts.current()
        later: list[PushServiceUnavailableError] = []
        refused: list[PushRejectedError] = []
        with requests.Session() as session:
            session.max_redirects = 0
            for device in devices:
                try:
                    with parts.part(str(device.id)) as todo:
                        if todo:
                            self.push(session, keys, device, data, options, timeout)
                except PushServiceUnavailableError as exc:
                    later.append(exc)
                except PushRejectedError as exc:
                    refused.append(exc)
        if later:
            waits = [exc.retry_after for exc in later if exc.retry_after is not None]
            raise PushServiceUnavailableError(
                f"{len(later)} of {len(devices)} pushes failed for now and will be retried: "
                + "; ".join(str(exc) for exc in later[:5]),
                max(waits) if waits else None,
            )
        if refused:
            raise PushRejectedError(
                f"{len(refused)} of {len(devices)} pushes were refused: " + "; ".join(str(exc) for exc in refused[:5])
            )

    def push(
        self,
        session: requests.Session,
        keys: VapidKeys,
        device: PushSubscription,
        data: bytes,
        options: PushOptions,
        timeout: float,
    ) -> None:
        """Push ``data`` to one ``device``; delete its subscription if the
        push service says it is gone.

        :raises PushServiceUnavailableError: ``429``, ``5xx`` or no answer.
        :raises PushRejectedError: any other refusal.
        """
        headers = {**keys.headers(device.endpoint), **options.headers()}
        try:
            pusher = WebPusher(device.info(), requests_session=session)
            response = pusher.send(data, headers, ttl=options.ttl, content_encoding="aes128gcm", timeout=timeout)
        except WebPushException as exc:
            raise PushRejectedError(f"{_device(device)} cannot be pushed to: {exc.message}") from None
        except requests.TooManyRedirects as exc:
            # Not followed (the session allows none): a push goes to its
            # allowed push service only, never where a redirect points.
            status = exc.response.status_code if exc.response is not None else "a redirect"
            raise PushRejectedError(f"{_device(device)} answered {status}: push services do not redirect") from None
        except requests.RequestException as exc:
            # Sent or not, nobody knows: the push is tried again (see "Duplicates").
            raise PushServiceUnavailableError(f"{_device(device)}: no answer ({type(exc).__name__})") from None
        status = response.status_code
        if status in _ACCEPTED:
            return
        if status in _GONE:
            push_subscriptions.remove(device)
            logger.info("Deleted %s: its push service answered %d (gone).", _device(device), status)
            return
        if status == 429 or status >= 500:
            wait = retry_after(response.headers.get("Retry-After"))
            raise PushServiceUnavailableError(f"{_device(device)} answered {status}", wait)
        raise PushRejectedError(f"{_device(device)} answered {status} {response.reason}: {response.text[:200]!r}")

    def __repr__(self) -> str:
        return f"<WebPushConsumer {self.name!r}>"
