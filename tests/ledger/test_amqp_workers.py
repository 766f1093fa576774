"""A RabbitMQ deployment with a database shares claims across its worker
processes, with no Redis and no warning: the AMQP transport and the SQL
ledger (a SQLite file, or PostgreSQL), two real Celery worker processes,
and one task delivered twice."""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from flask_notifications.event import Event
from flask_notifications.ledger.sql import SqlLedger
from tests.helpers import WorkerProcess, wait_for
from tests.ledger.test_contract import drop_sql, postgres_engine


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.amqp
@pytest.mark.subprocess
@pytest.mark.timeout(300)
@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_task_delivered_twice_to_two_worker_processes_has_one_effect(
    database: str,
    amqp_url: str,
    unique: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if database == "sqlite":
        # Named as the ledger's own database.
        key, url = "NOTIFICATIONS_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    else:
        # The inbox's database: the AMQP backend takes it for its ledger.
        postgres_engine().dispose()
        key, url = "NOTIFICATIONS_INBOX_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    env = {
        "LEDGER_APP_DIR": str(tmp_path),
        "LEDGER_APP_PREFIX": unique,
        "LEDGER_APP_AMQP_URL": amqp_url,
        "LEDGER_APP_DB_KEY": key,
        "LEDGER_APP_DB_URL": url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.WARNING)
    sys.modules.pop("tests.ledger.amqp_sql_app", None)
    app_module: Any = importlib.import_module("tests.ledger.amqp_sql_app")
    ledger = app_module.notifications.get_ledger(app_module.app)
    assert isinstance(ledger, SqlLedger) and ledger.engine.dialect.name == database
    first = WorkerProcess("tests.ledger.amqp_sql_app", env, tmp_path / "first.log")
    second = WorkerProcess("tests.ledger.amqp_sql_app", env, tmp_path / "second.log")
    task = app_module.celery.tasks[app_module.TASK]
    event = Event.from_dict({"event_type": "test", "title": "once", "body": "b"})
    try:
        first.start()
        wait_for(lambda: len(lines(tmp_path / "ready")) == 1, timeout=120)
        task.apply_async(args=(app_module.hub.hub_id, event.to_json()))
        # The first worker runs the consumer and holds its claim...
        wait_for(lambda: len(lines(tmp_path / "started")) == 1, timeout=120)
        second.start()
        wait_for(lambda: len(lines(tmp_path / "ready")) == 2, timeout=120)
        # ...so the second worker, handed the redelivery (the first holds an
        # unacknowledged task and no prefetch credit), finds it busy.
        task.apply_async(args=(app_module.hub.hub_id, event.to_json()))
        assert second.proc is not None
        wait_for(lambda: str(second.proc.pid) in lines(tmp_path / "retries"), timeout=120)
        (tmp_path / "go").touch()
        outcomes = wait_for(lambda: len(found := lines(tmp_path / "outcomes")) == 2 and found, timeout=120)
    finally:
        first.stop()
        second.stop()
        if database == "postgresql":
            drop_sql(ledger)
        ledger.close()
    assert first.proc is not None and second.proc is not None
    assert lines(tmp_path / "effects") == [f"{first.proc.pid} {event['event_id']}"]
    # The first worker consumed it. The second's run found it busy and
    # retried: Celery publishes the retry anew, and either worker may take
    # it (the first is free once it consumed), so either records the
    # duplicate.
    assert f"{first.proc.pid} consumed" in outcomes
    assert sorted(outcome.split()[1] for outcome in outcomes) == ["consumed", "duplicate"]
    for output in (first.output(), second.output(), caplog.text):
        assert "in-process" not in output
