"""flask-notifications as the benchmark serves it: gunicorn runs ``app``,
the Celery worker runs ``celery``.

Settings come from the environment, so every run has its own Redis keys and
Celery queue: ``BENCH_REDIS_URL``, ``BENCH_PREFIX``, ``BENCH_QUEUE``; and
``BENCH_HISTORY_SIZE`` and ``BENCH_SSE_QUEUE_SIZE`` set
``NOTIFICATIONS_HISTORY_SIZE`` and ``NOTIFICATIONS_SSE_QUEUE_SIZE``: a max-rate
run needs a history that holds the backlog, or the stream is trimmed past
the reader, and queues that hold a client's, or the client is ended as too
far behind, as the raw peers, which buffer without bound, never do; the
bench's clients do not resume, so either counts as lost.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask

import flask_notifications
from flask_notifications import Notifications
from flask_notifications.consumers.push_consumer import PushConsumer
from flask_notifications.event_hub import EventHub

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("BENCH_PREFIX", "fn-bench")
QUEUE = os.environ.get("BENCH_QUEUE", PREFIX)
#: The hub every benchmark streams from.
HUB_LABEL = "bench"


def make_app(hubs: int = 1, queue: str = QUEUE, **config: Any) -> tuple[Flask, Notifications, list[EventHub]]:
    """An app with ``hubs`` hubs (``bench``, ``bench-1`` ...), each pushing
    every event to its SSE streams through a :class:`PushConsumer`."""
    app = Flask(__name__)
    app.config.update(
        NOTIFICATIONS_BACKEND="redis",
        NOTIFICATIONS_REDIS_URL=REDIS_URL,
        NOTIFICATIONS_KEY_PREFIX=PREFIX,
        NOTIFICATIONS_SSE_BLUEPRINT=True,
        # Every benchmark connection comes from 127.0.0.1.
        NOTIFICATIONS_SSE_MAX_CONNECTIONS_PER_CLIENT=1_000_000,
        CELERY_BROKER_URL=REDIS_URL,
        CELERY_TASK_DEFAULT_QUEUE=queue,
        # The dispatch and consumer tasks' own queue: the one the bench's
        # worker consumes (-Q), not the default (the key prefix).
        NOTIFICATIONS_CELERY_QUEUE=queue,
        CELERY_WORKER_PREFETCH_MULTIPLIER=16,
    )
    for name in ("HISTORY_SIZE", "SSE_QUEUE_SIZE"):
        if os.environ.get(f"BENCH_{name}"):
            app.config[f"NOTIFICATIONS_{name}"] = int(os.environ[f"BENCH_{name}"])
    app.config.update(config)
    notifications = Notifications(app)
    created = []
    for number in range(hubs):
        hub = notifications.create_hub(HUB_LABEL if number == 0 else f"{HUB_LABEL}-{number}")
        hub.register_consumer(PushConsumer(None, hub.hub_id))
        created.append(hub)
    return app, notifications, created


app, notifications, hubs = make_app()
logging.getLogger(__name__).warning("serving flask_notifications from %s", flask_notifications.__file__)
celery = notifications.get_celery(app)
