"""What a worker's log says (issue 23, finding 17): one line for every
consumer run, whether it went well or not, and no traceback for a failure
that is retried (the traceback is kept with the dead letter)."""

from __future__ import annotations

import logging

import pytest
from flask import Flask

from flask_notifications import Event, Notifications, PermanentConsumerError

TASKS = "flask_notifications.worker.tasks"


def _app(name: str) -> tuple[Flask, Notifications]:
    app = Flask(name)
    app.config.update(
        NOTIFICATIONS_BACKEND="memory",
        CELERY_BROKER_URL="memory://",
        CELERY_TASK_ALWAYS_EAGER=True,
        NOTIFICATIONS_MAX_RETRIES=0,
    )
    return app, Notifications(app)


def _ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == TASKS]


def test_a_consumer_run_that_went_well_is_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    app, notifications = _app("logs_ok")
    hub = notifications.create_hub("Logged")
    hub.register_consumer(celery_task_name="logs.ok", pass_event=True)(lambda event: None)
    caplog.set_level(logging.INFO, logger=TASKS)
    with app.app_context():
        dispatch = notifications.send(Event(None, "t", "title", "body"))
    [record] = _ours(caplog)
    assert record.levelno == logging.INFO and record.exc_info is None
    message = record.getMessage()
    assert "logs.ok" in message and "consumed" in message and str(dispatch.delivery_id) in message


def test_a_permanent_failure_is_one_error_line(caplog: pytest.LogCaptureFixture) -> None:
    app, notifications = _app("logs_failed")
    hub = notifications.create_hub("Logged")

    @hub.register_consumer(celery_task_name="logs.failed", pass_event=True)
    def refuse(event: Event) -> None:
        raise PermanentConsumerError("the other side said no")

    caplog.set_level(logging.INFO, logger=TASKS)
    with app.app_context():
        notifications.send(Event(None, "t", "title", "body"))
    records = _ours(caplog)
    assert [record.levelno for record in records] == [logging.ERROR], [r.getMessage() for r in records]
    assert "logs.failed" in records[0].getMessage() and "permanently" in records[0].getMessage()
