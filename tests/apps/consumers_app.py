"""An application whose worker processes append to one event log, for the
test that runs two worker processes at once
(``celery -A tests.apps.consumers_app:celery worker``), and for the test of a
``-P gevent`` worker whose log file is locked.

The configuration comes from the environment, so that a test isolates it
with its own Redis keys, Celery queue and log file.
"""

from __future__ import annotations

import os
from typing import Any

from celery.signals import worker_ready
from flask import Flask

from flask_notifications import Notifications
from flask_notifications.consumers.log_consumer import LogConsumer
from flask_notifications.event import Event

REDIS_URL = os.environ.get("CONSUMERS_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("CONSUMERS_PREFIX", "fn-consumers-app")

app = Flask(__name__)
app.config.update(
    NOTIFICATIONS_BACKEND="redis",
    NOTIFICATIONS_REDIS_URL=REDIS_URL,
    NOTIFICATIONS_KEY_PREFIX=PREFIX,
    CELERY_BROKER_URL=REDIS_URL,
    CELERY_TASK_DEFAULT_QUEUE=os.environ.get("CONSUMERS_QUEUE", PREFIX),
    CELERY_WORKER_PREFETCH_MULTIPLIER=1,
)
notifications = Notifications(app)
celery = notifications.get_celery(app)

hub = notifications.create_hub("EventLog")
hub.register_consumer(LogConsumer(os.environ.get("CONSUMERS_LOG", "events.log"), name="tests.consumers.log"))


def _redis() -> Any:
    return notifications.get_backend(app).client  # type: ignore[attr-defined]


@hub.register_consumer(celery_task_name="tests.consumers.worker_pid", pass_event=True)
def record_worker(event: Event) -> None:
    """Record which process consumed the event, to show both workers did,
    and the event, to show it was consumed while the log was locked."""
    _redis().sadd(f"{PREFIX}:consumed-by", os.getpid())
    _redis().sadd(f"{PREFIX}:consumed", event["event_id"])


@worker_ready.connect
def announce(**kwargs: Any) -> None:
    _redis().sadd(f"{PREFIX}:ready", os.getpid())
