"""A Celery worker killed with SIGKILL in the middle of a consumer: the task
is delivered again and the consumer's effect happens exactly once.

The worker is a real ``celery worker`` process that imports the application,
as in production. The consumer (``fault_app.blocker``) hangs on its first
delivery, so the kill always lands mid-task.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import redis

from flask_notifications import Event

from ..helpers import wait_for
from .conftest import WorkerProcess, report

pytestmark = pytest.mark.reliability

APP_MODULE = "tests.reliability.apps.fault_app"
#: Short enough for a test, long enough that a live consumer keeps its claim.
CLAIM_TIMEOUT = 3
VISIBILITY_TIMEOUT = 2


@pytest.fixture
def fault_env(redis_url: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "FAULT_REDIS_URL": redis_url,
        "FAULT_QUEUE": unique,
        "FAULT_PREFIX": unique,
        "FAULT_DIR": str(tmp_path),
        "FAULT_CLAIM_TIMEOUT": str(CLAIM_TIMEOUT),
        "FAULT_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def fault_app(fault_env: dict[str, str], redis_client: redis.Redis[bytes], unique: str) -> Iterator[ModuleType]:
    """The application module, imported in the test process with the test's
    environment: the sending side."""
    sys.modules.pop(APP_MODULE, None)
    module = importlib.import_module(APP_MODULE)
    yield module
    module.notifications.get_backend(module.app).close()
    sys.modules.pop(APP_MODULE, None)
    keys = list(redis_client.scan_iter(f"{unique}*"))
    if keys:
        redis_client.delete(*keys)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _settled(redis_client: redis.Redis[bytes], unique: str) -> bool:
    """Nothing is queued, in flight or scheduled for the test's queue."""
    return not redis_client.llen(unique) and not redis_client.zcard(f"{unique}:unacked_index")


@pytest.mark.parametrize("victim", ["worker", "pool-process"])
def test_a_task_killed_mid_consumer_is_redelivered_and_takes_effect_once(
    victim: str,
    fault_app: ModuleType,
    fault_env: dict[str, str],
    redis_client: redis.Redis[bytes],
    unique: str,
    tmp_path: Path,
) -> None:
    """``worker``: the whole worker dies; the broker gives the unacknowledged
    message to the next worker after the visibility timeout.
    ``pool-process``: only the prefork child running the task dies; the
    parent rejects the message back to the queue (``reject_on_worker_lost``).
    """
    attempts, effects = tmp_path / "attempts", tmp_path / "effects"
    pool = "solo" if victim == "worker" else "prefork"
    worker = WorkerProcess(APP_MODULE, fault_env, tmp_path / "worker.log", pool=pool)
    worker.start()
    try:
        with fault_app.app.app_context():
            event = Event(None, "block", "Hangs once", "body")
            fault_app.notifications.send(event)
        (first,) = wait_for(lambda: _lines(attempts), timeout=60)
        pid = int(first.split()[0])
        if victim == "worker":
            assert pid == worker.proc.pid  # type: ignore[union-attr]
            worker.kill()
            worker.start()
        else:
            assert pid != worker.proc.pid  # type: ignore[union-attr]
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: _lines(effects), timeout=90)
        # Let every copy of the message that is still around run out: the
        # claim must turn each of them into a no-op.
        wait_for(lambda: _settled(redis_client, unique), timeout=60)
        assert worker.proc is not None and worker.proc.poll() is None, worker.output()
    finally:
        worker.stop()
    assert _lines(effects) == [event["event_id"]]
    assert [line.split()[1] for line in _lines(attempts)] == [event["event_id"]] * 2
    assert fault_app.notifications.get_ledger(fault_app.app).dead_letters() == []
    report(f"SIGKILL {victim}", deliveries=len(_lines(attempts)), effects=len(_lines(effects)))
