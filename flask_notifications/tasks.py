"""The Celery side: the dispatch task and one task per consumer.

:meth:`Notifications.send` enqueues a single ``flask_notifications.dispatch``
message per event, so a send is all-or-nothing at the broker. The worker fans
it out into one task per (hub, consumer), each retried on its own, so one
failing consumer never holds up another. Both kinds of task acknowledge late
and are rejected back to the queue if the worker dies, and a per-(event,
hub, consumer) claim in the backend makes a redelivered task skip an effect
that already happened.

Only JSON crosses the broker: the event's JSON string and plain lists.
"""

from __future__ import annotations

import functools
import logging
import traceback
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from celery import Celery, Task
from celery.exceptions import Reject, Retry
from flask import Flask, current_app, has_app_context
from kombu.exceptions import OperationalError

from . import signals
from .backoff import backoff
from .delivery import Delivery, delivering
from .errors import BackendError, InvalidEventError, NotificationsError
from .event import Event
from .pubsub.backend import Claim

if TYPE_CHECKING:
    from .ext import Notifications

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Name of the task that fans an event out to its consumers.
DISPATCH_TASK = "flask_notifications.dispatch"
#: Name of the task that fans a batch of :meth:`Notifications.send_many` out.
DISPATCH_MANY_TASK = "flask_notifications.dispatch_many"

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


def claim_key(event_id: str, hub_id: str, task_name: str) -> str:
    """The idempotency key of one consumer's delivery of one event."""
    return f"{event_id}:{hub_id}:{task_name}"


def enqueue(celery: Celery, task_name: str, args: tuple[Any, ...], **options: Any) -> None:
    """Enqueue ``task_name`` as JSON; eager when the task is local and the
    app runs tasks eagerly."""
    task = celery.tasks.get(task_name)
    if task is not None:
        task.apply_async(args=args, serializer="json", **options)
    else:
        celery.send_task(task_name, args=args, serializer="json", **options)


def _expires(event: Event) -> datetime | None:
    expiration: datetime | None = event["expiration_datetime"]
    return expiration.astimezone(UTC) if expiration is not None else None


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


def register_consumer_task(celery: Celery, task_name: str) -> None:
    """Register the task that runs the consumers named ``task_name``."""
    if task_name not in celery.tasks:
        celery.task(name=task_name, **TASK_OPTIONS)(_consume)


def _flask_app(celery: Celery) -> Flask:
    if has_app_context() and "notifications" in current_app.extensions:
        ext: Notifications = current_app.extensions["notifications"]
        return ext.runtime().app
    ref = _flask_apps.get(celery)
    found = ref() if ref is not None else None
    if found is None:
        raise NotificationsError(
            "No Flask application is set up with Flask-Notifications on this Celery app; "
            "the worker must import the module that calls init_app()."
        )
    return found


def _dispatch(task: Task, event_json: str, targets: list[list[str]]) -> int:
    app = _flask_app(task.app)
    with app_context(app):
        event = Event.from_json(event_json)
        if event.is_expired():
            return 0
        try:
            for hub_id, task_name in targets:
                enqueue(task.app, task_name, (hub_id, event_json), expires=_expires(event))
        except (OperationalError, OSError) as exc:
            # The broker is unreachable. Consumers already enqueued get the
            # event again on the retry, and their claims skip it.
            logger.warning("Could not enqueue the consumers of event %s, retrying: %r", event["event_id"], exc)
            raise _retry(task, countdown=backoff(task.request.retries, 1.0, 30.0, True), exc=exc) from exc
        return len(targets)


def _dispatch_many(task: Task, items: list[list[Any]]) -> int:
    """Fan out each ``[event_json, targets, delivery_id]`` of a batch as
    :func:`_dispatch` does one event. When the broker fails half-way, the
    whole batch is retried; the consumers already enqueued get their event
    again, and their claims skip it."""
    # Until delivery ids reach the consumers (issue 11), they key their
    # claims on the event id, as send()'s do.
    return sum(_dispatch(task, event_json, targets) for event_json, targets, _delivery_id in items)


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


def _consume(task: Task, hub_id: str, event_json: str, failures: int = 0, completed: bool = False) -> str:
    app = _flask_app(task.app)
    with app_context(app):
        ext: Notifications = app.extensions["notifications"]
        return _run_consumer(task, ext, app, hub_id, event_json, failures, completed)


def _run_consumer(
    task: Task, ext: Notifications, app: Flask, hub_id: str, event_json: str, failures: int, completed: bool = False
) -> str:
    task_name: str = task.name
    safely = functools.partial(_backend_call, task, hub_id, event_json, failures)
    hub = ext.hubs.get(hub_id)
    consumer = hub.get_consumer(task_name) if hub is not None else None
    if hub is None or consumer is None:
        logger.warning("Dropping %s for hub %r: no such consumer is registered.", task_name, hub_id)
        return "unregistered"
    try:
        event = Event.from_json(event_json)
    except InvalidEventError:
        logger.exception("Dropping %s for hub %r: the event is invalid.", task_name, hub_id)
        safely(ext.runtime(app).dead_letter, hub_id, task_name, event_json, failures + 1, *_error_info())
        return "invalid"

    config = app.config
    backend = ext.get_backend(app)
    key = claim_key(event["event_id"], hub_id, task_name)
    if completed:
        # The effect happened on an earlier attempt; only its record is missing.
        safely(backend.complete, key, config["NOTIFICATIONS_IDEMPOTENCY_TTL"], completed=True)
        return "consumed"
    if event.is_expired():
        return "expired"

    claimed = Claim.ACQUIRED
    if consumer.idempotent:
        claimed = safely(backend.claim, key, config["NOTIFICATIONS_CLAIM_TIMEOUT"])
    if claimed is Claim.DONE:
        return "duplicate"
    if claimed is Claim.BUSY:
        # Another delivery holds the claim, or a dead worker's claim has
        # not expired yet: come back later without spending a retry.
        raise _retry(
            task,
            args=(hub_id, event_json, failures),
            countdown=min(30.0, config["NOTIFICATIONS_CLAIM_TIMEOUT"]),
        )
    try:
        try:
            # Until send() gives each call an id of its own (issue 11), the
            # event id is the delivery id, as the claims key on it.
            delivery = Delivery(event["event_id"], hub_id, task_name, failures + 1)
            with delivering(delivery):
                consumed = consumer(event)
        except BaseException:
            if consumer.idempotent:
                backend.release(key)
            raise
    except Exception as exc:
        if isinstance(exc, (Retry, Reject)):
            raise
        will_retry = failures < config["NOTIFICATIONS_MAX_RETRIES"]
        signals.consumer_failed.send(
            app, event=event, hub_id=hub_id, consumer=consumer, exception=exc, will_retry=will_retry
        )
        if will_retry:
            logger.warning("Consumer %s failed on event %s, retrying: %r", task_name, event["event_id"], exc)
            delay = backoff(
                failures,
                config["NOTIFICATIONS_RETRY_BACKOFF"],
                config["NOTIFICATIONS_RETRY_BACKOFF_MAX"],
                config["NOTIFICATIONS_RETRY_JITTER"],
            )
            raise _retry(task, args=(hub_id, event_json, failures + 1), countdown=delay, exc=exc) from exc
        logger.error("Consumer %s failed on event %s for the last time: %r", task_name, event["event_id"], exc)
        safely(ext.runtime(app).dead_letter, hub_id, task_name, event_json, failures + 1, *_error_info())
        return "dead-lettered"
    if consumer.idempotent:
        safely(backend.complete, key, config["NOTIFICATIONS_IDEMPOTENCY_TTL"], completed=True)
    if consumed:
        signals.consumer_succeeded.send(app, event=event, hub_id=hub_id, consumer=consumer)
        return "consumed"
    return "vetoed"


def _backend_call(
    task: Task,
    hub_id: str,
    event_json: str,
    failures: int,
    func: Callable[..., T],
    *args: Any,
    completed: bool = False,
) -> T:
    """Call the backend's ``func``; if the backend is unreachable, retry the
    task later without spending one of the consumer's retries, so that an
    outage neither loses the delivery nor dead-letters it. ``completed``
    retries only the recording of an effect that already happened."""
    try:
        return func(*args)
    except BackendError as exc:
        logger.warning("The notifications backend is unreachable, retrying %s later: %r", task.name, exc)
        countdown = backoff(min(task.request.retries, 5), 1.0, 30.0, True)
        raise _retry(
            task, args=(hub_id, event_json, failures), kwargs={"completed": completed}, countdown=countdown, exc=exc
        ) from exc


def _error_info() -> tuple[str, str]:
    text = traceback.format_exc()
    last = text.strip().splitlines()[-1] if text.strip() else ""
    return last, text
