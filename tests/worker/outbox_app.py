"""The application of the outbox tests' worker processes
(tests/worker/test_outbox.py), configured from the environment::

    celery -A tests.worker.outbox_app:celery worker

Its one consumer appends the delivery id of each run to ``<OUTBOX_DIR>/effects``,
so the test counts effects by delivery. With ``OUTBOX_GAP=1``, the worker's
kombu ``QoS.append`` (which records a popped message as unacknowledged) waits,
on the first message after ``<OUTBOX_DIR>/gap-armed`` appears, until the test
writes ``<OUTBOX_DIR>/gap-go``: the window in which a Redis crash loses the
message. With ``OUTBOX_AMQP_URL``, RabbitMQ is the broker and the
backend, and the ledger is the database of ``OUTBOX_LEDGER_URL``.
``OUTBOX_SLOW`` (seconds) makes every consumer run that long, so
a backlog builds; a second consumer, :class:`Plain`, keeps no claims
(``idempotent = False``) and appends to ``<OUTBOX_DIR>/plain-effects``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from flask import Flask

from flask_notifications import Event, Notifications
from flask_notifications.consumers.consumer import EventConsumer
from flask_notifications.worker.delivery import current_delivery
from tests.helpers.config import fault_worker_config

redis_url = os.environ.get("OUTBOX_REDIS_URL", "redis://127.0.0.1:6379/0")
#: A RabbitMQ deployment instead (OUTBOX_AMQP_URL): the broker and the
#: backend on RabbitMQ, the ledger in the database of OUTBOX_LEDGER_URL.
amqp_url = os.environ.get("OUTBOX_AMQP_URL")
prefix = os.environ.get("OUTBOX_PREFIX", "outbox")
scratch = Path(os.environ.get("OUTBOX_DIR", "."))

app = Flask(__name__)
app.config.update(
    fault_worker_config(redis_url, prefix, visibility_timeout=5, claim_timeout=5),
    NOTIFICATIONS_OUTBOX_TIMEOUT=float(os.environ.get("OUTBOX_TIMEOUT", "10") or 0) or None,
    NOTIFICATIONS_OUTBOX_SWEEP_INTERVAL=0.5,
)
if amqp_url:
    app.config.update(
        CELERY_BROKER_URL=amqp_url,
        CELERY_BROKER_TRANSPORT_OPTIONS={},
        CELERY_BROKER_CONNECTION_TIMEOUT=1,
        NOTIFICATIONS_BACKEND="amqp",
        NOTIFICATIONS_AMQP_URL=amqp_url,
        NOTIFICATIONS_LEDGER_URL=os.environ["OUTBOX_LEDGER_URL"],
    )
notifications = Notifications(app)
celery = notifications.get_celery(app)

hub = notifications.create_hub("Outbox")


slow = float(os.environ.get("OUTBOX_SLOW", "0"))


@hub.register_consumer(celery_task_name="outbox.effect", pass_event=True)
def effect(event: Event) -> None:
    delivery = current_delivery()
    assert delivery is not None
    time.sleep(slow)
    with open(scratch / "effects", "a") as out:
        out.write(f"{delivery.delivery_id}\n")


class Plain(EventConsumer):
    """A consumer that keeps no claims: only the dispatch stands between it
    and a second run."""

    idempotent = False

    def consume(self, event: Event) -> None:
        delivery = current_delivery()
        assert delivery is not None
        time.sleep(slow)
        with open(scratch / "plain-effects", "a") as out:
            out.write(f"{delivery.delivery_id}\n")


if os.environ.get("OUTBOX_PLAIN") == "1":
    hub.register_consumer(Plain(name="outbox.plain"))


def _gap() -> None:
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.QoS.append

    def append(self: Any, message: Any, delivery_tag: Any) -> Any:
        armed = scratch / "gap-armed"
        if armed.exists():
            armed.unlink()
            (scratch / "in-gap").write_text(str(delivery_tag))
            while not (scratch / "gap-go").exists():
                time.sleep(0.01)
        return original(self, message, delivery_tag)

    kombu_redis.QoS.append = append  # type: ignore[method-assign]


if os.environ.get("OUTBOX_GAP") == "1":
    _gap()
