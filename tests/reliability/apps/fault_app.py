"""The application that the reliability suite's worker processes import.

It is configured from the environment, so each test points it at its own
broker, key prefix, queue and scratch directory::

    celery -A tests.reliability.apps.fault_app:celery worker
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.consumers.push_consumer import PushConsumer
from flask_notifications.filters.with_event_type import WithEventType

redis_url = os.environ.get("FAULT_REDIS_URL", "redis://127.0.0.1:6379/0")
prefix = os.environ.get("FAULT_PREFIX", "fault")
scratch = Path(os.environ.get("FAULT_DIR", "."))

app = Flask(__name__)
app.config.update(
    CELERY_BROKER_URL=redis_url,
    CELERY_TASK_DEFAULT_QUEUE=os.environ.get("FAULT_QUEUE", prefix),
    CELERY_BROKER_TRANSPORT_OPTIONS={
        # Unacknowledged messages of a dead worker go back to the queue after
        # this many seconds; the bookkeeping keys are private to the test.
        "visibility_timeout": float(os.environ.get("FAULT_VISIBILITY_TIMEOUT", "3600")),
        "unacked_key": f"{prefix}:unacked",
        "unacked_index_key": f"{prefix}:unacked_index",
        "unacked_mutex_key": f"{prefix}:unacked_mutex",
        # Sweep for such messages every second rather than every 100 s.
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 1,
        "socket_timeout": 5,
    },
    CELERY_BROKER_CONNECTION_MAX_RETRIES=None,
    CELERY_WORKER_PREFETCH_MULTIPLIER=1,
    NOTIFICATIONS_BACKEND="redis",
    NOTIFICATIONS_REDIS_URL=redis_url,
    NOTIFICATIONS_KEY_PREFIX=prefix,
    NOTIFICATIONS_CLAIM_TIMEOUT=float(os.environ.get("FAULT_CLAIM_TIMEOUT", "300")),
    NOTIFICATIONS_RETRY_BACKOFF=0.2,
    NOTIFICATIONS_RETRY_BACKOFF_MAX=1.0,
    NOTIFICATIONS_MAX_RETRIES=1000,
    NOTIFICATIONS_PUBLISH_RETRY_POLICY={"max_retries": 1, "interval_start": 0, "interval_step": 0.1},
)
notifications = Notifications(app)
celery = notifications.get_celery(app)

#: Events of type "block": the first delivery hangs until the test kills its
#: worker; later deliveries record their effect.
blocking_hub = notifications.create_hub("Blocking")
blocking_hub.filter_by(WithEventType("block"))


@blocking_hub.register_consumer(celery_task_name="fault.blocker", pass_event=True)
def blocker(event: Event) -> None:
    attempts = scratch / "attempts"
    with open(attempts, "a") as out:
        out.write(f"{os.getpid()} {event['event_id']}\n")
    if len(attempts.read_text().splitlines()) == 1:
        time.sleep(600)
    with open(scratch / "effects", "a") as out:
        out.write(f"{event['event_id']}\n")


#: Events of type "stream" go to the stream of hub "news", which the SSE app
#: of the tests (tests/apps/sse_app.py) serves.
stream_hub = notifications.create_hub("news")
stream_hub.filter_by(WithEventType("stream"))
stream_hub.register_consumer(PushConsumer(None, stream_hub.hub_id))
