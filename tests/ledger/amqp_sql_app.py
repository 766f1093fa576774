"""An application on RabbitMQ with its ledger in SQL and no Redis, for the
test that runs two worker processes of it
(``celery -A tests.ledger.amqp_sql_app:celery worker``).

The configuration comes from the environment: ``LEDGER_APP_DIR`` (where the
consumer and the signals leave their traces), ``LEDGER_APP_PREFIX`` (the
queue, the streams and the tables), ``LEDGER_APP_AMQP_URL``, and
``LEDGER_APP_DB_KEY`` / ``LEDGER_APP_DB_URL``: the config key that names the
database, and its URL.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery.signals import task_postrun, task_retry, worker_ready
from flask import Flask

from flask_notifications import Notifications
from flask_notifications.event import Event

DIR = Path(os.environ.get("LEDGER_APP_DIR", "."))
PREFIX = os.environ.get("LEDGER_APP_PREFIX", "fn-ledger-app")
AMQP_URL = os.environ.get("LEDGER_APP_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
TASK = "tests.ledger.effect"

app = Flask(__name__)
app.config.update(
    {
        "NOTIFICATIONS_BACKEND": "amqp",
        "NOTIFICATIONS_AMQP_URL": AMQP_URL,
        "NOTIFICATIONS_KEY_PREFIX": PREFIX,
        "NOTIFICATIONS_CLAIM_TIMEOUT": 3,
        "CELERY_BROKER_URL": AMQP_URL,
        "CELERY_TASK_DEFAULT_QUEUE": PREFIX,
        "CELERY_WORKER_PREFETCH_MULTIPLIER": 1,
        # Two workers on one host share a node name: no pidbox queue to fight over.
        "CELERY_WORKER_ENABLE_REMOTE_CONTROL": False,
        os.environ.get("LEDGER_APP_DB_KEY", "NOTIFICATIONS_LEDGER_URL"): os.environ.get("LEDGER_APP_DB_URL"),
    }
)
notifications = Notifications(app)
celery = notifications.get_celery(app)
hub = notifications.create_hub("Effects")


def _append(name: str, line: str) -> None:
    with open(DIR / name, "a") as out:
        out.write(line + "\n")


@hub.register_consumer(celery_task_name=TASK, pass_event=True)
def effect(event: Event) -> None:
    """Say it started, wait for the test's go (so that the other worker
    meets the claim held), then have its effect: one line."""
    _append("started", str(os.getpid()))
    deadline = time.monotonic() + 120
    while not (DIR / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    _append("effects", f"{os.getpid()} {event['event_id']}")


@task_postrun.connect
def _outcome(sender: Any = None, retval: Any = None, state: str | None = None, **kwargs: Any) -> None:
    if sender is not None and sender.name == TASK and state == "SUCCESS":
        _append("outcomes", f"{os.getpid()} {retval}")


@task_retry.connect
def _retried(sender: Any = None, **kwargs: Any) -> None:
    if sender is not None and sender.name == TASK:
        _append("retries", str(os.getpid()))


@worker_ready.connect
def _ready(**kwargs: Any) -> None:
    _append("ready", str(os.getpid()))
