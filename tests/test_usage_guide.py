"""The documentation's Usage guide, delivered by a real worker process that
imports the application, over the real Redis broker."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_notifications.event import Event

from .helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def usage_env(redis_url: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "USAGE_REDIS_URL": redis_url,
        "USAGE_QUEUE": unique,
        "USAGE_PREFIX": unique,
        "USAGE_LOG": str(tmp_path / "events.log"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def worker_process(usage_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, **usage_env, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.apps.usage_app:celery",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
    )
    yield proc
    proc.terminate()
    proc.wait(timeout=30)


def test_usage_guide_runs_as_printed(
    usage_env: dict[str, str], worker_process: subprocess.Popen[bytes], redis_client: object
) -> None:
    sys.modules.pop("tests.apps.usage_app", None)
    usage = importlib.import_module("tests.apps.usage_app")
    log = Path(usage_env["USAGE_LOG"])
    with usage.app.app_context():
        passed, filtered = usage.send_examples()
        wait_for(lambda: log.exists() and log.read_text().splitlines())
        # The worker has one process (solo pool) reading one FIFO queue, so
        # when an event sent now is logged, every task queued before it has
        # run: a wrongly delivered filtered event would be logged by then.
        sentinel = Event(None, "test", "sentinel", "", sender="system")
        usage.notifications.send(sentinel)
        lines = wait_for(lambda: len(log.read_text().splitlines()) >= 2 and log.read_text().splitlines())
        # The push of the sentinel is a task of its own, after the filtered
        # event's tasks in the queue too.
        backend = usage.notifications.backend
        wait_for(lambda: len(backend.history(usage.test_hub_id, None).messages) >= 2)
        history = backend.history(usage.test_hub_id, None).messages
    # The guide's consumer writes str(event), the event's repr.
    assert lines == [repr(passed), repr(sentinel)]
    assert filtered["event_id"] not in log.read_text()
    assert [Event.from_json(m.data) for m in history] == [passed, sentinel]
    assert worker_process.poll() is None
