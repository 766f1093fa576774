"""An application whose worker is started as the docs say,
``celery -A tests.worker.own_app:celery worker`` with no ``-Q``; its default
Celery queue is the one :mod:`tests.worker.foreign_app` listens on."""

from __future__ import annotations

import os
from typing import Any

from celery.signals import worker_ready
from flask import Flask

from flask_notifications import Event, Notifications

REDIS_URL = os.environ.get("FOREIGN_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("FOREIGN_PREFIX", "fn-foreign")


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(
        NOTIFICATIONS_BACKEND="redis",
        NOTIFICATIONS_REDIS_URL=REDIS_URL,
        NOTIFICATIONS_KEY_PREFIX=PREFIX,
        CELERY_BROKER_URL=REDIS_URL,
        CELERY_TASK_DEFAULT_QUEUE=os.environ.get("FOREIGN_QUEUE", "celery"),
    )
    notifications.init_app(app)
    return app


notifications = Notifications()
hub = notifications.create_hub("Foreign")


@hub.register_consumer(celery_task_name="tests.worker.record", pass_event=True)
def record(event: Event) -> None:
    _redis().sadd(f"{PREFIX}:consumed", event["event_id"])


def _redis() -> Any:
    return notifications.get_backend().client  # type: ignore[attr-defined]


app = create_app()
celery = notifications.get_celery(app)


@worker_ready.connect
def announce(**kwargs: Any) -> None:
    with app.app_context():
        _redis().sadd(f"{PREFIX}:own-ready", os.getpid())
