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


def fault_worker_config(
    redis_url: str, prefix: str, *, visibility_timeout: float, claim_timeout: float, queue: str | None = None
) -> dict[str, Any]:
    """Config of an app whose Celery workers a test kills, on the Redis at
    ``redis_url``, isolated by ``prefix``: the broker's bookkeeping keys are
    the test's own, a dead worker's unacknowledged message goes back to the
    queue after ``visibility_timeout`` seconds (swept for every second, not
    every 100 s), and a delivery retries fast and without end."""
    return {
        "CELERY_BROKER_URL": redis_url,
        "CELERY_TASK_DEFAULT_QUEUE": queue or prefix,
        "CELERY_BROKER_TRANSPORT_OPTIONS": {
            "visibility_timeout": visibility_timeout,
            "unacked_key": f"{prefix}:unacked",
            "unacked_index_key": f"{prefix}:unacked_index",
            "unacked_mutex_key": f"{prefix}:unacked_mutex",
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
            "socket_connect_timeout": 1,
            "socket_timeout": 5,
        },
        "CELERY_BROKER_CONNECTION_MAX_RETRIES": None,
        "CELERY_WORKER_PREFETCH_MULTIPLIER": 1,
        "NOTIFICATIONS_BACKEND": "redis",
        "NOTIFICATIONS_REDIS_URL": redis_url,
        "NOTIFICATIONS_KEY_PREFIX": prefix,
        "NOTIFICATIONS_CLAIM_TIMEOUT": claim_timeout,
        "NOTIFICATIONS_RETRY_BACKOFF": 0.2,
        "NOTIFICATIONS_RETRY_BACKOFF_MAX": 1.0,
        "NOTIFICATIONS_MAX_RETRIES": 1000,
        "NOTIFICATIONS_PUBLISH_RETRY_POLICY": {"max_retries": 1, "interval_start": 0, "interval_step": 0.1},
    }
