"""What crosses the broker: the names, headers and arguments of this
extension's task messages, and the functions that put them there. The
dispatch and consumer tasks, the dead letters and :meth:`Notifications.send`
all enqueue through this module.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celery import Celery

from ..backends.base import SEND_KEY_PREFIX
from ..errors import InvalidEventError
from ..event import Event

if TYPE_CHECKING:
    from ..ext import Notifications

#: Name of the task that fans an event out to its consumers.
DISPATCH_TASK = "flask_notifications.dispatch"
#: Name of the task that fans a batch of :meth:`Notifications.send_many` out.
DISPATCH_MANY_TASK = "flask_notifications.dispatch_many"

#: Header that marks this extension's consumer messages, so that one no
#: worker knows can be recognised and kept as a dead letter.
DELIVERY_HEADER = "notifications_delivery"


def new_delivery_id() -> str:
    """A fresh delivery id, for one :meth:`Notifications.send`."""
    return uuid.uuid4().hex


def claim_key(delivery_id: str, hub_id: str, task_name: str) -> str:
    """The idempotency key of one consumer's run of one delivery."""
    return f"{delivery_id}:{hub_id}:{task_name}"


def sent_key(idempotency_key: str) -> str:
    """The claim key under which ``send(idempotency_key=...)`` records a send.

    :raises InvalidEventError: the key is not a non-empty string of at most
        200 characters.
    """
    if not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= 200:
        raise InvalidEventError("idempotency_key must be a non-empty string of at most 200 characters.")
    return f"{SEND_KEY_PREFIX}{idempotency_key}"


def enqueue(celery: Celery, task_name: str, args: tuple[Any, ...], **options: Any) -> None:
    """Enqueue ``task_name`` as JSON; eager when the task is local and the
    app runs tasks eagerly."""
    task = celery.tasks.get(task_name)
    if task is not None:
        routing = getattr(task, "notifications_routing", {})
        task.apply_async(args=args, serializer="json", **{**routing, **options})
    else:
        celery.send_task(task_name, args=args, serializer="json", **options)


def enqueue_delivery(
    celery: Celery,
    task_name: str,
    hub_id: str,
    event_json: str,
    delivery_id: str | None,
    letter: list[str] | None = None,
    **options: Any,
) -> None:
    """Enqueue the consumer task ``task_name`` for one delivery.

    :param letter: the id and retry token of the dead letter this delivery
        retries, which the consumer marks as retried once it ran.
    """
    kwargs: dict[str, Any] = {} if delivery_id is None else {"delivery_id": delivery_id}
    if letter is not None:
        kwargs["letter"] = letter
    headers = {DELIVERY_HEADER: delivery_id or ""}
    enqueue(celery, task_name, (hub_id, event_json), kwargs=kwargs, headers=headers, **options)


def expires_at(event: Event) -> datetime | None:
    expiration: datetime | None = event["expiration_datetime"]
    return expiration.astimezone(UTC) if expiration is not None else None


def honours_expiry(ext: Notifications, hub_id: str, task_name: str) -> bool:
    hub = ext.hubs.get(hub_id)
    consumer = hub.get_consumer(task_name) if hub is not None else None
    return consumer is None or consumer.honours_expiry


def dispatch_expires(ext: Notifications, event: Event, targets: list[list[str]]) -> datetime | None:
    """When the dispatch message of ``event`` to ``targets`` (``[hub_id,
    task_name]`` pairs) expires: with the event, unless one of the consumers
    opts out of the event's expiry (:attr:`Consumer.honours_expiry`)."""
    if all(honours_expiry(ext, hub_id, task_name) for hub_id, task_name in targets):
        return expires_at(event)
    return None
