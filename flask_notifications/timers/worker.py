"""What drives the ticks: a step of every ``celery worker`` of the
application (:class:`TimerTicker`), and the task Celery beat may send
(:data:`TICK_TASK`, scheduled by :func:`beat_schedule`).

Either is enough, and both together are safe: the due-table hands each due
timer to one ticker. The worker step ticks every ``NOTIFICATIONS_TIMER_TICK``
seconds (``None`` turns it off, for deployments where beat ticks).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from celery import Celery, Task, bootsteps
from kombu.entity import Queue
from kombu.exceptions import OperationalError

from ..errors import BackendError, NotificationsError
from .tick import TICK_BATCH, tick

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger(__name__)

#: The name of the task that runs one tick, for Celery beat.
TICK_TASK = "flask_notifications.timers.tick"
#: The name of the entry :func:`beat_schedule` adds to ``beat_schedule``.
BEAT_ENTRY = "flask-notifications-timers"

#: The application each Celery app ticks for (see :func:`install`).
_apps: weakref.WeakKeyDictionary[Celery, weakref.ref[Flask]] = weakref.WeakKeyDictionary()


def _app_of(celery: Celery) -> Flask | None:
    ref = _apps.get(celery)
    return ref() if ref is not None else None


def tick_queue(app: Flask) -> str:
    """The queue of the ticks Celery beat sends: one of their own, beside the
    extension's queue, so that a backlog of deliveries never holds a tick
    back (a worker takes from each of its queues in turn)."""
    own = app.config["NOTIFICATIONS_CELERY_QUEUE"] or app.config["NOTIFICATIONS_KEY_PREFIX"]
    return f"{own}.timers"


def _declare(celery: Celery, queue: str) -> None:
    """Add ``queue`` to ``celery``'s ``task_queues``, so that a worker
    started without ``-Q`` consumes it (the extension's own queue is
    declared there already)."""
    conf = celery.conf
    queues = conf.task_queues
    if isinstance(queues, Mapping):
        if queue not in queues:
            conf.task_queues = {**queues, queue: {"routing_key": queue}}
    elif queues:
        if queue not in {item.name for item in queues}:
            conf.task_queues = [*queues, Queue(queue, routing_key=queue)]  # type: ignore[no-untyped-call]
    else:
        conf.task_queues = [
            Queue(  # type: ignore[no-untyped-call]
                conf.task_default_queue,
                exchange=celery.amqp.default_exchange,
                routing_key=conf.task_default_routing_key,
            ),
            Queue(queue, routing_key=queue),  # type: ignore[no-untyped-call]
        ]
    if queue not in celery.amqp.queues:
        celery.amqp.queues = conf.task_queues


def install(celery: Celery, app: Flask) -> None:
    """Register :data:`TICK_TASK` on ``celery``, declare its queue
    (:func:`tick_queue`) and make every ``celery worker`` of it tick for
    ``app``."""
    _apps[celery] = weakref.ref(app)
    if TICK_TASK not in celery.tasks:
        celery.task(name=TICK_TASK, bind=True, ignore_result=True, serializer="json", shared=False)(_tick_task)
    _declare(celery, tick_queue(app))
    celery.steps["worker"].add(TimerTicker)


def _tick_task(task: Task) -> int:
    app = _app_of(task.app)
    if app is None:
        raise NotificationsError(
            "No Flask application is set up with Flask-Notifications on this Celery app; "
            "the worker must import the module that calls init_app()."
        )
    claimed = total = tick(app)
    while claimed >= TICK_BATCH:
        claimed = tick(app)
        total += claimed
    return total


def beat_schedule(celery: Celery, every: float = 1.0, *, queue: str | None = None) -> dict[str, Any]:
    """Add the entry :data:`BEAT_ENTRY` to ``celery``'s ``beat_schedule``,
    so that ``celery -A app:celery beat`` sends :data:`TICK_TASK` every
    ``every`` seconds; each message expires after ``every`` seconds, so the
    ticks sent while no worker ran do not pile up. Return the entry.

    :param queue: the queue of the tick messages; ``None`` uses
        :func:`tick_queue` when the application is known. A worker started
        with ``-Q`` must list it.
    """
    app = _app_of(celery)
    if queue is None and app is not None:
        queue = tick_queue(app)
    options: dict[str, Any] = {"expires": float(every)}
    if queue:
        options["queue"] = queue
    entry = {"task": TICK_TASK, "schedule": float(every), "options": options}
    celery.conf.beat_schedule = {**(celery.conf.beat_schedule or {}), BEAT_ENTRY: entry}
    return entry


class TimerTicker(bootsteps.StartStopStep):  # type: ignore[misc]
    """The worker step that runs :func:`~flask_notifications.timers.tick.tick`
    in a thread of the worker's main process, every
    ``NOTIFICATIONS_TIMER_TICK`` seconds, from the worker's start to its
    shutdown."""

    label = "Timer ticker"
    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, parent: Any) -> None:
        app = _app_of(parent.app)
        if app is None or app.config.get("NOTIFICATIONS_TIMER_TICK") is None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(app,), name="timer-ticker", daemon=True)
        self._thread.start()

    def stop(self, parent: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def terminate(self, parent: Any) -> None:
        self.stop(parent)

    def _run(self, app: Flask) -> None:
        interval = float(app.config["NOTIFICATIONS_TIMER_TICK"])
        wait = interval
        while not self._stop.wait(wait):
            wait = interval
            try:
                if tick(app) >= TICK_BATCH:
                    wait = 0.0
            except NotImplementedError as exc:
                # A ledger of an older design: it keeps no timers, so none can be due.
                logger.info("%s The worker does not tick timers.", exc)
                return
            except (BackendError, OperationalError, OSError) as exc:
                logger.warning("A timer tick failed (%s); trying again in %s s.", exc, interval)
            except Exception:
                logger.exception("A timer tick failed; trying again in %s s.", interval)
