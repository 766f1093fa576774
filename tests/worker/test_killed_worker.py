"""A Celery worker killed with SIGKILL in the middle of a consumer: the task
is delivered again and the consumer's effect happens exactly once.

The worker is a real ``celery worker`` process that imports the application,
as in production. The consumer (``fault_app.blocker``) hangs on its first
delivery, so the kill always lands mid-task.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import ModuleType

import pytest
import redis

from flask_notifications import Event
from tests.helpers import WorkerProcess, report, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.redis, pytest.mark.subprocess]

APP_MODULE = "tests.apps.fault_app"
#: Short enough for a test, long enough that a live consumer keeps its claim.
CLAIM_TIMEOUT = 3
VISIBILITY_TIMEOUT = 2


@pytest.fixture
def fault_env(fault_env: dict[str, str]) -> dict[str, str]:
    fault_env.update(FAULT_CLAIM_TIMEOUT=str(CLAIM_TIMEOUT), FAULT_VISIBILITY_TIMEOUT=str(VISIBILITY_TIMEOUT))
    return fault_env


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
