"""The configuration of a test app on the real Redis, isolated by a key
prefix and a Celery queue of the test's own."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

#: The shared Redis of the suite; run-tests.sh makes sure one answers.
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
#: The shared RabbitMQ of the suite.
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
#: The shared PostgreSQL of the inbox tests.
POSTGRES_URL = os.environ.get("INBOX_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

#: What the ``celery_worker`` fixture returns: ``with celery_worker(**options): ...``.
WorkerFactory = Callable[..., AbstractContextManager[Any]]


def make_config(redis_url: str, unique: str, **overrides: Any) -> dict[str, Any]:
    """Config of an app on the real Redis, isolated by ``unique``."""
    config: dict[str, Any] = {
        "TESTING": True,
        "NOTIFICATIONS_BACKEND": "redis",
        "NOTIFICATIONS_REDIS_URL": redis_url,
        "NOTIFICATIONS_KEY_PREFIX": unique,
        "NOTIFICATIONS_RETRY_BACKOFF": 0.05,
        "NOTIFICATIONS_RETRY_BACKOFF_MAX": 0.2,
        "CELERY_BROKER_URL": redis_url,
        "CELERY_TASK_DEFAULT_QUEUE": unique,
    }
    config.update(overrides)
    return config
