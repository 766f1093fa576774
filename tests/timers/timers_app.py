"""The application that the timer tests' worker and beat processes import,
configured from the environment (``TIMERS_*``)::

    celery -A tests.timers.timers_app:celery worker
    celery -A tests.timers.timers_app:celery beat

Hub ``digests``: the ``comment`` events, mailed to each user once per
window (``TIMERS_WINDOW`` seconds). Hub ``reminders``: the ``reminder``
events, stored in the inbox and mailed ``TIMERS_DELAY`` seconds later unless
read. The first digest flush hangs (before it mails) when ``TIMERS_HANG``
names a file that does not exist yet: it writes its pid there first, so a
test can kill the worker mid-flush.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from flask import Flask

from flask_notifications import Event, EventConsumer, Notifications
from flask_notifications.consumers import Consumer, Delayed, Digest, FlaskEmailConsumer
from flask_notifications.filters import WithEventType
from flask_notifications.inbox.consumer import InboxConsumer
from flask_notifications.timers import read_in_inbox

redis_url = os.environ.get("TIMERS_REDIS_URL", "redis://127.0.0.1:6379/0")
prefix = os.environ.get("TIMERS_PREFIX", "timers")
tick = os.environ.get("TIMERS_TICK", "")

app = Flask(__name__)
app.config.update(
    SECRET_KEY="timers-tests",
    CELERY_BROKER_URL=redis_url,
    CELERY_TASK_DEFAULT_QUEUE=prefix,
    # A message a worker holds comes back to the queue after the visibility
    # timeout, whether the worker died or is only slow: 2 s brought the
    # killed worker's messages back at once, but under load a delivery held
    # behind the beat's ticks (which may take both pool processes for
    # seconds) came back too and ran again, up to 935 duplicate runs for
    # 1,000 deliveries on PostgreSQL, each a ledger round of its own. 15 s
    # covers the longest hold seen (load 15); one message per process is
    # held (prefetch 1), so fewer come back after the kill.
    CELERY_WORKER_PREFETCH_MULTIPLIER=1,
    CELERY_BROKER_TRANSPORT_OPTIONS={
        "visibility_timeout": 15,
        "unacked_key": f"{prefix}:unacked",
        "unacked_index_key": f"{prefix}:unacked_index",
        "unacked_mutex_key": f"{prefix}:unacked_mutex",
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    },
    NOTIFICATIONS_BACKEND="redis",
    NOTIFICATIONS_REDIS_URL=redis_url,
    NOTIFICATIONS_KEY_PREFIX=prefix,
    NOTIFICATIONS_LEDGER_URL=os.environ.get("TIMERS_DATABASE_URL"),
    NOTIFICATIONS_INBOX_URL=os.environ.get("TIMERS_DATABASE_URL"),
    NOTIFICATIONS_INBOX_TABLE=f"{prefix.replace('-', '_')}_inbox",
    # One ledger write fewer per delivery: the reliability of the timers is what is tested here.
    NOTIFICATIONS_OUTBOX_TIMEOUT=None,
    NOTIFICATIONS_CLAIM_TIMEOUT=3,
    NOTIFICATIONS_TIMER_CLAIM_LEASE=3,
    NOTIFICATIONS_TIMER_TICK=float(tick) if tick else None,
    NOTIFICATIONS_RETRY_BACKOFF=0.2,
    NOTIFICATIONS_RETRY_BACKOFF_MAX=1.0,
    EMAIL_HOST="127.0.0.1",
    EMAIL_PORT=int(os.environ.get("TIMERS_SMTP_PORT", "25")),
)
notifications = Notifications(app)
celery = notifications.get_celery(app)
if os.environ.get("TIMERS_BEAT"):
    notifications.timers.beat_schedule(every=1.0, app=app)

#: The body of each mail lists the ids of the events it is about, one a line.
BODY = "{% for item in event.events %}{{ item.event_id }}\n{% else %}{{ event.event_id }}\n{% endfor %}"


def address(user: str) -> str:
    return f"{user}@example.org"


class HangOnce(EventConsumer):
    """Runs ``consumer``, except the first time while ``TIMERS_HANG`` names a
    file that does not exist: it writes its pid there and hangs."""

    def __init__(self, consumer: Consumer) -> None:
        super().__init__()
        self.consumer = consumer

    def consume(self, event: Event) -> None:
        marker = os.environ.get("TIMERS_HANG")
        if marker and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            time.sleep(3600)
        self.consumer(event)


mail = FlaskEmailConsumer.from_app(app, "noreply@example.org", address, body=BODY, digest_body=BODY)
digests = notifications.create_hub("digests").filter_by(WithEventType("comment"))
digests.register_consumer(Digest(HangOnce(mail), window=float(os.environ.get("TIMERS_WINDOW", "5"))))
reminders = notifications.create_hub("reminders").filter_by(WithEventType("reminder"))
reminders.register_consumer(InboxConsumer())
reminders.register_consumer(Delayed(mail, after=float(os.environ.get("TIMERS_DELAY", "5")), unless=read_in_inbox))
