"""What drives the ticks: a step of every ``celery worker`` of the
application (:class:`TimerTicker`), and the task Celery beat may send
(:data:`TICK_TASK`, scheduled by :func:`beat_schedule`).

Either is enough, and both together are safe: the due-table hands each due
timer to one ticker. The worker step ticks every ``NOTIFICATIONS_TIMER_TICK``
seconds (``None`` turns it off, for deployments where beat ticks).
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from celery import Celery, Task

from ..errors import NotificationsError
from ..worker.celery_app import declare_queue
from ..worker.steps import PeriodicStep
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


def install(celery: Celery, app: Flask) -> None:
    """Register :data:`TICK_TASK` on ``celery``, declare its queue
    (:func:`tick_queue`) and make every ``celery worker`` of it tick for
    ``app``."""
    _apps[celery] = weakref.ref(app)
    if TICK_TASK not in celery.tasks:
        celery.task(name=TICK_TASK, bind=True, ignore_result=True, serializer="json", shared=False)(_tick_task)
    declare_queue(celery, tick_queue(app))
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


class TimerTicker(PeriodicStep):
    """The worker step that runs :func:`~flask_notifications.timers.tick.tick`
    in a thread of the worker's main process, every
    ``NOTIFICATIONS_TIMER_TICK`` seconds, from the worker's start to its
    shutdown."""

    label = "Timer ticker"
    thread_name = "timer-ticker"
    failure = "A timer tick"

    def app_of(self, celery: Celery) -> Flask | None:
        return _app_of(celery)

    def interval(self, app: Flask) -> float | None:
        tick_every = app.config.get("NOTIFICATIONS_TIMER_TICK")
        return None if tick_every is None else float(tick_every)

    def once(self, celery: Celery, app: Flask) -> bool:
        try:
            return tick(app) >= TICK_BATCH
        except NotImplementedError as exc:
            # A ledger of an older design: it keeps no timers, so none can be due.
            logger.info("%s The worker does not tick timers.", exc)
            self.halt()
            return False
