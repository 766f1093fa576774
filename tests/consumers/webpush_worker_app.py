"""The application a Web Push worker process of the tests imports,
configured from the environment (``WEBPUSH_*``)::

    celery -A tests.consumers.webpush_worker_app:celery worker
"""

from __future__ import annotations

import os

from flask import Flask

from flask_notifications import Notifications
from flask_notifications.consumers.webpush_consumer import WebPushConsumer

redis_url = os.environ.get("WEBPUSH_REDIS_URL", "redis://127.0.0.1:6379/0")
prefix = os.environ.get("WEBPUSH_PREFIX", "webpush")

app = Flask(__name__)
app.config.update(
    CELERY_BROKER_URL=redis_url,
    CELERY_TASK_DEFAULT_QUEUE=prefix,
    CELERY_BROKER_TRANSPORT_OPTIONS={
        # A dead worker's unacknowledged message goes back to the queue after
        # this many seconds, swept for every second.
        "visibility_timeout": float(os.environ.get("WEBPUSH_VISIBILITY_TIMEOUT", "3600")),
        "unacked_key": f"{prefix}:unacked",
        "unacked_index_key": f"{prefix}:unacked_index",
        "unacked_mutex_key": f"{prefix}:unacked_mutex",
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    },
    CELERY_WORKER_PREFETCH_MULTIPLIER=1,
    NOTIFICATIONS_BACKEND="redis",
    NOTIFICATIONS_REDIS_URL=redis_url,
    NOTIFICATIONS_KEY_PREFIX=prefix,
    NOTIFICATIONS_CLAIM_TIMEOUT=float(os.environ.get("WEBPUSH_CLAIM_TIMEOUT", "300")),
    NOTIFICATIONS_RETRY_BACKOFF=0.2,
    NOTIFICATIONS_RETRY_BACKOFF_MAX=1.0,
    NOTIFICATIONS_INBOX_URL=os.environ.get("WEBPUSH_DATABASE_URL"),
    NOTIFICATIONS_WEBPUSH_VAPID_PRIVATE_KEY=os.environ.get("WEBPUSH_VAPID_PRIVATE_KEY"),
    NOTIFICATIONS_WEBPUSH_VAPID_SUBJECT="mailto:ops@example.org",
    NOTIFICATIONS_WEBPUSH_ENDPOINTS=[os.environ.get("WEBPUSH_ENDPOINTS", "http://127.0.0.1:*")],
    NOTIFICATIONS_WEBPUSH_TIMEOUT=60.0,
)
notifications = Notifications(app)
celery = notifications.get_celery(app)

hub = notifications.create_hub("push")
hub.register_consumer(WebPushConsumer())
