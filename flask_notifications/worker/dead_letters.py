"""Dead letters: deliveries that will not be tried again on their own.

A delivery becomes a dead letter when its consumer failed for the last time,
when its event cannot be read, or when no worker knows its consumer (a task
renamed or removed by a deploy, a hub that no longer exists, two applications
on one broker). The ledger keeps the letters; ``flask notifications failed``
lists them and ``flask notifications retry`` delivers them again, under their
original delivery id, with a fresh retry budget.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from flask import Flask
from kombu.entity import Queue
from kombu.exceptions import KombuError, OperationalError

from .. import signals
from ..errors import BackendError, BrokerUnavailableError, NotificationsError
from ..ledger.base import Ledger
from .messages import enqueue_delivery

logger = logging.getLogger(__name__)

_BROKER_ERRORS: tuple[type[BaseException], ...] = (KombuError, OSError)


def keep(
    app: Flask,
    ledger: Ledger,
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

    :return: the letter, with the ``id`` the ledger keeps it under.
    :raises BackendError: the ledger cannot take it.
    """
    return _add(app, ledger, letter(hub_id, consumer, event_json, delivery_id, attempts, error, trace))


def letter(
    hub_id: str, consumer: str, event_json: str, delivery_id: str | None, attempts: int, error: str, trace: str = ""
) -> dict[str, Any]:
    """The record of a dead letter, as :func:`keep` and :func:`park` keep it."""
    return {
        "hub_id": hub_id,
        "consumer": consumer,
        "event": event_json,
        "delivery_id": delivery_id,
        "error": error,
        "traceback": trace,
        "attempts": attempts,
        "failed_at": datetime.now(UTC).isoformat(),
    }


def _add(app: Flask, ledger: Ledger, record: dict[str, Any]) -> dict[str, Any]:
    record = {**record, "id": ledger.add_dead_letter(record)}
    signals.event_dead_lettered.send(app, dead_letter=record)
    return record


def parking_queue(app: Flask) -> Queue:
    """The broker queue where dead letters wait that the ledger could not
    take when they were made: ``<NOTIFICATIONS_KEY_PREFIX>.parked-dead-letters``."""
    name = f"{app.config['NOTIFICATIONS_KEY_PREFIX']}.parked-dead-letters"
    return Queue(name, routing_key=name, durable=True)  # type: ignore[no-untyped-call]


def park(app: Flask, celery: Celery, record: dict[str, Any]) -> None:
    """Keep a dead letter on the Celery broker, in :func:`parking_queue`, for
    when the ledger cannot take it; :func:`adopt` moves it to the ledger.

    :raises BrokerUnavailableError: the broker cannot take it either.
    """
    queue = parking_queue(app)
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=2)
            producer = conn.Producer()
            producer.publish(
                record,
                exchange="",
                routing_key=queue.name,
                declare=[queue],
                serializer="json",
                delivery_mode=2,
                retry=True,
                retry_policy={"max_retries": 2},
            )
    except _BROKER_ERRORS as exc:
        raise BrokerUnavailableError(f"Could not park the dead letter on the broker: {exc}") from exc


def adopt(app: Flask, celery: Celery, ledger: Ledger) -> int:
    """Move the dead letters parked on the broker (see :func:`park`) into
    the ledger, sending :data:`~flask_notifications.signals.event_dead_lettered`
    for each. A letter leaves the broker only once the ledger kept it.

    :return: how many were moved.
    :raises BackendError: the ledger cannot take them; they stay parked.
    :raises BrokerUnavailableError: the broker cannot be reached.
    """
    moved = 0
    try:
        with celery.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            channel = conn.channel()
            try:
                bound = parking_queue(app)(channel)
                bound.declare()  # type: ignore[no-untyped-call]
                accept = ["json", "application/json"]
                while (message := bound.get(no_ack=False, accept=accept)) is not None:  # type: ignore[no-untyped-call]
                    try:
                        record = message.decode()
                        if not isinstance(record, dict):
                            raise TypeError(f"not a dead letter: {type(record).__name__}")
                    except (KombuError, ValueError, TypeError) as exc:
                        logger.error("Dropping a parked message that is not a dead letter (%s).", exc)
                        message.ack()
                        continue
                    try:
                        _add(app, ledger, record)
                    except BaseException:
                        message.requeue()
                        raise
                    message.ack()
                    moved += 1
            finally:
                channel.close()
    except _BROKER_ERRORS as exc:
        raise BrokerUnavailableError(f"Could not read the dead letters parked on the broker: {exc}") from exc
    return moved


#: The ``retry`` state of a dead letter whose retry was enqueued, and of one
#: whose retry's consumer ran; each followed by the retry's token.
RETRYING = "retrying:"
RETRIED = "done:"


def retry(celery: Celery, ledger: Ledger, letter_id: str) -> dict[str, Any]:
    """Deliver a dead letter again, then remove it.

    The letter is first marked, in one atomic step, with a retry of its own
    (a token); the delivery is enqueued with that token, under the letter's
    original delivery id, and the letter removed after. When the removal
    fails (a crash, the ledger down), the letter stays listed with its
    mark: retrying it again enqueues the *same* retry, which the consumer's
    claim runs once, and once that retry's consumer has run (it marks the
    letter), retrying the letter again enqueues nothing and only removes it.

    :return: the letter.
    :raises NotificationsError: there is no such dead letter.
    :raises BrokerUnavailableError: the broker cannot be reached; the letter
        is kept, unchanged.
    """
    letter = ledger.get_dead_letter(letter_id)
    if letter is None:
        raise NotificationsError(f"There is no dead letter {letter_id!r}.")
    mark = RETRYING + uuid.uuid4().hex
    try:
        state: str | None = ledger.mark_dead_letter(letter_id, "", mark)
    except NotImplementedError:
        state = ""  # a ledger without marks: enqueue, then remove
    if state is None:
        raise NotificationsError(f"There is no dead letter {letter_id!r}.")
    if state.startswith(RETRIED):
        logger.info("Dead letter %s was retried and delivered already; removing it.", letter_id)
        _remove(ledger, letter_id)
        return letter
    token = state[len(RETRYING) :] if state.startswith(RETRYING) else None
    try:
        enqueue_delivery(
            celery,
            letter["consumer"],
            letter["hub_id"],
            letter["event"],
            letter.get("delivery_id"),
            letter=None if token is None else [letter_id, token],
        )
    except (OperationalError, OSError) as exc:
        if state == mark:
            _unmark(ledger, letter_id, mark)
        raise BrokerUnavailableError(f"Could not reach the Celery broker, so {letter_id} is kept: {exc}") from exc
    _remove(ledger, letter_id)
    return letter


def _unmark(ledger: Ledger, letter_id: str, mark: str) -> None:
    """Take back the mark of a retry that was not enqueued (left in place,
    it only makes the next retry reuse its token)."""
    try:
        ledger.mark_dead_letter(letter_id, mark, "")
    except BackendError as exc:
        logger.warning("Could not clear the retry mark of dead letter %s (%s).", letter_id, exc)


def retried(ledger: Ledger, letter: list[str]) -> None:
    """Mark the dead letter ``letter`` (its id and retry token) as retried
    and delivered, if it is still listed with that retry.

    :raises BackendError: the ledger cannot be reached.
    """
    letter_id, token = letter
    try:
        ledger.mark_dead_letter(letter_id, RETRYING + token, RETRIED + token)
    except NotImplementedError:
        pass


def _remove(ledger: Ledger, letter_id: str) -> None:
    try:
        ledger.remove_dead_letter(letter_id)
    except BackendError as exc:
        logger.warning(
            "Dead letter %s was enqueued again but could not be removed (%s); it stays listed with its retry, "
            "which a second retry does not deliver twice.",
            letter_id,
            exc,
        )
