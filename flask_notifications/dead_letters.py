"""Dead letters: deliveries that will not be tried again on their own.

A delivery becomes a dead letter when its consumer failed for the last time,
when its event cannot be read, or when no worker knows its consumer (a task
renamed or removed by a deploy, a hub that no longer exists, two applications
on one broker). The backend keeps the letters; ``flask notifications failed``
lists them and ``flask notifications retry`` delivers them again, under their
original delivery id, with a fresh retry budget.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from flask import Flask
from kombu.exceptions import OperationalError

from . import signals, tasks
from .errors import BackendError, BrokerUnavailableError, NotificationsError
from .pubsub.backend import Backend

logger = logging.getLogger(__name__)


def keep(
    app: Flask,
    backend: Backend,
    *,
    hub_id: str,
    consumer: str,
    event_json: str,
    delivery_id: str | None,
    attempts: int,
    error: str,
    trace: str = "",
) -> dict[str, Any]:
    """Keep a failed delivery as a dead letter and send
    :data:`~flask_notifications.signals.event_dead_lettered`.

    :return: the letter, with the ``id`` the backend keeps it under.
    :raises BackendError: the backend cannot take it.
    """
    record: dict[str, Any] = {
        "hub_id": hub_id,
        "consumer": consumer,
        "event": event_json,
        "delivery_id": delivery_id,
        "error": error,
        "traceback": trace,
        "attempts": attempts,
        "failed_at": datetime.now(UTC).isoformat(),
    }
    record["id"] = backend.add_dead_letter(record)
    signals.event_dead_lettered.send(app, dead_letter=record)
    return record


def retry(celery: Celery, backend: Backend, letter_id: str) -> dict[str, Any]:
    """Deliver a dead letter again, then remove it.

    The delivery is enqueued first and the letter removed after, so a crash
    in between leaves the letter listed rather than lost; retrying it again
    is the same delivery (the same delivery id), which the consumer's claim
    runs once.

    :return: the letter.
    :raises NotificationsError: there is no such dead letter.
    :raises BrokerUnavailableError: the broker cannot be reached; the letter
        is kept, unchanged.
    """
    letter = backend.get_dead_letter(letter_id)
    if letter is None:
        raise NotificationsError(f"There is no dead letter {letter_id!r}.")
    try:
        tasks.enqueue_delivery(celery, letter["consumer"], letter["hub_id"], letter["event"], letter.get("delivery_id"))
    except (OperationalError, OSError) as exc:
        raise BrokerUnavailableError(f"Could not reach the Celery broker, so {letter_id} is kept: {exc}") from exc
    try:
        backend.remove_dead_letter(letter_id)
    except BackendError as exc:
        logger.warning(
            "Dead letter %s was enqueued again but could not be removed (%s); retrying it again repeats no effect.",
            letter_id,
            exc,
        )
    return letter
