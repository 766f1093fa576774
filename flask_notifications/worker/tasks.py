"""The Celery side: the dispatch task and one task per consumer.

:meth:`Notifications.send` enqueues a single ``flask_notifications.dispatch``
message per event, so a send is all-or-nothing at the broker. Every send is a
*delivery* with an id of its own, carried by that message and by every task
it fans out to: one per (hub, consumer), each retried on its own, so one
failing consumer never holds up another. Both kinds of task acknowledge late
and are rejected back to the queue if the worker dies, and a claim per
(delivery, hub, consumer) in the ledger makes a redelivered task skip an
effect that already happened. A claim is owned by one run (a token), kept
alive while the consumer runs, and recorded as done for as long as the broker
may still redeliver the task.

Messages queued before delivery ids existed carry none; their delivery id is
the event's ``event_id``, as their claims were keyed then.

Only JSON crosses the broker: the event's JSON string and plain lists.
"""

from __future__ import annotations

import functools
import logging
import traceback
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from celery import Celery, Task
from celery import signals as celery_signals
from celery.exceptions import Reject, Retry
from flask import Flask, current_app, has_app_context
from kombu.exceptions import OperationalError

from .. import signals
from ..backoff import backoff
from ..errors import BackendError, InvalidEventError, NotificationsError, PermanentConsumerError, RetryLaterError
from ..event import Event
from ..ledger.base import Claim, Ledger
from ..state import runtime
from . import dead_letters, outbox
from .claims import complete_held, held, idempotency_ttl
from .delivery import Delivery, delivering
from .messages import (
    DELIVERY_HEADER,
    DISPATCH_MANY_TASK,
    DISPATCH_TASK,
    claim_key,
    enqueue_delivery,
    expires_at,
    honours_expiry,
)
from .outcome import Outcome

if TYPE_CHECKING:
    from ..ext import Notifications

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Options every task of this extension runs with.
TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    "serializer": "json",
    "max_retries": None,
    "shared": False,
}


@contextmanager
def app_context(app: Flask) -> Iterator[None]:
    """Run inside ``app``'s context, reusing it if it is already pushed."""
    if has_app_context() and current_app == app:
        yield
    else:
        with app.app_context():
            yield


#: The application each Celery app runs its tasks for: the one most recently
#: set up on it, so an application factory may build a new app per test.
_flask_apps: weakref.WeakKeyDictionary[Celery, weakref.ref[Flask]] = weakref.WeakKeyDictionary()


def bind(celery: Celery, app: Flask) -> None:
    """Make ``celery``'s tasks run for ``app`` and register the dispatch task."""
    _flask_apps[celery] = weakref.ref(app)
    if DISPATCH_TASK not in celery.tasks:
        celery.task(name=DISPATCH_TASK, **TASK_OPTIONS)(_dispatch)
    if DISPATCH_MANY_TASK not in celery.tasks:
        celery.task(name=DISPATCH_MANY_TASK, **TASK_OPTIONS)(_dispatch_many)
    celery_signals.task_unknown.connect(_on_unknown_task, weak=False, dispatch_uid="flask_notifications.unknown")
    outbox.install(celery, app)


#: Task options that choose where a message goes. Celery deprecates them as
#: task attributes, so they are applied when the task is enqueued.
ROUTING_OPTIONS = frozenset({"queue", "exchange", "exchange_type", "routing_key", "priority", "delivery_mode"})


def register_consumer_task(celery: Celery, task_name: str, **options: Any) -> None:
    """Register the task that runs the consumers named ``task_name``, with
    the Celery task ``options`` given to ``register_consumer``."""
    if task_name not in celery.tasks:
        routing = {key: value for key, value in options.items() if key in ROUTING_OPTIONS}
        attributes = {key: value for key, value in options.items() if key not in ROUTING_OPTIONS}
        task = celery.task(name=task_name, **{**attributes, **TASK_OPTIONS})(_consume)
        task.notifications_routing = routing


def _flask_app(celery: Celery) -> Flask:
    if has_app_context() and "notifications" in current_app.extensions:
        return runtime().app
    ref = _flask_apps.get(celery)
    found = ref() if ref is not None else None
    if found is None:
        raise NotificationsError(
            "No Flask application is set up with Flask-Notifications on this Celery app; "
            "the worker must import the module that calls init_app()."
        )
    return found


def _dispatch(task: Task, event_json: str, targets: list[list[str]], delivery_id: str | None = None) -> int:
    app = _flask_app(task.app)
    with app_context(app):
        ext = runtime(app).extension
        event = Event.from_json(event_json)
        delivery_id = delivery_id or event["event_id"]
        if event.is_expired():
            # Only the consumers that outlive the event's expiry still get it.
            targets = [target for target in targets if not honours_expiry(ext, *target)]
        ledger = runtime(app).ledger
        # The outbox may have enqueued this dispatch again while it waited.
        token = uuid.uuid4().hex
        claimed = outbox.claim_dispatch(app, ledger, delivery_id, token)
        if claimed is Claim.DONE:
            logger.info("Delivery %s was dispatched already; skipping this copy.", delivery_id)
            return 0
        if claimed is Claim.BUSY:
            raise _retry(task, countdown=min(30.0, float(app.config["NOTIFICATIONS_CLAIM_TIMEOUT"])))
        # The outbox now waits for each consumer's run instead of the dispatch.
        covered = [(hub_id, task_name) for hub_id, task_name in targets if _idempotent(ext, hub_id, task_name)]
        recorded = outbox.fanning_out(app, ledger, delivery_id, event_json, covered)
        if not recorded and claimed is Claim.ACQUIRED:
            # The ledger failed since the claim: the consumers' messages would
            # have no entry if the broker lost them. Try again once it answers.
            outbox.dispatched(app, task.app, ledger, delivery_id, token, ok=False)
            raise _retry(task, countdown=backoff(task.request.retries, 1.0, 30.0))
        try:
            for hub_id, task_name in targets:
                expires = expires_at(event) if honours_expiry(ext, hub_id, task_name) else None
                enqueue_delivery(task.app, task_name, hub_id, event_json, delivery_id, expires=expires)
        except (OperationalError, OSError) as exc:
            # The broker is unreachable. Consumers already enqueued get the
            # delivery again on the retry, and their claims skip it.
            outbox.dispatched(app, task.app, ledger, delivery_id, token, ok=False)
            logger.warning("Could not enqueue the consumers of delivery %s, retrying: %r", delivery_id, exc)
            raise _retry(task, countdown=backoff(task.request.retries, 1.0, 30.0), exc=exc) from exc
        # Done only if the consumers have their entries (see outbox.dispatched).
        outbox.dispatched(app, task.app, ledger, delivery_id, token, ok=recorded)
        return len(targets)


def _idempotent(ext: Notifications, hub_id: str, task_name: str) -> bool:
    hub = ext.hubs.get(hub_id)
    consumer = hub.get_consumer(task_name) if hub is not None else None
    return consumer is not None and consumer.idempotent


def _dispatch_many(task: Task, items: list[list[Any]]) -> int:
    """Fan out each ``[event_json, targets, delivery_id]`` of a batch as
    :func:`_dispatch` does one event. When the broker fails half-way, the
    whole batch is retried; the consumers already enqueued get their event
    again, and their claims skip it."""
    return sum(_dispatch(task, event_json, targets, delivery_id) for event_json, targets, delivery_id in items)


def _retry(task: Task, **options: Any) -> Retry:
    """``task.retry(**options)``, but when the broker cannot take the retry
    message either, the delivery goes back to the queue (or stays unacknowledged
    until the broker returns) rather than being dropped, as Celery's own
    ``Reject(requeue=False)`` would drop it."""
    try:
        retry: Retry = task.retry(**options)
    except Reject as exc:
        raise Reject(exc.reason, requeue=True) from exc
    return retry


@dataclass(frozen=True)
class _Run:
    """One run of a consumer task: what its message carries, and so what a
    retry carries on. ``failures`` counts the consumer's failures only (an
    unreachable backend or a busy claim spend none); ``record`` is the token
    whose completion is still to be recorded, when the effect happened but
    its record could not be written; ``letter`` is the dead letter (id and
    retry token) this run retries."""

    hub_id: str
    event_json: str
    delivery_id: str | None
    failures: int = 0
    record: str | None = None
    letter: list[str] | None = None

    def again(self, task: Task, countdown: float, exc: BaseException | None = None, **changes: Any) -> Retry:
        """The retry of this run, with ``changes``."""
        run = replace(self, **changes)
        kwargs: dict[str, Any] = {"failures": run.failures}
        if run.delivery_id is not None:
            kwargs["delivery_id"] = run.delivery_id
        if run.record is not None:
            kwargs["record"] = run.record
        if run.letter is not None:
            kwargs["letter"] = run.letter
        options: dict[str, Any] = {"headers": {DELIVERY_HEADER: run.delivery_id or ""}}
        if exc is not None:
            options["exc"] = exc
        return _retry(task, args=(run.hub_id, run.event_json), kwargs=kwargs, countdown=countdown, **options)


def _consume(
    task: Task,
    hub_id: str,
    event_json: str,
    failures: int = 0,
    completed: bool = False,
    *,
    delivery_id: str | None = None,
    record: str | None = None,
    letter: list[str] | None = None,
) -> str:
    # ``completed`` is the 0.x message format's flag for "only the record is
    # missing"; ``record`` carries the claim's token now.
    app = _flask_app(task.app)
    with app_context(app):
        ext = runtime(app).extension
        run = _Run(hub_id, event_json, delivery_id, failures, record or ("" if completed else None), letter)
        outcome = _run_consumer(task, ext, app, run)
        if delivery_id is not None:
            outbox.finished(app, runtime(app).ledger, delivery_id, hub_id, task.name)
        return outcome


def _run_consumer(task: Task, ext: Notifications, app: Flask, run: _Run) -> Outcome:
    task_name: str = task.name
    ledger = runtime(app).ledger
    safely = functools.partial(_backend_call, task, run)
    hub = ext.hubs.get(run.hub_id)
    consumer = hub.get_consumer(task_name) if hub is not None else None
    if hub is None or consumer is None:
        logger.error(
            "No consumer %s on hub %r in this worker; keeping the delivery as a dead letter.", task_name, run.hub_id
        )
        error = f"NotRegistered: no consumer {task_name!r} on hub {run.hub_id!r} in this worker"
        safely(_keep, app, ledger, task_name, run, error, "")
        return Outcome.UNREGISTERED
    try:
        event = Event.from_json(run.event_json)
    except InvalidEventError:
        logger.exception("The event of %s for hub %r is invalid; keeping it as a dead letter.", task_name, run.hub_id)
        safely(_keep, app, ledger, task_name, replace(run, failures=run.failures + 1), *_error_info())
        return Outcome.INVALID

    config = app.config
    delivery_id = run.delivery_id or event["event_id"]
    key = claim_key(delivery_id, run.hub_id, task_name)
    ttl = idempotency_ttl(app, task.app)
    if run.record is not None:
        # The effect happened on an earlier attempt; only its record is missing.
        safely(ledger.complete, key, run.record, ttl)
        _retried(safely, ledger, run)
        return Outcome.CONSUMED
    if event.is_expired() and consumer.honours_expiry:
        return Outcome.EXPIRED
    if consumer.channel is not None and event["recipients"] and config["NOTIFICATIONS_PREFERENCES"]:
        # The users' preferences, before any effect: the consumer gets only the
        # recipients who want its channel. A database outage retries the task
        # as a ledger outage does, spending none of the consumer's retries.
        narrowed = safely(ext.preferences.narrow, event, hub, consumer.channel)
        if narrowed is None:
            logger.info("Consumer %s skipped delivery %s of hub %r: opted out.", task_name, delivery_id, run.hub_id)
            return Outcome.OPTED_OUT
        event = narrowed

    timeout = float(config["NOTIFICATIONS_CLAIM_TIMEOUT"])
    token = uuid.uuid4().hex
    claimed = Claim.ACQUIRED
    if consumer.idempotent:
        claimed = safely(ledger.claim, key, token, timeout)
    if claimed is Claim.DONE:
        _retried(safely, ledger, run)
        return Outcome.DUPLICATE
    if claimed is Claim.BUSY:
        # Another run holds the claim (and keeps it alive), or a dead
        # worker's claim has not expired yet: come back later without
        # spending a retry.
        outbox.postpone(app, ledger, delivery_id, run.hub_id, task_name, min(30.0, timeout))
        raise run.again(task, countdown=min(30.0, timeout))
    delivery = Delivery(delivery_id, run.hub_id, task_name, run.failures + 1)
    try:
        with held(ledger, key, token, timeout, consumer.idempotent), delivering(delivery):
            consumed = consumer(event)
    except Exception as exc:
        if consumer.idempotent:
            _release(ledger, key, token)
        if isinstance(exc, (Retry, Reject)):
            raise
        # A consumer says that trying again cannot help by raising a
        # PermanentConsumerError: the delivery is dead-lettered at once.
        permanent = isinstance(exc, PermanentConsumerError)
        will_retry = not permanent and run.failures < config["NOTIFICATIONS_MAX_RETRIES"]
        signals.consumer_failed.send(
            app, event=event, hub_id=run.hub_id, consumer=consumer, exception=exc, will_retry=will_retry
        )
        if will_retry:
            logger.warning("Consumer %s failed on delivery %s, retrying: %r", task_name, delivery_id, exc)
            delay = backoff(
                run.failures,
                config["NOTIFICATIONS_RETRY_BACKOFF"],
                config["NOTIFICATIONS_RETRY_BACKOFF_MAX"],
                config["NOTIFICATIONS_RETRY_JITTER"],
            )
            if isinstance(exc, RetryLaterError) and exc.retry_after is not None:
                # The other side said when (Retry-After); a hostile value is capped.
                delay = max(delay, min(exc.retry_after, float(config["NOTIFICATIONS_RETRY_BACKOFF_MAX"])))
            outbox.postpone(app, ledger, delivery_id, run.hub_id, task_name, delay)
            raise run.again(task, countdown=delay, exc=exc, failures=run.failures + 1) from exc
        logger.error(
            "Consumer %s failed on delivery %s %s: %r",
            task_name,
            delivery_id,
            "permanently" if permanent else "for the last time",
            exc,
        )
        safely(_keep, app, ledger, task_name, replace(run, failures=run.failures + 1), *_error_info())
        return Outcome.DEAD_LETTERED
    except BaseException:
        if consumer.idempotent:
            _release(ledger, key, token)
        raise
    if consumer.idempotent:
        # While the ledger fails, the claim stays held and its record is
        # tried again here, for up to the claim's timeout: a claim left to
        # expire before the retry below records it would let another copy
        # of this message (the broker's redelivery, the outbox's) repeat
        # the effect.
        what = f"the delivery {delivery_id} to {task_name}"
        if not safely(complete_held, app, ledger, key, token, ttl, timeout, what, record=token):
            logger.warning(
                "Consumer %s outlived its claim on delivery %s and another run took it over.", task_name, delivery_id
            )
    _retried(safely, ledger, run, record=token)
    outcome = Outcome.CONSUMED if consumed else Outcome.VETOED
    # One line per run that ended well, as a failure has one: the worker's
    # log then says what each delivery came to, not only what went wrong.
    logger.info("Consumer %s %s delivery %s of hub %r.", task_name, outcome.value, delivery_id, run.hub_id)
    if consumed:
        signals.consumer_succeeded.send(app, event=event, hub_id=run.hub_id, consumer=consumer)
    return outcome


def _retried(safely: Callable[..., Any], ledger: Ledger, run: _Run, record: str | None = None) -> None:
    """Mark the dead letter this run retried (if any) as delivered, so that
    retrying the letter again enqueues nothing."""
    if isinstance(run.letter, list) and len(run.letter) == 2:
        safely(dead_letters.retried, ledger, run.letter, record=record)


def _release(ledger: Ledger, key: str, token: str) -> None:
    try:
        ledger.release(key, token)
    except BackendError as exc:
        # The claim expires on its own after NOTIFICATIONS_CLAIM_TIMEOUT.
        logger.warning("Could not release the claim %s (%s); it expires on its own.", key, exc)


def _keep(app: Flask, ledger: Ledger, task_name: str, run: _Run, error: str, trace: str) -> None:
    dead_letters.keep(
        app,
        ledger,
        hub_id=run.hub_id,
        consumer=task_name,
        event_json=run.event_json,
        delivery_id=run.delivery_id,
        attempts=run.failures,
        error=error,
        trace=trace,
    )


def _backend_call(task: Task, run: _Run, func: Callable[..., T], *args: Any, record: str | None = None) -> T:
    """Call the ledger's ``func``; if the ledger is unreachable, retry the
    task later without spending one of the consumer's retries, so that an
    outage neither loses the delivery nor dead-letters it. ``record`` retries
    only the recording of an effect that already happened."""
    try:
        return func(*args)
    except BackendError as exc:
        logger.warning("The notifications backend is unreachable, retrying %s later: %r", task.name, exc)
        countdown = backoff(min(task.request.retries, 5), 1.0, 30.0)
        raise run.again(
            task, countdown=countdown, exc=exc, record=record if record is not None else run.record
        ) from exc


def _on_unknown_task(sender: Any = None, message: Any = None, name: str = "", **kwargs: Any) -> None:
    """Keep a consumer task that this worker does not know (a deploy renamed
    or removed it, or another application shares the broker) as a dead
    letter, which ``flask notifications retry`` can deliver once a worker
    knows it, instead of letting Celery drop it."""
    celery = getattr(sender, "app", None)
    ref = _flask_apps.get(celery) if celery is not None else None
    app = ref() if ref is not None else None
    if app is None or message is None:
        return
    try:
        args, task_kwargs = message.payload[0], message.payload[1]
        hub_id, event_json = args[0], args[1]
    except (TypeError, KeyError, IndexError, ValueError):
        return
    if not isinstance(hub_id, str) or not isinstance(event_json, str) or not isinstance(task_kwargs, dict):
        return
    headers = message.headers or {}
    if DELIVERY_HEADER not in headers:
        # A message of the old format is ours if it carries an event.
        try:
            Event.from_json(event_json)
        except InvalidEventError:
            return
    delivery_id = task_kwargs.get("delivery_id")
    with app_context(app):
        ledger = runtime(app).ledger
        run = _Run(hub_id, event_json, delivery_id if isinstance(delivery_id, str) else None)
        error = f"NotRegistered: no task {name!r} in this worker"
        try:
            _keep(app, ledger, name, run, error, "")
        except BackendError as exc:
            # Celery has rejected the message already: park the letter on the
            # broker, which listing the dead letters moves to the ledger.
            record = dead_letters.letter(hub_id, name, event_json, run.delivery_id, 0, error)
            try:
                dead_letters.park(app, celery, record)
            except NotificationsError:
                logger.exception(
                    "Could not keep unknown task %s as a dead letter; its message was: %r", name, message.payload
                )
                return
            logger.error("Parked unknown task %s for hub %r on the broker (backend: %s).", name, hub_id, exc)
            return
    logger.error("Kept unknown task %s for hub %r as a dead letter.", name, hub_id)


def _error_info() -> tuple[str, str]:
    text = traceback.format_exc()
    last = text.strip().splitlines()[-1] if text.strip() else ""
    return last, text
