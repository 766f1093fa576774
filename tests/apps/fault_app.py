"""The application that the reliability suite's worker processes import.

It is configured from the environment, so each test points it at its own
broker, key prefix, queue and scratch directory::

    celery -A tests.apps.fault_app:celery worker
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
from flask_notifications.consumers.push_consumer import PushConsumer
from flask_notifications.event_filter import EventFilter
from flask_notifications.filters.with_event_type import WithEventType
from tests.helpers.config import fault_worker_config

redis_url = os.environ.get("FAULT_REDIS_URL", "redis://127.0.0.1:6379/0")
prefix = os.environ.get("FAULT_PREFIX", "fault")
scratch = Path(os.environ.get("FAULT_DIR", "."))

app = Flask(__name__)
app.config.update(
    fault_worker_config(
        redis_url,
        prefix,
        queue=os.environ.get("FAULT_QUEUE"),
        visibility_timeout=float(os.environ.get("FAULT_VISIBILITY_TIMEOUT", "3600")),
        claim_timeout=float(os.environ.get("FAULT_CLAIM_TIMEOUT", "300")),
    )
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


#: Events of type "effect": each delivery records its effect, and the first
#: one after the marker kills its worker.
effect_hub = notifications.create_hub("Effects")
effect_hub.filter_by(WithEventType("effect"))


@effect_hub.register_consumer(celery_task_name="fault.effect", pass_event=True)
def effect(event: Event) -> None:
    with open(scratch / "effects", "a") as out:
        out.write(f"{event['event_id']}\n")


def die_after_complete(sender: Any, **kwargs: Any) -> None:
    # consumer_succeeded is sent after the completion is recorded and before
    # the task returns (and so before acks_late acknowledges its message).
    marker = scratch / "die-after-complete"
    if marker.exists():
        marker.unlink()
        os.kill(os.getpid(), signal.SIGKILL)


signals.consumer_succeeded.connect(die_after_complete, weak=False)


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
        notifications.send(Event(None, "effect", "Keyed", "body"), idempotency_key=sys.argv[2])
