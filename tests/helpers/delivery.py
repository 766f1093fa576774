"""A real Celery worker in threads of the test process, and driving it until
a delivery happened twice or was dead-lettered."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import _state as celery_state
from celery.contrib.testing.worker import start_worker

from tests.helpers.waiting import wait_for


def deliver_twice(notifications: Any, celery_worker: Any, hub: Any, event: Any) -> list[Any]:
    """Run ``hub``'s only consumer task twice for ``event`` on a real worker,
    as a redelivery would, and return the two tasks' outcomes in order."""
    from celery.signals import task_postrun

    (task_name,) = hub.consumer_names
    task = notifications.celery.tasks[task_name]
    outcomes: list[Any] = []

    def on_postrun(sender: Any = None, retval: Any = None, **kwargs: Any) -> None:
        if sender is not None and sender.name == task_name:
            outcomes.append(retval)

    task_postrun.connect(on_postrun, weak=False)
    try:
        with celery_worker(concurrency=1):
            for _ in range(2):
                task.apply_async(args=(hub.hub_id, event.to_json()))
            wait_for(lambda: len(outcomes) == 2)
    finally:
        task_postrun.disconnect(on_postrun)
    return outcomes


def send_until_dead_letter(notifications: Any, celery_worker: Any, event: Any) -> tuple[list[BaseException], Any]:
    """Send ``event`` on a real worker until its failing consumer is
    dead-lettered; return the exceptions each attempt raised and the letter."""
    from flask_notifications import signals

    errors: list[BaseException] = []

    def on_failed(sender: Any, exception: BaseException, **kwargs: Any) -> None:
        errors.append(exception)

    signals.consumer_failed.connect(on_failed)
    try:
        with celery_worker():
            notifications.send(event)
            (letter,) = wait_for(notifications.dead_letters)
    finally:
        signals.consumer_failed.disconnect(on_failed)
    return errors, letter


@contextmanager
def running_worker(celery: Any, **options: Any) -> Iterator[Any]:
    """A real Celery worker in threads of the test process, consuming from the
    real broker; Celery's current app is restored after it."""
    options.setdefault("pool", "threads")
    options.setdefault("concurrency", 2)
    options.setdefault("loglevel", "WARNING")
    # start_worker makes its app Celery's current app; restore the previous
    # one so that later tests building a default app get a clean one.
    saved = (celery_state.default_app, getattr(celery_state._tls, "current_app", None))
    try:
        with start_worker(celery, perform_ping_check=False, **options) as worker:
            yield worker
    finally:
        celery_state.default_app, celery_state._tls.current_app = saved
