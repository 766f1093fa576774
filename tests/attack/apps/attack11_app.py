"""An application for the issue-11 attack tests' subprocesses, configured
from the environment (``ATTACK_*``).

As a Celery app (``celery -A tests.attack.apps.attack11_app:celery worker``)
its consumer ``attack.effect`` appends the event id to ``$ATTACK_DIR/effects``;
when ``$ATTACK_DIR/die-after-complete`` exists, the worker SIGKILLs itself
right after the consumer's completion is recorded, before the message is
acknowledged (the first time only).

As a script (``python -m tests.attack.apps.attack11_app send KEY``) it sends
one event with ``idempotency_key=KEY`` through a hub whose filter hangs after
writing ``$ATTACK_DIR/in-send``, so the test can kill the process between the
key's claim and the enqueue.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from flask import Flask

from flask_notifications import Event, Notifications, signals
from flask_notifications.event_filter import EventFilter

redis_url = os.environ.get("ATTACK_REDIS_URL", "redis://127.0.0.1:6379/0")
prefix = os.environ.get("ATTACK_PREFIX", "attack11")
scratch = Path(os.environ.get("ATTACK_DIR", "."))

app = Flask(__name__)
app.config.update(
    CELERY_BROKER_URL=redis_url,
    CELERY_TASK_DEFAULT_QUEUE=os.environ.get("ATTACK_QUEUE", prefix),
    CELERY_BROKER_TRANSPORT_OPTIONS={
        "visibility_timeout": float(os.environ.get("ATTACK_VISIBILITY_TIMEOUT", "3600")),
        "unacked_key": f"{prefix}:unacked",
        "unacked_index_key": f"{prefix}:unacked_index",
        "unacked_mutex_key": f"{prefix}:unacked_mutex",
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 1,
    },
    CELERY_WORKER_PREFETCH_MULTIPLIER=1,
    NOTIFICATIONS_BACKEND="redis",
    NOTIFICATIONS_REDIS_URL=redis_url,
    NOTIFICATIONS_KEY_PREFIX=prefix,
)
notifications = Notifications(app)
celery = notifications.get_celery(app)

hub = notifications.create_hub("Effects")


@hub.register_consumer(celery_task_name="attack.effect", pass_event=True)
def effect(event: Event) -> None:
    with open(scratch / "effects", "a") as out:
        out.write(f"{event['event_id']}\n")


def _die_after_complete(sender: Any, **kwargs: Any) -> None:
    # consumer_succeeded is sent after the completion is recorded and before
    # the task returns (and so before acks_late acknowledges its message).
    marker = scratch / "die-after-complete"
    if marker.exists():
        marker.unlink()
        os.kill(os.getpid(), signal.SIGKILL)


signals.consumer_succeeded.connect(_die_after_complete, weak=False)


class _HangsInSend(EventFilter):
    """Runs inside send(), after the idempotency key was claimed and before
    the dispatch message is enqueued."""

    def filter(self, event: Any) -> bool:
        (scratch / "in-send").write_text(str(os.getpid()))
        time.sleep(600)
        return True


if __name__ == "__main__" and sys.argv[1:2] == ["send"]:
    notifications.create_hub("Hangs").filter_by(_HangsInSend())
    with app.app_context():
        notifications.send(Event(None, "attack", "Keyed", "body"), idempotency_key=sys.argv[2])
