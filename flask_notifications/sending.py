"""Sending: :meth:`Notifications.send` and :meth:`Notifications.send_many`.

An event is validated, matched against every hub, and handed to Celery as
one dispatch message (one per batch for ``send_many``), so a send either
enqueues everything or raises. The worker fans the message out into one
task per (hub, consumer) (:mod:`flask_notifications.worker.tasks`).

With the outbox on, the message is recorded in the ledger too, and a send
whose record fails raises :class:`~flask_notifications.errors.OutboxUnavailableError`
rather than return: its ``may_be_delivered`` says whether the message had
already been handed to the broker.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import Flask
from kombu.exceptions import OperationalError

from . import signals
from .backends.base import Message
from .errors import (
    BackendError,
    BrokerUnavailableError,
    HubError,
    InvalidEventError,
    LedgerUnavailableError,
    NotificationsError,
    OutboxUnavailableError,
    SendInProgressError,
)
from .event import Event
from .event_hub import EventHub
from .ledger.base import Claim, Ledger
from .worker import outbox
from .worker.claims import claim_or_wait, held
from .worker.messages import DISPATCH_MANY_TASK, DISPATCH_TASK, dispatch_expires, new_delivery_id, sent_key

if TYPE_CHECKING:
    from .event_hub import EventHub
    from .ext import Notifications
    from .state import Runtime

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dispatch:
    """What :meth:`Notifications.send` did with an event.

    :param event: the validated event.
    :param hub_ids: the hubs whose filter matched, in creation order.
    :param task_id: the id of the Celery dispatch task, or ``None`` when
        nothing was enqueued (no consumer matched, the event expired, or the
        send was a duplicate).
    :param delivery_id: the id of this send, which every consumer's
        :func:`~flask_notifications.worker.delivery.current_delivery` carries.
    :param duplicate: ``True`` when ``idempotency_key`` was already sent
        within ``NOTIFICATIONS_IDEMPOTENCY_WINDOW``; nothing was enqueued.
    """

    event: Event
    hub_ids: tuple[str, ...]
    task_id: str | None
    delivery_id: str | None = None
    duplicate: bool = False


def send(
    ext: Notifications, event: Event | Mapping[str, Any] | str | bytes, *, idempotency_key: str | None = None
) -> Dispatch:
    """What :meth:`Notifications.send() <flask_notifications.ext.Notifications.send>`
    does, which documents the contract: validate, match every hub, enqueue one
    dispatch message, or raise (sending :data:`~flask_notifications.signals.send_failed`)."""
    state = ext.runtime()
    app = state.app
    try:
        return _send(ext, app, state, event, idempotency_key)
    except NotificationsError as exc:
        signals.send_failed.send(app, exception=exc)
        raise


def _send(
    ext: Notifications,
    app: Flask,
    state: Runtime,
    event: Event | Mapping[str, Any] | str | bytes,
    idempotency_key: str | None,
) -> Dispatch:
    event = coerce_event(event)
    event_json = event.to_json()
    limit = app.config["NOTIFICATIONS_MAX_EVENT_SIZE"]
    size = len(event_json.encode("utf-8"))
    if limit and size > limit:
        raise InvalidEventError(f"The event is {size} bytes, more than NOTIFICATIONS_MAX_EVENT_SIZE ({limit}).")
    if event.is_expired():
        logger.info("Not sending expired event %s.", event["event_id"])
        return Dispatch(event, (), None)
    delivery_id = new_delivery_id()
    key = None if idempotency_key is None else sent_key(idempotency_key)
    hold = float(app.config["NOTIFICATIONS_SEND_CLAIM_TIMEOUT"])
    if key is not None:
        # Held briefly while this call enqueues; recorded as sent for the
        # whole window only once the dispatch message is on the broker.
        claimed = claim_or_wait(state.ledger, key, delivery_id, hold, wait=hold + 0.1)
        if claimed is Claim.DONE:
            logger.info(
                "Not sending event %s: idempotency key %r was sent already.", event["event_id"], idempotency_key
            )
            return Dispatch(event, (), None, duplicate=True)
        if claimed is Claim.BUSY:
            raise SendInProgressError(
                f"Another send with idempotency key {idempotency_key!r} is still in progress; "
                "nothing was enqueued. Try again once it has finished.",
                idempotency_key or "",
            )
    task_id = None
    window = float(app.config["NOTIFICATIONS_IDEMPOTENCY_WINDOW"])
    progress = _Progress()
    with held(state.ledger, key or "", delivery_id, hold, needed=key is not None):
        try:
            matched = [hub for hub in ext.hubs.values() if hub.matches(event)]
            targets = [[hub.hub_id, name] for hub in matched for name in hub.consumer_names]
            if targets:
                task_id = _publish_recorded(
                    app,
                    state,
                    [(delivery_id, event_json, targets)],
                    state.celery.tasks[DISPATCH_TASK],
                    f"event {event['event_id']} was not sent",
                    progress,
                    args=(event_json, targets),
                    kwargs={"delivery_id": delivery_id},
                    expires=dispatch_expires(ext, event, targets),
                )
        except BaseException as exc:
            if key is not None:
                if progress.published or (isinstance(exc, OutboxUnavailableError) and exc.may_be_delivered):
                    # It may be delivered: a retry with the key is a duplicate.
                    _record_sent(state.ledger, key, delivery_id, window)
                else:
                    _release_key(state.ledger, key, delivery_id)
            raise
    if key is not None:
        _record_sent(state.ledger, key, delivery_id, window)
    for hub in matched:
        signals.hub_matched.send(app, event=event, hub=hub)
    hub_ids = tuple(hub.hub_id for hub in matched)
    signals.event_sent.send(app, event=event, hub_ids=hub_ids)
    return Dispatch(event, hub_ids, task_id, delivery_id)


def send_many(ext: Notifications, events: Iterable[Event | Mapping[str, Any] | str | bytes]) -> list[Dispatch]:
    """What :meth:`Notifications.send_many() <flask_notifications.ext.Notifications.send_many>`
    does, which documents the contract: every event as :func:`send` would, in
    one dispatch message, all or nothing."""
    state = ext.runtime()
    app = state.app
    try:
        return _send_many(ext, app, state, events)
    except NotificationsError as exc:
        signals.send_failed.send(app, exception=exc)
        raise


def _send_many(
    ext: Notifications, app: Flask, state: Runtime, events: Iterable[Event | Mapping[str, Any] | str | bytes]
) -> list[Dispatch]:
    limit = app.config["NOTIFICATIONS_MAX_EVENT_SIZE"]
    hubs = list(ext.hubs.values())
    # (event, its JSON, matched hubs or None when expired, targets, delivery id)
    batch: list[tuple[Event, str, list[EventHub] | None, list[list[str]], str | None]] = []
    for index, item in enumerate(events):
        try:
            event = coerce_event(item)
            event_json = event.to_json()
        except InvalidEventError as exc:
            raise InvalidEventError(f"Event {index} of the batch is invalid: {exc}") from exc
        size = len(event_json.encode("utf-8"))
        if limit and size > limit:
            raise InvalidEventError(
                f"Event {index} of the batch is {size} bytes, more than NOTIFICATIONS_MAX_EVENT_SIZE ({limit})."
            )
        if event.is_expired():
            logger.info("Not sending expired event %s.", event["event_id"])
            batch.append((event, event_json, None, [], None))
            continue
        passed = [hub for hub in hubs if hub.matches(event)]
        targets = [[hub.hub_id, name] for hub in passed for name in hub.consumer_names]
        # One delivery id per event, as send() has one per call: 128
        # random bits in hex, as new_delivery_id() (uuid4) gives, at a
        # sixth of its cost.
        batch.append((event, event_json, passed, targets, os.urandom(16).hex()))
    items = [[event_json, targets, delivery_id] for _, event_json, _, targets, delivery_id in batch if targets]
    expiries = [dispatch_expires(ext, event, targets) for event, _, _, targets, _ in batch if targets]
    task_id = _publish_batch(app, state, expiries, items)
    dispatches = []
    for event, _, matched, targets, delivery_id in batch:
        if matched is None:  # expired
            dispatches.append(Dispatch(event, (), None))
            continue
        for hub in matched:
            signals.hub_matched.send(app, event=event, hub=hub)
        hub_ids = tuple(hub.hub_id for hub in matched)
        signals.event_sent.send(app, event=event, hub_ids=hub_ids)
        dispatches.append(Dispatch(event, hub_ids, task_id if targets else None, delivery_id))
    return dispatches


def _publish_batch(app: Flask, state: Runtime, expiries: list[datetime | None], items: list[list[Any]]) -> str | None:
    if not items:
        return None
    # The batch lives as long as its longest-lived dispatch.
    expires = None if None in expiries else max(e for e in expiries if e is not None)
    task = state.celery.tasks[DISPATCH_MANY_TASK]
    what = f"none of the {len(items)} events were sent"
    sends = [(delivery_id, event_json, targets) for event_json, targets, delivery_id in items]
    return _publish_recorded(app, state, sends, task, what, _Progress(), args=(items,), expires=expires)


@dataclass
class _Progress:
    """How far a send got, for its idempotency key: ``published``, whether
    its message was handed to the broker, after which an interrupted send
    (a ``gevent.Timeout``) may still be delivered."""

    published: bool = False


def _publish_recorded(
    app: Flask,
    state: Runtime,
    sends: list[tuple[str, str, list[list[str]]]],
    task: Any,
    what: str,
    progress: _Progress,
    **options: Any,
) -> str:
    """:func:`publish`, after recording ``sends`` (``(delivery id, event
    JSON, targets)`` each) in the outbox, so that a dispatch message the
    broker loses once it took it is enqueued again (see
    :mod:`flask_notifications.worker.outbox`).

    A record that may have been written is a send that may be delivered
    (the sweeper enqueues it), so its message goes out too: the dispatch's
    claim makes the two one delivery.

    :raises OutboxUnavailableError: the record failed, before the enqueue
        (nothing was enqueued or recorded: ``may_be_delivered`` is
        ``False``) or on its way while the message went out (``True``).
    :raises BrokerUnavailableError: the broker refused the message; its
        record is removed, or, when the ledger failed too, may stay (the
        error says so), so that sending again never loses the events and
        may deliver them twice.
    """
    delivery_ids = [delivery_id for delivery_id, _, _ in sends]
    they = "it is" if len(delivery_ids) == 1 else "they are"
    try:
        # The record's round trip to the ledger overlaps the enqueue's.
        recorded = outbox.record_sends(app, state.ledger, sends)
    except LedgerUnavailableError as exc:
        raise OutboxUnavailableError(
            f"Could not record the send in the outbox, so {what}; send again once the ledger answers: {exc}",
            may_be_delivered=False,
            delivery_ids=delivery_ids,
        ) from exc
    try:
        task_id = publish(app, task, what, **options)
    except BrokerUnavailableError as exc:
        if _record_stays(state.ledger, recorded, delivery_ids):
            # Not "may be delivered": whether the record is there is not
            # known, and if it is not, a caller told so would lose the
            # events. Sent again, they may be delivered twice instead.
            raise BrokerUnavailableError(
                f"{exc}. Its record in the outbox may stay (the ledger failed too), and then the outbox's "
                f"sweeper delivers {'it' if len(delivery_ids) == 1 else 'them'} too once the broker answers: "
                "sending again may deliver twice."
            ) from exc
        raise
    except BaseException:
        _record_stays(state.ledger, recorded, delivery_ids)
        raise
    progress.published = True
    try:
        recorded()
    except BackendError as exc:
        raise OutboxUnavailableError(
            f"The dispatch message was handed to the broker, but its record in the outbox failed ({exc}), so "
            f"{they} delivered unless the broker loses the message, which nothing would mend; sending again may "
            "deliver twice.",
            may_be_delivered=True,
            delivery_ids=delivery_ids,
        ) from exc
    return task_id


def _record_stays(ledger: Ledger, recorded: Any, delivery_ids: list[str]) -> bool:
    """After a send's enqueue raised: wait for its record, and remove it,
    so that the caller may send again. Whether a record may stay, which
    the outbox's sweeper delivers."""
    try:
        written = recorded()
    except LedgerUnavailableError:
        return False  # the ledger refused the write: nothing was recorded
    except BackendError as exc:
        logger.warning("The record of a send that raised may stay in the outbox (%s) and be delivered.", exc)
        return True
    return bool(written) and not outbox.forget_sends(ledger, delivery_ids)


def publish(app: Flask, task: Any, what: str, **options: Any) -> str:
    """Put one dispatch message on the broker, as JSON, retrying by
    ``NOTIFICATIONS_PUBLISH_RETRY_POLICY``; return its task id.

    :param what: what the error says was not sent.
    :raises BrokerUnavailableError: the broker cannot be reached.
    """
    try:
        result = task.apply_async(
            serializer="json", retry=True, retry_policy=app.config["NOTIFICATIONS_PUBLISH_RETRY_POLICY"], **options
        )
    except (OperationalError, OSError) as exc:
        raise BrokerUnavailableError(f"Could not reach the Celery broker, so {what}: {exc}") from exc
    return str(result.id)


def push(ext: Notifications, hub: EventHub | str, event: Event | Mapping[str, Any] | str | bytes) -> Message | None:
    """Publish ``event`` straight to ``hub``'s stream through the backend,
    without Celery; see :meth:`Notifications.publish`."""
    state = ext.runtime()
    target = hub if isinstance(hub, EventHub) else _find_hub(ext, hub)
    event = coerce_event(event)
    event_json = event.to_json()
    limit = state.app.config["NOTIFICATIONS_MAX_EVENT_SIZE"]
    size = len(event_json.encode("utf-8"))
    if limit and size > limit:
        raise InvalidEventError(f"The event is {size} bytes, more than NOTIFICATIONS_MAX_EVENT_SIZE ({limit}).")
    if event.is_expired():
        logger.info("Not publishing expired event %s.", event["event_id"])
        return None
    started = time.perf_counter()
    message = state.backend.publish(target.hub_id, event_json)
    seconds = time.perf_counter() - started
    signals.event_published.send(state.app, hub_id=target.hub_id, message=message, seconds=seconds)
    return message


def _find_hub(ext: Notifications, name: str) -> EventHub:
    """The hub whose id or label is ``name``."""
    from .event_hub import hub_id_for

    hubs = ext.hubs
    if name in hubs:
        return hubs[name]
    try:
        return ext.get_hub(hub_id_for(name))
    except (HubError, ValueError):
        return ext.get_hub(name)


def coerce_event(event: object) -> Event:
    """Turn what :meth:`Notifications.send` accepts into a validated event.

    :raises InvalidEventError: it is not an event.
    """
    if isinstance(event, Event):
        event.validate()
        return event
    if isinstance(event, (str, bytes, bytearray)):
        return Event.from_json(bytes(event) if isinstance(event, bytearray) else event)
    if isinstance(event, Mapping):
        return Event.from_dict(event)
    raise InvalidEventError(f"send() takes an Event, a dict or a JSON string, not {type(event).__name__}.")


def _release_key(ledger: Ledger, key: str, token: str) -> None:
    try:
        ledger.release(key, token)
    except BackendError as exc:
        # The hold expires on its own within NOTIFICATIONS_SEND_CLAIM_TIMEOUT.
        logger.warning("Could not free the idempotency key %s (%s); it frees itself shortly.", key, exc)


def _record_sent(ledger: Ledger, key: str, token: str, window: float) -> None:
    """Record the key as sent for ``window`` seconds, after its enqueue."""
    try:
        recorded = ledger.complete(key, token, window)
    except BackendError as exc:
        recorded = False
        logger.warning("The event of idempotency key %s was sent, but its record failed: %s", key, exc)
    if not recorded:
        logger.warning(
            "The event of idempotency key %s was sent, but not recorded as sent: a send with the key once its "
            "hold expires (NOTIFICATIONS_SEND_CLAIM_TIMEOUT) is sent again.",
            key,
        )
