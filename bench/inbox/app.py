"""The application the inbox benchmark's Celery worker imports: one hub
with an InboxConsumer, configured from the environment the benchmark sets."""

from __future__ import annotations

import os

from flask import Flask

from flask_notifications import Notifications
from flask_notifications.consumers.inbox_consumer import InboxConsumer

app = Flask("bench_inbox")
app.config.update(
    NOTIFICATIONS_BACKEND="redis",
    NOTIFICATIONS_REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    NOTIFICATIONS_KEY_PREFIX=os.environ.get("INBOX_BENCH_PREFIX", "bench-inbox"),
    NOTIFICATIONS_INBOX_URL=os.environ.get("INBOX_BENCH_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    NOTIFICATIONS_INBOX_TABLE=os.environ.get("INBOX_BENCH_TABLE", "notifications_inbox"),
    CELERY_BROKER_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    CELERY_TASK_DEFAULT_QUEUE=os.environ.get("INBOX_BENCH_PREFIX", "bench-inbox"),
    SECRET_KEY="bench-inbox",  # signs the page cursors
    # The load of a million rows runs single statements longer than the
    # default bound of a blueprint call.
    NOTIFICATIONS_INBOX_STATEMENT_TIMEOUT=None,
    # An event naming 10,000 recipients is about 120 KB, past the default
    # bound of 64 KiB.
    NOTIFICATIONS_MAX_EVENT_SIZE=1024 * 1024,
    # The 10,000 badges of that event are published in one pipeline; a
    # stream keeps NOTIFICATIONS_HISTORY_SIZE entries (1,000 by default), so
    # a reader would find most of them trimmed before it reads them.
    NOTIFICATIONS_HISTORY_SIZE=20_000,
)
notifications = Notifications(app)
hub = notifications.create_hub("bench-inbox")
hub.register_consumer(InboxConsumer())
celery = notifications.get_celery(app)
